//! `bench`: prompt and generation speed for each precision, with the scalar reference kernels
//! measured in the same run as the baseline (this machine is shared and noisy, so ratios are
//! what carry over).

use crate::commands::{check_steps, encode_prompt};
use crate::image;
use crate::ModelArgs;
use anyhow::Result;
use ruvllm_cli::outln;
use ruvllm_esp32::convert::Quant;
use ruvllm_esp32::infer::{self, State};
use ruvllm_esp32::kernels::Kernels;
use ruvllm_esp32::model::Model;
use ruvllm_esp32::sample::{ProbIndex, Sampler};
use std::time::Instant;

struct Row {
    precision: &'static str,
    kernels: &'static str,
    prompt_tps: f64,
    gen_tps: f64,
    generated: usize,
}

/// Fastest of `repeat` greedy runs: (prompt tok/s, generation tok/s, generated tokens).
fn measure(
    model: &Model<'_>,
    tokens: &[u32],
    steps: usize,
    kernels: Kernels,
    repeat: usize,
) -> Result<(f64, f64, usize)> {
    let mut arena = vec![0f32; State::arena_len(model, steps)];
    let mut scratch = vec![ProbIndex::default(); model.config.vocab_size];
    let (mut best_prompt, mut best_gen, mut generated) = (f64::INFINITY, f64::INFINITY, 0);
    for _ in 0..repeat {
        let mut state = State::new(model, &mut arena, steps, kernels)?;
        let mut sampler = Sampler::new(0.0, 0.9, 0, 1);
        let start = Instant::now();
        let mut first = None;
        let stats =
            infer::generate(model, &mut state, &mut sampler, &mut scratch, tokens, steps, |_, forced| {
                if !forced && first.is_none() {
                    first = Some(Instant::now());
                }
            })?;
        let end = Instant::now();
        // The prompt phase ends when the first sampled token appears.
        let split = first.unwrap_or(end);
        best_prompt = best_prompt.min((split - start).as_secs_f64());
        best_gen = best_gen.min((end - split).as_secs_f64());
        generated = stats.generated;
    }
    let prompt_tps = tokens.len() as f64 / best_prompt.max(1e-9);
    let gen_tps = generated.saturating_sub(1) as f64 / best_gen.max(1e-9);
    Ok((prompt_tps, gen_tps, generated))
}

pub fn run(args: &ModelArgs, prompt: &str, steps: usize, repeat: usize, json: bool) -> Result<()> {
    let mut rows = Vec::new();
    for quant in [Quant::F32, Quant::Q8, Quant::Ternary, Quant::Binary] {
        let img = image::load(args.model.as_deref(), args.tokenizer.as_deref(), Some(quant))?;
        let model = img.model()?;
        check_steps(&model, steps)?;
        let tokens = encode_prompt(&model, prompt, steps)?;
        for kernels in [Kernels::REFERENCE, Kernels::detect()] {
            if rows.iter().any(|r: &Row| r.precision == image::quant_name(quant) && r.kernels == kernels.name)
            {
                continue;
            }
            let (prompt_tps, gen_tps, generated) = measure(&model, &tokens, steps, kernels, repeat)?;
            rows.push(Row {
                precision: image::quant_name(quant),
                kernels: kernels.name,
                prompt_tps,
                gen_tps,
                generated,
            });
        }
    }
    let baseline = rows.first().map_or(1.0, |r| r.gen_tps);
    if json {
        let items: Vec<serde_json::Value> = rows
            .iter()
            .map(|r| {
                serde_json::json!({
                    "precision": r.precision,
                    "kernels": r.kernels,
                    "prompt_tok_s": r.prompt_tps,
                    "gen_tok_s": r.gen_tps,
                    "generated": r.generated,
                    "speedup_vs_f32_scalar": r.gen_tps / baseline,
                })
            })
            .collect();
        let v = serde_json::json!({
            "model": args.name(),
            "prompt": prompt,
            "steps": steps,
            "repeat": repeat,
            "threads": 1,
            "sampling": "greedy",
            "baseline": "f32 scalar",
            "rows": items,
        });
        outln!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        outln!(
            "single thread, greedy, {steps} positions, best of {repeat}; baseline = f32 scalar in this run"
        );
        outln!(
            "{:<9} {:<8} {:>14} {:>14} {:>10}",
            "precision",
            "kernels",
            "prompt tok/s",
            "gen tok/s",
            "vs base"
        );
        for r in &rows {
            outln!(
                "{:<9} {:<8} {:>14.0} {:>14.0} {:>9.2}x",
                r.precision,
                r.kernels,
                r.prompt_tps,
                r.gen_tps,
                r.gen_tps / baseline
            );
        }
    }
    Ok(())
}
