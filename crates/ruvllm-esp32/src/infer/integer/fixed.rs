//! Integer primitives of the FPU-free forward pass. Everything here takes and returns integer
//! types only; a float from the image arrives as its IEEE-754 bits and is decoded with shifts
//! and masks.

use super::tables::{EXP2_NEG, LOG2E_Q30, SIGMOID, SIGMOID_STEP_BITS};

/// Fractional bits of activations and logits: Q16.16 in i32. Residual activations of these
/// models stay within a few hundred, so 15 integer bits leave ample headroom, and 2^-16 is far
/// below the int8 step (max/127) every matmul input is quantized to anyway.
pub const FRAC: u32 = 16;
/// Fractional bits of exp, sigmoid and softmax probabilities: Q2.30 in u32/i32.
pub const P_FRAC: u32 = 30;
/// Fractional bits of i64 accumulators: 32 leaves 31 integer bits, and rounding each term to
/// 2^-32 costs nothing measurable against the int8 inputs.
pub const ACC: i32 = 32;

/// A scale `m * 2^e` with |m| in [2^15, 2^16) (16 significant bits), or zero. Multiplying two
/// of them stays inside 32 bits, and an i32 times that product inside i64.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Scale {
    pub m: i32,
    pub e: i32,
}

impl Scale {
    pub const ZERO: Scale = Scale { m: 0, e: 0 };

    /// Decodes an IEEE-754 single from its bits: sign, exponent and the 24-bit significand
    /// rounded to 16 bits. Subnormals are exact-then-normalized; zero gives zero; infinities
    /// and NaN become the largest finite magnitude (later products saturate).
    #[inline]
    pub fn from_ieee_bits(bits: u32) -> Scale {
        let exp = (bits >> 23) & 0xff;
        let frac = bits & 0x7f_ffff;
        let s = if exp == 0 {
            Scale::normalize(frac as u64, -149)
        } else if exp == 0xff {
            Scale { m: 0xffff, e: 254 - 127 - 15 }
        } else {
            let m = ((frac | 0x80_0000) + 0x80) >> 8;
            let e = exp as i32 - 127 - 15;
            // Rounding up 0xffff.8 carries into bit 16.
            if m >> 16 != 0 {
                Scale { m: (m >> 1) as i32, e: e + 1 }
            } else {
                Scale { m: m as i32, e }
            }
        };
        if bits >> 31 != 0 {
            Scale { m: -s.m, e: s.e }
        } else {
            s
        }
    }

    /// `m * 2^e` rounded (half up) to 16 significant bits.
    pub fn normalize(m: u64, e: i32) -> Scale {
        if m == 0 {
            return Scale::ZERO;
        }
        let bits = 64 - m.leading_zeros() as i32;
        if bits <= 16 {
            let sh = 16 - bits;
            return Scale { m: (m << sh) as i32, e: e - sh };
        }
        let sh = bits - 16;
        let r = (m >> sh) + ((m >> (sh - 1)) & 1);
        if r >> 16 != 0 {
            Scale { m: (r >> 1) as i32, e: e + sh + 1 }
        } else {
            Scale { m: r as i32, e: e + sh }
        }
    }

    /// The scale of an int8 group whose largest magnitude is `amax` units of `2^-frac`:
    /// `amax / 127`, as [`crate::quant::quantize_row_fixed`] defines it.
    #[inline]
    pub fn of_group(amax: u32, frac: u32) -> Scale {
        if amax == 0 {
            return Scale::ZERO;
        }
        let lz = amax.leading_zeros();
        // amax << lz is in [2^31, 2^32): one native 32-bit division keeps 25 bits.
        Scale::normalize(((amax << lz) / 127) as u64, -(lz as i32) - frac as i32)
    }

    /// `self * other`, renormalized.
    pub fn times(self, other: Scale) -> Scale {
        let p = self.m as i64 * other.m as i64;
        let s = Scale::normalize(p.unsigned_abs(), self.e + other.e);
        if p < 0 {
            Scale { m: -s.m, e: s.e }
        } else {
            s
        }
    }

    /// Packs a non-negative scale into one i32 word (m in the low half, e in the high half)
    /// so the KV cache and activation scales live in the integer arena.
    #[inline]
    pub fn pack(self) -> i32 {
        (((self.e as i16 as u16 as u32) << 16) | (self.m as u32 & 0xffff)) as i32
    }

    #[inline]
    pub fn unpack(p: i32) -> Scale {
        Scale { m: (p as u32 & 0xffff) as i32, e: (p >> 16) as i16 as i32 }
    }
}

/// `v * 2^-sh` rounded half up; a left shift (`sh < 0`) saturates instead of overflowing.
#[inline]
pub fn shr_round(v: i64, sh: i32) -> i64 {
    if sh > 0 {
        if sh >= 63 {
            return 0;
        }
        (v >> sh) + ((v >> (sh - 1)) & 1)
    } else if sh == 0 || v == 0 {
        v
    } else {
        let n = sh.unsigned_abs();
        if n >= 63 || v.unsigned_abs() > (i64::MAX >> n) as u64 {
            if v > 0 {
                i64::MAX
            } else {
                i64::MIN
            }
        } else {
            v << n
        }
    }
}

/// Clamps to the i32 range.
#[inline]
pub fn sat32(v: i64) -> i32 {
    v.clamp(i32::MIN as i64, i32::MAX as i64) as i32
}

/// `floor(sqrt(n))`, digit by digit: shifts, compares and subtractions only.
pub fn isqrt(n: u64) -> u64 {
    let (mut rem, mut root) = (n, 0u64);
    let mut bit = 1u64 << 62;
    while bit > n {
        bit >>= 2;
    }
    while bit != 0 {
        if rem >= root + bit {
            rem -= root + bit;
            root = (root >> 1) + bit;
        } else {
            root >>= 1;
        }
        bit >>= 2;
    }
    root
}

/// `1 / sqrt(v * 2^-frac)` (`frac` even) with 16 significant bits; `v = 0` is treated as the
/// smallest positive value.
pub fn inv_sqrt(v: u64, frac: u32) -> Scale {
    let v = v.max(1);
    // Scale by 4^k into [2^60, 2^62) so the root has 31 significant bits.
    let k = (v.leading_zeros() as i32 - 2) / 2;
    let n = if k >= 0 { v << (2 * k) } else { v >> (-2 * k) };
    let r = isqrt(n).max(1);
    // sqrt(v 2^-frac) = r 2^(-k - frac/2), so the inverse is (2^62 / r) 2^(k + frac/2 - 62).
    Scale::normalize((1u64 << 62) / r, k + (frac / 2) as i32 - 62)
}

/// `exp(-t)` for `t >= 0` in Q16.16, as Q2.30: `2^-(t log2 e)`, the integer part a shift and
/// the fraction from [`EXP2_NEG`] with linear interpolation (relative error below 1e-6).
#[inline]
pub fn exp_neg(t: u32) -> u32 {
    // t log2 e with 24 fractional bits: the exponent's rounding stays far below the table's.
    let u = (t as u64 * LOG2E_Q30 as u64 + (1 << 21)) >> 22;
    let n = u >> 24;
    if n >= 31 {
        return 0;
    }
    let f = u as u32 & 0xff_ffff;
    let (i, fr) = ((f >> 16) as usize & 0xff, (f & 0xffff) as u64);
    let (a, b) = (EXP2_NEG[i], EXP2_NEG[i + 1]);
    let y = a - (((a - b) as u64 * fr + (1 << 15)) >> 16) as u32;
    (y + ((1u32 << n) >> 1)) >> n
}

/// `sigmoid(x)` for Q16.16 `x`, as Q2.30, from [`SIGMOID`] with linear interpolation and
/// `sigmoid(-x) = 1 - sigmoid(x)`.
#[inline]
pub fn sigmoid(x: i32) -> u32 {
    let a = x.unsigned_abs();
    let s = if a >= 16 << FRAC {
        1 << P_FRAC
    } else {
        let (i, fr) = ((a >> SIGMOID_STEP_BITS) as usize & 0x1ff, a & ((1 << SIGMOID_STEP_BITS) - 1));
        let (lo, hi) = (SIGMOID[i], SIGMOID[i + 1]);
        lo + (((hi - lo) as u64 * fr as u64 + (1 << (SIGMOID_STEP_BITS - 1))) >> SIGMOID_STEP_BITS) as u32
    };
    if x < 0 {
        (1 << P_FRAC) - s
    } else {
        s
    }
}

/// `silu(a) * b` in Q16.16 (the SwiGLU gate), saturating.
#[inline]
pub fn swiglu(a: i32, b: i32) -> i32 {
    let silu = sat32(shr_round(a as i64 * sigmoid(a) as i64, P_FRAC as i32));
    sat32(shr_round(silu as i64 * b as i64, FRAC as i32))
}

/// Index of the largest value, the first on a tie (the sampler's greedy rule).
pub fn argmax(x: &[i32]) -> u32 {
    let mut best = (0usize, i32::MIN);
    for (i, &v) in x.iter().enumerate() {
        if v > best.1 || i == 0 {
            best = (i, v);
        }
    }
    best.0 as u32
}

/// Samples a token from Q16.16 `logits` at temperature `temp_milli` / 1000 (0 = [`argmax`]),
/// with integer arithmetic only: weight `exp(-(max - l) / T)` from [`exp_neg`] (Q2.30,
/// relative error below 1e-6), one draw of the xorshift* RNG
/// ([`random_u32`](crate::sample::random_u32)) scaled to the weights' sum, then the first
/// token whose running sum exceeds it. Each token's chance is its softmax probability to
/// within the table's error and the draw's 2^-32 resolution. Empty logits give 0.
#[inline(never)]
pub fn sample_int(logits: &[i32], temp_milli: u32, rng: &mut u64) -> u32 {
    if temp_milli == 0 {
        return argmax(logits);
    }
    let weight = weigher(logits, temp_milli);
    // The maximum weighs exactly 2^30, so the sum is positive; at most 2^30 per token.
    let sum: u64 = logits.iter().map(|&l| weight(l)).sum();
    let r = ((crate::sample::random_u32(rng) as u128 * sum as u128) >> 32) as u64;
    let mut cdf = 0u64;
    for (i, &l) in logits.iter().enumerate() {
        cdf += weight(l);
        if r < cdf {
            return i as u32;
        }
    }
    argmax(logits)
}

/// The weight [`sample_int`] gives a logit at `temp_milli` (> 0): `exp(-(max - l) / T)` in
/// Q2.30, at most 2^30 (the largest logit's).
pub fn weigher(logits: &[i32], temp_milli: u32) -> impl Fn(i32) -> u64 {
    let max = logits.iter().fold(i32::MIN, |m, &v| m.max(v));
    // 1/T with 22 fractional bits, so each logit costs a multiply, not a 64-bit division:
    // `d < 2^32` and `inv <= 1000 * 2^22 < 2^32`, so `d * inv` fits in u64.
    let inv = (1000u64 << 22) / temp_milli.max(1) as u64;
    move |l: i32| {
        let t = ((max as i64 - l as i64) as u64 * inv) >> 22;
        exp_neg(t.min(u32::MAX as u64) as u32) as u64
    }
}
