//! What each attention pattern costs against the context length: the attention multiply-adds
//! of a token at position c - 1 (exact: the positions the pattern lists, times
//! `n_layers x n_heads x head_size x 2`) and the time of a whole token there (mean over
//! positions c - 16 .. c), float or integer path, all patterns alternating in each of 21
//! rounds, the fastest round (a shared machine's load only ever adds time):
//!   cargo run --release -p ruvllm-esp32 --features std --example attention_cost -- MODEL.gguf [--int]
use ruvllm_esp32::infer::{IntState, Pattern, State};
use ruvllm_esp32::kernels::Kernels;
use ruvllm_esp32::model::Model;
use std::time::Instant;

const PATTERNS: [&str; 6] =
    ["full", "window:32", "strided:8", "dilated:2:32", "bigbird:1:16:8", "bigbird:2:32:16"];
const ROUNDS: usize = 21;
const TAIL: usize = 16;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let Some(path) = args.get(1) else {
        eprintln!("usage: attention_cost MODEL.gguf [--int]");
        std::process::exit(2);
    };
    let int = args.iter().any(|a| a == "--int");
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    // Tensors are read in place: an 8-byte aligned copy.
    let mut words = vec![0u64; bytes.len().div_ceil(8)];
    bytemuck::cast_slice_mut::<u64, u8>(&mut words)[..bytes.len()].copy_from_slice(&bytes);
    let image = &bytemuck::cast_slice::<u64, u8>(&words)[..bytes.len()];
    let model: Model = Model::from_gguf(image).unwrap_or_else(|e| panic!("{path}: {e}"));
    let c = &model.config;
    let per_position = c.n_layers * c.n_heads * c.head_size() * 2;
    let vocab = c.vocab_size;
    let token = |i: usize| (i * 7 % (vocab - 3)) as u32 + 3;
    let path_name = if int { "integer".to_string() } else { model.precision.name().to_string() };
    println!("| model | path | context | pattern | attention multiply-adds at the last position | us/token there |");
    println!("| --- | --- | --- | --- | --- | --- |");
    let mut ctx = 64;
    while ctx <= c.seq_len {
        let patterns: Vec<Pattern> = PATTERNS.iter().map(|p| Pattern::parse(p, ctx).unwrap()).collect();
        let mut times = vec![Vec::new(); patterns.len()];
        for _ in 0..ROUNDS {
            for (p, t) in patterns.iter().zip(times.iter_mut()) {
                t.push(tail_time(&model, *p, ctx, int, &token));
            }
        }
        for (p, t) in patterns.iter().zip(times) {
            let fastest = t.iter().copied().fold(f64::INFINITY, f64::min);
            let mut idx = vec![0u32; ctx];
            let ops = p.select(ctx - 1, &mut idx) * per_position;
            println!("| {path} | {path_name} | {ctx} | {p} | {ops} | {:.1} |", fastest * 1e6);
        }
        ctx *= 2;
    }
}

/// Mean seconds per token over the last [`TAIL`] positions of a `ctx`-position run.
fn tail_time(model: &Model, p: Pattern, ctx: usize, int: bool, token: &dyn Fn(usize) -> u32) -> f64 {
    let mut total = 0.0;
    if int {
        let mut arena = vec![0i32; IntState::sparse_arena_len(model, ctx, p)];
        let mut s = IntState::sparse(model, &mut arena, ctx, p).unwrap();
        for pos in 0..ctx {
            let t = Instant::now();
            std::hint::black_box(s.forward(model, token(pos), pos).unwrap());
            if pos >= ctx - TAIL {
                total += t.elapsed().as_secs_f64();
            }
        }
    } else {
        let mut arena = vec![0f32; State::sparse_arena_len(model, ctx, p)];
        let mut s = State::sparse(model, &mut arena, ctx, Kernels::detect(), p).unwrap();
        for pos in 0..ctx {
            let t = Instant::now();
            std::hint::black_box(s.forward(model, token(pos), pos).unwrap());
            if pos >= ctx - TAIL {
                total += t.elapsed().as_secs_f64();
            }
        }
    }
    total / TAIL as f64
}
