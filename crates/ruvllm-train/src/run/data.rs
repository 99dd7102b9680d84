//! The corpus as token streams: documents, a held-out validation split, and batches.

use std::collections::HashMap;

use ruvllm_esp32::convert::HostVocab;
use ruvllm_esp32::tokenizer::{self, Vocab};

use super::TrainError;

/// Every `VAL_EVERY`-th document is held out for validation (5%).
pub const VAL_EVERY: usize = 20;

/// The engine's tokenizer payloads built from a [`HostVocab`], so the trainer tokenizes with
/// exactly the encoder that the chip runs.
pub struct EngineVocab {
    n: usize,
    pieces: Vec<u8>,
    scores: Vec<u8>,
    index: Vec<u8>,
    bos: u32,
    eos: u32,
}

impl EngineVocab {
    pub fn new(v: &HostVocab) -> EngineVocab {
        let mut pieces = Vec::new();
        let mut offsets = Vec::with_capacity(v.pieces.len());
        for p in &v.pieces {
            offsets.push(pieces.len() as u32);
            pieces.extend_from_slice(&(p.len() as u64).to_le_bytes());
            pieces.extend_from_slice(p);
        }
        let mut order: Vec<u32> = (0..v.pieces.len() as u32).collect();
        order.sort_by(|a, b| v.pieces[*a as usize].cmp(&v.pieces[*b as usize]));
        let index = offsets.iter().chain(order.iter()).flat_map(|x| x.to_le_bytes()).collect();
        let scores = v.scores.iter().flat_map(|x| x.to_le_bytes()).collect();
        EngineVocab { n: v.pieces.len(), pieces, scores, index, bos: v.bos, eos: v.eos }
    }

    pub fn vocab(&self) -> Result<Vocab<'_>, TrainError> {
        Vocab::new(self.n, &self.pieces, &self.scores, &self.index, self.bos, self.eos)
            .map_err(|e| TrainError::Tokenizer(e.to_string()))
    }
}

/// Encodes `text` with the engine's encoder (dummy prefix, merges by score).
pub fn encode(vocab: &Vocab, text: &str, bos: bool) -> Result<Vec<u32>, TrainError> {
    let mut out = vec![0u32; text.len() + 3];
    let n = tokenizer::encode(vocab, text.as_bytes(), bos, false, &mut out)
        .map_err(|e| TrainError::Tokenizer(e.to_string()))?;
    out.truncate(n);
    Ok(out)
}

/// Tokenizes a document word by word, caching each word's tokens. The engine's encoder merges
/// the highest-scoring pair first; when no piece holds a space except as its first byte, no
/// merge crosses a word boundary and merges in different words do not interact, so encoding
/// `" word"` alone gives the same tokens as inside the whole text (tested against [`encode`]).
pub struct WordEncoder<'v> {
    vocab: Vocab<'v>,
    cache: HashMap<String, Vec<u32>>,
    word_safe: bool,
}

impl<'v> WordEncoder<'v> {
    pub fn new(vocab: Vocab<'v>) -> Self {
        let word_safe = (0..vocab.len() as u32).all(|id| !vocab.piece(id).iter().skip(1).any(|b| *b == b' '));
        WordEncoder { vocab, cache: HashMap::new(), word_safe }
    }

    /// `BOS` then the document's tokens, as the engine would encode it with a BOS.
    pub fn document(&mut self, doc: &str) -> Result<Vec<u32>, TrainError> {
        if !self.word_safe || doc.contains("  ") || doc.starts_with(' ') || doc.contains('\n') {
            return encode(&self.vocab, doc, true);
        }
        let mut out = vec![self.vocab.bos()];
        for word in doc.split(' ') {
            if let Some(t) = self.cache.get(word) {
                out.extend_from_slice(t);
                continue;
            }
            let t = encode(&self.vocab, word, false)?;
            out.extend_from_slice(&t);
            self.cache.insert(word.to_string(), t);
        }
        Ok(out)
    }
}

/// Splits a corpus into documents: paragraphs separated by blank lines, or lines when the
/// corpus has no blank lines. Whitespace inside a document is normalized to single spaces.
pub fn documents(text: &str) -> Vec<String> {
    let norm = text.replace("\r\n", "\n");
    let paragraphs: Vec<&str> = if norm.contains("\n\n") { norm.split("\n\n").collect() } else { norm.lines().collect() };
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
        let ev = EngineVocab::new(vocab);
        let mut enc = WordEncoder::new(ev.vocab()?);
        let docs = documents(text);
        let (mut train, mut val) = (Vec::new(), Vec::new());
        for (i, d) in docs.iter().enumerate() {
            let t = enc.document(d)?;
            if i % VAL_EVERY == VAL_EVERY - 1 {
                val.extend_from_slice(&t);
            } else {
                train.extend_from_slice(&t);
            }
        }
        Ok(Dataset { train, val, docs: docs.len() })
    }

    /// `batch` windows of `seq + 1` tokens at positions drawn from `rng`.
    pub fn train_batch(&self, batch: usize, seq: usize, rng: &mut SplitMix) -> Vec<u32> {
        let span = self.train.len() - seq - 1;
        let mut out = Vec::with_capacity(batch * (seq + 1));
        for _ in 0..batch {
            let start = (rng.next() % (span as u64 + 1)) as usize;
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

/// splitmix64: a tiny deterministic generator, the same on every platform.
#[derive(Clone, Copy, Debug)]
pub struct SplitMix(pub u64);

impl SplitMix {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// The generator for training step `step` of a run seeded with `seed`: batches depend only
    /// on (seed, step), so a resumed run draws exactly the batches the uninterrupted one would.
    pub fn for_step(seed: u64, step: u64) -> SplitMix {
        let mut s = SplitMix(seed ^ step.wrapping_mul(0xD1B5_4A32_D192_ED03));
        s.next();
        s
    }
}
