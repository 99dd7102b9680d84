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
/// cannot be reordered under IEEE rules). Every distance in `vector` goes through it.
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

pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    lanes(a, b, |x, y| x * y)
}

pub fn l2_squared(a: &[f32], b: &[f32]) -> f32 {
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
}
