//! Symmetric int8 group quantization, shared by the converter (weights) and the INT8 forward
//! pass (activations) so both use exactly the same rounding.
//!
//! A row of `n` values is split into groups of `group` values along the row; the last group
//! of a row may be shorter (stories260K's hidden_dim is 172 = 5*32 + 12). Each group gets one
//! f32 scale `max|x| / 127`, values are `round(x / scale)` clamped to [-127, 127].

/// Default group size: the same block length as GGML's Q8_0.
pub const GROUP: usize = 32;

/// Number of groups a row of `n` values needs.
#[inline]
pub const fn groups(n: usize, group: usize) -> usize {
    n.div_ceil(group)
}

/// Quantize one row `x` into `q` (same length) and `scales` (`groups(x.len(), group)` long).
pub fn quantize_row(x: &[f32], q: &mut [i8], scales: &mut [f32], group: usize) {
    debug_assert_eq!(x.len(), q.len());
    debug_assert!(scales.len() >= groups(x.len(), group));
    for ((xg, qg), s) in x.chunks(group).zip(q.chunks_mut(group)).zip(scales.iter_mut()) {
        let amax = xg.iter().fold(0.0f32, |m, v| m.max(libm::fabsf(*v)));
        let scale = amax / 127.0;
        let inv = if scale > 0.0 { 1.0 / scale } else { 0.0 };
        for (qv, xv) in qg.iter_mut().zip(xg) {
            *qv = round_to_i8(xv * inv);
        }
        *s = scale;
    }
}

/// `round(v)` (halves away from zero, like C's `roundf`) clamped to [-127, 127]. Computed from
/// the truncation, which is exact, so it needs no libm call: on a chip without an FPU this is
/// integer work, and on the host it vectorizes.
#[inline]
pub fn round_to_i8(v: f32) -> i8 {
    let v = v.clamp(-127.0, 127.0);
    let t = v as i32;
    let frac = v - t as f32;
    let r = if frac >= 0.5 {
        t + 1
    } else if frac <= -0.5 {
        t - 1
    } else {
        t
    };
    r as i8
}

/// [`quantize_row`] for fixed-point input, with only integer arithmetic (the FPU-free path):
/// the same rule, `q = round(x / (amax / 127))` rounded half away from zero, here computed
/// exactly as `round(127 x / amax)`. `amax` gets each group's `max|x|` in the input's units.
pub fn quantize_row_fixed(x: &[i32], q: &mut [i8], amax: &mut [u32], group: usize) {
    for ((xg, qg), a) in x.chunks(group).zip(q.chunks_mut(group)).zip(amax.iter_mut()) {
        let m = xg.iter().fold(0u32, |m, v| m.max(v.unsigned_abs()));
        *a = m;
        // Keep 254 * |x| + m inside u32 so each value costs one native 32-bit division; only
        // groups above 2^24 units (256.0 in Q16.16) lose low bits, 2^-24 of their range.
        let sh = (32 - m.leading_zeros()).saturating_sub(24);
        let den = (m >> sh).max(1);
        for (qv, xv) in qg.iter_mut().zip(xg) {
            let num = (xv.unsigned_abs() >> sh).min(den);
            let r = ((254 * num + den) / (2 * den)) as i8;
            *qv = if *xv < 0 { -r } else { r };
        }
    }
}

/// Inverse of [`quantize_row`].
pub fn dequantize_row(q: &[i8], scales: &[f32], out: &mut [f32], group: usize) {
    for ((qg, og), s) in q.chunks(group).zip(out.chunks_mut(group)).zip(scales) {
        for (o, v) in og.iter_mut().zip(qg) {
            *o = *v as f32 * s;
        }
    }
}

/// Weight formats a matrix can be stored in. Quantization-aware training computes its forward
/// pass with [`project_row`] of the chosen format, so the engine later sees exactly the values
/// the model was trained with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WeightFormat {
    F32,
    /// Int8, one f32 scale per group of [`GROUP`] along each row ([`quantize_row`]).
    Q8,
    /// 1.58-bit: values in {-1, 0, +1} times one f32 scale per row (BitNet b1.58's absmean).
    Ternary,
    /// 1-bit: values in {-1, +1} times one f32 scale per row (the row's mean |w|).
    Binary,
}

impl WeightFormat {
    pub fn name(self) -> &'static str {
        match self {
            WeightFormat::F32 => "f32",
            WeightFormat::Q8 => "q8",
            WeightFormat::Ternary => "ternary",
            WeightFormat::Binary => "binary",
        }
    }
}

/// Mean |w| of a row: the per-row scale of the ternary and binary formats (0 for an empty row).
pub fn absmean(x: &[f32]) -> f32 {
    if x.is_empty() {
        return 0.0;
    }
    x.iter().map(|v| libm::fabsf(*v)).sum::<f32>() / x.len() as f32
}

/// Ternary code of `v` for a row of scale `scale`: `round(v / scale)` clamped to [-1, 1].
#[inline]
pub fn ternary_code(v: f32, scale: f32) -> i8 {
    if scale > 0.0 {
        round_to_i8(v / scale).clamp(-1, 1)
    } else {
        0
    }
}

/// Binary code of `v`: its sign, with 0 counted as positive.
#[inline]
pub fn binary_code(v: f32) -> i8 {
    if v < 0.0 {
        -1
    } else {
        1
    }
}

/// The values a row of weights takes once stored in `format` and read back: what QAT's forward
/// pass uses (its backward passes gradients straight through to the latent `x`).
pub fn project_row(format: WeightFormat, x: &[f32], out: &mut [f32]) {
    debug_assert_eq!(x.len(), out.len());
    match format {
        WeightFormat::F32 => out.copy_from_slice(x),
        WeightFormat::Q8 => {
            for (xg, og) in x.chunks(GROUP).zip(out.chunks_mut(GROUP)) {
                let (mut q, mut s) = ([0i8; GROUP], [0.0f32; 1]);
                let q = &mut q[..xg.len()];
                quantize_row(xg, q, &mut s, GROUP);
                dequantize_row(q, &s, og, GROUP);
            }
        }
        WeightFormat::Ternary => {
            let s = absmean(x);
            for (o, v) in out.iter_mut().zip(x) {
                *o = ternary_code(*v, s) as f32 * s;
            }
        }
        WeightFormat::Binary => {
            let s = absmean(x);
            for (o, v) in out.iter_mut().zip(x) {
                *o = binary_code(*v) as f32 * s;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partial_last_group_has_its_own_scale() {
        // 40 values: one full group of 32 with large values and a tail of 8 small ones.
        let mut x = [0.0f32; 40];
        for (i, v) in x.iter_mut().enumerate() {
            *v = if i < 32 { (i as f32 - 16.0) * 10.0 } else { (i as f32 - 36.0) * 0.01 };
        }
        let mut q = [0i8; 40];
        let mut s = [0.0f32; 2];
        quantize_row(&x, &mut q, &mut s, 32);
        assert!((s[1] - 0.04 / 127.0).abs() < 1e-9, "tail scale {}", s[1]);
        let mut back = [0.0f32; 40];
        dequantize_row(&q, &s, &mut back, 32);
        for i in 0..40 {
            assert!((back[i] - x[i]).abs() <= s[i / 32] * 0.5 + 1e-7, "{i}");
        }
    }

    #[test]
    fn rounding_matches_roundf_everywhere_in_range() {
        // Every f32 in [-128, 128] would take too long; step through a dense sample plus the
        // halves and their neighbours, where rounding rules differ.
        let mut v = -128.0f32;
        while v <= 128.0 {
            for x in [v, v + 0.5, (v + 0.5).next_up(), (v + 0.5).next_down()] {
                let want = libm::roundf(x).clamp(-127.0, 127.0) as i8;
                assert_eq!(round_to_i8(x), want, "{x}");
            }
            v += 0.0625;
        }
        assert_eq!(round_to_i8(f32::NAN), 0);
        assert_eq!(round_to_i8(f32::INFINITY), 127);
        assert_eq!(round_to_i8(-1e30), -127);
    }

    #[test]
    fn fixed_quantization_follows_the_same_rule() {
        // Against round(127 x / amax) in f64, halves away from zero, including a group whose
        // maximum is i32::MIN (|x| = 2^31) and an all-zero group.
        let mut x = [0i32; 96];
        for (i, v) in x.iter_mut().enumerate() {
            *v = ((i as i64 * 7919 - 300_000) * (i as i64 % 5 + 1)) as i32;
        }
        x[40] = i32::MIN;
        x[41] = i32::MAX;
        x[64..].fill(0);
        let (mut q, mut a) = ([0i8; 96], [0u32; 3]);
        quantize_row_fixed(&x, &mut q, &mut a, 32);
        for g in 0..2 {
            let amax = x[g * 32..g * 32 + 32].iter().map(|v| (*v as i64).abs()).max().unwrap();
            assert_eq!(a[g] as i64, amax);
            for i in g * 32..g * 32 + 32 {
                let want = libm::round(127.0 * x[i] as f64 / amax as f64) as i8;
                // Groups above 2^24 drop low bits before dividing: off by one at most.
                let tol = if amax >= 1 << 24 { 1 } else { 0 };
                assert!((q[i] as i32 - want as i32).abs() <= tol, "{i}: {} vs {want}", q[i]);
            }
        }
        assert_eq!(a[2], 0);
        assert!(q[64..].iter().all(|v| *v == 0));
        // Exact halves: 127 * 1 / 254 = 0.5 rounds away from zero.
        let (mut q, mut a) = ([0i8; 2], [0u32; 1]);
        quantize_row_fixed(&[254, -1], &mut q, &mut a, 32);
        assert_eq!(q, [127, -1]);
    }

    #[test]
    fn zero_group_is_exact() {
        let x = [0.0f32; 5];
        let mut q = [1i8; 5];
        let mut s = [1.0f32; 1];
        quantize_row(&x, &mut q, &mut s, 32);
        assert_eq!(q, [0; 5]);
        assert_eq!(s[0], 0.0);
    }

    #[test]
    fn projections_are_idempotent_enough_and_on_their_grids() {
        let x: [f32; 40] = core::array::from_fn(|i| ((i * 37 % 23) as f32 - 11.0) * 0.013);
        for f in [WeightFormat::F32, WeightFormat::Q8, WeightFormat::Ternary, WeightFormat::Binary] {
            let mut p = [0.0f32; 40];
            project_row(f, &x, &mut p);
            match f {
                WeightFormat::F32 => assert_eq!(p, x),
                WeightFormat::Q8 => {
                    let (mut q, mut s) = ([0i8; 40], [0.0f32; 2]);
                    quantize_row(&x, &mut q, &mut s, GROUP);
                    let mut d = [0.0f32; 40];
                    dequantize_row(&q, &s, &mut d, GROUP);
                    assert_eq!(p, d);
                }
                WeightFormat::Ternary | WeightFormat::Binary => {
                    let s = absmean(&x);
                    for (pv, xv) in p.iter().zip(&x) {
                        let k = pv / s;
                        assert!(k == -1.0 || k == 1.0 || (k == 0.0 && f == WeightFormat::Ternary), "{k}");
                        assert!(*pv == 0.0 || pv.signum() == xv.signum());
                    }
                    assert!(p.contains(&0.0) == (f == WeightFormat::Ternary));
                }
            }
        }
    }
}
