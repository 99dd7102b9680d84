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

pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

pub fn l2_squared(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum()
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

pub(crate) fn cosine_from_parts(ab: f32, aa: f32, bb: f32) -> f32 {
    let den = libm::sqrtf(aa) * libm::sqrtf(bb);
    if den > 0.0 {
        1.0 - ab / den
    } else {
        1.0
    }
}
