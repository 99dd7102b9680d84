//! Teacher-forced scoring: how well the model predicts a known token sequence.

use super::State;
use crate::error::Result;
use crate::model::Model;

/// Total negative log-likelihood (nats) and the number of predicted tokens.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Score {
    pub tokens: usize,
    pub nll: f64,
}

impl Score {
    pub fn mean_nll(&self) -> f64 {
        if self.tokens == 0 {
            0.0
        } else {
            self.nll / self.tokens as f64
        }
    }

    pub fn perplexity(&self) -> f64 {
        libm::exp(self.mean_nll())
    }
}

/// Scores `tokens` (which should start with BOS): every token after the first is predicted
/// from the ones before it. A text longer than the state's context is cut into consecutive
/// windows of `state.seq_len()` tokens; each window starts with a fresh context and its first
/// token is context only, so no token is scored twice.
pub fn score<const L: usize>(model: &Model<'_, L>, state: &mut State<'_>, tokens: &[u32]) -> Result<Score> {
    let mut s = Score::default();
    for window in tokens.chunks(state.seq_len()) {
        for (pos, pair) in window.windows(2).enumerate() {
            let logits = state.forward(model, pair[0], pos)?;
            s.nll += nll(logits, pair[1]);
            s.tokens += 1;
        }
    }
    Ok(s)
}

/// `-log softmax(logits)[target]`, in f64 so long texts do not lose precision.
pub fn nll(logits: &[f32], target: u32) -> f64 {
    let max = logits.iter().fold(f32::NEG_INFINITY, |m, v| m.max(*v)) as f64;
    let sum: f64 = logits.iter().map(|v| libm::exp(*v as f64 - max)).sum();
    let t = logits.get(target as usize).copied().unwrap_or(f32::NEG_INFINITY) as f64;
    max + libm::log(sum) - t
}
