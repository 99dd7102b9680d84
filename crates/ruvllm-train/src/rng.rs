//! SplitMix64 (the engine's `vector::metric::SplitMix`): the one deterministic generator of the
//! crate (corpus, initialization, batches), tiny and identical on every platform.

use ruvllm_esp32::vector::metric::SplitMix;

/// SplitMix64 with the sampling helpers training needs.
#[derive(Clone, Debug)]
pub struct Rng(SplitMix);

impl Rng {
    /// The generator for training step `step` of a run seeded with `seed`: batches depend only
    /// on (seed, step), so a resumed run draws exactly the batches the uninterrupted one would.
    pub fn for_step(seed: u64, step: u64) -> Rng {
        let mut r = Rng(SplitMix(seed ^ step.wrapping_mul(0xD1B5_4A32_D192_ED03)));
        r.next_u64();
        r
    }

    pub fn new(seed: u64) -> Self {
        Rng(SplitMix(seed))
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0.next_u64()
    }

    /// Uniform in (0, 1].
    pub fn uniform(&mut self) -> f64 {
        ((self.next_u64() >> 11) + 1) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in `0..n` (`n > 0`), by multiply-shift.
    pub fn below(&mut self, n: usize) -> usize {
        ((u128::from(self.next_u64()) * n as u128) >> 64) as usize
    }

    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + self.below(hi - lo + 1)
    }

    pub fn pick<'a, T>(&mut self, xs: &'a [T]) -> &'a T {
        &xs[self.below(xs.len())]
    }

    /// True with probability `percent` / 100.
    pub fn chance(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }

    pub fn shuffle<T>(&mut self, xs: &mut [T]) {
        for i in (1..xs.len()).rev() {
            xs.swap(i, self.below(i + 1));
        }
    }

    /// `k` distinct elements of `xs` in random order (`k <= xs.len()`).
    pub fn sample<T: Clone>(&mut self, xs: &[T], k: usize) -> Vec<T> {
        let mut v = xs.to_vec();
        self.shuffle(&mut v);
        v.truncate(k);
        v
    }
}
