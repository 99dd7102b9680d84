//! Single-node generation on the integer path, the reference the federation tests compare
//! with. Included by path from the engine's and the CLI's tests.
#![allow(dead_code)]

use ruvllm_esp32::infer::{self, IntState};
use ruvllm_esp32::model::Model;
use ruvllm_esp32::sample::Sampling;
use ruvllm_esp32::tokenizer;

/// `text` with BOS, as `gen` encodes a prompt.
pub fn encode(model: &Model<'_>, text: &str) -> Vec<u32> {
    let mut tokens = vec![0u32; text.len() + 3];
    let n = tokenizer::encode(&model.vocab, text.as_bytes(), true, false, &mut tokens).unwrap();
    tokens.truncate(n);
    tokens
}

/// What `gen --int` prints (without the final newline) for `prompt` over `steps` positions.
pub fn single(model: &Model<'_>, prompt: &[u32], steps: usize, temp_milli: u32, seed: u64) -> Vec<u8> {
    let mut arena = vec![0i32; IntState::arena_len(model, steps)];
    let mut state = IntState::new(model, &mut arena, steps).unwrap();
    let mut sampling = Sampling::new(temp_milli, seed);
    let mut out = Vec::new();
    infer::generate_int_sampled(model, &mut state, prompt, steps, &mut sampling, |b, _| {
        out.extend_from_slice(b)
    })
    .unwrap();
    out
}
