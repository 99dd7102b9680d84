//! Distances between float vectors. Smaller is always closer, so the graph code never needs to
//! know which metric it runs: dot product is returned negated, cosine as `1 - cos`.

/// The distance an index ranks by. `repr(u8)` with `Euclidean = 0` so an all-zero index
/// (how `new_in` builds one in place) is valid.
#[repr(u8)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Metric {
    /// Squared L2 distance (no square root: same order, cheaper).
    #[default]
    Euclidean = 0,
    /// `1 - cos(a, b)`; a zero vector is at distance 1 from everything.
    Cosine = 1,
    /// Negated dot product (maximum inner product search).
    Dot = 2,
}

impl Metric {
    pub(crate) fn from_u8(v: u8) -> Option<Metric> {
        match v {
            0 => Some(Metric::Euclidean),
            1 => Some(Metric::Cosine),
            2 => Some(Metric::Dot),
            _ => None,
        }
    }

    /// Distance between two float vectors of equal length (extra elements of the longer one
    /// are ignored).
    pub fn distance(self, a: &[f32], b: &[f32]) -> f32 {
        match self {
            Metric::Euclidean => l2_squared(a, b),
            Metric::Cosine => cosine_distance(a, b),
            Metric::Dot => -dot(a, b),
        }
    }
}

/// `sum f(a_i, b_i)` in four independent sums, so the compiler can vectorize (one running sum
/// cannot be reordered under IEEE rules). The portable form of every float distance in
/// `vector`; x86-64 hosts with AVX2 use `kernels::x86`'s twins.
#[inline]
fn lanes(a: &[f32], b: &[f32], f: impl Fn(f32, f32) -> f32) -> f32 {
    let mut acc = [0.0f32; 4];
    let (ca, cb) = (a.chunks_exact(4), b.chunks_exact(4));
    let tail: f32 = ca.remainder().iter().zip(cb.remainder()).map(|(x, y)| f(*x, *y)).sum();
    for (x, y) in ca.zip(cb) {
        for l in 0..4 {
            acc[l] += f(x[l], y[l]);
        }
    }
    (acc[0] + acc[1]) + (acc[2] + acc[3]) + tail
}

/// Whether the AVX2 distance kernels may run here.
#[cfg(all(feature = "std", target_arch = "x86_64"))]
#[inline]
fn avx2() -> bool {
    crate::kernels::x86::has_avx2()
}

pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    #[cfg(all(feature = "std", target_arch = "x86_64"))]
    if avx2() {
        // SAFETY: the CPU has AVX2 and FMA.
        return unsafe { crate::kernels::x86::dot(a, b) };
    }
    lanes(a, b, |x, y| x * y)
}

pub fn l2_squared(a: &[f32], b: &[f32]) -> f32 {
    #[cfg(all(feature = "std", target_arch = "x86_64"))]
    if avx2() {
        // SAFETY: the CPU has AVX2 and FMA.
        return unsafe { crate::kernels::x86::l2_squared(a, b) };
    }
    lanes(a, b, |x, y| (x - y) * (x - y))
}

pub fn cosine_distance(a: &[f32], b: &[f32]) -> f32 {
    let (mut ab, mut aa, mut bb) = (0.0f32, 0.0f32, 0.0f32);
    for (x, y) in a.iter().zip(b) {
        ab += x * y;
        aa += x * x;
        bb += y * y;
    }
    cosine_from_parts(ab, aa, bb)
}

/// `(a.b, b.b)` of int8 vectors in i32 (exact up to 133,000 dimensions): what a distance from
/// a query whose own norm is known needs. Values must lie in `-127..=127`, as the symmetric
/// quantizer makes them (the AVX2 path negates values, and -128 has no negation).
#[inline]
pub fn i8_dot_norm(a: &[i8], b: &[i8]) -> (i32, i32) {
    #[cfg(all(feature = "std", target_arch = "x86_64"))]
    if avx2() {
        // SAFETY: the CPU has AVX2 and FMA.
        return unsafe { crate::kernels::x86::i8_dot_norm(a, b) };
    }
    i8_dot_norm_portable(a, b)
}

fn i8_dot_norm_portable(a: &[i8], b: &[i8]) -> (i32, i32) {
    let (mut ab, mut bb) = (0i32, 0i32);
    for (&x, &y) in a.iter().zip(b) {
        let (x, y) = (x as i32, y as i32);
        ab += x * y;
        bb += y * y;
    }
    (ab, bb)
}

/// `1 - ab / sqrt(aa bb)` from the dot product and squared norms (1 when either is zero).
pub fn cosine_from_parts(ab: f32, aa: f32, bb: f32) -> f32 {
    let den = libm::sqrtf(aa) * libm::sqrtf(bb);
    if den > 0.0 {
        1.0 - ab / den
    } else {
        1.0
    }
}

/// splitmix64: the vector code's deterministic generator (HNSW levels, k-means seeding).
#[derive(Debug, Clone, Copy)]
pub struct SplitMix(pub u64);

impl SplitMix {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` for `n > 0` (the modulo bias is negligible for small `n`).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
}

#[cfg(all(test, feature = "std", target_arch = "x86_64"))]
mod tests {
    use super::*;

    /// The AVX2 twins agree with the portable sums: exactly for int8, to rounding for f32.
    #[test]
    fn avx2_twins_match_portable() {
        if !avx2() {
            eprintln!("skipping: no AVX2 here");
            return;
        }
        let mut rng = SplitMix(7);
        for len in [0usize, 1, 7, 8, 31, 32, 33, 64, 100, 784, 1000] {
            let f: Vec<f32> = (0..2 * len).map(|_| (rng.next_u64() >> 40) as f32 / 8e6 - 1.0).collect();
            let (a, b) = f.split_at(len);
            let i: Vec<i8> = (0..2 * len).map(|_| ((rng.next_u64() % 255) as i32 - 127) as i8).collect();
            let (ia, ib) = i.split_at(len);
            // SAFETY: AVX2 and FMA checked above.
            let got = unsafe { crate::kernels::x86::i8_dot_norm(ia, ib) };
            assert_eq!(got, i8_dot_norm_portable(ia, ib), "len {len}");
            let (l2, d) = unsafe { (crate::kernels::x86::l2_squared(a, b), crate::kernels::x86::dot(a, b)) };
            let (pl2, pd) = (lanes(a, b, |x, y| (x - y) * (x - y)), lanes(a, b, |x, y| x * y));
            assert!((l2 - pl2).abs() <= 1e-4 * (1.0 + pl2.abs()), "l2 len {len}: {l2} vs {pl2}");
            assert!((d - pd).abs() <= 1e-4 * (1.0 + pd.abs()), "dot len {len}: {d} vs {pd}");
        }
    }
}
