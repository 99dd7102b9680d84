//! Teacher-forced scoring: how well the model predicts a known token sequence.

use super::Step;
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
pub fn score<S: Step, const L: usize>(model: &Model<'_, L>, state: &mut S, tokens: &[u32]) -> Result<Score>
where
    S::Logit: LogitValue,
{
    let mut s = Score::default();
    for window in tokens.chunks(state.capacity()) {
        for (pos, pair) in window.windows(2).enumerate() {
            let logits = state.logits(model, pair[0], pos)?;
            s.nll += nll(logits, pair[1]);
            s.tokens += 1;
        }
    }
    Ok(s)
}

/// A logit's value as f64, for scoring (host-side work: this is where the integer path's
/// fixed-point logits meet floats).
pub trait LogitValue: Copy {
    fn value(self) -> f64;
}

impl LogitValue for f32 {
    fn value(self) -> f64 {
        self as f64
    }
}

/// The integer path's logits are Q16.16 ([`super::integer::FRAC`] fractional bits).
impl LogitValue for i32 {
    fn value(self) -> f64 {
        self as f64 / (1u32 << super::integer::FRAC) as f64
    }
}

/// `-log softmax(logits)[target]`, in f64 so long texts do not lose precision.
pub fn nll<T: LogitValue>(logits: &[T], target: u32) -> f64 {
    let max = logits.iter().fold(f64::NEG_INFINITY, |m, v| m.max(v.value()));
    let sum: f64 = logits.iter().map(|v| libm::exp(v.value() - max)).sum();
    let t = logits.get(target as usize).map_or(f64::NEG_INFINITY, |v| v.value());
    max + libm::log(sum) - t
}
