//! Next-token sampling, bit-compatible with llama2.c's sampler (same xorshift RNG, one coin per
//! non-greedy sample, same argmax / multinomial / top-p rules) plus an optional top-k filter.
//! No allocation: candidates live in a caller-provided scratch slice.

use core::cmp::Ordering;

/// A candidate token and its probability.
#[derive(Clone, Copy, Default, Debug)]
pub struct ProbIndex {
    pub prob: f32,
    pub index: u32,
}

/// Seed used instead of 0, on which xorshift would return 0 forever (llama2.c forbids 0).
const ZERO_SEED_REPLACEMENT: u64 = 0x9E37_79B9_7F4A_7C15;

/// The RNG state a `seed` starts: the seed itself, except 0 (xorshift would stay at 0).
pub const fn seed_state(seed: u64) -> u64 {
    if seed == 0 {
        ZERO_SEED_REPLACEMENT
    } else {
        seed
    }
}

/// llama2.c's xorshift* step on `state` (never 0: see [`seed_state`]): the one RNG of the
/// float [`Sampler`] and the integer sampler
/// ([`sample_int`](crate::infer::integer::sample_int)).
pub fn random_u32(state: &mut u64) -> u32 {
    let mut s = *state;
    s ^= s >> 12;
    s ^= s << 25;
    s ^= s >> 27;
    *state = s;
    (s.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 32) as u32
}

/// Uniform in [0,1) with 24 bits from [`random_u32`], as llama2.c.
pub(crate) fn random_f32(state: &mut u64) -> f32 {
    (random_u32(state) >> 8) as f32 / 16_777_216.0
}

/// What a console's generations sample with: the temperature in thousandths (0 = greedy, the
/// default) and the RNG state, carried from one generation to the next so that a session
/// replays exactly from its seed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sampling {
    pub temp_milli: u32,
    pub rng: u64,
}

impl Sampling {
    /// Greedy; the RNG is not used.
    pub const GREEDY: Sampling = Sampling { temp_milli: 0, rng: ZERO_SEED_REPLACEMENT };

    /// Temperature `temp_milli` / 1000, the RNG started from `seed`.
    pub const fn new(temp_milli: u32, seed: u64) -> Self {
        Sampling { temp_milli, rng: seed_state(seed) }
    }
}

/// Sampling settings plus the RNG state.
pub struct Sampler {
    temperature: f32,
    top_p: f32,
    top_k: usize,
    rng_state: u64,
}

/// NaN sorts and compares like -inf, so it never wins and never poisons an ordering.
#[inline]
fn key(x: f32) -> f32 {
    if x.is_nan() {
        f32::NEG_INFINITY
    } else {
        x
    }
}

/// Index of the largest value, the first on ties (llama2.c's argmax); 0 for an empty slice.
/// The largest value is found lane by lane first (a loop the compiler vectorizes), then the
/// first index holding it: NaN never compares greater, so it never wins.
pub(crate) fn argmax(x: &[f32]) -> usize {
    let mut lanes = [f32::NEG_INFINITY; 8];
    let chunks = x.chunks_exact(8);
    let rest = chunks.remainder();
    for c in chunks {
        for (m, &v) in lanes.iter_mut().zip(c) {
            if v > *m {
                *m = v;
            }
        }
    }
    let best = lanes.iter().chain(rest).fold(f32::NEG_INFINITY, |m, &v| if v > m { v } else { m });
    if best == f32::NEG_INFINITY {
        return 0;
    }
    x.iter().position(|&v| v == best).unwrap_or(0)
}

/// [`argmax`] the plain way, one value at a time: the definition the fast one is tested against.
#[cfg(test)]
pub(crate) fn argmax_simple(x: &[f32]) -> usize {
    let mut best = 0;
    let mut best_v = f32::NEG_INFINITY;
    for (i, &v) in x.iter().enumerate() {
        let v = key(v);
        if v > best_v {
            best = i;
            best_v = v;
        }
    }
    best
}

/// Descending probability, then ascending index so ties sort deterministically.
fn by_prob_desc(a: &ProbIndex, b: &ProbIndex) -> Ordering {
    b.prob.total_cmp(&a.prob).then(a.index.cmp(&b.index))
}

/// Softmax in place: subtract the max, `expf`, divide by the sum (llama2.c's order of
/// operations). NaN counts as -inf; all -inf gives a uniform distribution; +inf entries share
/// all the mass. An empty slice is left alone.
pub fn softmax(x: &mut [f32]) {
    let mut max = f32::NEG_INFINITY;
    for v in x.iter_mut() {
        *v = key(*v);
        if *v > max {
            max = *v;
        }
    }
    if max.is_infinite() {
        // exp(x - max) would be NaN (inf - inf): fall back to the limit distribution.
        for v in x.iter_mut() {
            *v = if *v == max { 1.0 } else { 0.0 };
        }
    } else {
        for v in x.iter_mut() {
            *v = libm::expf(*v - max);
        }
    }
    // The max entry contributes at least 1, so the sum is >= 1 and finite for finite lengths.
    let sum: f32 = x.iter().sum();
    if sum > 0.0 {
        for v in x.iter_mut() {
            *v /= sum;
        }
    }
}

/// Picks from `probs` (summing to ~1) with `coin` in [0,1), the last index on rounding.
pub(crate) fn sample_mult(probs: &[f32], coin: f32) -> usize {
    let mut cdf = 0.0f32;
    for (i, &p) in probs.iter().enumerate() {
        cdf += p;
        if coin < cdf {
            return i;
        }
    }
    probs.len().saturating_sub(1)
}

/// Draws from the first `keep` candidates of a descending-sorted list: walks the cumulative
/// sum until it exceeds `limit` (nucleus cut), then picks with `r = coin * cumulative`.
fn sample_sorted(cands: &[ProbIndex], limit: f32, coin: f32) -> u32 {
    let mut cumulative = 0.0f32;
    let mut last = cands.len().saturating_sub(1);
    for (i, c) in cands.iter().enumerate() {
        cumulative += c.prob;
        if cumulative > limit {
            last = i;
            break;
        }
    }
    let kept = cands.get(..=last).unwrap_or_default();
    let r = coin * cumulative;
    let mut cdf = 0.0f32;
    for c in kept {
        cdf += c.prob;
        if r < cdf {
            return c.index;
        }
    }
    kept.last().map_or(0, |c| c.index)
}

impl Sampler {
    /// `temperature` 0 = greedy; `top_p` outside (0,1) = off; `top_k` 0 = off. A `seed` of 0
    /// is replaced by a fixed non-zero constant (xorshift is stuck at 0).
    pub fn new(temperature: f32, top_p: f32, top_k: usize, seed: u64) -> Self {
        Sampler { temperature, top_p, top_k, rng_state: seed_state(seed) }
    }

    /// The RNG state, to carry it from one generation to the next ([`Sampler::new`] takes it
    /// back as the seed).
    pub fn rng_state(&self) -> u64 {
        self.rng_state
    }

    /// llama2.c's xorshift* step (tests compare it with llama2.c's first values).
    #[cfg(test)]
    fn random_u32(&mut self) -> u32 {
        random_u32(&mut self.rng_state)
    }

    fn random_f32(&mut self) -> f32 {
        random_f32(&mut self.rng_state)
    }

    /// Picks the next token. Temperature 0 = greedy argmax (first max wins). Otherwise divides
    /// `logits` by the temperature in place, softmax, draws one coin, then: top-k (if on) keeps
    /// the k most probable and applies top-p (if on) to them relative to their total; top-p
    /// alone is llama2.c's sample_topp; neither is plain multinomial. `scratch` holds the
    /// candidates (`len >= logits.len()`; if too short, plain multinomial is used instead).
    /// `logits` is clobbered. Never panics; NaN logits count as -inf; empty logits give 0.
    pub fn sample(&mut self, logits: &mut [f32], scratch: &mut [ProbIndex]) -> u32 {
        if self.temperature == 0.0 {
            return argmax(logits) as u32;
        }
        for v in logits.iter_mut() {
            *v /= self.temperature;
        }
        softmax(logits);
        let coin = self.random_f32();
        let n = logits.len();
        let top_p_on = self.top_p > 0.0 && self.top_p < 1.0;
        let top_k_on = self.top_k > 0 && self.top_k < n;

        if top_k_on {
            if let Some(cands) = scratch.get_mut(..n) {
                return sample_top_k(logits, cands, self.top_k, top_p_on.then_some(self.top_p), coin);
            }
        } else if top_p_on && n > 1 {
            if let Some(id) = sample_top_p(logits, scratch, self.top_p, coin) {
                return id;
            }
        }
        sample_mult(logits, coin) as u32
    }
}

/// Keeps the `k` most probable (ties to the lower index), sorted descending, then samples
/// them with an optional nucleus cut at `top_p` of their total mass.
fn sample_top_k(probs: &[f32], cands: &mut [ProbIndex], k: usize, top_p: Option<f32>, coin: f32) -> u32 {
    for (i, (c, &p)) in cands.iter_mut().zip(probs).enumerate() {
        *c = ProbIndex { prob: p, index: i as u32 };
    }
    if k < cands.len() {
        cands.select_nth_unstable_by(k, by_prob_desc);
    }
    let kept = cands.get_mut(..k).unwrap_or_default();
    kept.sort_unstable_by(by_prob_desc);
    let total: f32 = kept.iter().map(|c| c.prob).sum();
    // Without top-p the limit is never exceeded, so the draw spans all k (r = coin * total).
    let limit = top_p.map_or(f32::INFINITY, |p| p * total);
    sample_sorted(kept, limit, coin)
}

/// llama2.c's sample_topp: candidates below `(1 - top_p) / (n - 1)` cannot be in the nucleus
/// and are dropped before sorting. Where that prefilter keeps nothing (C would read index -1)
/// all tokens are candidates. `None` if `scratch` cannot hold the candidates.
fn sample_top_p(probs: &[f32], scratch: &mut [ProbIndex], top_p: f32, coin: f32) -> Option<u32> {
    let n = probs.len();
    let cutoff = (1.0 - top_p) / (n - 1) as f32;
    let mut n0 = 0;
    for (i, &p) in probs.iter().enumerate() {
        if p >= cutoff {
            *scratch.get_mut(n0)? = ProbIndex { prob: p, index: i as u32 };
            n0 += 1;
        }
    }
    if n0 == 0 {
        for (i, &p) in probs.iter().enumerate() {
            *scratch.get_mut(i)? = ProbIndex { prob: p, index: i as u32 };
        }
        n0 = n;
    }
    let cands = scratch.get_mut(..n0)?;
    cands.sort_unstable_by(by_prob_desc);
    Some(sample_sorted(cands, top_p, coin))
}

#[cfg(test)]
mod tests;
