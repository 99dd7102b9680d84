//! What one batched pass over n positions costs against n single-position forwards, the
//! figure that decides whether speculative decoding pays on a machine:
//!   cargo run --release -p ruvllm-esp32 --features std --example batch_cost -- MODEL.gguf
use ruvllm_esp32::infer::{Batch, State};
use ruvllm_esp32::kernels::Kernels;
use ruvllm_esp32::model::Model;
use std::time::Instant;

fn main() {
    let Some(path) = std::env::args().nth(1) else {
        eprintln!("usage: batch_cost MODEL.gguf");
        std::process::exit(2);
    };
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    // Tensors are read in place: an 8-byte aligned copy.
    let mut words = vec![0u64; bytes.len().div_ceil(8)];
    bytemuck::cast_slice_mut::<u64, u8>(&mut words)[..bytes.len()].copy_from_slice(&bytes);
    let image = &bytemuck::cast_slice::<u64, u8>(&words)[..bytes.len()];
    let model: Model = Model::from_gguf(image).unwrap_or_else(|e| panic!("{path}: {e}"));
    let (seq, vocab) = (model.config.seq_len.min(256), model.config.vocab_size as u32);
    let token = |i: usize| (i * 7 % (vocab as usize - 3)) as u32 + 3;
    let mut arena = vec![0f32; State::arena_len(&model, seq)];
    let mut state = State::new(&model, &mut arena, seq, Kernels::detect()).unwrap();
    // Whole sequences, single positions and batches alternating, medians of 15 rounds: a
    // shared machine's load falls on both alike.
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    for n in [1usize, 2, 3, 5, 9] {
        let mut ba = vec![0f32; Batch::arena_len(&model, n)];
        let mut batch = Batch::new(&model, &mut ba, n).unwrap();
        let tokens: Vec<u32> = (0..n).map(token).collect();
        let passes = seq / n;
        let (mut one, mut many) = (Vec::new(), Vec::new());
        for _ in 0..15 {
            let t = Instant::now();
            for p in 0..passes * n {
                state.forward(&model, token(p), p).unwrap();
            }
            one.push(t.elapsed().as_secs_f64() / (passes * n) as f64);
            let t = Instant::now();
            for i in 0..passes {
                state.forward_batch(&model, &mut batch, &tokens, i * n, true).unwrap();
            }
            many.push(t.elapsed().as_secs_f64() / passes as f64);
        }
        let (one, many) = (median(one), median(many));
        println!(
            "{path}: batch of {n}: {:.1} us a pass, one position {:.1} us: a pass = {:.2} single positions",
            many * 1e6,
            one * 1e6,
            many / one
        );
    }
}
