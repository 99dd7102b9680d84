//! Is a text language at all? A score that needs no references: cheap statistics of the text's
//! characters and, when a language model is at hand, of the model's own view of its tokens
//! (per-token surprise, byte-fallback rate, repeated tokens). Gibberish, random keys, code,
//! SQL, hex dumps, repeated tokens and symbols stand out on these from the first check, where
//! a distance to added knowledge ([`super::AnomalyDetector`]) needs references first.
//!
//! **Features** ([`FEATURES`] values, [`features`]): text ones (letter, digit and symbol
//! fractions, vowels among letters, mean word length (capped), distinct words, capitals, plain
//! words, and the characters' surprise under the built-in trigram model of
//! [`super::chars`]: mean bits a character and the fraction of rare transitions) and, with [`TokenStats`], model ones (mean and 75th-percentile negative
//! log-likelihood of the scored tokens in nats, byte-fallback tokens per token, bytes per
//! token, distinct tokens, and the surprise beyond the entropy of the model's own predictions).
//! Without a model the model features are 0 and a [`LanguageCalibration`] fitted without them
//! (zero weights there) is used.
//!
//! **Score** ([`LanguageCalibration::score`]): a logistic regression over the standardized
//! features, `1 / (1 + exp(-(bias + sum w_i (x_i - mean_i) / scale_i)))`, 0..=1; above
//! `threshold` is an anomaly. The constants are measured on labelled text for one model (the
//! console's are fitted by `crates/ruvllm-cli/tests/anomaly_eval.rs`). The surprise and bytes
//! per token enter relative to the same model's on [`KNOWN_TEXT`] ([`TokenStats::relative_to`]),
//! so that another or a retrained model, more or less sure of everything, keeps the scale.
//!
//! No allocation; the work is bounded: at most [`SCORED_TOKENS`] forward passes.

use super::AnomalyResult;
use crate::error::Result;
use crate::infer::{LogitValue, Step};
use crate::model::Model;

/// Most tokens [`token_stats`] runs the model on (the rest of a long line is not scored).
pub const SCORED_TOKENS: usize = 32;
/// Features of a text ([`features`]): [`TEXT_FEATURES`] text ones, then 6 model ones.
pub const FEATURES: usize = 16;
/// The text features come first; the rest need a model.
pub const TEXT_FEATURES: usize = 10;
/// Names of the features, in order (for reports).
pub const FEATURE_NAMES: [&str; FEATURES] = [
    "letters",
    "digits",
    "symbols",
    "vowels",
    "word length",
    "distinct words",
    "capitals",
    "plain words",
    "char surprise",
    "rare chars",
    "mean surprise",
    "p75 surprise",
    "byte fallback",
    "bytes/token",
    "distinct tokens",
    "excess surprise",
];

/// Byte-fallback token ids: after `<unk>`, `<s>`, `</s>` (llama2.c's layout).
const BYTE_TOKENS: core::ops::Range<u32> = 3..259;

/// What a model makes of a text's tokens ([`token_stats`]).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct TokenStats {
    /// Tokens of the text (without BOS).
    pub tokens: usize,
    /// Tokens whose negative log-likelihood was measured (at most [`SCORED_TOKENS`]).
    pub scored: usize,
    /// Mean negative log-likelihood of the scored tokens, nats.
    pub mean_nll: f32,
    /// Their 75th percentile (nearest rank), nats.
    pub p75_nll: f32,
    /// Byte-fallback tokens among all tokens (0..=1).
    pub byte_rate: f32,
    /// Distinct ids among the scored tokens (0..=1).
    pub distinct: f32,
    /// Mean of each scored token's negative log-likelihood minus the entropy of the model's
    /// prediction for it, nats: surprise beyond what the model itself expected, which a model
    /// that is less sure of everything does not inflate.
    pub excess_nll: f32,
    /// Bytes of text per token.
    pub bytes_per_token: f32,
}

/// Runs `tokens` (BOS first, as the tokenizer writes them from a text of `text_bytes` bytes)
/// through `model` and measures them: every token after BOS up to [`SCORED_TOKENS`] (and the
/// state's capacity) is predicted from the ones before it.
pub fn token_stats<S: Step, const L: usize>(
    model: &Model<'_, L>,
    state: &mut S,
    tokens: &[u32],
    text_bytes: usize,
) -> Result<TokenStats>
where
    S::Logit: LogitValue,
{
    let text = tokens.get(1..).unwrap_or_default();
    let scored = text.len().min(SCORED_TOKENS).min(state.capacity().saturating_sub(1));
    let mut nlls = [0.0f32; SCORED_TOKENS];
    let mut excess = 0.0f32;
    for pos in 0..scored {
        let logits = state.logits(model, tokens[pos], pos)?;
        let (nll, entropy) = surprise(logits, tokens[pos + 1]);
        nlls[pos] = nll;
        excess += nll - entropy;
    }
    let nlls = &mut nlls[..scored];
    let mean_nll = nlls.iter().sum::<f32>() / scored.max(1) as f32;
    nlls.sort_unstable_by(f32::total_cmp);
    let p75_nll = match scored {
        0 => 0.0,
        n => nlls[(n * 3).div_ceil(4) - 1],
    };
    let bytes = text.iter().filter(|t| BYTE_TOKENS.contains(t)).count();
    let first = &text[..scored];
    let distinct = first.iter().enumerate().filter(|&(i, t)| !first[..i].contains(t)).count();
    Ok(TokenStats {
        tokens: text.len(),
        scored,
        mean_nll,
        p75_nll,
        byte_rate: bytes as f32 / text.len().max(1) as f32,
        distinct: distinct as f32 / scored.max(1) as f32,
        excess_nll: excess / scored.max(1) as f32,
        bytes_per_token: text_bytes as f32 / text.len().max(1) as f32,
    })
}

/// Plain everyday sentences that every model is measured on once, so that a text's statistics
/// are taken relative to the model's own on known text ([`TokenStats::relative_to`]).
pub const KNOWN_TEXT: &str =
    "The children played in the garden until it was time for dinner. Please close the door when you leave.";

impl TokenStats {
    /// These statistics relative to `known`, the same model's on [`KNOWN_TEXT`]: surprise as
    /// the difference, bytes per token as the ratio. A retrained or another model that is more
    /// (or less) surprised by everything, or whose tokens are longer, moves both alike.
    pub fn relative_to(&self, known: &TokenStats) -> TokenStats {
        TokenStats {
            mean_nll: self.mean_nll - known.mean_nll,
            p75_nll: self.p75_nll - known.p75_nll,
            excess_nll: self.excess_nll - known.excess_nll,
            bytes_per_token: self.bytes_per_token / known.bytes_per_token.max(f32::MIN_POSITIVE),
            ..*self
        }
    }
}

/// `-log softmax(logits)[target]` and the entropy of `softmax(logits)`, nats, in one pass
/// of f32 (a chip without an FPU pays one soft-float `expf` a logit; features need no more
/// precision).
fn surprise<T: LogitValue>(logits: &[T], target: u32) -> (f32, f32) {
    let max = logits.iter().fold(f32::NEG_INFINITY, |m, v| m.max(v.value() as f32));
    let (mut sum, mut weighted) = (0.0f32, 0.0f32);
    for v in logits {
        let d = v.value() as f32 - max;
        let e = libm::expf(d);
        sum += e;
        weighted += e * d;
    }
    let log_sum = libm::logf(sum);
    let t = logits.get(target as usize).map_or(f32::NEG_INFINITY, |v| v.value() as f32);
    (log_sum - (t - max), log_sum - weighted / sum)
}

/// Mean word lengths above this count as this.
const MAX_WORD_LENGTH: f32 = 12.0;

/// Most words whose repeats [`features`] looks for (a console line has fewer).
const MAX_WORDS: usize = 64;

/// The features of `text` (module docs); the model ones from `tokens`, or 0 without.
pub fn features(text: &str, tokens: Option<&TokenStats>) -> [f32; FEATURES] {
    let b = text.as_bytes();
    let (mut letters, mut digits, mut symbols, mut vowels, mut caps) =
        (0usize, 0usize, 0usize, 0usize, 0usize);
    for &c in b {
        match c {
            b'a'..=b'z' | b'A'..=b'Z' => {
                letters += 1;
                caps += usize::from(c.is_ascii_uppercase());
                vowels += usize::from(b"aeiouyAEIOUY".contains(&c));
            }
            b'0'..=b'9' => digits += 1,
            c if c.is_ascii_whitespace() => {}
            _ => symbols += 1,
        }
    }
    let visible = (letters + digits + symbols).max(1) as f32;
    let mut words = [""; MAX_WORDS];
    let (mut n, mut plain, mut word_bytes) = (0usize, 0usize, 0usize);
    for w in text.split_ascii_whitespace() {
        // A plain word: letters (an apostrophe or hyphen inside), maybe one closing mark.
        let core = w.strip_suffix(['.', ',', '?', '!', ':', ';']).unwrap_or(w);
        let inner = |c: u8| c == b'\'' || c == b'-';
        plain += usize::from(
            !core.is_empty()
                && core.bytes().all(|c| c.is_ascii_alphabetic() || inner(c))
                && !core.starts_with(['\'', '-'])
                && !core.ends_with(['\'', '-']),
        );
        word_bytes += w.len();
        if n < MAX_WORDS {
            words[n] = w;
        }
        n += 1;
    }
    let kept = &words[..n.min(MAX_WORDS)];
    let distinct = kept.iter().enumerate().filter(|&(i, w)| !kept[..i].contains(w)).count();
    let mut f = [0.0f32; FEATURES];
    f[0] = letters as f32 / visible;
    f[1] = digits as f32 / visible;
    f[2] = symbols as f32 / visible;
    f[3] = vowels as f32 / letters.max(1) as f32;
    // Capped: one long run (a hex or base64 blob) says enough.
    f[4] = (word_bytes as f32 / n.max(1) as f32).min(MAX_WORD_LENGTH);
    f[5] = distinct as f32 / kept.len().max(1) as f32;
    f[6] = caps as f32 / letters.max(1) as f32;
    f[7] = plain as f32 / n.max(1) as f32;
    let chars = super::chars::built_in().surprise(text);
    f[8] = chars.mean_bits;
    f[9] = chars.rare;
    if let Some(t) = tokens {
        f[10] = t.mean_nll;
        f[11] = t.p75_nll;
        f[12] = t.byte_rate;
        f[13] = t.bytes_per_token;
        f[14] = t.distinct;
        f[15] = t.excess_nll;
    }
    f
}

/// A fitted language score (module docs, *Score*).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LanguageCalibration {
    /// Each feature's mean on the fitting data.
    pub mean: [f32; FEATURES],
    /// Each feature's standard deviation there (a feature with 0 is not used).
    pub scale: [f32; FEATURES],
    /// Logistic weights of the standardized features.
    pub weights: [f32; FEATURES],
    pub bias: f32,
    /// Scores above this are anomalies (0..=1).
    pub threshold: f32,
}

impl LanguageCalibration {
    /// The probability-like score (0..=1) of features `f`.
    pub fn score(&self, f: &[f32; FEATURES]) -> f32 {
        let mut z = self.bias;
        for (i, x) in f.iter().enumerate() {
            if self.scale[i] > 0.0 {
                z += self.weights[i] * (x - self.mean[i]) / self.scale[i];
            }
        }
        1.0 / (1.0 + libm::expf(-z))
    }
}

/// The verdict of a language score `language` (0..=1, anomaly above `threshold`) and, with
/// references, of the distance to them (`distance`, [`AnomalyDetector::try_check`]): the
/// distance is put on the language score's scale (its threshold maps to `threshold`) and the
/// larger of the two is the score, so a text is flagged when either finds it anomalous.
///
/// [`AnomalyDetector::try_check`]: super::AnomalyDetector::try_check
pub fn verdict(language: f32, threshold: f32, distance: Option<AnomalyResult>) -> AnomalyResult {
    let far = distance.map_or(0.0, |d| threshold * d.score / d.threshold.max(f32::MIN_POSITIVE));
    let score = language.max(far);
    AnomalyResult { is_anomaly: score > threshold, score, threshold, unchecked: None }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_features_tell_words_from_symbols_and_repeats() {
        let prose = features("The pump runs at six, doesn't it?", None);
        assert!(prose[0] > 0.8 && prose[2] < 0.15 && prose[5] == 1.0 && prose[7] == 1.0, "{prose:?}");
        assert!(prose[TEXT_FEATURES..].iter().all(|&x| x == 0.0));
        let symbols = features("%%%% #### @@@@", None);
        assert_eq!((symbols[0], symbols[2], symbols[7]), (0.0, 1.0, 0.0));
        let repeat = features("go go go go", None);
        assert_eq!(repeat[5], 0.25);
        // Nothing visible: no division by zero.
        assert!(features("   ", None).iter().all(|x| x.is_finite()));
    }

    #[test]
    fn score_is_a_logistic_of_standardized_features() {
        let mut cal = LanguageCalibration {
            mean: [0.0; FEATURES],
            scale: [1.0; FEATURES],
            weights: [0.0; FEATURES],
            bias: 0.0,
            threshold: 0.5,
        };
        assert_eq!(cal.score(&[3.0; FEATURES]), 0.5);
        cal.weights[2] = 2.0;
        cal.mean[2] = 0.5;
        cal.scale[2] = 0.25;
        let s = cal.score(&features("%%%% #### @@@@", None));
        assert!((s - 1.0 / (1.0 + libm::expf(-4.0))).abs() < 1e-6, "{s}");
        cal.scale[2] = 0.0;
        assert_eq!(cal.score(&[9.0; FEATURES]), 0.5);
    }
}
