//! AVX-512 causal attention (forward and backward) for head sizes known at compile time: the
//! blocked kernels of [`super::kernels`] written with explicit 16-lane vectors, so that the
//! per-dimension accumulators stay in registers.

// The kernels index several arrays by the same head-dimension counter: ranges read clearer.
#![allow(clippy::needless_range_loop)]

use super::kernels::Attn;
use core::arch::x86_64::*;

const LANES: usize = 16;

/// `e^x` lane by lane, the same Cephes polynomial as [`super::kernels::exp`].
#[inline]
#[target_feature(enable = "avx512f")]
fn exp16(x: __m512) -> __m512 {
    let magic = _mm512_set1_ps(12_582_912.0);
    let x = _mm512_min_ps(_mm512_max_ps(x, _mm512_set1_ps(-87.0)), _mm512_set1_ps(88.0));
    let t = _mm512_fmadd_ps(x, _mm512_set1_ps(std::f32::consts::LOG2_E), magic);
    let n = _mm512_sub_ps(t, magic);
    let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693_359_4), x);
    let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.121_944_4e-4), r);
    let mut p = _mm512_set1_ps(1.987_569_1e-4);
    for c in [1.398_199_9e-3, 8.333_452e-3, 4.166_579_6e-2, 1.666_666_5e-1, 0.5] {
        p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(c));
    }
    let e = _mm512_add_ps(_mm512_fmadd_ps(p, _mm512_mul_ps(r, r), r), _mm512_set1_ps(1.0));
    let bits = _mm512_add_epi32(_mm512_castps_si512(t), _mm512_set1_epi32(127 - 0x4B40_0000));
    _mm512_mul_ps(e, _mm512_castsi512_ps(_mm512_slli_epi32::<23>(bits)))
}

/// The lane sums of eight vectors at once (a transposing reduction: 25 operations instead of
/// eight separate reductions' 60-odd).
#[inline]
#[target_feature(enable = "avx512f")]
fn reduce8(v: &[__m512]) -> [f32; 8] {
    let half: [__m256; 8] = core::array::from_fn(|i| {
        let lo = _mm512_castps512_ps256(v[i]);
        let hi = _mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(_mm512_castps_pd(v[i])));
        _mm256_add_ps(lo, hi)
    });
    let h01 = _mm256_hadd_ps(half[0], half[1]);
    let h23 = _mm256_hadd_ps(half[2], half[3]);
    let h45 = _mm256_hadd_ps(half[4], half[5]);
    let h67 = _mm256_hadd_ps(half[6], half[7]);
    let a = _mm256_hadd_ps(h01, h23);
    let b = _mm256_hadd_ps(h45, h67);
    let lo = _mm256_permute2f128_ps::<0x20>(a, b);
    let hi = _mm256_permute2f128_ps::<0x31>(a, b);
    let r = _mm256_add_ps(lo, hi);
    let mut out = [0.0f32; 8];
    // SAFETY: `out` holds eight f32.
    unsafe { _mm256_storeu_ps(out.as_mut_ptr(), r) };
    out
}

/// Lanes `j0 + l <= t` of a block starting at `j0`.
#[inline]
fn causal_mask(j0: usize, t: usize) -> __mmask16 {
    let valid = (t + 1 - j0).min(LANES);
    if valid == LANES {
        0xFFFF
    } else {
        ((1u32 << valid) - 1) as __mmask16
    }
}

/// # Safety
/// The CPU must support AVX-512F. Shapes as [`super::kernels::attention_blocked`] with
/// `L = 16`; every slice is indexed through checked ranges before its pointer is used.
#[target_feature(enable = "avx512f")]
pub unsafe fn attention<const HS: usize>(
    out: &mut [f32],
    lse: &mut [f32],
    q: &[f32],
    kt: &[f32],
    vt: &[f32],
    s: &mut [f32],
    a: Attn,
) {
    let Attn { len, stride, n_heads, head_size, kv_mul } = a;
    assert!(head_size == HS && stride.is_multiple_of(LANES) && s.len() >= stride && len <= stride);
    let dim = n_heads * HS;
    let scale = 1.0 / (HS as f32).sqrt();
    assert!(q.len() >= len * dim && out.len() >= len * dim && lse.len() >= n_heads * stride);
    for h in 0..n_heads {
        let g = h / kv_mul;
        let k = &kt[g * HS * stride..(g + 1) * HS * stride];
        let v = &vt[g * HS * stride..(g + 1) * HS * stride];
        let (kp, vp, sp) = (k.as_ptr(), v.as_ptr(), s.as_mut_ptr());
        for t in 0..len {
            let nb = (t + 1).div_ceil(LANES);
            let row = t * dim + h * HS;
            let qs: [__m512; HS] = core::array::from_fn(|d| _mm512_set1_ps(q[row + d] * scale));
            let mut mx = _mm512_set1_ps(f32::NEG_INFINITY);
            for b in 0..nb {
                let j0 = b * LANES;
                // Two partial sums: half the dependency chain.
                let (mut s0, mut s1) = (_mm512_setzero_ps(), _mm512_setzero_ps());
                for d in (0..HS).step_by(2) {
                    // SAFETY: d + 1 < HS and j0 + 16 <= stride: inside `k`.
                    let (k0, k1) = unsafe {
                        (
                            _mm512_loadu_ps(kp.add(d * stride + j0)),
                            _mm512_loadu_ps(kp.add((d + 1) * stride + j0)),
                        )
                    };
                    s0 = _mm512_fmadd_ps(qs[d], k0, s0);
                    s1 = _mm512_fmadd_ps(qs[d + 1], k1, s1);
                }
                let mut sc = _mm512_add_ps(s0, s1);
                sc = _mm512_mask_blend_ps(causal_mask(j0, t), _mm512_set1_ps(f32::NEG_INFINITY), sc);
                mx = _mm512_max_ps(mx, sc);
                // SAFETY: j0 + 16 <= stride <= s.len().
                unsafe { _mm512_storeu_ps(sp.add(j0), sc) };
            }
            let mval = _mm512_reduce_max_ps(mx);
            let m = _mm512_set1_ps(mval);
            let mut sum = _mm512_setzero_ps();
            let mut acc = [_mm512_setzero_ps(); HS];
            for b in 0..nb {
                let j0 = b * LANES;
                // SAFETY: as above.
                let sc = unsafe { _mm512_loadu_ps(sp.add(j0)) };
                let p = _mm512_maskz_mov_ps(causal_mask(j0, t), exp16(_mm512_sub_ps(sc, m)));
                sum = _mm512_add_ps(sum, p);
                for (d, ad) in acc.iter_mut().enumerate() {
                    // SAFETY: inside `v` as for `k`.
                    *ad = _mm512_fmadd_ps(p, unsafe { _mm512_loadu_ps(vp.add(d * stride + j0)) }, *ad);
                }
            }
            let total = _mm512_reduce_add_ps(sum);
            let inv = 1.0 / total;
            for (d, ad) in acc.iter().enumerate() {
                out[row + d] = _mm512_reduce_add_ps(*ad) * inv;
            }
            lse[h * stride + t] = mval + total.ln();
        }
    }
}

/// # Safety
/// As [`attention`]; shapes as [`super::kernels::attention_backward_blocked`].
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx512f")]
pub unsafe fn attention_backward<const HS: usize>(
    dq: &mut [f32],
    dkt: &mut [f32],
    dvt: &mut [f32],
    dout: &[f32],
    out: &[f32],
    lse: &[f32],
    q: &[f32],
    kt: &[f32],
    vt: &[f32],
    a: Attn,
) {
    let Attn { len, stride, n_heads, head_size, kv_mul } = a;
    assert!(head_size == HS && stride.is_multiple_of(LANES) && len <= stride);
    let dim = n_heads * HS;
    let scale = 1.0 / (HS as f32).sqrt();
    assert!(
        q.len() >= len * dim && dout.len() >= len * dim && out.len() >= len * dim && dq.len() >= len * dim
    );
    assert!(lse.len() >= n_heads * stride);
    for h in 0..n_heads {
        let g = h / kv_mul;
        let span = g * HS * stride..(g + 1) * HS * stride;
        let (kp, vp) = (kt[span.clone()].as_ptr(), vt[span.clone()].as_ptr());
        let (dkp, dvp) = (dkt[span.clone()].as_mut_ptr(), dvt[span].as_mut_ptr());
        for t in 0..len {
            let nb = (t + 1).div_ceil(LANES);
            let row = t * dim + h * HS;
            let qs: [__m512; HS] = core::array::from_fn(|d| _mm512_set1_ps(q[row + d] * scale));
            let dov: [__m512; HS] = core::array::from_fn(|d| _mm512_set1_ps(dout[row + d]));
            let mut dsum = 0.0f32;
            for d in 0..HS {
                dsum += dout[row + d] * out[row + d];
            }
            let dsum = _mm512_set1_ps(dsum);
            let lv = _mm512_set1_ps(lse[h * stride + t]);
            let mut acc = [_mm512_setzero_ps(); HS];
            for b in 0..nb {
                let j0 = b * LANES;
                // Two partial sums each: half the dependency chains.
                let z = _mm512_setzero_ps();
                let (mut s0, mut s1, mut p0, mut p1) = (z, z, z, z);
                for d in (0..HS).step_by(2) {
                    let (o0, o1) = (d * stride + j0, (d + 1) * stride + j0);
                    // SAFETY: d + 1 < HS and j0 + 16 <= stride: inside this head's span.
                    unsafe {
                        s0 = _mm512_fmadd_ps(qs[d], _mm512_loadu_ps(kp.add(o0)), s0);
                        s1 = _mm512_fmadd_ps(qs[d + 1], _mm512_loadu_ps(kp.add(o1)), s1);
                        p0 = _mm512_fmadd_ps(dov[d], _mm512_loadu_ps(vp.add(o0)), p0);
                        p1 = _mm512_fmadd_ps(dov[d + 1], _mm512_loadu_ps(vp.add(o1)), p1);
                    }
                }
                let (sc, dp) = (_mm512_add_ps(s0, s1), _mm512_add_ps(p0, p1));
                let p = _mm512_maskz_mov_ps(causal_mask(j0, t), exp16(_mm512_sub_ps(sc, lv)));
                let ds = _mm512_mul_ps(p, _mm512_sub_ps(dp, dsum));
                for d in 0..HS {
                    let off = d * stride + j0;
                    // SAFETY: as above; dk/dv are unique borrows of the same span.
                    unsafe {
                        let kd = _mm512_loadu_ps(kp.add(off));
                        acc[d] = _mm512_fmadd_ps(ds, kd, acc[d]);
                        _mm512_storeu_ps(
                            dvp.add(off),
                            _mm512_fmadd_ps(dov[d], p, _mm512_loadu_ps(dvp.add(off))),
                        );
                        _mm512_storeu_ps(
                            dkp.add(off),
                            _mm512_fmadd_ps(qs[d], ds, _mm512_loadu_ps(dkp.add(off))),
                        );
                    }
                }
            }
            for (d, ad) in acc.iter().enumerate() {
                dq[row + d] = _mm512_reduce_add_ps(*ad) * scale;
            }
        }
    }
}

/// [`attention_backward`] for `G` query heads per key/value head, all `G` in one pass over the
/// positions: each block of keys and values is loaded once for the group, and `dk`, `dv` are
/// read and written once for the group.
///
/// # Safety
/// As [`attention_backward`], with `a.kv_mul == G`.
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx512f")]
pub unsafe fn attention_backward_grouped<const HS: usize, const G: usize>(
    dq: &mut [f32],
    dkt: &mut [f32],
    dvt: &mut [f32],
    dout: &[f32],
    out: &[f32],
    lse: &[f32],
    q: &[f32],
    kt: &[f32],
    vt: &[f32],
    a: Attn,
) {
    let Attn { len, stride, n_heads, head_size, kv_mul } = a;
    assert!(head_size == HS && kv_mul == G && stride.is_multiple_of(LANES) && len <= stride);
    let dim = n_heads * HS;
    let scale = 1.0 / (HS as f32).sqrt();
    assert!(
        q.len() >= len * dim && dout.len() >= len * dim && out.len() >= len * dim && dq.len() >= len * dim
    );
    assert!(lse.len() >= n_heads * stride);
    for g in 0..n_heads / G {
        let span = g * HS * stride..(g + 1) * HS * stride;
        let (kp, vp) = (kt[span.clone()].as_ptr(), vt[span.clone()].as_ptr());
        let (dkp, dvp) = (dkt[span.clone()].as_mut_ptr(), dvt[span].as_mut_ptr());
        for t in 0..len {
            let nb = (t + 1).div_ceil(LANES);
            let rows: [usize; G] = core::array::from_fn(|i| t * dim + (g * G + i) * HS);
            let qs: [[f32; HS]; G] =
                core::array::from_fn(|i| core::array::from_fn(|d| q[rows[i] + d] * scale));
            let dov: [[f32; HS]; G] = core::array::from_fn(|i| core::array::from_fn(|d| dout[rows[i] + d]));
            let dsum: [__m512; G] = core::array::from_fn(|i| {
                let mut s = 0.0f32;
                for d in 0..HS {
                    s += dout[rows[i] + d] * out[rows[i] + d];
                }
                _mm512_set1_ps(s)
            });
            let lv: [__m512; G] = core::array::from_fn(|i| _mm512_set1_ps(lse[(g * G + i) * stride + t]));
            let mut acc = [[_mm512_setzero_ps(); HS]; G];
            for b in 0..nb {
                let j0 = b * LANES;
                let mut sc = [_mm512_setzero_ps(); G];
                let mut dp = [_mm512_setzero_ps(); G];
                for d in 0..HS {
                    let off = d * stride + j0;
                    // SAFETY: d < HS and j0 + 16 <= stride: inside this group's span.
                    let (kd, vd) = unsafe { (_mm512_loadu_ps(kp.add(off)), _mm512_loadu_ps(vp.add(off))) };
                    for i in 0..G {
                        sc[i] = _mm512_fmadd_ps(_mm512_set1_ps(qs[i][d]), kd, sc[i]);
                        dp[i] = _mm512_fmadd_ps(_mm512_set1_ps(dov[i][d]), vd, dp[i]);
                    }
                }
                let mask = causal_mask(j0, t);
                let p: [__m512; G] =
                    core::array::from_fn(|i| _mm512_maskz_mov_ps(mask, exp16(_mm512_sub_ps(sc[i], lv[i]))));
                let ds: [__m512; G] =
                    core::array::from_fn(|i| _mm512_mul_ps(p[i], _mm512_sub_ps(dp[i], dsum[i])));
                for d in 0..HS {
                    let off = d * stride + j0;
                    // SAFETY: as above; dk/dv are unique borrows of the same span.
                    unsafe {
                        let kd = _mm512_loadu_ps(kp.add(off));
                        let mut dvd = _mm512_loadu_ps(dvp.add(off));
                        let mut dkd = _mm512_loadu_ps(dkp.add(off));
                        for i in 0..G {
                            acc[i][d] = _mm512_fmadd_ps(ds[i], kd, acc[i][d]);
                            dvd = _mm512_fmadd_ps(_mm512_set1_ps(dov[i][d]), p[i], dvd);
                            dkd = _mm512_fmadd_ps(_mm512_set1_ps(qs[i][d]), ds[i], dkd);
                        }
                        _mm512_storeu_ps(dvp.add(off), dvd);
                        _mm512_storeu_ps(dkp.add(off), dkd);
                    }
                }
            }
            for i in 0..G {
                for c in 0..HS / 8 {
                    let sums = reduce8(&acc[i][c * 8..c * 8 + 8]);
                    for (o, v) in dq[rows[i] + c * 8..rows[i] + c * 8 + 8].iter_mut().zip(sums) {
                        *o = v * scale;
                    }
                }
            }
        }
    }
}

/// [`attention`] for `G` query heads per key/value head, the group in one pass over the keys
/// and one over the values. `s` is scratch of at least `G * stride`.
///
/// # Safety
/// As [`attention`], with `a.kv_mul == G`.
#[target_feature(enable = "avx512f")]
pub unsafe fn attention_grouped<const HS: usize, const G: usize>(
    out: &mut [f32],
    lse: &mut [f32],
    q: &[f32],
    kt: &[f32],
    vt: &[f32],
    s: &mut [f32],
    a: Attn,
) {
    let Attn { len, stride, n_heads, head_size, kv_mul } = a;
    assert!(head_size == HS && kv_mul == G && stride.is_multiple_of(LANES) && s.len() >= G * stride);
    assert!(len <= stride);
    let dim = n_heads * HS;
    let scale = 1.0 / (HS as f32).sqrt();
    assert!(q.len() >= len * dim && out.len() >= len * dim && lse.len() >= n_heads * stride);
    let sp = s.as_mut_ptr();
    for g in 0..n_heads / G {
        let k = &kt[g * HS * stride..(g + 1) * HS * stride];
        let v = &vt[g * HS * stride..(g + 1) * HS * stride];
        let (kp, vp) = (k.as_ptr(), v.as_ptr());
        for t in 0..len {
            let nb = (t + 1).div_ceil(LANES);
            let rows: [usize; G] = core::array::from_fn(|i| t * dim + (g * G + i) * HS);
            let qs: [[f32; HS]; G] =
                core::array::from_fn(|i| core::array::from_fn(|d| q[rows[i] + d] * scale));
            let mut mx = [_mm512_set1_ps(f32::NEG_INFINITY); G];
            for b in 0..nb {
                let j0 = b * LANES;
                let mut sc = [_mm512_setzero_ps(); G];
                for d in 0..HS {
                    // SAFETY: d < HS and j0 + 16 <= stride: inside `k`.
                    let kd = unsafe { _mm512_loadu_ps(kp.add(d * stride + j0)) };
                    for i in 0..G {
                        sc[i] = _mm512_fmadd_ps(_mm512_set1_ps(qs[i][d]), kd, sc[i]);
                    }
                }
                let mask = causal_mask(j0, t);
                for i in 0..G {
                    let x = _mm512_mask_blend_ps(mask, _mm512_set1_ps(f32::NEG_INFINITY), sc[i]);
                    mx[i] = _mm512_max_ps(mx[i], x);
                    // SAFETY: i * stride + j0 + 16 <= G * stride <= s.len().
                    unsafe { _mm512_storeu_ps(sp.add(i * stride + j0), x) };
                }
            }
            let mval: [f32; G] = core::array::from_fn(|i| _mm512_reduce_max_ps(mx[i]));
            let m: [__m512; G] = core::array::from_fn(|i| _mm512_set1_ps(mval[i]));
            let mut sum = [_mm512_setzero_ps(); G];
            let mut acc = [[_mm512_setzero_ps(); HS]; G];
            for b in 0..nb {
                let j0 = b * LANES;
                let mask = causal_mask(j0, t);
                let p: [__m512; G] = core::array::from_fn(|i| {
                    // SAFETY: as above.
                    let x = unsafe { _mm512_loadu_ps(sp.add(i * stride + j0)) };
                    _mm512_maskz_mov_ps(mask, exp16(_mm512_sub_ps(x, m[i])))
                });
                for i in 0..G {
                    sum[i] = _mm512_add_ps(sum[i], p[i]);
                }
                for d in 0..HS {
                    // SAFETY: inside `v` as for `k`.
                    let vd = unsafe { _mm512_loadu_ps(vp.add(d * stride + j0)) };
                    for i in 0..G {
                        acc[i][d] = _mm512_fmadd_ps(p[i], vd, acc[i][d]);
                    }
                }
            }
            for i in 0..G {
                let total = _mm512_reduce_add_ps(sum[i]);
                let inv = 1.0 / total;
                for c in 0..HS / 8 {
                    let sums = reduce8(&acc[i][c * 8..c * 8 + 8]);
                    for (o, v) in out[rows[i] + c * 8..rows[i] + c * 8 + 8].iter_mut().zip(sums) {
                        *o = v * inv;
                    }
                }
                lse[(g * G + i) * stride + t] = mval[i] + total.ln();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vector_exp_and_reduction_match_scalar() {
        if !is_x86_feature_detected!("avx512f") {
            eprintln!("skipping: no AVX-512F");
            return;
        }
        // SAFETY: AVX-512F was detected.
        unsafe { check() }
    }

    #[target_feature(enable = "avx512f")]
    unsafe fn check() {
        let xs: [f32; 16] = core::array::from_fn(|i| -80.0 + 10.3 * i as f32);
        // SAFETY: 16 floats.
        let v = unsafe { _mm512_loadu_ps(xs.as_ptr()) };
        let mut out = [0.0f32; 16];
        // SAFETY: 16 floats.
        unsafe { _mm512_storeu_ps(out.as_mut_ptr(), exp16(v)) };
        for (x, e) in xs.iter().zip(out) {
            let want = (*x as f64).exp();
            assert!(((e as f64) - want).abs() <= 5e-7 * want, "{x}: {e} vs {want}");
        }
        let vs: [__m512; 8] = core::array::from_fn(|i| _mm512_set1_ps(i as f32 + 0.5));
        let sums = reduce8(&vs);
        for (i, s) in sums.iter().enumerate() {
            assert_eq!(*s, 16.0 * (i as f32 + 0.5));
        }
        assert_eq!(causal_mask(0, 0), 1);
        assert_eq!(causal_mask(16, 40), 0xFFFF);
        assert_eq!(causal_mask(32, 40), 0x1FF);
    }
}
