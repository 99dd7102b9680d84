//! The training loop: tokenizer, data, AdamW with warm-up and cosine decay, validation,
//! checkpoints and resume.
//!
//! Batches depend only on (seed, step) and the optimizer state is checkpointed whole, so a run
//! resumed from a checkpoint continues exactly as if it had never stopped (tested).

pub mod checkpoint;
pub mod data;
pub mod plot;

use std::path::{Path, PathBuf};
use std::time::Instant;

use ruvllm_esp32::convert::{HostModel, HostVocab};
use ruvllm_esp32::model::Config;
use ruvllm_esp32::quant::WeightFormat;

use crate::model::{grad_norm, AdamW, Params, Trainer};
use crate::rng::Rng;
pub use checkpoint::{Checkpoint, LossPoint, Shape};
pub use data::Dataset;

#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// The message holds the cause (it is not also a `source`, which would print it twice).
    #[error("{path}: {error}")]
    Io { path: PathBuf, error: std::io::Error },
    #[error("corpus: {0}")]
    Corpus(String),
    #[error(
        "corpus too small for preset {preset}: {have} training tokens after tokenization, it needs at least {need} (batch {batch} x context {seq}, and {val_need} held out)"
    )]
    CorpusTooSmall { preset: String, have: usize, need: usize, batch: usize, seq: usize, val_need: usize },
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    #[error("checkpoint {path}: {why}")]
    Checkpoint { path: PathBuf, why: String },
    #[error("cannot resume from {path}: {what} differs (checkpoint: {checkpoint}, this run: {requested})")]
    ResumeMismatch { path: PathBuf, what: &'static str, checkpoint: String, requested: String },
    #[error("unknown preset {0:?} (nano, tiny, 260k, default, 1m, 3m)")]
    UnknownPreset(String),
    #[error("loss curve: {0}")]
    Plot(String),
    #[error("{0}")]
    Model(String),
    #[error("interrupted after step {step}{}", checkpoint.as_ref().map_or(String::new(), |p| format!("; continue with --resume {}", p.display())))]
    Interrupted { step: u64, checkpoint: Option<PathBuf> },
}

impl TrainError {
    pub fn io(path: &Path, source: std::io::Error) -> TrainError {
        TrainError::Io { path: path.to_path_buf(), error: source }
    }
}

/// A model size with the batch and learning rate that suit it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Preset {
    pub name: &'static str,
    pub dim: usize,
    pub hidden_dim: usize,
    pub n_layers: usize,
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub vocab_size: usize,
    pub seq_len: usize,
    pub batch: usize,
    pub lr: f32,
}

pub const PRESETS: [Preset; 6] = [
    // ~16K parameters: the published resource table's "model (INT8) ~16 KB flash, ~20 KB RAM".
    // Half the parameters are the 512 x 16 embedding (shared with the classifier): the
    // tokenizer's 259 reserved pieces (byte fallback) make a much smaller vocabulary pointless,
    // and the built-in model's 512 pieces let it share that model's tokenizer. One KV head of
    // 8 keeps the int8 KV cache at 8 KiB for 256 positions.
    Preset {
        name: "nano",
        dim: 16,
        hidden_dim: 64,
        n_layers: 2,
        n_heads: 2,
        n_kv_heads: 1,
        vocab_size: 512,
        seq_len: 256,
        batch: 32,
        lr: 4e-3,
    },
    // ~100K parameters: the draft model for speculative decoding, and quick experiments.
    Preset {
        name: "tiny",
        dim: 48,
        hidden_dim: 128,
        n_layers: 3,
        n_heads: 6,
        n_kv_heads: 2,
        vocab_size: 512,
        seq_len: 256,
        batch: 32,
        lr: 2e-3,
    },
    // The shape of llama2.c's stories260K.
    Preset {
        name: "260k",
        dim: 64,
        hidden_dim: 172,
        n_layers: 5,
        n_heads: 8,
        n_kv_heads: 4,
        vocab_size: 512,
        seq_len: 256,
        batch: 32,
        lr: 2e-3,
    },
    // The built-in model: the 260k shape with a narrower FFN, so the q8 image (weights, scales,
    // tokenizer, RoPE table) stays under 300 KB.
    Preset {
        name: "default",
        dim: 64,
        hidden_dim: 144,
        n_layers: 5,
        n_heads: 8,
        n_kv_heads: 4,
        vocab_size: 512,
        seq_len: 256,
        batch: 32,
        lr: 2e-3,
    },
    Preset {
        name: "1m",
        dim: 128,
        hidden_dim: 344,
        n_layers: 5,
        n_heads: 8,
        n_kv_heads: 4,
        vocab_size: 512,
        seq_len: 256,
        batch: 32,
        lr: 1e-3,
    },
    // Too big for one ESP32-C3 (a q8 image over its 3 MiB of flash for models): the 1m
    // preset's width, 16 layers deep, for pipelines over several chips. A shorter context and
    // batch keep a step cheap enough to train on a laptop.
    Preset {
        name: "3m",
        dim: 128,
        hidden_dim: 344,
        n_layers: 16,
        n_heads: 8,
        n_kv_heads: 4,
        vocab_size: 512,
        seq_len: 128,
        batch: 16,
        lr: 1e-3,
    },
];

pub fn preset(name: &str) -> Result<Preset, TrainError> {
    PRESETS
        .iter()
        .find(|p| p.name == name)
        .copied()
        .ok_or_else(|| TrainError::UnknownPreset(name.to_string()))
}

impl Preset {
    pub fn config(&self, vocab_size: usize) -> Config {
        Config {
            dim: self.dim,
            hidden_dim: self.hidden_dim,
            n_layers: self.n_layers,
            n_heads: self.n_heads,
            n_kv_heads: self.n_kv_heads,
            head_dim: 0,
            vocab_size,
            seq_len: self.seq_len,
            shared_classifier: true,
            norm_eps: 1e-5,
            rope_theta: 10000.0,
        }
    }

    fn shape(&self, vocab_size: usize) -> Shape {
        Shape {
            dim: self.dim as u32,
            hidden_dim: self.hidden_dim as u32,
            n_layers: self.n_layers as u32,
            n_heads: self.n_heads as u32,
            n_kv_heads: self.n_kv_heads as u32,
            vocab_size: vocab_size as u32,
            seq_len: self.seq_len as u32,
        }
    }
}

/// What a run is asked to do.
#[derive(Clone, Debug)]
pub struct TrainOptions {
    pub preset: Preset,
    /// Total optimizer steps (a resumed run continues up to this).
    pub steps: u64,
    pub format: WeightFormat,
    pub seed: u64,
    pub threads: usize,
    /// Validate every this many steps (and at the end).
    pub eval_every: u64,
    /// Validation windows of `seq_len + 1` tokens per evaluation, at most.
    pub val_windows: usize,
    /// Write a checkpoint here every `checkpoint_every` steps and at the end.
    pub checkpoint: Option<PathBuf>,
    pub checkpoint_every: u64,
    /// Use this tokenizer instead of training one (a draft model shares its target's).
    pub vocab: Option<HostVocab>,
    /// Fine-tune this model instead of starting from random weights ([`TrainOptions::fine_tune`]).
    pub init: Option<HostModel>,
}

impl TrainOptions {
    pub fn new(preset: Preset, steps: u64, format: WeightFormat) -> TrainOptions {
        TrainOptions {
            preset,
            steps,
            format,
            seed: 1,
            threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
            eval_every: 100,
            val_windows: 64,
            checkpoint: None,
            checkpoint_every: 200,
            vocab: None,
            init: None,
        }
    }

    /// Fine-tunes `model` (for example a pruned one) instead of training from random weights:
    /// its shape, context and tokenizer replace the preset's, the preset keeps its batch, and
    /// the learning rate is the preset's times [`FINE_TUNE_LR`]. Weights of the blocks' matrices
    /// that are exactly zero in `model` stay zero (a pruned model stays as sparse).
    pub fn fine_tune(&mut self, model: HostModel) -> Result<(), TrainError> {
        let c = model.config;
        if !c.shared_classifier || model.output.is_some() {
            return Err(TrainError::Model(
                "fine-tuning needs a classifier shared with the token embedding".into(),
            ));
        }
        let vocab =
            model.vocab.clone().ok_or_else(|| TrainError::Model("the model carries no tokenizer".into()))?;
        let p = &mut self.preset;
        (p.dim, p.hidden_dim, p.n_layers, p.n_heads, p.n_kv_heads) =
            (c.dim, c.hidden_dim, c.n_layers, c.n_heads, c.n_kv_heads);
        (p.vocab_size, p.seq_len, p.lr) = (c.vocab_size, c.seq_len, p.lr * FINE_TUNE_LR);
        self.vocab = Some(vocab);
        self.init = Some(model);
        Ok(())
    }
}

/// The share of the preset's learning rate a fine-tuning run uses.
pub const FINE_TUNE_LR: f32 = 0.25;

/// Hooks for a progress display.
pub trait Progress {
    fn begin(&mut self, _total_steps: u64, _done: u64, _info: &str) {}
    /// After each step; returning false stops the run there (Ctrl-C) after a checkpoint of
    /// that step, so a resume loses nothing.
    fn step(&mut self, _step: u64, _loss: f32, _tokens_per_s: f64) -> bool {
        true
    }
    fn eval(&mut self, _point: &LossPoint) {}
    fn end(&mut self) {}
}

/// No display (tests).
pub struct Quiet;
impl Progress for Quiet {}

/// A finished run.
pub struct Outcome {
    /// The trained model with its tokenizer.
    pub model: HostModel,
    pub history: Vec<LossPoint>,
    /// Validation cross-entropy of a unigram model fitted on the training tokens.
    pub unigram_loss: f64,
    /// Training throughput of this session (tokens through forward + backward + update).
    pub tokens_per_s: f64,
    pub train_tokens: usize,
    pub val_tokens: usize,
    pub docs: usize,
}

impl Outcome {
    pub fn final_val_loss(&self) -> Option<f32> {
        self.history.last().map(|p| p.val)
    }
}

/// Learning rate at `step`: linear warm-up, then cosine decay to a tenth.
pub fn learning_rate(base: f32, step: u64, total: u64) -> f32 {
    let warmup = (total / 20).clamp(1, 200);
    if step < warmup {
        return base * (step + 1) as f32 / warmup as f32;
    }
    let t = (step - warmup) as f32 / (total - warmup).max(1) as f32;
    let min = base * 0.1;
    min + 0.5 * (base - min) * (1.0 + (std::f32::consts::PI * t.min(1.0)).cos())
}

/// Trains on `text` (already checked to be text), starting from `resume` when given.
pub fn train(
    text: &str,
    opts: &TrainOptions,
    resume: Option<(&Path, Checkpoint)>,
    progress: &mut dyn Progress,
) -> Result<Outcome, TrainError> {
    let p = opts.preset;
    let corpus_crc = crc32fast::hash(text.as_bytes());
    let vocab = match (&resume, &opts.vocab) {
        (Some((_, ck)), _) => vocab_from_checkpoint(ck),
        (None, Some(v)) => v.clone(),
        (None, None) => {
            let docs = data::documents(text);
            let docs: Vec<&str> = docs.iter().map(|d| d.as_str()).collect();
            crate::bpe::train_documents(&docs, p.vocab_size)
                .map_err(|e| TrainError::Tokenizer(e.to_string()))?
        }
    };
    let n_vocab = vocab.pieces.len();
    if let Some((path, ck)) = &resume {
        check_resume(path, ck, opts, n_vocab, corpus_crc)?;
    }
    let ds = Dataset::new(text, &vocab)?;
    let need = p.batch * (p.seq_len + 1);
    let val_need = p.seq_len + 1;
    if ds.train.len() < need || ds.val.len() < val_need {
        return Err(TrainError::CorpusTooSmall {
            preset: p.name.to_string(),
            have: ds.train.len(),
            need,
            batch: p.batch,
            seq: p.seq_len,
            val_need,
        });
    }
    // A fine-tuned model keeps its head size (heads removed: `convert --prune-heads`).
    let mut config = p.config(n_vocab);
    config.head_dim = opts.init.as_ref().map_or(0, |m| m.config.head_dim);
    let (mut loss_sum, mut loss_n) = (0.0f64, 0u64);
    let (mut params, mut adam, mut step, mut history, mut tokens_seen) = match resume {
        Some((_, ck)) => {
            let params = Params { config, data: ck.params };
            let mut adam = AdamW::new(params.len(), WEIGHT_DECAY);
            (adam.m, adam.v, adam.t) = (ck.adam_m, ck.adam_v, ck.adam_t);
            (loss_sum, loss_n) = ck.pending_loss;
            (params, adam, ck.step, ck.history, ck.tokens_seen)
        }
        None => {
            let params = match &opts.init {
                Some(m) => Params::from_host(m).map_err(TrainError::Model)?,
                None => Params::init(&config, opts.seed),
            };
            let adam = AdamW::new(params.len(), WEIGHT_DECAY);
            (params, adam, 0, Vec::new(), 0)
        }
    };
    // A fine-tuned model's pruned (zero) matrix weights stay zero.
    let pruned: Vec<usize> = match &opts.init {
        Some(_) => params
            .tensors()
            .into_iter()
            .filter(|t| t.matrix && t.name != "token_embd")
            .flat_map(|t| t.range)
            .filter(|&i| params.data[i] == 0.0)
            .collect(),
        None => Vec::new(),
    };
    let mut trainer = Trainer::new(&config, p.batch, p.seq_len, opts.threads.max(1), opts.format);
    let val = ds.val_windows(p.seq_len, opts.val_windows);
    let unigram_loss = ds.unigram_loss(n_vocab);
    let mut grads = vec![0.0f32; params.len()];

    progress.begin(
        opts.steps,
        step,
        &format!(
            "{} parameters, {} training / {} validation tokens, {} format",
            params.len(),
            ds.train.len(),
            ds.val.len(),
            opts.format.name()
        ),
    );
    let started = Instant::now();
    let start_step = step;
    while step < opts.steps {
        let lr = learning_rate(p.lr, step, opts.steps);
        let batch = ds.train_batch(p.batch, p.seq_len, &mut Rng::for_step(opts.seed, step));
        let loss = trainer.forward_backward(&params, &batch, &mut grads);
        if !loss.is_finite() {
            return Err(TrainError::Model(format!("loss diverged at step {step} ({loss})")));
        }
        let norm = grad_norm(&grads);
        if norm > GRAD_CLIP {
            let k = GRAD_CLIP / norm;
            grads.iter_mut().for_each(|g| *g *= k);
        }
        adam.step(&mut params, &grads, lr);
        for &i in &pruned {
            params.data[i] = 0.0;
        }
        step += 1;
        tokens_seen += (p.batch * p.seq_len) as u64;
        loss_sum += loss as f64;
        loss_n += 1;
        let secs = started.elapsed().as_secs_f64().max(1e-9);
        let stop =
            !progress.step(step, loss, ((step - start_step) * (p.batch * p.seq_len) as u64) as f64 / secs);
        let last = step == opts.steps;
        if step % opts.eval_every == 0 || last {
            let point = LossPoint {
                step,
                train: (loss_sum / loss_n as f64) as f32,
                val: validation_loss(&mut trainer, &params, &val, p.batch, p.seq_len),
            };
            (loss_sum, loss_n) = (0.0, 0);
            progress.eval(&point);
            history.push(point);
        }
        if let Some(path) = &opts.checkpoint {
            if step % opts.checkpoint_every == 0 || last || stop {
                let ck = Checkpoint {
                    shape: p.shape(n_vocab),
                    format: opts.format.name().to_string(),
                    batch: p.batch as u32,
                    seed: opts.seed,
                    corpus_crc,
                    step,
                    params: params.data.clone(),
                    adam_m: adam.m.clone(),
                    adam_v: adam.v.clone(),
                    adam_t: adam.t,
                    pieces: vocab.pieces.clone(),
                    scores: vocab.scores.clone(),
                    history: history.clone(),
                    tokens_seen,
                    pending_loss: (loss_sum, loss_n),
                };
                ck.save(path)?;
            }
        }
        if stop {
            progress.end();
            return Err(TrainError::Interrupted { step, checkpoint: opts.checkpoint.clone() });
        }
    }
    progress.end();
    let secs = started.elapsed().as_secs_f64().max(1e-9);
    let mut model = params.to_host();
    model.vocab = Some(vocab);
    Ok(Outcome {
        model,
        history,
        unigram_loss,
        tokens_per_s: ((step - start_step) * (p.batch * p.seq_len) as u64) as f64 / secs,
        train_tokens: ds.train.len(),
        val_tokens: ds.val.len(),
        docs: ds.docs,
    })
}

const WEIGHT_DECAY: f32 = 0.1;
const GRAD_CLIP: f32 = 1.0;

/// Mean loss over the validation windows, `batch` rows at a time.
pub fn validation_loss(trainer: &mut Trainer, params: &Params, val: &[u32], batch: usize, seq: usize) -> f32 {
    let row = seq + 1;
    let (mut sum, mut n) = (0.0f64, 0usize);
    for chunk in val.chunks(batch * row) {
        let rows = chunk.len() / row;
        sum += trainer.loss(params, chunk) as f64 * rows as f64;
        n += rows;
    }
    (sum / n.max(1) as f64) as f32
}

fn vocab_from_checkpoint(ck: &Checkpoint) -> HostVocab {
    let max_token_length = ck.pieces.iter().map(|p| p.len()).max().unwrap_or(0) as u32;
    HostVocab { pieces: ck.pieces.clone(), scores: ck.scores.clone(), max_token_length, bos: 1, eos: 2 }
}

fn check_resume(
    path: &Path,
    ck: &Checkpoint,
    opts: &TrainOptions,
    n_vocab: usize,
    crc: u32,
) -> Result<(), TrainError> {
    let mismatch = |what, checkpoint: String, requested: String| {
        Err(TrainError::ResumeMismatch { path: path.to_path_buf(), what, checkpoint, requested })
    };
    let want = opts.preset.shape(n_vocab);
    if ck.shape != want {
        return mismatch(
            "model shape",
            format!("{:?}", ck.shape),
            format!("{want:?} (preset {})", opts.preset.name),
        );
    }
    if ck.format != opts.format.name() {
        return mismatch("weight format", ck.format.clone(), opts.format.name().to_string());
    }
    if ck.batch as usize != opts.preset.batch {
        return mismatch("batch size", ck.batch.to_string(), opts.preset.batch.to_string());
    }
    if ck.seed != opts.seed {
        return mismatch("seed", ck.seed.to_string(), opts.seed.to_string());
    }
    if ck.corpus_crc != crc {
        return mismatch("corpus (CRC-32)", format!("{:08x}", ck.corpus_crc), format!("{crc:08x}"));
    }
    let expect = crate::model::Layout::new(&opts.preset.config(n_vocab)).len;
    if ck.params.len() != expect {
        return mismatch("parameter count", ck.params.len().to_string(), expect.to_string());
    }
    Ok(())
}

#[cfg(test)]
mod tests;
