//! The corpus as token streams: documents, a held-out validation split, and batches.

use ruvllm_esp32::convert::HostVocab;

use super::TrainError;
use crate::bpe::Encoder;
use crate::rng::Rng;

/// Every `VAL_EVERY`-th document is held out for validation (5%).
pub const VAL_EVERY: usize = 20;

/// Splits a corpus into documents: paragraphs separated by blank lines, or lines when the
/// corpus has no blank lines. Whitespace inside a document is normalized to single spaces.
pub fn documents(text: &str) -> Vec<String> {
    let norm = text.replace("\r\n", "\n");
    let paragraphs: Vec<&str> =
        if norm.contains("\n\n") { norm.split("\n\n").collect() } else { norm.lines().collect() };
    paragraphs
        .iter()
        .map(|p| p.split_whitespace().collect::<Vec<_>>().join(" "))
        .filter(|p| !p.is_empty())
        .collect()
}

/// Train and validation token streams: each document is `BOS` + its tokens.
pub struct Dataset {
    pub train: Vec<u32>,
    pub val: Vec<u32>,
    pub docs: usize,
}

impl Dataset {
    pub fn new(text: &str, vocab: &HostVocab) -> Result<Dataset, TrainError> {
        // The engine's encoding (dummy-prefix space included) of each document after a BOS,
        // exactly as `gen` encodes a prompt.
        let mut enc = Encoder::new(vocab).map_err(|e| TrainError::Tokenizer(e.to_string()))?;
        let docs = documents(text);
        let (mut train, mut val) = (Vec::new(), Vec::new());
        for (i, d) in docs.iter().enumerate() {
            let out = if i % VAL_EVERY == VAL_EVERY - 1 { &mut val } else { &mut train };
            out.push(vocab.bos);
            enc.encode_into(d, out);
        }
        Ok(Dataset { train, val, docs: docs.len() })
    }

    /// `batch` windows of `seq + 1` tokens at positions drawn from `rng`.
    pub fn train_batch(&self, batch: usize, seq: usize, rng: &mut Rng) -> Vec<u32> {
        let span = self.train.len() - seq - 1;
        let mut out = Vec::with_capacity(batch * (seq + 1));
        for _ in 0..batch {
            let start = rng.below(span + 1);
            out.extend_from_slice(&self.train[start..start + seq + 1]);
        }
        out
    }

    /// The validation stream cut into consecutive windows of `seq + 1` (the last partial one
    /// dropped), at most `max` of them: the same windows at every evaluation.
    pub fn val_windows(&self, seq: usize, max: usize) -> Vec<u32> {
        let n = (self.val.len().saturating_sub(1) / seq).min(max);
        let mut out = Vec::with_capacity(n * (seq + 1));
        for w in 0..n {
            out.extend_from_slice(&self.val[w * seq..w * seq + seq + 1]);
        }
        out
    }

    /// Cross-entropy (nats/token) of the validation tokens under the unigram distribution of
    /// the training tokens: the loss of a model that ignores context, the baseline to beat.
    pub fn unigram_loss(&self, vocab_size: usize) -> f64 {
        let mut counts = vec![0u64; vocab_size];
        for t in &self.train {
            counts[*t as usize] += 1;
        }
        let total = self.train.len() as f64;
        // Add-one smoothing keeps tokens unseen in training finite.
        let p: Vec<f64> = counts.iter().map(|c| (*c as f64 + 1.0) / (total + vocab_size as f64)).collect();
        let val = if self.val.is_empty() { &self.train } else { &self.val };
        val.iter().map(|t| -p[*t as usize].ln()).sum::<f64>() / val.len() as f64
    }
}
