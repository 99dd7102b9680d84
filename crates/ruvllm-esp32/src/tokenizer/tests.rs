use super::*;
use proptest::prelude::*;
use std::collections::HashMap;
use std::string::String;
use std::vec::Vec;
use std::{format, println, vec};

/// A piece's bytes.
type Piece = Vec<u8>;
/// (piece, score) per token id.
type Tokens = Vec<(Piece, f32)>;

/// The three payloads as the GGUF converter lays them out, built from a list of pieces.
struct Payloads {
    n: usize,
    pieces: Vec<u8>,
    scores: Vec<u8>,
    index: Vec<u8>,
}

impl Payloads {
    fn build(tokens: &[(Piece, f32)]) -> Self {
        let n = tokens.len();
        let mut pieces = Vec::new();
        let mut scores = Vec::new();
        let mut index = Vec::new();
        for (bytes, score) in tokens {
            index.extend_from_slice(&(pieces.len() as u32).to_le_bytes());
            pieces.extend_from_slice(&(bytes.len() as u64).to_le_bytes());
            pieces.extend_from_slice(bytes);
            scores.extend_from_slice(&score.to_le_bytes());
        }
        let mut ids: Vec<u32> = (0..n as u32).collect();
        ids.sort_by(|&a, &b| tokens[a as usize].0.cmp(&tokens[b as usize].0).then(a.cmp(&b)));
        for id in ids {
            index.extend_from_slice(&id.to_le_bytes());
        }
        Payloads { n, pieces, scores, index }
    }

    fn vocab(&self) -> Vocab<'_> {
        Vocab::new(self.n, &self.pieces, &self.scores, &self.index, 1, 2).expect("valid payloads")
    }
}

/// Parses llama2.c's tokenizer.bin (i32 max_token_length, then per token f32 score, i32 length,
/// bytes) into (piece, score) pairs.
fn parse_llama2c(data: &[u8], n: usize) -> Tokens {
    let mut pos = 4;
    let mut rd = |k: usize| {
        let s = &data[pos..pos + k];
        pos += k;
        s
    };
    (0..n)
        .map(|_| {
            let score = f32::from_le_bytes(rd(4).try_into().unwrap());
            let len = i32::from_le_bytes(rd(4).try_into().unwrap()) as usize;
            (rd(len).to_vec(), score)
        })
        .collect()
}

const TOK512: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/models/tok512.bin");

/// tok512.bin's (piece, score) list from ../shared, or None (with a skip message) when absent
/// outside CI.
fn tok512_tokens() -> Option<&'static [(Vec<u8>, f32)]> {
    static TOKENS: std::sync::OnceLock<Option<Tokens>> = std::sync::OnceLock::new();
    TOKENS
        .get_or_init(|| match std::fs::read(TOK512) {
            Ok(data) => Some(parse_llama2c(&data, 512)),
            Err(e) => {
                if std::env::var("CI").as_deref() == Ok("true") {
                    panic!("{TOK512} is required under CI=true: {e}");
                }
                println!("skipping: {TOK512} not available ({e})");
                None
            }
        })
        .as_deref()
}

/// tok512.bin as converter payloads, or None when absent outside CI.
fn tok512() -> Option<Payloads> {
    tok512_tokens().map(Payloads::build)
}

/// Straightforward heap-based transcription of llama2.c's encode, to cross-check the in-place
/// version on arbitrary input.
fn reference_encode(tokens: &[(Piece, f32)], text: &[u8], bos: bool, eos: bool) -> Vec<u32> {
    let mut map: HashMap<&[u8], u32> = HashMap::new();
    for (i, (p, _)) in tokens.iter().enumerate().rev() {
        map.insert(p.as_slice(), i as u32);
    }
    let mut out = Vec::new();
    if bos {
        out.push(1);
    }
    if !text.is_empty() {
        out.push(map[&b" "[..]]);
    }
    let mut buf: Vec<u8> = Vec::new();
    for (i, &c) in text.iter().enumerate() {
        if c & 0xC0 != 0x80 {
            buf.clear();
        }
        buf.push(c);
        let next_cont = text.get(i + 1).is_some_and(|&b| b & 0xC0 == 0x80);
        if next_cont && buf.len() < 4 {
            continue;
        }
        match map.get(buf.as_slice()) {
            Some(&id) => out.push(id),
            None => out.extend(buf.iter().map(|&b| b as u32 + 3)),
        }
        buf.clear();
    }
    loop {
        let mut best = (-1e10f32, None);
        for i in 0..out.len().saturating_sub(1) {
            let mut cat = tokens[out[i] as usize].0.clone();
            cat.extend_from_slice(&tokens[out[i + 1] as usize].0);
            if let Some(&id) = map.get(cat.as_slice()) {
                if tokens[id as usize].1 > best.0 {
                    best = (tokens[id as usize].1, Some((i, id)));
                }
            }
        }
        let Some((i, id)) = best.1 else { break };
        out[i] = id;
        out.remove(i + 1);
    }
    if eos {
        out.push(2);
    }
    out
}

fn encode_vec(vocab: &Vocab, text: &[u8], bos: bool, eos: bool) -> Vec<u32> {
    let mut out = vec![0u32; text.len() + 3];
    let n = encode(vocab, text, bos, eos, &mut out).expect("encode");
    out.truncate(n);
    out
}

/// Concatenates decode() of every token after the first (the BOS), like llama2.c's generate
/// loop but without the safe_printf filter so byte-fallback bytes are kept.
fn decode_all(vocab: &Vocab, ids: &[u32]) -> Vec<u8> {
    let mut text = Vec::new();
    for w in ids.windows(2) {
        let mut byte = [0u8; DECODE_MAX];
        text.extend_from_slice(decode(vocab, w[0], w[1], &mut byte));
    }
    text
}

/// A tiny hand-made vocabulary: specials, 256 byte tokens, then a few merges.
fn tiny_tokens(merges: &[(&str, f32)]) -> Tokens {
    let mut t: Tokens = vec![(b"<unk>".to_vec(), 0.0), (b"<s>".to_vec(), 0.0), (b"</s>".to_vec(), 0.0)];
    for b in 0..=255u8 {
        t.push((format!("<0x{b:02X}>").into_bytes(), 0.0));
    }
    for c in [" ", "a", "b", "c"] {
        t.push((c.as_bytes().to_vec(), -100.0));
    }
    for (p, s) in merges {
        t.push((p.as_bytes().to_vec(), *s));
    }
    t
}

#[test]
fn tok512_loads_and_looks_up_every_piece() {
    let Some(p) = tok512() else { return };
    let v = p.vocab();
    assert_eq!(v.len(), 512);
    assert_eq!(v.piece(0), b"<unk>");
    // llama2.c's export wraps the specials in newlines.
    assert_eq!(v.piece(1), b"\n<s>\n");
    assert_eq!(v.piece(2), b"\n</s>\n");
    assert_eq!(v.piece(3), b"<0x00>");
    assert_eq!(v.piece(258), b"<0xFF>");
    assert_eq!(v.piece(512), b"");
    for id in 0..512u32 {
        let found = v.lookup(v.piece(id)).expect("every piece is found");
        assert_eq!(v.piece(found), v.piece(id));
        assert!(found <= id, "lookup returns the lowest id of equal pieces");
    }
    assert_eq!(v.lookup(b"definitely not a piece"), None);
}

#[test]
fn tok512_empty_text() {
    let Some(p) = tok512() else { return };
    let v = p.vocab();
    assert_eq!(encode_vec(&v, b"", true, false), [1]);
    assert_eq!(encode_vec(&v, b"", false, false), [] as [u32; 0]);
    assert_eq!(encode_vec(&v, b"", true, true), [1, 2]);
}

#[test]
fn tok512_once_upon_a_time() {
    let Some(p) = tok512() else { return };
    let v = p.vocab();
    let ids = encode_vec(&v, b"Once upon a time", true, false);
    let pieces: Vec<String> = ids.iter().map(|&i| String::from_utf8_lossy(v.piece(i)).into_owned()).collect();
    println!("\"Once upon a time\" -> {ids:?} {pieces:?}");
    assert_eq!(ids[0], 1);
    assert!(ids.len() <= 8, "merges should shorten 16 characters a lot: {ids:?}");
    let tokens = tok512_tokens().unwrap();
    assert_eq!(ids, reference_encode(tokens, b"Once upon a time", true, false));
    assert_eq!(decode_all(&v, &ids), b"Once upon a time");
}

#[test]
fn tok512_round_trips() {
    let Some(p) = tok512() else { return };
    let v = p.vocab();
    let texts: [&str; 9] = [
        "The quick brown fox jumps over the lazy dog.",
        "Hello, world! How are you? I'm fine; thanks: (really) [ok] {yes}.",
        "Line one\nLine two\n\n\tindented line\r\n",
        "She said \"hi\" and 'bye' - then left... 100% sure, #1 & $5 @ 3pm ~ ^_^",
        "Caf\u{e9} cr\u{e8}me br\u{fb}l\u{e9}e, na\u{ef}ve \u{fc}ber",
        "\u{65e5}\u{672c}\u{8a9e}\u{3067}\u{3059} \u{65e5}\u{672c}",
        "Emoji: \u{1f600}\u{1f680} and \u{2764}\u{fe0f}!",
        "  leading spaces and trailing  ",
        "x",
    ];
    for text in texts {
        for eos in [false, true] {
            let ids = encode_vec(&v, text.as_bytes(), true, eos);
            let body = if eos { &ids[..ids.len() - 1] } else { &ids[..] };
            assert_eq!(
                String::from_utf8_lossy(&decode_all(&v, body)),
                text,
                "round trip of {text:?} via {ids:?}"
            );
            if eos {
                assert_eq!(ids.last(), Some(&2));
            }
        }
    }
    // Unknown code points fall back to their bytes: 日 = E6 97 A5.
    let ids = encode_vec(&v, "\u{65e5}".as_bytes(), false, false);
    assert_eq!(&ids[1..], [0xE6 + 3, 0x97 + 3, 0xA5 + 3]);
}

#[test]
fn tok512_matches_reference_on_sentences() {
    let Some(p) = tok512() else { return };
    let v = p.vocab();
    let tokens = tok512_tokens().unwrap();
    for text in ["Lily and Ben went to the park. They saw a big red ball!", "Tom was sad.\nHe cried."] {
        assert_eq!(
            encode_vec(&v, text.as_bytes(), true, true),
            reference_encode(tokens, text.as_bytes(), true, true)
        );
    }
}

#[test]
fn buffer_too_small_reports_need() {
    let p = Payloads::build(&tiny_tokens(&[("ab", 1.0)]));
    let v = p.vocab();
    let mut out = [0u32; 3];
    // BOS, " ", a, b, EOS before merging.
    assert_eq!(encode(&v, b"ab", true, true, &mut out), Err(Error::BufferTooSmall { need: 5, have: 3 }));
    let mut out = [0u32; 5];
    assert_eq!(encode(&v, b"ab", true, true, &mut out), Ok(4));
    // " " = 259, "ab" = 263.
    assert_eq!(out[..4], [1, 259, 263, 2]);
}

#[test]
fn merge_prefers_highest_score_then_first_pair() {
    // " " = 259, a = 260, b = 261, c = 262, then merges from 263.
    let p = Payloads::build(&tiny_tokens(&[("ab", 1.0), ("bc", 2.0), (" a", 0.5)]));
    let v = p.vocab();
    // "abc": " a" (0.5), "ab" (1.0), "bc" (2.0) available; bc wins, then " a" merges.
    assert_eq!(encode_vec(&v, b"abc", false, false), [265, 264]);
    // Equal scores: the first pair wins.
    let p = Payloads::build(&tiny_tokens(&[("ab", 1.0), ("ba", 1.0)]));
    let v = p.vocab();
    assert_eq!(encode_vec(&v, b"aba", false, false), [259, 263, 260]);
    // Merges at or below llama2.c's -1e10 floor never happen.
    let p = Payloads::build(&tiny_tokens(&[("ab", -1e10)]));
    let v = p.vocab();
    assert_eq!(encode_vec(&v, b"ab", false, false), [259, 260, 261]);
}

#[test]
fn utf8_grouping_like_llama2c() {
    let p = Payloads::build(&tiny_tokens(&[]));
    let v = p.vocab();
    let tokens = tiny_tokens(&[]);
    // Stray continuation bytes, overlong runs, a truncated sequence at the end, a NUL.
    for text in [&b"\x80\x80a"[..], b"\xE6\x97\xA5\x80\x80\x80", b"a\xF0\x9F", b"a\0b"] {
        assert_eq!(encode_vec(&v, text, true, true), reference_encode(&tokens, text, true, true));
    }
}

#[test]
fn decode_rules() {
    let p = Payloads::build(&tiny_tokens(&[(" ab", 1.0)]));
    let v = p.vocab();
    let mut byte = [0u8; DECODE_MAX];
    assert_eq!(decode(&v, 1, 263, &mut byte), b"ab", "space stripped after BOS");
    assert_eq!(decode(&v, 5, 263, &mut byte), b" ab");
    assert_eq!(decode(&v, 5, 3 + 0x41, &mut byte), b"A");
    assert_eq!(decode(&v, 5, 3 + 0xE6, &mut byte), [0xE6]);
    assert_eq!(decode(&v, 5, 9999, &mut byte), b"");
    assert_eq!(parse_byte_piece(b"<0xab>"), Some(0xAB));
    assert_eq!(parse_byte_piece(b"<0xG1>"), None);
    assert_eq!(parse_byte_piece(b"<0x1>"), None);
    assert!(is_printable(b"A"));
    assert!(is_printable(b"\n"));
    assert!(is_printable(b" "));
    assert!(!is_printable(b"\x01"));
    assert!(!is_printable(&[0xE6]));
    assert!(!is_printable(b""));
    assert!(is_printable("\u{e9}".as_bytes()));
}

#[test]
fn vocab_new_rejects_bad_payloads() {
    let p = Payloads::build(&tiny_tokens(&[("ab", 1.0)]));
    let n = p.n;
    let new = |n, pieces: &[u8], scores: &[u8], index: &[u8]| {
        Vocab::new(n, pieces, scores, index, 1, 2).map(|_| ())
    };
    assert!(new(n, &p.pieces, &p.scores, &p.index).is_ok());
    assert!(new(0, &[], &[], &[]).is_err());
    assert!(new(n + 1, &p.pieces, &p.scores, &p.index).is_err());
    assert!(new(n, &p.pieces, &p.scores[4..], &p.index).is_err());
    assert!(new(n, &p.pieces, &p.scores, &p.index[4..]).is_err());
    assert!(new(n, &p.pieces[..p.pieces.len() - 1], &p.scores, &p.index).is_err());
    assert!(Vocab::new(n, &p.pieces, &p.scores, &p.index, n as u32, 2).is_err());
    let mut scores = p.scores.clone();
    scores[8..12].copy_from_slice(&f32::NAN.to_le_bytes());
    assert!(new(n, &p.pieces, &scores, &p.index).is_err());
    // Huge length prefix.
    let mut pieces = p.pieces.clone();
    pieces[..8].copy_from_slice(&u64::MAX.to_le_bytes());
    assert!(new(n, &pieces, &p.scores, &p.index).is_err());
    // Duplicate id in the sorted half.
    let mut index = p.index.clone();
    let first = 4 * n;
    let dup: [u8; 4] = index[first..first + 4].try_into().unwrap();
    index[first + 4..first + 8].copy_from_slice(&dup);
    assert!(new(n, &p.pieces, &p.scores, &index).is_err());
    // Two sorted entries swapped.
    let mut index = p.index.clone();
    index[first..first + 8].rotate_left(4);
    assert!(new(n, &p.pieces, &p.scores, &index).is_err());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn encode_never_panics_and_matches_reference(text in proptest::collection::vec(any::<u8>(), 0..64),
                                                cap in 0usize..80, bos: bool, eos: bool) {
        let tokens = tiny_tokens(&[("ab", 1.0), ("ba", 1.5), (" a", 0.25), ("abc", 3.0), ("\u{e9}", 0.0)]);
        let p = Payloads::build(&tokens);
        let v = p.vocab();
        let mut out = vec![0u32; cap];
        let want = reference_encode(&tokens, &text, bos, eos);
        match encode(&v, &text, bos, eos, &mut out) {
            Ok(n) => prop_assert_eq!(&out[..n], &want[..]),
            Err(Error::BufferTooSmall { need, have }) => {
                prop_assert_eq!(have, cap);
                prop_assert!(need > cap && need <= text.len() + 3);
                let mut out = vec![0u32; need];
                let n = encode(&v, &text, bos, eos, &mut out).unwrap();
                prop_assert_eq!(&out[..n], &want[..]);
            }
            Err(e) => prop_assert!(false, "unexpected error {e:?}"),
        }
    }

    #[test]
    fn tok512_encode_arbitrary_bytes(text in proptest::collection::vec(any::<u8>(), 0..48)) {
        if let Some(tokens) = tok512_tokens() {
            let p = Payloads::build(tokens);
            let v = p.vocab();
            let mut out = vec![0u32; text.len() + 3];
            let n = encode(&v, &text, true, true, &mut out).unwrap();
            prop_assert_eq!(&out[..n], &reference_encode(tokens, &text, true, true)[..]);
            let mut byte = [0u8; DECODE_MAX];
            for w in out[..n].windows(2) {
                let _ = decode(&v, w[0], w[1], &mut byte);
            }
        }
    }

    #[test]
    fn ascii_words_round_trip(text in "[a-zA-Z ,.!?\n]{0,40}") {
        let p = Payloads::build(&tiny_tokens(&[("ab", 1.0), (" a", 2.0)]));
        let v = p.vocab();
        let ids = encode_vec(&v, text.as_bytes(), true, false);
        prop_assert_eq!(decode_all(&v, &ids), text.as_bytes());
    }

    #[test]
    fn decode_arbitrary_ids(prev: u32, token: u32) {
        let p = Payloads::build(&tiny_tokens(&[(" ab", 1.0)]));
        let v = p.vocab();
        let mut byte = [0u8; DECODE_MAX];
        let s = decode(&v, prev, token, &mut byte);
        prop_assert!(s.len() <= v.max_piece_len);
        let _ = is_printable(s);
    }

    #[test]
    fn vocab_new_survives_corruption(which in 0usize..3, pos in any::<prop::sample::Index>(),
                                     val: u8, cut in any::<prop::sample::Index>()) {
        let p = Payloads::build(&tiny_tokens(&[("ab", 1.0), ("ba", 2.0)]));
        let (mut pieces, mut scores, mut index) = (p.pieces.clone(), p.scores.clone(), p.index.clone());
        let buf = match which { 0 => &mut pieces, 1 => &mut scores, _ => &mut index };
        let i = pos.index(buf.len());
        buf[i] = val;
        // Either rejected or, if accepted, every accessor still works without panicking.
        if let Ok(v) = Vocab::new(p.n, &pieces, &scores, &index, 1, 2) {
            for id in 0..p.n as u32 + 2 {
                let _ = v.lookup(v.piece(id));
                let _ = v.score(id);
            }
            let mut out = [0u32; 64];
            let _ = encode(&v, b"abba cab", true, true, &mut out);
        }
        // Truncating any payload is always an error.
        let buf = match which { 0 => &mut pieces, 1 => &mut scores, _ => &mut index };
        let keep = cut.index(buf.len());
        buf.truncate(keep);
        let r = Vocab::new(p.n, &pieces, &scores, &index, 1, 2);
        prop_assert!(which == 0 && r.is_ok() || r.is_err());
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// The heap-ordered merge against llama2.c's rescanning loop where order is subtle: equal
    /// scores (leftmost wins, -0.0 equals 0.0), merges below the floor, and pieces that only
    /// exist after earlier merges.
    #[test]
    fn merge_order_matches_reference_with_ties_and_chains(
        scores in proptest::collection::vec(
            prop_oneof![Just(-2e10f32), Just(-1.0), Just(0.0), Just(-0.0), Just(1.0), Just(2.0)], 12),
        text in "[abc ]{0,120}",
    ) {
        let pieces = ["ab", "ba", "bc", "ca", "aa", "abc", "bca", "aab", " a", "a b", "cab", "abab"];
        let merges: Vec<(&str, f32)> = pieces.iter().copied().zip(scores).collect();
        let tokens = tiny_tokens(&merges);
        let p = Payloads::build(&tokens);
        let v = p.vocab();
        prop_assert_eq!(encode_vec(&v, text.as_bytes(), true, false), reference_encode(&tokens, text.as_bytes(), true, false));
    }
}

/// llama2.c's loop rescans every pair after each merge: quadratic, about 3 s for a 10 KB prompt
/// and over 20 s for 40 KB (release build). The heap merge takes a fraction of a second for
/// 64 KB even unoptimized; this bound fails by orders of magnitude for a quadratic merge.
#[test]
fn encoding_a_long_text_takes_n_log_n_time() {
    let tokens =
        tiny_tokens(&[("ab", 1.0), ("ba", 1.5), (" a", 0.25), ("abc", 3.0), ("ca", 0.5), ("bc", 0.7)]);
    let p = Payloads::build(&tokens);
    let v = p.vocab();
    let text: Vec<u8> = b"abcab cabba acb ".iter().copied().cycle().take(64 << 10).collect();
    let start = std::time::Instant::now();
    let ids = encode_vec(&v, &text, true, false);
    let took = start.elapsed();
    assert!(took < std::time::Duration::from_secs(10), "64 KB took {took:?}");
    assert!(ids.len() > 1000);
    // Same tokens as the reference on a prefix the quadratic reference can still afford.
    assert_eq!(
        encode_vec(&v, &text[..2000], true, false),
        reference_encode(&tokens, &text[..2000], true, false)
    );
}

/// tok512's pieces in SentencePiece's convention, as `convert` writes them: spaces as U+2581.
fn tok512_spm(tokens: &[(Piece, f32)]) -> Tokens {
    let mark = |b: &u8| if *b == b' ' { SPACE_MARK.to_vec() } else { vec![*b] };
    tokens.iter().map(|(p, s)| (p.iter().flat_map(mark).collect(), *s)).collect()
}

#[test]
fn sentencepiece_pieces_encode_and_decode_as_plain_ones() {
    let Some(tokens) = tok512_tokens() else { return };
    let (plain, spm) = (Payloads::build(tokens), Payloads::build(&tok512_spm(tokens)));
    let (plain, spm) = (plain.vocab(), spm.vocab());
    assert!(!plain.spm() && spm.spm());
    let texts = ["Once upon a time", "  two  spaces\n and a line ", "Caf\u{e9} \u{65e5} x", ""];
    for text in texts {
        let ids = encode_vec(&spm, text.as_bytes(), true, true);
        assert_eq!(ids, encode_vec(&plain, text.as_bytes(), true, true), "{text:?}");
        assert_eq!(decode_all(&spm, &ids[..ids.len() - 1]), text.as_bytes());
    }
    // BOS/EOS print nothing (llama.cpp renders control tokens so); llama2.c's pieces print.
    let mut scratch = [0u8; DECODE_MAX];
    assert_eq!(decode(&spm, 5, 2, &mut scratch), b"");
    assert_eq!(decode(&plain, 5, 2, &mut scratch), b"\n</s>\n");
    // The dummy prefix after BOS is stripped in either convention.
    let space = spm.lookup(SPACE_MARK).unwrap();
    assert_eq!(decode(&spm, 1, space, &mut scratch), b"");
    assert_eq!(decode(&spm, 9, space, &mut scratch), b" ");
}

proptest! {
    #[test]
    fn sentencepiece_and_plain_conventions_agree(text in "[ a-zA-Z.,\n\u{e9}\u{65e5}]{0,60}") {
        let Some(tokens) = tok512_tokens() else { return Ok(()) };
        let (plain, spm) = (Payloads::build(tokens), Payloads::build(&tok512_spm(tokens)));
        let (plain, spm) = (plain.vocab(), spm.vocab());
        let ids = encode_vec(&spm, text.as_bytes(), true, false);
        prop_assert_eq!(&ids, &encode_vec(&plain, text.as_bytes(), true, false));
        prop_assert_eq!(decode_all(&spm, &ids), decode_all(&plain, &ids));
    }
}

#[test]
fn a_sentencepiece_vocabulary_with_a_piece_past_the_decode_buffer_is_refused() {
    let mut t = tiny_tokens(&[]);
    t.iter_mut().filter(|(p, _)| p == b" ").for_each(|(p, _)| *p = SPACE_MARK.to_vec());
    t.push((vec![b'a'; DECODE_MAX + 1], 0.0));
    let p = Payloads::build(&t);
    assert!(matches!(Vocab::new(p.n, &p.pieces, &p.scores, &p.index, 1, 2), Err(Error::Unsupported { .. })));
}
