//! `lora train`: a MicroLoRA adapter learnt on the host with the library's own code (the same
//! steps the console's `lora train` runs on a chip), and the adapter file `gen --lora` reads.

use crate::commands::load_int;
use crate::ModelArgs;
use anyhow::{bail, Context, Result};
use clap::Subcommand;
use ruvllm_cli::input;
use ruvllm_esp32::infer::IntState;
use ruvllm_esp32::lora::{
    max_file, model_id, training_bytes, Dims, IntLora, LoraConfig, LoraTrainer, Sites, Target, HOST_PARAMS,
};
use ruvllm_esp32::tokenizer;
use std::path::{Path, PathBuf};

#[derive(Subcommand)]
pub enum LoraCmd {
    /// Train an adapter set on a text's lines (each line a phrase: one step per line per
    /// epoch); prints the mean loss of the lines before and after
    #[command(
        after_help = "Example:\n  ruvllm-esp32 lora train --text testdata/lora/train.txt -o adapter.bin\n  ruvllm-esp32 lora train --text testdata/lora/train.txt --layers all --targets wq,wv,w2 -o adapter.bin\n  ruvllm-esp32 gen --lora adapter.bin --prompt \"My dog\""
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
        /// Layers that get adapters: `all`, `last`, or numbers from 0 (`0,2,4`)
        #[arg(long, default_value = "last")]
        layers: String,
        /// Projections of each of those layers that get one: wq, wk, wv, wo, w1, w2, w3
        #[arg(long, default_value = "w2", value_delimiter = ',')]
        targets: Vec<String>,
        /// Memory for training, in bytes (the trainer and the activations of the longest line):
        /// a set that needs more is refused before training starts
        #[arg(long, default_value_t = 1 << 20)]
        budget: usize,
        /// Passes over the lines, 1 to 1000
        #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=1000))]
        epochs: u16,
        #[arg(short = 'o', long)]
        output: PathBuf,
    },
}

pub fn run(cmd: LoraCmd) -> Result<()> {
    match cmd {
        LoraCmd::Train { model, text, rank, layers, targets, budget, epochs, output } => {
            train(&model, &text, (rank as usize, &layers, &targets, budget), epochs as usize, &output)
        }
    }
}

/// The adapter set in `path` for the model image `image` (refused when damaged or of another
/// model).
pub fn read_adapter(
    path: &Path,
    image: &[u8],
    model: &ruvllm_esp32::model::Model<'_>,
) -> Result<IntLora<HOST_PARAMS>> {
    let bytes = input::read_input(path, "adapter file", max_file(HOST_PARAMS) as u64)?;
    IntLora::read(&bytes, model_id(image), &model.config).with_context(|| path.display().to_string())
}

/// The adapter set `--layers` and `--targets` name, checked against the model and the budget.
fn sites(c: &ruvllm_esp32::model::Config, rank: usize, layers: &str, targets: &[String]) -> Result<Sites> {
    let last = c.n_layers.saturating_sub(1);
    let chosen: Vec<usize> = match layers.trim() {
        "all" => (0..c.n_layers).collect(),
        "last" => vec![last],
        list => list
            .split(',')
            .map(|l| match l.trim().parse::<usize>() {
                Ok(n) if n <= last => Ok(n),
                _ => bail!("--layers: layer {:?} does not exist: the model has layers 0 to {last} (or write all, last)", l.trim()),
            })
            .collect::<Result<_>>()?,
    };
    let mut ts = Vec::new();
    for t in targets {
        let Some(p) = Target::parse(t.trim()) else {
            bail!(
                "--targets: projection {:?} does not exist: a layer has wq, wk, wv, wo, w1, w2, w3",
                t.trim()
            );
        };
        ts.push(p);
    }
    let sites = Sites::new(c, &chosen, &ts)?;
    let params = sites.params(&Dims::of(c), rank);
    if params > HOST_PARAMS || sites.count() > ruvllm_esp32::lora::MAX_SITES {
        bail!(
            "--layers {layers} --targets {} at --rank {rank}: {params} parameters on {} projections, above the memory budget of {HOST_PARAMS} parameters on {} projections (fewer layers or projections, or --rank 1)",
            targets.join(","),
            sites.count(),
            ruvllm_esp32::lora::MAX_SITES
        );
    }
    Ok(sites)
}

/// `--rank`, `--layers`, `--targets`, `--budget`.
type SetArgs<'a> = (usize, &'a str, &'a [String], usize);

fn train(args: &ModelArgs, text: &Path, set: SetArgs<'_>, epochs: usize, output: &Path) -> Result<()> {
    let img = load_int(args, None)?;
    let model = img.model()?;
    let (rank, layers, targets, budget) = set;
    let sites = sites(&model.config, rank, layers, targets)?;
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
    // The whole memory is set up here: no step allocates.
    let longest = phrases.iter().map(Vec::len).max().unwrap_or(0);
    let need = training_bytes::<HOST_PARAMS>(&model.config, sites, longest);
    if need > budget {
        bail!(
            "--layers {layers} --targets {} at --rank {rank} needs {need} bytes to train on lines of up to {longest} tokens, above the memory budget of {budget} bytes (raise --budget, or choose fewer layers or projections, or --rank 1)",
            targets.join(",")
        );
    }
    let mut t: Box<LoraTrainer<HOST_PARAMS>> = Box::new(LoraTrainer::EMPTY);
    t.reset(&model.config, LoraConfig { rank, ..LoraConfig::default() }, sites)?;
    let mut work = vec![0f32; t.work_len(&model, longest)];
    let mean = |t: &mut LoraTrainer<HOST_PARAMS>, state: &mut IntState<'_>| -> Result<f64> {
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
            t.step_with(&model, &mut state, p, &mut work)?;
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
    let mut buf = vec![0u8; max_file(HOST_PARAMS)];
    let n = t.adapter().write(model_id(img.bytes()), &mut buf)?;
    ruvllm_train::run::checkpoint::write_atomic(output, &buf[..n])?;
    let names: Vec<String> = sites.iter().map(|(l, p)| format!("{l}.{}", p.name())).collect();
    eprintln!(
        "wrote {} ({n} bytes: rank {rank} on {}; {} bytes of int8 weights and scales; training RAM {} bytes + {} bytes of activations; for this model only)",
        output.display(),
        names.join(","),
        t.adapter().stored_bytes(),
        t.ram_bytes(),
        4 * work.len()
    );
    Ok(())
}
