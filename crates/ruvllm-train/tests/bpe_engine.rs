//! The trained vocabulary through the ENGINE's tokenizer (as the chip will use it): exact
//! round trips, the same segmentation as the trainer's `Encoder`, byte fallback.

use std::time::Instant;

use proptest::prelude::*;
use ruvllm_esp32::convert::{HostLayer, HostModel, HostVocab, Quant};
use ruvllm_esp32::gguf::Gguf;
use ruvllm_esp32::model::Config;
use ruvllm_esp32::tokenizer::{self, Vocab};
use ruvllm_train::bpe::{self, Encoder};
use ruvllm_train::corpus;

/// An engine GGUF image of a tiny model carrying `v`.
fn gguf_with(v: &HostVocab) -> Vec<u8> {
    let n = v.pieces.len();
    let d = 8;
    let config = Config {
        dim: d,
        hidden_dim: 16,
        n_layers: 1,
        n_heads: 2,
        n_kv_heads: 2,
        head_dim: 0,
        vocab_size: n,
        seq_len: 16,
        shared_classifier: true,
        norm_eps: 1e-5,
        rope_theta: 10000.0,
    };
    let z = |k: usize| vec![0.0f32; k];
    let layer = HostLayer {
        attn_norm: vec![1.0; d],
        wq: z(d * d),
        wk: z(d * d),
        wv: z(d * d),
        wo: z(d * d),
        ffn_norm: vec![1.0; d],
        w1: z(16 * d),
        w2: z(16 * d),
        w3: z(16 * d),
    };
    let model = HostModel {
        config,
        token_embd: z(n * d),
        layers: vec![layer],
        output_norm: vec![1.0; d],
        output: None,
        vocab: Some(v.clone()),
    };
    model.to_gguf(Quant::F32).expect("tiny model converts")
}

/// The engine's vocabulary view of a GGUF image.
fn engine_vocab<'a>(g: &Gguf<'a>) -> Vocab<'a> {
    let tokens = g.get_array("tokenizer.ggml.tokens").unwrap();
    let scores = g.get_array("tokenizer.ggml.scores").unwrap();
    let index = g.get_array("ruvllm.tokenizer.index").unwrap();
    Vocab::new(tokens.len, tokens.payload, scores.payload, index.payload, 1, 2)
        .expect("engine accepts the vocab")
}

fn engine_encode(v: &Vocab, text: &str, bos: bool) -> Vec<u32> {
    let mut out = vec![0u32; text.len() + 3];
    let n = tokenizer::encode(v, text.as_bytes(), bos, false, &mut out).expect("engine encodes");
    out.truncate(n);
    out
}

/// The engine's decode after BOS (which drops the dummy-prefix space).
fn engine_decode(v: &Vocab, ids: &[u32]) -> Vec<u8> {
    let mut text = Vec::new();
    let mut prev = v.bos();
    for &id in ids {
        let mut byte = [0u8; tokenizer::DECODE_MAX];
        text.extend_from_slice(tokenizer::decode(v, prev, id, &mut byte));
        prev = id;
    }
    text
}

fn trained() -> HostVocab {
    // Stories and facts (the built-in tokenizer's text), without the question-answer documents.
    let docs: Vec<String> = (0..4000).map(|i| corpus::document(corpus::DEFAULT_SEED, i)).collect();
    let docs: Vec<&str> = docs.iter().map(String::as_str).collect();
    bpe::train_documents(&docs, 512).expect("trains")
}

#[test]
fn engine_round_trips_and_matches_the_trainer() {
    let t = Instant::now();
    let v = trained();
    println!("trained vocab 512 on 4000 docs in {:.2?}", t.elapsed());
    let image = gguf_with(&v);
    let g = Gguf::parse(&image).unwrap();
    let ev = engine_vocab(&g);
    let mut enc = Encoder::new(&v).unwrap();

    let (mut chars, mut toks) = (0usize, 0usize);
    for doc in (0..60).map(|i| corpus::document(0xABCD, i)) {
        let doc = doc.as_str();
        let ids = engine_encode(&ev, doc, true);
        assert_eq!(ids[0], 1);
        assert_eq!(ids[1..], enc.encode(doc)[..], "engine and trainer differ on {doc:?}");
        assert_eq!(engine_decode(&ev, &ids[1..]), doc.as_bytes());
        chars += doc.len();
        toks += ids.len() - 1;
    }
    let ratio = chars as f64 / toks as f64;
    println!("held-out compression: {chars} chars / {toks} tokens = {ratio:.2} chars per token");
    assert!(ratio > 2.0, "poor compression: {ratio:.2} chars per token");

    for text in [
        "Once upon a time, there was a little dog named Zorglub.",
        "  Two spaces, tabs\tand\nnew lines\n\n",
        "Caf\u{e9} \u{1F600} na\u{ef}ve \u{4E2D}\u{6587}",
        "\"Hello!\" said Tom's 12 cats... 3.14",
        "\u{1}\u{7f}",
    ] {
        let ids = engine_encode(&ev, text, true);
        assert_eq!(ids[1..], enc.encode(text)[..], "{text:?}");
        assert_eq!(engine_decode(&ev, &ids[1..]), text.as_bytes(), "{text:?}");
    }
}

#[test]
fn outside_characters_become_byte_tokens() {
    let v = trained();
    let image = gguf_with(&v);
    let g = Gguf::parse(&image).unwrap();
    let ev = engine_vocab(&g);
    let ids = engine_encode(&ev, "\u{e9}", false);
    assert_eq!(ids, [259, 3 + 0xC3, 3 + 0xA9]);
    let emoji = "\u{1F600}";
    let ids = engine_encode(&ev, emoji, true);
    assert_eq!(ids[2..], emoji.bytes().map(|b| u32::from(b) + 3).collect::<Vec<_>>()[..]);
    assert_eq!(engine_decode(&ev, &ids[1..]), emoji.as_bytes());
}

/// One vocabulary shared by all proptest cases, with its engine image.
fn shared() -> &'static (HostVocab, Vec<u8>) {
    static V: std::sync::OnceLock<(HostVocab, Vec<u8>)> = std::sync::OnceLock::new();
    V.get_or_init(|| {
        let v = bpe::train(&corpus::generate(7, 800), 512).unwrap();
        let image = gguf_with(&v);
        (v, image)
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

    #[test]
    fn engine_equals_encoder_on_any_text(s in "(?s).{0,80}", w in "[a-zA-Z0-9 ,.!?\"'\n]{0,120}") {
        let (v, image) = shared();
        let g = Gguf::parse(image).unwrap();
        let ev = engine_vocab(&g);
        let mut enc = Encoder::new(v).unwrap();
        for text in [s.as_str(), w.as_str()] {
            let ids = engine_encode(&ev, text, true);
            prop_assert_eq!(&ids[1..], &enc.encode(text)[..]);
            prop_assert_eq!(engine_decode(&ev, &ids[1..]), text.as_bytes());
        }
    }
}

/// Training speed on ~20 MB:
/// `cargo test --release -p ruvllm-train --test bpe_engine -- --ignored --nocapture`.
#[test]
#[ignore]
fn train_20mb_timing() {
    let t = Instant::now();
    let text = corpus::generate_bytes(corpus::DEFAULT_SEED, 20 << 20);
    println!("generated {} bytes in {:.2?}", text.len(), t.elapsed());
    let t = Instant::now();
    let v = bpe::train(&text, 512).unwrap();
    println!("trained vocab 512 on the whole text in {:.2?}", t.elapsed());
    let t = Instant::now();
    let docs: Vec<&str> = text.split("\n\n").collect();
    let v2 = bpe::train_documents(&docs, 512).unwrap();
    println!("trained vocab 512 on {} documents in {:.2?}", docs.len(), t.elapsed());
    let mut enc2 = Encoder::new(&v2).unwrap();
    let n2: usize = docs.iter().map(|d| enc2.encode(d).len()).sum();
    println!("per-document encoding: {:.2} chars per token", text.len() as f64 / n2 as f64);
    let t = Instant::now();
    let mut enc = Encoder::new(&v).unwrap();
    let ids = enc.encode(&text);
    println!(
        "encoded in {:.2?}: {} tokens, {:.2} chars per token",
        t.elapsed(),
        ids.len(),
        text.len() as f64 / ids.len() as f64
    );
    let tail = &v.pieces[v.pieces.len() - 40..];
    let learned: Vec<String> = tail.iter().map(|p| String::from_utf8_lossy(p).into_owned()).collect();
    println!("last pieces: {learned:?}");
}
