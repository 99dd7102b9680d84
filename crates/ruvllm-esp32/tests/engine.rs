//! The engine on the real stories260K model: exact fp32 output, INT8 quality.

mod common;

use ruvllm_esp32::convert::Quant;
use ruvllm_esp32::infer::{self, State};
use ruvllm_esp32::kernels::Kernels;
use ruvllm_esp32::model::{Model, Precision};
use ruvllm_esp32::sample::{ProbIndex, Sampler};
use ruvllm_esp32::tokenizer;

/// Greedy generation exactly as `ruvllm-esp32 gen` prints it (prompt, continuation, newline).
fn greedy(model: &Model<'_>, prompt: &str, steps: usize, kernels: Kernels) -> Vec<u8> {
    let mut tokens = vec![0u32; prompt.len() + 3];
    let n = tokenizer::encode(&model.vocab, prompt.as_bytes(), true, false, &mut tokens).unwrap();
    let mut arena = vec![0f32; State::arena_len(model, steps)];
    let mut state = State::new(model, &mut arena, steps, kernels).unwrap();
    let mut sampler = Sampler::new(0.0, 0.9, 0, 1);
    let mut scratch = vec![ProbIndex::default(); model.config.vocab_size];
    let mut out = Vec::new();
    infer::generate(model, &mut state, &mut sampler, &mut scratch, &tokens[..n], steps, |b, _| {
        out.extend_from_slice(b)
    })
    .unwrap();
    out.push(b'\n');
    out
}

#[test]
fn fp32_greedy_matches_the_reference_byte_for_byte() {
    let Some(img) = common::stories260k_image(Quant::F32) else {
        return;
    };
    let model = <Model<'_>>::from_gguf(img.bytes()).unwrap();
    assert_eq!(model.precision, Precision::F32);
    assert!(model.checksum_verified);
    for case in ["p1", "p2"] {
        let Some(prompt) = common::read_shared(&format!("reference/stories260K_greedy_{case}.prompt")) else {
            return;
        };
        let want = common::read_shared(&format!("reference/stories260K_greedy_{case}.out")).unwrap();
        let prompt = String::from_utf8(prompt).unwrap();
        for kernels in [Kernels::REFERENCE, Kernels::detect()] {
            let got = greedy(&model, &prompt, 256, kernels);
            assert_eq!(
                String::from_utf8_lossy(&got),
                String::from_utf8_lossy(&want),
                "prompt {prompt:?}, {} kernels",
                kernels.name
            );
        }
    }
}

fn perplexity(model: &Model<'_>, text: &[u8]) -> (usize, f64) {
    perplexity_with(model, text, Kernels::detect())
}

fn perplexity_with(model: &Model<'_>, text: &[u8], kernels: Kernels) -> (usize, f64) {
    let mut tokens = vec![0u32; text.len() + 3];
    let n = tokenizer::encode(&model.vocab, text, true, false, &mut tokens).unwrap();
    let ctx = model.config.seq_len;
    let mut arena = vec![0f32; State::arena_len(model, ctx)];
    let mut state = State::new(model, &mut arena, ctx, kernels).unwrap();
    let s = infer::score(model, &mut state, &tokens[..n]).unwrap();
    (s.tokens, s.perplexity())
}

/// The held-out text is testdata/heldout.txt: short stories written for this project, so the
/// model cannot have seen them in training.
#[test]
fn int8_perplexity_is_within_one_percent_of_fp32() {
    let Some(f32_img) = common::stories260k_image(Quant::F32) else {
        return;
    };
    let q8_img = common::stories260k_image(Quant::Q8).unwrap();
    let text = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/../../testdata/heldout.txt")).unwrap();
    let f = <Model<'_>>::from_gguf(f32_img.bytes()).unwrap();
    let q = <Model<'_>>::from_gguf(q8_img.bytes()).unwrap();
    assert_eq!(q.precision, Precision::Q8);
    let (nf, pf) = perplexity(&f, &text);
    let (nq, pq) = perplexity(&q, &text);
    assert_eq!(nf, nq);
    let rel = (pq - pf).abs() / pf;
    eprintln!("held-out perplexity over {nf} tokens: f32 {pf:.4}, q8 {pq:.4} ({:.3}%)", rel * 100.0);
    assert!(nf > 400, "the held-out text should be several windows' worth: {nf}");
    assert!(pf < 20.0, "fp32 perplexity {pf} is not that of a working model");
    assert!(rel < 0.01, "q8 perplexity {pq} is not within 1% of fp32 {pf}");
}

/// The fast f32 kernels compute the reference's function up to f32 summation order, so along
/// the same token sequence their logits stay within rounding noise. (Greedy text may still part
/// ways at a near-tie, hence the teacher forcing.)
#[test]
fn fast_f32_kernels_follow_the_reference_on_real_weights() {
    let Some(img) = common::stories260k_image(Quant::F32) else { return };
    let model = <Model<'_>>::from_gguf(img.bytes()).unwrap();
    let text = greedy(&model, "Once upon a time", 200, Kernels::REFERENCE);
    let mut tokens = vec![0u32; text.len() + 3];
    let n = tokenizer::encode(&model.vocab, &text, true, false, &mut tokens).unwrap();
    let steps = n.min(200);
    let len = State::arena_len(&model, steps);
    let (mut ra, mut fa) = (vec![0f32; len], vec![0f32; len]);
    let mut reference = State::new(&model, &mut ra, steps, Kernels::REFERENCE).unwrap();
    let mut fast = State::new(&model, &mut fa, steps, Kernels::detect()).unwrap();
    let mut worst = 0.0f32;
    for (pos, &t) in tokens[..steps].iter().enumerate() {
        let a = reference.forward(&model, t, pos).unwrap().to_vec();
        let b = fast.forward(&model, t, pos).unwrap();
        for (x, y) in a.iter().zip(b.iter()) {
            worst = worst.max((x - y).abs());
        }
    }
    eprintln!("largest f32 logit difference over {steps} positions: {worst}");
    assert!(worst < 1e-3, "logits differ by {worst}");
}

/// On the INT8 path a last-bit difference can round an activation to the neighbouring int8
/// value, and such flips compound, so logits are not compared one by one: both kernel sets must
/// model held-out text equally well.
#[test]
fn fast_int8_kernels_score_like_the_reference() {
    let Some(img) = common::stories260k_image(Quant::Q8) else { return };
    let model = <Model<'_>>::from_gguf(img.bytes()).unwrap();
    let text = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/../../testdata/heldout.txt")).unwrap();
    let (_, reference) = perplexity_with(&model, &text, Kernels::REFERENCE);
    let (_, fast) = perplexity_with(&model, &text, Kernels::detect());
    eprintln!("q8 held-out perplexity: reference kernels {reference:.4}, fast kernels {fast:.4}");
    assert!((reference - fast).abs() / reference < 0.002, "{reference} vs {fast}");
    let story = greedy(&model, "Once upon a time", 128, Kernels::detect());
    eprintln!("q8 greedy: {}", String::from_utf8_lossy(&story));
    assert!(story.starts_with(b"Once upon a time, there was"));
}

#[test]
fn the_context_is_enforced() {
    let Some(img) = common::stories260k_image(Quant::F32) else {
        return;
    };
    let model = <Model<'_>>::from_gguf(img.bytes()).unwrap();
    let mut arena = vec![0f32; State::arena_len(&model, 8)];
    let mut state = State::new(&model, &mut arena, 8, Kernels::REFERENCE).unwrap();
    assert!(state.forward(&model, 1, 7).is_ok());
    assert!(state.forward(&model, 1, 8).is_err());
    assert!(state.forward(&model, 512, 0).is_err(), "token outside the vocabulary");
    let mut small = vec![0f32; 10];
    assert!(State::new(&model, &mut small, 8, Kernels::REFERENCE).is_err());
    let mut big = vec![0f32; State::arena_len(&model, 512)];
    assert!(State::new(&model, &mut big, 513, Kernels::REFERENCE).is_err());
}

#[test]
fn a_corrupt_image_is_refused() {
    let Some(mut img) = common::stories260k_image(Quant::Q8) else {
        return;
    };
    let n = img.bytes().len();
    img.bytes_mut()[n - 10] ^= 0x01; // one bit inside the last tensor
    let err = <Model<'_>>::from_gguf(img.bytes()).unwrap_err();
    assert!(matches!(err, ruvllm_esp32::Error::Checksum { .. }), "{err}");
}
