use super::encode::Lookup;
use super::*;
use crate::corpus;
use proptest::prelude::*;

fn small_corpus() -> String {
    corpus::generate(corpus::DEFAULT_SEED, 600)
}

/// The engine's algorithm on the whole text, without pre-splitting (quadratic, for checks).
fn naive_encode(v: &HostVocab, text: &str) -> Vec<u32> {
    if text.is_empty() {
        return Vec::new();
    }
    let look = Lookup::new(v.pieces.clone(), v.scores.clone());
    let mut toks = vec![look.ids[b" ".as_slice()]];
    look.chars(text, &mut toks);
    look.merge_reference(&mut toks, &mut Vec::new());
    toks
}

#[test]
fn chunks_split_like_sentencepiece() {
    let got: Vec<&str> = chunks(" Once, Tom's 42 cats...  ran!\n\nThe end é\u{1F600}").collect();
    let want = [
        " Once",
        ",",
        " Tom's",
        " 4",
        "2",
        " cats",
        "...",
        " ",
        " ran",
        "!",
        "\n\n",
        "The",
        " end",
        " é",
        "\u{1F600}",
    ];
    assert_eq!(got, want);
    assert_eq!(chunks("").count(), 0);
    assert_eq!(chunks("   ").collect::<Vec<_>>(), [" ", " ", " "]);
}

#[test]
fn check_text_refuses_binary() {
    assert_eq!(check_text(b""), Err(BpeError::EmptyCorpus));
    assert_eq!(check_text(b" \n\t "), Err(BpeError::EmptyCorpus));
    assert_eq!(check_text(b"abc\0def"), Err(BpeError::NulByte { offset: 3 }));
    assert_eq!(check_text(b"ab\xffcd"), Err(BpeError::InvalidUtf8 { offset: 2 }));
    assert_eq!(check_text(b"ab\x01\x02\x03cdefg"), Err(BpeError::MostlyControl { control: 3, chars: 10 }));
    assert_eq!(check_text(b"Hello\r\n\tworld\x0c"), Ok("Hello\r\n\tworld\x0c"));
    let e = check_text(b"ab\xffcd").unwrap_err();
    assert!(e.to_string().contains("UTF-8"), "{e}");
}

#[test]
fn train_refuses_bad_sizes() {
    let text = small_corpus();
    assert_eq!(train(&text, 259), Err(BpeError::VocabTooSmall { requested: 259, min: 260 }));
    assert_eq!(train(&text, 0), Err(BpeError::VocabTooSmall { requested: 0, min: 260 }));
    assert!(matches!(train(&text, usize::MAX), Err(BpeError::VocabTooLarge { .. })));
    assert_eq!(train("", 300), Err(BpeError::EmptyCorpus));
    // "ab ab": pieces " ", "a", "b", then " a", " ab": 259 + 5 = 264.
    assert_eq!(train("ab ab", 300), Err(BpeError::CorpusTooSmall { requested: 300, possible: 264 }));
    let v = train("ab ab", 264).unwrap();
    assert_eq!(
        v.pieces[259..],
        [b" ".to_vec(), b"a".to_vec(), b"b".to_vec(), b" a".to_vec(), b" ab".to_vec()]
    );
    let msg = train("ab ab", 300).unwrap_err().to_string();
    assert!(msg.contains("264"), "{msg}");
}

#[test]
fn documents_each_get_the_dummy_prefix() {
    // As one text only the first "cat" has a space; as documents both do.
    let whole = train("cat\n\ncat", 266).unwrap();
    assert!(whole.pieces.contains(&b"cat".to_vec()) || whole.pieces.contains(&b"ca".to_vec()));
    let docs = train_documents(&["cat", "cat"], 266).unwrap();
    assert_eq!(docs.pieces[259..], [" ", "a", "c", "t", " c", " ca", " cat"].map(|p| p.as_bytes().to_vec()));
    assert_eq!(train_documents(&["", " "], 300), Err(BpeError::EmptyCorpus));
    assert_eq!(train_documents(&["ab", "c\0"], 300), Err(BpeError::NulByte { offset: 3 }));
}

#[test]
fn long_chunks_are_cut_for_counting() {
    // 10,000 letters without a break: trains quickly and still encodes exactly.
    let text: String = (0..10_000).map(|i| ['a', 'b', 'c', '\u{e9}'][(i * 7 + i / 13) % 4]).collect();
    let v = train(&text, 280).unwrap();
    let mut enc = Encoder::new(&v).unwrap();
    let ids = enc.encode(&text);
    assert_eq!(decode(&v, &ids), format!(" {text}").into_bytes());
    let short: String = text.chars().take(3000).collect();
    assert_eq!(enc.encode(&short), naive_encode(&v, &short));
}

#[test]
fn layout_scores_and_determinism() {
    let text = small_corpus();
    let v = train(&text, 400).unwrap();
    assert_eq!(v, train(&text, 400).unwrap());
    assert_eq!(v.pieces.len(), 400);
    assert_eq!(v.scores.len(), 400);
    assert_eq!((v.bos, v.eos), (1, 2));
    assert_eq!(v.pieces[0], b"<unk>");
    assert_eq!(v.pieces[1], b"<s>");
    assert_eq!(v.pieces[2], b"</s>");
    assert_eq!(v.pieces[3], b"<0x00>");
    assert_eq!(v.pieces[3 + 0x0A], b"<0x0A>");
    assert_eq!(v.pieces[258], b"<0xFF>");
    assert_eq!(v.pieces[259], b" ");
    assert!(v.scores[..259].iter().all(|&s| s == RESERVED_SCORE));
    assert!(v.scores[259..].windows(2).all(|w| w[0] > w[1]));
    let mut seen = std::collections::HashSet::new();
    assert!(v.pieces.iter().all(|p| seen.insert(p.clone())), "duplicate piece");
    assert_eq!(v.max_token_length as usize, v.pieces.iter().map(Vec::len).max().unwrap());
    // Every character of the corpus has its own piece.
    for c in text.chars() {
        assert!(v.pieces.contains(&c.to_string().into_bytes()), "{c:?} has no piece");
    }
    // Learned pieces are single chunks.
    for p in &v.pieces[259..] {
        let s = std::str::from_utf8(p).unwrap();
        assert_eq!(chunks(s).count(), 1, "{s:?}");
    }
}

#[test]
fn encoder_matches_the_whole_text_algorithm() {
    let v = train(&small_corpus(), 512).unwrap();
    let mut enc = Encoder::new(&v).unwrap();
    assert!(enc.is_chunk_safe());
    let held_out = corpus::generate(99, 30);
    for doc in
        held_out.split("\n\n").chain([" Hi", "  two  spaces", "\n\nTom", "42 cats", "café 🙂 naïve", "x"])
    {
        let ids = enc.encode(doc);
        assert_eq!(ids, naive_encode(&v, doc), "{doc:?}");
        assert_eq!(decode(&v, &ids), format!(" {doc}").into_bytes());
    }
    assert!(enc.encode("").is_empty());
}

#[test]
fn characters_outside_the_vocab_fall_back_to_bytes() {
    let v = train(&small_corpus(), 400).unwrap();
    let mut enc = Encoder::new(&v).unwrap();
    let ids = enc.encode("é");
    assert_eq!(ids, [259, 3 + 0xC3, 3 + 0xA9]);
    assert_eq!(decode(&v, &ids), " é".as_bytes());
}

#[test]
fn more_characters_than_room_fall_back_to_bytes() {
    // 300 distinct characters, room for 40: the rest become bytes and still round-trip.
    let text: String =
        (0..300u32).map(|i| char::from_u32(0x4E00 + i).unwrap()).collect::<String>() + " ab ab";
    let v = train(&text, 300).unwrap();
    let mut enc = Encoder::new(&v).unwrap();
    let ids = enc.encode(&text);
    assert_eq!(ids, naive_encode(&v, &text));
    assert_eq!(decode(&v, &ids), format!(" {text}").into_bytes());
}

#[test]
fn foreign_vocabularies_use_the_exact_slow_path() {
    // A piece crossing a chunk boundary ("a.") turns the fast path off.
    let mut pieces: Vec<Vec<u8>> = vec![b"<unk>".to_vec(), b"<s>".to_vec(), b"</s>".to_vec()];
    pieces.extend((0..=255u8).map(byte_piece));
    let mut scores = vec![0.0; pieces.len()];
    for (p, s) in [(" ", -1.0), ("a", -2.0), (".", -3.0), ("a.", -4.0)] {
        pieces.push(p.as_bytes().to_vec());
        scores.push(s);
    }
    let v = HostVocab { pieces, scores, max_token_length: 6, bos: 1, eos: 2 };
    let mut enc = Encoder::new(&v).unwrap();
    assert!(!enc.is_chunk_safe());
    assert_eq!(enc.encode("a."), naive_encode(&v, "a."));
    assert_eq!(enc.encode("a."), [259, 262]);
    let no_space = HostVocab { pieces: v.pieces[..259].to_vec(), scores: v.scores[..259].to_vec(), ..v };
    assert_eq!(Encoder::new(&no_space).unwrap_err(), BpeError::NoSpacePiece);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn fast_merge_equals_the_reference(
        extra in proptest::collection::vec(("[ab ]{2,4}", -3i8..3), 0..24),
        text in "[ab ]{0,60}",
    ) {
        // A foreign vocabulary with tied, repeated, -0.0 and floor scores.
        let mut pieces: Vec<Vec<u8>> = vec![b"<unk>".to_vec(), b"<s>".to_vec(), b"</s>".to_vec()];
        pieces.extend((0..=255u8).map(byte_piece));
        let mut scores = vec![RESERVED_SCORE; pieces.len()];
        for (p, s) in [(" ", -0.0), ("a", 0.0), ("b", 0.0)] {
            pieces.push(p.as_bytes().to_vec());
            scores.push(s);
        }
        for (p, s) in &extra {
            pieces.push(p.as_bytes().to_vec());
            scores.push(if *s == -3 { RESERVED_SCORE } else if *s == 0 { -0.0 } else { f32::from(*s) });
        }
        let look = Lookup::new(pieces, scores);
        let mut fast = Vec::new();
        look.chars(&text, &mut fast);
        let mut slow = fast.clone();
        look.merge(&mut fast, &mut Vec::new());
        look.merge_reference(&mut slow, &mut Vec::new());
        prop_assert_eq!(fast, slow);
    }

    #[test]
    fn chunks_concatenate_back(s in any::<String>()) {
        prop_assert_eq!(chunks(&s).collect::<String>(), s);
    }

    #[test]
    fn check_text_never_panics(b in proptest::collection::vec(any::<u8>(), 0..200)) {
        let _ = check_text(&b);
    }

    #[test]
    fn train_never_panics(s in any::<String>(), n in 250usize..300) {
        if let Ok(v) = train(&s, n) {
            prop_assert_eq!(v.pieces.len(), n);
            let mut enc = Encoder::new(&v).unwrap();
            let ids = enc.encode(&s);
            prop_assert_eq!(&ids, &naive_encode(&v, &s));
            prop_assert_eq!(decode(&v, &ids), format!(" {s}").into_bytes());
        }
    }

    #[test]
    fn train_on_wordy_text(s in "[a-c ,.\n']{1,120}", n in 260usize..280) {
        if let Ok(v) = train(&s, n) {
            let mut enc = Encoder::new(&v).unwrap();
            prop_assert_eq!(enc.encode(&s), naive_encode(&v, &s));
        }
    }
}
