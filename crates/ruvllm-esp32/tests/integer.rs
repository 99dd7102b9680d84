//! The integer-only forward pass on the real stories260K model: quality against fp32, greedy
//! text, determinism and the image's RoPE table.

mod common;

use ruvllm_esp32::convert::Quant;
use ruvllm_esp32::infer::{self, IntState, State};
use ruvllm_esp32::kernels::Kernels;
use ruvllm_esp32::model::{Model, ROPE_FRAC};
use ruvllm_esp32::tokenizer;

fn heldout() -> Vec<u8> {
    std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/../../testdata/heldout.txt")).unwrap()
}

fn encode(model: &Model<'_>, text: &[u8]) -> Vec<u32> {
    let mut tokens = vec![0u32; text.len() + 3];
    let n = tokenizer::encode(&model.vocab, text, true, false, &mut tokens).unwrap();
    tokens.truncate(n);
    tokens
}

fn int_perplexity(model: &Model<'_>, tokens: &[u32]) -> (usize, f64) {
    let ctx = model.config.seq_len;
    let mut arena = vec![0i32; IntState::arena_len(model, ctx)];
    let mut state = IntState::new(model, &mut arena, ctx).unwrap();
    let s = infer::score(model, &mut state, tokens).unwrap();
    (s.tokens, s.perplexity())
}

#[test]
fn integer_perplexity_is_within_two_percent_of_fp32() {
    let Some(f32_img) = common::stories260k_image(Quant::F32) else { return };
    let q8_img = common::stories260k_image(Quant::Q8).unwrap();
    let f = <Model<'_>>::from_gguf(f32_img.bytes()).unwrap();
    let q = <Model<'_>>::from_gguf(q8_img.bytes()).unwrap();
    let tokens = encode(&f, &heldout());
    let score = |m: &Model<'_>| {
        let ctx = m.config.seq_len;
        let mut arena = vec![0f32; State::arena_len(m, ctx)];
        let mut state = State::new(m, &mut arena, ctx, Kernels::detect()).unwrap();
        infer::score(m, &mut state, &tokens).unwrap().perplexity()
    };
    let (pf, pq) = (score(&f), score(&q));
    let (n, pi) = int_perplexity(&q, &tokens);
    let rel = (pi - pf).abs() / pf;
    eprintln!(
        "held-out perplexity over {n} tokens: fp32 {pf:.4}, q8 {pq:.4}, integer {pi:.4} ({:.3}% from fp32)",
        rel * 100.0
    );
    assert!(pf < 20.0, "fp32 perplexity {pf} is not that of a working model");
    assert!(rel < 0.02, "integer perplexity {pi} is not within 2% of fp32 {pf}");
}

fn greedy_int(model: &Model<'_>, prompt: &str, steps: usize) -> Vec<u8> {
    let tokens = encode(model, prompt.as_bytes());
    let mut arena = vec![0i32; IntState::arena_len(model, steps)];
    let mut state = IntState::new(model, &mut arena, steps).unwrap();
    let mut out = Vec::new();
    infer::generate_int(model, &mut state, &tokens, steps, |b, _| out.extend_from_slice(b)).unwrap();
    out
}

#[test]
fn integer_greedy_text_is_sensible() {
    let Some(img) = common::stories260k_image(Quant::Q8) else { return };
    let model = <Model<'_>>::from_gguf(img.bytes()).unwrap();
    let story = greedy_int(&model, "Once upon a time", 256);
    eprintln!("integer greedy: {}", String::from_utf8_lossy(&story));
    assert!(story.starts_with(b"Once upon a time, there was"));
}

#[test]
fn integer_logits_are_deterministic() {
    let Some(img) = common::stories260k_image(Quant::Q8) else { return };
    let model = <Model<'_>>::from_gguf(img.bytes()).unwrap();
    let tokens = encode(&model, b"Once upon a time, there was a little girl named Lily. She loved to play.");
    let run = || {
        let n = tokens.len();
        let mut arena = vec![0x5a5a_5a5ai32; IntState::arena_len(&model, n)];
        let mut state = IntState::new(&model, &mut arena, n).unwrap();
        let mut all = Vec::new();
        for (pos, &t) in tokens.iter().enumerate() {
            all.extend_from_slice(state.forward(&model, t, pos).unwrap());
        }
        all
    };
    let (a, b) = (run(), run());
    assert_eq!(a, b);
    // A dirty arena is never read: the first run's garbage differs from the second's.
    assert!(a.iter().any(|v| *v != 0));
}

#[test]
fn the_rope_table_matches_f64_and_is_required() {
    let Some(img) = common::stories260k_image(Quant::Q8) else { return };
    let model = <Model<'_>>::from_gguf(img.bytes()).unwrap();
    let c = &model.config;
    let (hs, rope) = (c.head_size(), model.rope.unwrap());
    assert!(rope.at(c.seq_len - 1).len() == hs * 4 && rope.at(c.seq_len).is_empty());
    let one = (1u64 << ROPE_FRAC) as f64;
    let mut worst = 0.0f64;
    for pos in 0..c.seq_len {
        for i in 0..hs / 2 {
            let angle = pos as f64 / (c.rope_theta as f64).powf((2 * i) as f64 / hs as f64);
            let pair = &rope.at(pos)[8 * i..8 * i + 8];
            let value = |b: &[u8]| i32::from_le_bytes(b.try_into().unwrap()) as f64 / one;
            worst = worst.max((value(&pair[..4]) - angle.cos()).abs());
            worst = worst.max((value(&pair[4..]) - angle.sin()).abs());
        }
    }
    assert!(worst <= 0.5 / one + 1e-15, "RoPE table error {worst}");
    // Without the table, or on an f32 image, the integer path refuses clearly.
    let mut without = model.clone();
    without.rope = None;
    let mut arena = vec![0i32; IntState::arena_len(&model, 8)];
    let err = IntState::new(&without, &mut arena, 8).err().unwrap();
    assert!(matches!(err, ruvllm_esp32::Error::Missing { .. }), "{err}");
    let f32_img = common::stories260k_image(Quant::F32).unwrap();
    let f = <Model<'_>>::from_gguf(f32_img.bytes()).unwrap();
    assert!(matches!(IntState::new(&f, &mut arena, 8), Err(ruvllm_esp32::Error::Unsupported { .. })));
}

#[test]
fn the_integer_state_checks_its_inputs() {
    let Some(img) = common::stories260k_image(Quant::Q8) else { return };
    let model = <Model<'_>>::from_gguf(img.bytes()).unwrap();
    let mut arena = vec![0i32; IntState::arena_len(&model, 8)];
    let mut state = IntState::new(&model, &mut arena, 8).unwrap();
    assert!(state.forward(&model, 1, 7).is_ok());
    assert!(state.forward(&model, 1, 8).is_err());
    assert!(state.forward(&model, 512, 0).is_err(), "token outside the vocabulary");
    let mut small = vec![0i32; 10];
    assert!(IntState::new(&model, &mut small, 8).is_err());
    let full = IntState::ram_bytes(&model, model.config.seq_len);
    eprintln!("integer path RAM at full context: {full} bytes");
    assert!(full < 250 * 1024, "{full} bytes");
}

/// stories260K with its feed-forward width padded from 172 to 192 with zero weights
/// ([`HostModel::pad_hidden`]): every row is whole 32-value blocks, so a q8 image is standard
/// Q8_0.
fn padded(quant: Quant) -> Option<common::Image> {
    let mut m = ruvllm_esp32::convert::load_llama2c(&common::read_shared("models/stories260K.bin")?).unwrap();
    let tok = common::read_shared("models/tok512.bin")?;
    m.vocab = Some(ruvllm_esp32::convert::load_tokenizer_bin(&tok, m.config.vocab_size).unwrap());
    m.pad_hidden(32).unwrap();
    Some(common::Image::new(&m.to_gguf(quant).unwrap()))
}

#[test]
fn q8_0_images_run_on_the_float_and_integer_paths_within_two_percent_of_fp32() {
    let Some(f32_img) = common::stories260k_image(Quant::F32) else { return };
    let (wide_f32, wide_q8) = (padded(Quant::F32).unwrap(), padded(Quant::Q8).unwrap());
    let f = <Model<'_>>::from_gguf(f32_img.bytes()).unwrap();
    let wf = <Model<'_>>::from_gguf(wide_f32.bytes()).unwrap();
    let q = <Model<'_>>::from_gguf(wide_q8.bytes()).unwrap();
    assert!(matches!(q.layers[0].w2, ruvllm_esp32::model::Matrix::Q8Block { cols: 192, .. }));
    assert!(matches!(q.token_embd, ruvllm_esp32::model::Matrix::Q8Block { cols: 64, .. }));
    let tokens = encode(&f, &heldout());
    let score = |m: &Model<'_>, k: Kernels| {
        let ctx = m.config.seq_len;
        let mut arena = vec![0f32; State::arena_len(m, ctx)];
        let mut state = State::new(m, &mut arena, ctx, k).unwrap();
        infer::score(m, &mut state, &tokens).unwrap().perplexity()
    };
    let (pf, pw) = (score(&f, Kernels::REFERENCE), score(&wf, Kernels::REFERENCE));
    let (pq, pq_scalar) = (score(&q, Kernels::detect()), score(&q, Kernels::REFERENCE));
    let (_, pi) = int_perplexity(&q, &tokens);
    eprintln!("held-out perplexity: fp32 {pf:.4}, padded fp32 {pw:.4}, Q8_0 {pq:.4} (scalar {pq_scalar:.4}), Q8_0 integer {pi:.4}");
    // Zero units add exact zeros: the same function (the scalar kernels sum in order).
    assert_eq!(pf, pw);
    for p in [pq, pq_scalar, pi] {
        assert!((p - pf).abs() / pf < 0.02, "Q8_0 perplexity {p} is not within 2% of fp32 {pf}");
    }
    assert!(greedy_int(&q, "Once upon a time", 64).starts_with(b"Once upon a time, there was"));
}
