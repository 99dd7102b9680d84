//! 1-bit sign vectors: `N` bytes hold `8 * N` dimensions, bit `i % 8` of byte `i / 8` set when
//! dimension `i` is positive. Hamming distance is a popcount; a float query can also be scored
//! against the packed signs directly (asymmetric), which ranks better than binarizing it too.

/// A packed sign vector of `8 * N` dimensions; `BinaryVector` alone is the 64-dimension one
/// (`N = 8`) that [`BinaryVector::from_f32`] builds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(transparent)]
pub struct BinaryVector<const N: usize = 8> {
    pub bits: [u8; N],
}

impl<const N: usize> Default for BinaryVector<N> {
    fn default() -> Self {
        BinaryVector { bits: [0; N] }
    }
}

impl<const N: usize> BinaryVector<N> {
    /// Number of dimensions this vector holds.
    pub const DIMS: usize = 8 * N;

    /// Packs the signs of `v` (`> 0.0` is a one bit; NaN and zero are zero bits). Values past
    /// `8 * N` are ignored and a shorter `v` leaves the remaining bits zero, so this cannot fail.
    /// `N` comes from the context (`BinaryVector::<16>::pack(&v)` for 128 dimensions).
    pub fn pack(v: &[f32]) -> Self {
        let mut bits = [0u8; N];
        for (i, &x) in v.iter().take(8 * N).enumerate() {
            if x > 0.0 {
                bits[i / 8] |= 1 << (i % 8);
            }
        }
        BinaryVector { bits }
    }

    /// Whether dimension `i` is positive (false past the end).
    pub fn bit(&self, i: usize) -> bool {
        self.bits.get(i / 8).is_some_and(|b| b >> (i % 8) & 1 == 1)
    }

    /// Number of differing bits.
    pub fn hamming_distance(&self, other: &Self) -> u32 {
        hamming_distance(&self.bits, &other.bits)
    }

    /// Asymmetric dot product: `sum q[i] * (+1 or -1)` for the stored signs.
    pub fn dot_f32(&self, q: &[f32]) -> f32 {
        q.iter().take(8 * N).enumerate().map(|(i, &x)| if self.bit(i) { x } else { -x }).sum()
    }

    /// Asymmetric distance: the sum of `|q[i]|` over the dimensions whose sign disagrees. It
    /// equals the Hamming distance for a query of +-1 values and is `(sum |q| - dot_f32(q)) / 2`,
    /// so it ranks like the asymmetric dot product.
    pub fn distance_f32(&self, q: &[f32]) -> f32 {
        // Eight independent sums, one per bit of a byte, without branches (vectorizes on the
        // host): |q[i]| is masked to +0.0 where the signs agree, an integer AND rather than a
        // float multiply (which is a soft-float call on the C3).
        let mut acc = [0.0f32; 8];
        let q = &q[..q.len().min(8 * N)];
        let chunks = q.chunks_exact(8);
        let tail = chunks.remainder();
        for (&byte, qs) in self.bits.iter().zip(chunks) {
            for l in 0..8 {
                let differs = (((byte >> l) & 1) ^ (qs[l] > 0.0) as u8) as u32;
                acc[l] += f32::from_bits(qs[l].to_bits() & 0u32.wrapping_sub(differs) & 0x7fff_ffff);
            }
        }
        let base = 8 * (q.len() / 8);
        let tail: f32 = tail
            .iter()
            .enumerate()
            .filter(|&(i, &x)| (x > 0.0) != self.bit(base + i))
            .map(|(_, &x)| libm::fabsf(x))
            .sum();
        ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7])) + tail
    }
}

impl BinaryVector {
    /// [`Self::pack`] for the default size, 64 dimensions (8 bytes): what
    /// `BinaryVector::from_f32(&v)` builds when nothing else names the size.
    pub fn from_f32(v: &[f32]) -> Self {
        Self::pack(v)
    }
}

impl<const N: usize> AsRef<[u8]> for BinaryVector<N> {
    fn as_ref(&self) -> &[u8] {
        &self.bits
    }
}

/// Hamming distance between two packed byte strings or [`BinaryVector`]s (the shorter length
/// is compared), eight bytes at a time.
pub fn hamming_distance<A: AsRef<[u8]> + ?Sized, B: AsRef<[u8]> + ?Sized>(a: &A, b: &B) -> u32 {
    let (a, b) = (a.as_ref(), b.as_ref());
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut total = 0u32;
    let mut ca = a.chunks_exact(8);
    let mut cb = b.chunks_exact(8);
    for (x, y) in (&mut ca).zip(&mut cb) {
        let mut xa = [0u8; 8];
        let mut ya = [0u8; 8];
        xa.copy_from_slice(x);
        ya.copy_from_slice(y);
        total += (u64::from_le_bytes(xa) ^ u64::from_le_bytes(ya)).count_ones();
    }
    for (x, y) in ca.remainder().iter().zip(cb.remainder()) {
        total += (x ^ y).count_ones();
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packing_and_distances() {
        let a = BinaryVector::<2>::pack(&[1.0, -1.0, 0.5, 0.0, -2.0, 3.0, 1.0, 1.0, 1.0]);
        assert_eq!(a.bits, [0b1110_0101, 0b0000_0001]);
        let b = BinaryVector::<2>::pack(&[-1.0; 16]);
        assert_eq!(a.hamming_distance(&b), 6);
        let q = [1.0, -1.0, 1.0, 1.0, -1.0, 1.0, 1.0, 1.0];
        assert_eq!(a.distance_f32(&q), 1.0); // only dim 3 (0.0 packs as negative) differs
        let abs: f32 = q.iter().map(|x| x.abs()).sum();
        assert_eq!(a.distance_f32(&q), (abs - a.dot_f32(&q)) / 2.0);
        assert_eq!(hamming_distance(&[0xff; 11], &[0; 11]), 88);
        assert_eq!(hamming_distance(&a, &b), 6);
        // The default size: 64 dimensions.
        assert_eq!(BinaryVector::from_f32(&[1.0; 64]).bits, [0xff; 8]);
    }
}
