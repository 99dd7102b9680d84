//! `lora train`: a MicroLoRA adapter learnt on the host with the library's own code (the same
//! steps the console's `lora train` runs on a chip), and the adapter file `gen --lora` reads.

use crate::commands::load_int;
use crate::ModelArgs;
use anyhow::{bail, Context, Result};
use clap::Subcommand;
use ruvllm_cli::input;
use ruvllm_esp32::infer::IntState;
use ruvllm_esp32::lora::{model_id, IntLora, LoraConfig, LoraTrainer, MAX_FILE};
use ruvllm_esp32::tokenizer;
use std::path::{Path, PathBuf};

#[derive(Subcommand)]
pub enum LoraCmd {
    /// Train an adapter on a text's lines (each line a phrase: one step per line per epoch);
    /// prints the mean loss of the lines before and after
    #[command(
        after_help = "Example:\n  ruvllm-esp32 lora train --text testdata/lora/train.txt -o adapter.bin\n  ruvllm-esp32 gen --lora adapter.bin --prompt \"My dog\""
    )]
    Train {
        #[command(flatten)]
        model: ModelArgs,
        /// UTF-8 text, one phrase a line
        #[arg(long)]
        text: PathBuf,
        /// Adapter rank, 1 or 2
        #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u8).range(1..=2))]
        rank: u8,
        /// Passes over the lines, 1 to 1000
        #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=1000))]
        epochs: u16,
        #[arg(short = 'o', long)]
        output: PathBuf,
    },
}

pub fn run(cmd: LoraCmd) -> Result<()> {
    match cmd {
        LoraCmd::Train { model, text, rank, epochs, output } => {
            train(&model, &text, rank as usize, epochs as usize, &output)
        }
    }
}

/// The adapter in `path` for the model image `image` (refused when damaged or of another model).
pub fn read_adapter(path: &Path, image: &[u8], model: &ruvllm_esp32::model::Model<'_>) -> Result<IntLora> {
    let bytes = input::read_input(path, "adapter file", MAX_FILE as u64)?;
    IntLora::read(&bytes, model_id(image), &model.config).with_context(|| path.display().to_string())
}

fn train(args: &ModelArgs, text: &Path, rank: usize, epochs: usize, output: &Path) -> Result<()> {
    let img = load_int(args, None)?;
    let model = img.model()?;
    let bytes = input::read_input(text, "text file", input::MAX_TEXT_BYTES)?;
    let text_str =
        std::str::from_utf8(&bytes).map_err(|_| anyhow::anyhow!("{}: not UTF-8 text", text.display()))?;
    let ctx = model.config.seq_len;
    let mut phrases = Vec::new();
    for (i, line) in text_str.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let mut out = vec![0u32; line.len() + 3];
        let mut work = vec![0u32; tokenizer::WORK_PER_TOKEN * (line.len() + 3)];
        let n = tokenizer::encode_with(&model.vocab, line.as_bytes(), true, false, &mut out, &mut work)?;
        if n > ctx {
            bail!("{} line {}: {n} tokens, longer than the model's context of {ctx}", text.display(), i + 1);
        }
        out.truncate(n);
        phrases.push(out);
    }
    if phrases.is_empty() {
        bail!("{}: no text to train on (one phrase a line)", text.display());
    }
    let mut arena = vec![0i32; IntState::arena_len(&model, ctx)];
    let mut state = IntState::new(&model, &mut arena, ctx)?;
    let mut t = LoraTrainer::new(&model, LoraConfig { rank, ..LoraConfig::default() })?;
    let mean = |t: &mut LoraTrainer, state: &mut IntState<'_>| -> Result<f64> {
        let (mut sum, mut n) = (0.0f64, 0usize);
        for p in &phrases {
            sum += t.loss(&model, state, p)? as f64 * (p.len() - 1) as f64;
            n += p.len() - 1;
        }
        Ok(sum / n.max(1) as f64)
    };
    let before = mean(&mut t, &mut state)?;
    for _ in 0..epochs {
        for p in &phrases {
            t.step(&model, &mut state, p)?;
        }
    }
    let after = mean(&mut t, &mut state)?;
    eprintln!(
        "{} phrases, {epochs} epochs, {} steps: loss {before:.4} -> {after:.4} nats/token (perplexity {:.2} -> {:.2})",
        phrases.len(),
        t.steps(),
        before.exp(),
        after.exp()
    );
    let mut buf = vec![0u8; MAX_FILE];
    let n = t.adapter().write(model_id(img.bytes()), &mut buf)?;
    ruvllm_train::run::checkpoint::write_atomic(output, &buf[..n])?;
    eprintln!("wrote {} ({n} bytes: rank {rank}, for this model only)", output.display());
    Ok(())
}
