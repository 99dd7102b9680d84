//! Lookup tables of the integer path, computed at compile time: `const fn` f64 arithmetic runs
//! in the compiler, so the tables land in flash and no float is evaluated on the chip. This is
//! the only file of the integer path that names a float type.

/// `exp(x)` for |x| <= 16 as `exp(x / 32)^32`: the Taylor series of `exp(x / 32)` has
/// converged to f64 precision after 25 terms on |x / 32| <= 0.5.
const fn exp(x: f64) -> f64 {
    let y = x / 32.0;
    let (mut term, mut sum, mut k) = (1.0, 1.0, 1);
    while k < 25 {
        term = term * y / k as f64;
        sum += term;
        k += 1;
    }
    let mut i = 0;
    while i < 5 {
        sum *= sum;
        i += 1;
    }
    sum
}

/// `v` in Q2.30, rounded to nearest.
const fn q30(v: f64) -> u32 {
    (v * (1u64 << 30) as f64 + 0.5) as u32
}

/// `log2(e)` in Q2.30: turns `exp(-t)` into `2^(-t log2 e)`.
pub const LOG2E_Q30: u32 = q30(core::f64::consts::LOG2_E);

/// `2^(-j / 256)` for j in 0..=256, Q2.30; `EXP2_NEG[0]` is exactly 1.0.
pub const EXP2_NEG: [u32; 257] = {
    let mut t = [0u32; 257];
    let mut j = 0;
    while j < 257 {
        t[j] = q30(exp(-(j as f64) / 256.0 * core::f64::consts::LN_2));
        j += 1;
    }
    t
};

/// Step of [`SIGMOID`]: 1/32, i.e. the low 11 fractional bits of a Q16.16 argument are
/// interpolated (linear interpolation error below 1.5e-5).
pub const SIGMOID_STEP_BITS: u32 = 11;

/// `sigmoid(j / 32)` for j in 0..=512 (x in [0, 16]), Q2.30. Beyond 16, 1 - sigmoid < 2^-23.
pub const SIGMOID: [u32; 513] = {
    let mut t = [0u32; 513];
    let mut j = 0;
    while j < 513 {
        t[j] = q30(1.0 / (1.0 + exp(-(j as f64) / 32.0)));
        j += 1;
    }
    t
};
