//! Training throughput for the stories260K shape (dim 64, hidden 172, 5 layers, 8 heads, 4 KV
//! heads, vocab 512) at seq 256, batch 32: forward + backward + AdamW, in tokens per second.
//!
//! `cargo bench -p ruvllm-train --bench train_step [-- STEPS [FORMAT]]`; FORMAT is f32 (default),
//! q8, ternary or binary; `TRAIN_STEP_KERNELS=generic|avx2|avx512` picks a kernel set and
//! `TRAIN_STEP_THREADS=1,2` the thread counts.

use ruvllm_esp32::model::Config;
use ruvllm_esp32::quant::WeightFormat;
use ruvllm_train::model::{AdamW, Params, Trainer};
use std::time::Instant;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with("--")).collect();
    let steps: usize = args.first().and_then(|s| s.parse().ok()).unwrap_or(5);
    let format = match args.get(1).map(String::as_str) {
        Some("q8") => WeightFormat::Q8,
        Some("ternary") => WeightFormat::Ternary,
        Some("binary") => WeightFormat::Binary,
        _ => WeightFormat::F32,
    };
    let c = Config {
        dim: 64,
        hidden_dim: 172,
        n_layers: 5,
        n_heads: 8,
        n_kv_heads: 4,
        head_dim: 0,
        vocab_size: 512,
        seq_len: 256,
        shared_classifier: true,
        norm_eps: 1e-5,
        rope_theta: 10000.0,
    };
    let (batch, seq) = (32, 256);
    let mut seed = 0x2545_F491_4F6C_DD1Du64;
    let tokens: Vec<u32> = (0..batch * (seq + 1))
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed % c.vocab_size as u64) as u32
        })
        .collect();
    println!(
        "train_step: 260K shape, seq {seq}, batch {batch}, {}, {steps} steps after one warm-up",
        format.name()
    );
    let best = Trainer::new(&c, 1, 1, 1, format).kernels().to_string();
    let kernels = std::env::var("TRAIN_STEP_KERNELS").unwrap_or_else(|_| best.clone());
    let thread_counts: Vec<usize> = std::env::var("TRAIN_STEP_THREADS")
        .unwrap_or_else(|_| "1,2".into())
        .split(',')
        .filter_map(|t| t.trim().parse().ok())
        .collect();
    let mut runs: Vec<(usize, String)> = thread_counts.iter().map(|t| (*t, kernels.clone())).collect();
    // For the ratios, one thread each: the unfused baseline (attention as per-head sgemm, the
    // rest as above) and the portable kernels (plain loops vectorized for SSE2 only).
    if std::env::var("TRAIN_STEP_KERNELS").is_err() {
        runs.push((1, "unfused".into()));
        if kernels != "generic" {
            runs.push((1, "generic".into()));
        }
    }
    let mut first = None;
    for (threads, kernels) in runs {
        let mut p = Params::init(&c, 1);
        let mut tr = Trainer::new(&c, batch, seq, threads, format);
        assert!(tr.set_kernels(&kernels), "kernel set {kernels} not available");
        let mut opt = AdamW::new(p.len(), 0.1);
        let mut g = vec![0.0f32; p.len()];
        let mut loss = tr.forward_backward(&p, &tokens, &mut g);
        opt.step(&mut p, &g, 1e-3);
        tr.reset_profile();
        let t0 = Instant::now();
        let mut fb = 0.0;
        for _ in 0..steps {
            let s = Instant::now();
            loss = tr.forward_backward(&p, &tokens, &mut g);
            fb += s.elapsed().as_secs_f64();
            opt.step(&mut p, &g, 1e-3);
        }
        let secs = t0.elapsed().as_secs_f64();
        let rate = (steps * batch * seq) as f64 / secs;
        let base = *first.get_or_insert(rate);
        println!(
            "{kernels} kernels, threads {threads}: {rate:8.0} tokens/s ({:.2}x) ({:.1} ms/step: forward+backward {:.1} ms, AdamW {:.2} ms), loss {loss:.4}",
            rate / base,
            secs * 1e3 / steps as f64,
            fb * 1e3 / steps as f64,
            (secs - fb) * 1e3 / steps as f64
        );
        let prof = tr.profile();
        let busy: f64 = prof.iter().map(|(_, s)| s).sum();
        for (name, s) in prof {
            println!("    {:5.1}%  {:7.1} ms/step  {name}", 100.0 * s / busy, s * 1e3 / steps as f64);
        }
    }
}
