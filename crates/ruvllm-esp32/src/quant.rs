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

/// Inverse of [`quantize_row`].
pub fn dequantize_row(q: &[i8], scales: &[f32], out: &mut [f32], group: usize) {
    for ((qg, og), s) in q.chunks(group).zip(out.chunks_mut(group)).zip(scales) {
        for (o, v) in og.iter_mut().zip(qg) {
            *o = *v as f32 * s;
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
    fn zero_group_is_exact() {
        let x = [0.0f32; 5];
        let mut q = [1i8; 5];
        let mut s = [1.0f32; 1];
        quantize_row(&x, &mut q, &mut s, 32);
        assert_eq!(q, [0; 5]);
        assert_eq!(s[0], 0.0);
    }
}
