//! The trainer's kernels. Everything but the matrix products (`matrixmultiply`'s sgemm, which
//! picks its own SIMD path at run time) is written as plain loops over slices with several
//! independent accumulators, `#[inline(always)]`, so that inside the trainer's
//! `#[target_feature]` entry points the compiler vectorizes them for AVX2/AVX-512.

/// `c[m][n] = beta * c + a[m][k] * b[k][n]`, each operand with its own row and column strides.
#[allow(clippy::too_many_arguments)]
#[inline]
fn gemm(
    (m, k, n): (usize, usize, usize),
    a: &[f32],
    (rsa, csa): (usize, usize),
    b: &[f32],
    (rsb, csb): (usize, usize),
    beta: f32,
    c: &mut [f32],
    (rsc, csc): (usize, usize),
) {
    if m == 0 || n == 0 {
        return;
    }
    let last = |rows: usize, cols: usize, rs: usize, cs: usize| (rows - 1) * rs + (cols - 1) * cs;
    assert!(k == 0 || last(m, k, rsa, csa) < a.len(), "gemm: a too short");
    assert!(k == 0 || last(k, n, rsb, csb) < b.len(), "gemm: b too short");
    assert!(last(m, n, rsc, csc) < c.len(), "gemm: c too short");
    // SAFETY: the asserts above keep every access of the strided operands inside the slices,
    // and `c` is a unique borrow distinct from `a` and `b`.
    unsafe {
        matrixmultiply::sgemm(
            m,
            k,
            n,
            1.0,
            a.as_ptr(),
            rsa as isize,
            csa as isize,
            b.as_ptr(),
            rsb as isize,
            csb as isize,
            beta,
            c.as_mut_ptr(),
            rsc as isize,
            csc as isize,
        );
    }
}

/// `y[t][o] = beta * y + sum_i x[t][i] * w[o][i]` for `t < rows` (the forward matmul).
pub fn matmul_xwt(y: &mut [f32], x: &[f32], w: &[f32], rows: usize, i: usize, o: usize, beta: f32) {
    gemm((rows, i, o), x, (i, 1), w, (1, i), beta, y, (o, 1));
}

/// `dx[t][i] = beta * dx + sum_o dy[t][o] * w[o][i]` (the input gradient).
pub fn matmul_xw(dx: &mut [f32], dy: &[f32], w: &[f32], rows: usize, i: usize, o: usize, beta: f32) {
    gemm((rows, o, i), dy, (o, 1), w, (i, 1), beta, dx, (i, 1));
}

/// `dw[o][i] += sum_t dy[t][o] * x[t][i]` (the weight gradient).
pub fn matmul_dw(dw: &mut [f32], dy: &[f32], x: &[f32], rows: usize, i: usize, o: usize) {
    gemm((o, rows, i), dy, (1, o), x, (i, 1), 1.0, dw, (i, 1));
}

/// `e^x` to about 2 ulp for x in [-87, 88] (Cephes' polynomial), branch-free so it vectorizes.
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    // Round x / ln 2 to the nearest integer n by adding 1.5 * 2^23: n then sits in the low
    // bits of `t`, which become the exponent of 2^n without a float-to-int conversion.
    const MAGIC: f32 = 12_582_912.0;
    let x = x.clamp(-87.0, 88.0);
    let t = x * std::f32::consts::LOG2_E + MAGIC;
    let n = t - MAGIC;
    let r = x - n * 0.693_359_4 + n * 2.121_944_4e-4;
    let p = 1.987_569_1e-4;
    let p = p * r + 1.398_199_9e-3;
    let p = p * r + 8.333_452e-3;
    let p = p * r + 4.166_579_6e-2;
    let p = p * r + 1.666_666_5e-1;
    let p = p * r + 0.5;
    let e = p * (r * r) + r + 1.0;
    e * f32::from_bits(t.to_bits().wrapping_add(127u32.wrapping_sub(0x4B40_0000)) << 23)
}

const LANES: usize = 16;

#[inline(always)]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut acc = [0.0f32; LANES];
    let (ca, cb) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for l in 0..LANES {
            acc[l] += x[l] * y[l];
        }
    }
    let mut s = 0.0;
    for (x, y) in ra.iter().zip(rb) {
        s += x * y;
    }
    s + hsum(&acc)
}

#[inline(always)]
fn hsum(acc: &[f32; LANES]) -> f32 {
    let mut a = *acc;
    let mut w = LANES / 2;
    while w > 0 {
        for l in 0..w {
            a[l] += a[l + w];
        }
        w /= 2;
    }
    a[0]
}

#[inline(always)]
pub fn max(a: &[f32]) -> f32 {
    let mut acc = [f32::NEG_INFINITY; LANES];
    let c = a.chunks_exact(LANES);
    let r = c.remainder();
    for x in c {
        for l in 0..LANES {
            acc[l] = if x[l] > acc[l] { x[l] } else { acc[l] };
        }
    }
    let mut m = f32::NEG_INFINITY;
    for v in acc.iter().chain(r) {
        if *v > m {
            m = *v;
        }
    }
    m
}

/// `a[j] = exp(a[j] - m)`; returns the sum.
#[inline(always)]
pub fn exp_shift_sum(a: &mut [f32], m: f32) -> f32 {
    let mut acc = [0.0f32; LANES];
    let mut c = a.chunks_exact_mut(LANES);
    for x in &mut c {
        for l in 0..LANES {
            x[l] = exp(x[l] - m);
            acc[l] += x[l];
        }
    }
    let mut s = 0.0;
    for x in c.into_remainder() {
        *x = exp(*x - m);
        s += *x;
    }
    s + hsum(&acc)
}

/// `y += a * x`.
#[inline(always)]
pub fn axpy(y: &mut [f32], a: f32, x: &[f32]) {
    for (y, x) in y.iter_mut().zip(x) {
        *y += a * x;
    }
}

/// RMSNorm of one row, the engine's formula: `o = w * (x * r)` with `r = 1 / sqrt(mean(x^2) +
/// eps)`; returns `r`.
#[inline(always)]
pub fn rmsnorm(o: &mut [f32], x: &[f32], w: &[f32], eps: f32) -> f32 {
    let ss = dot(x, x) / x.len() as f32 + eps;
    let r = 1.0 / ss.sqrt();
    for ((o, x), w) in o.iter_mut().zip(x).zip(w) {
        *o = w * (r * x);
    }
    r
}

/// Backward of [`rmsnorm`] for one row: `dx += ...`, `dw += dy * x * r`.
#[inline(always)]
pub fn rmsnorm_backward(dx: &mut [f32], dw: &mut [f32], dy: &[f32], x: &[f32], w: &[f32], r: f32) {
    let n = x.len();
    let mut acc = [0.0f32; LANES];
    let mut tail = 0.0f32;
    let full = n - n % LANES;
    for c in (0..full).step_by(LANES) {
        for l in 0..LANES {
            acc[l] += w[c + l] * dy[c + l] * x[c + l];
        }
    }
    for j in full..n {
        tail += w[j] * dy[j] * x[j];
    }
    let s = hsum(&acc) + tail;
    let c = s * r * r * r / n as f32;
    for j in 0..n {
        dx[j] += r * (w[j] * dy[j]) - c * x[j];
        dw[j] += dy[j] * (x[j] * r);
    }
}

/// [`rmsnorm_backward`] for `r.len()` consecutive rows of `x.len() / r.len()` values; `dw`
/// accumulates over all of them.
pub fn rmsnorm_backward_rows(dx: &mut [f32], dw: &mut [f32], dy: &[f32], x: &[f32], w: &[f32], r: &[f32]) {
    let d = w.len();
    for (t, &rt) in r.iter().enumerate() {
        let row = t * d..(t + 1) * d;
        rmsnorm_backward(&mut dx[row.clone()], dw, &dy[row.clone()], &x[row], w, rt);
    }
}

/// `g = silu(a) * b`.
#[inline(always)]
pub fn swiglu(g: &mut [f32], a: &[f32], b: &[f32]) {
    for ((g, a), b) in g.iter_mut().zip(a).zip(b) {
        let s = 1.0 / (1.0 + exp(-a));
        *g = a * s * b;
    }
}

/// Backward of [`swiglu`]: `da = dg * b * s * (1 + a (1 - s))`, `db = dg * silu(a)`.
#[inline(always)]
pub fn swiglu_backward(da: &mut [f32], db: &mut [f32], dg: &[f32], a: &[f32], b: &[f32]) {
    for ((((da, db), dg), a), b) in da.iter_mut().zip(db.iter_mut()).zip(dg).zip(a).zip(b) {
        let s = 1.0 / (1.0 + exp(-a));
        *db = dg * a * s;
        *da = dg * b * s * (1.0 + a * (1.0 - s));
    }
}

/// Inverse rotation of [`ruvllm_esp32::kernels::reference::rope`]: the gradient with respect to
/// the un-rotated vector.
#[inline(always)]
pub fn rope_backward(g: &mut [f32], table: &[f32]) {
    for head in g.chunks_exact_mut(table.len()) {
        for (pair, cs) in head.chunks_exact_mut(2).zip(table.chunks_exact(2)) {
            let (g0, g1) = (pair[0], pair[1]);
            pair[0] = g0 * cs[0] + g1 * cs[1];
            pair[1] = -g0 * cs[1] + g1 * cs[0];
        }
    }
}

/// `dst[c][t] = src[t][c]` for `t < rows`, `c < cols`, `dst` rows `stride` apart.
#[inline(always)]
pub fn transpose(dst: &mut [f32], src: &[f32], rows: usize, cols: usize, stride: usize) {
    for (t, row) in src.chunks_exact(cols).take(rows).enumerate() {
        for (c, v) in row.iter().enumerate() {
            dst[c * stride + t] = *v;
        }
    }
}

/// `dst[t][c] = src[c][t]`: the inverse of [`transpose`].
#[inline(always)]
pub fn untranspose(dst: &mut [f32], src: &[f32], rows: usize, cols: usize, stride: usize) {
    for (t, row) in dst.chunks_exact_mut(cols).take(rows).enumerate() {
        for (c, v) in row.iter_mut().enumerate() {
            *v = src[c * stride + t];
        }
    }
}

/// Shapes of one sequence's attention.
#[derive(Clone, Copy)]
pub struct Attn {
    /// Positions in this sequence.
    pub len: usize,
    /// Row stride of the transposed keys and values (the trainer's maximum sequence length).
    pub stride: usize,
    pub n_heads: usize,
    pub head_size: usize,
    /// Query heads per key/value head.
    pub kv_mul: usize,
}

/// Causal attention for one sequence, all heads, fused: scores, softmax and weighted sum one
/// query row at a time, nothing `T x T` stored. `q` is `[len][dim]` (roped), `kt`/`vt` the keys
/// (roped) and values transposed, `[kv_dim][stride]`. Writes `out` `[len][dim]` and each row's
/// log-sum-exp of the scaled scores into `lse` `[n_heads][stride]` for the backward pass.
#[inline(always)]
pub fn attention(
    out: &mut [f32],
    lse: &mut [f32],
    q: &[f32],
    kt: &[f32],
    vt: &[f32],
    s: &mut [f32],
    a: Attn,
) {
    let Attn { len, stride, n_heads, head_size: hs, kv_mul } = a;
    let dim = n_heads * hs;
    let scale = 1.0 / (hs as f32).sqrt();
    for h in 0..n_heads {
        let g = h / kv_mul;
        let k = &kt[g * hs * stride..(g + 1) * hs * stride];
        let v = &vt[g * hs * stride..(g + 1) * hs * stride];
        for t in 0..len {
            let n = t + 1;
            let s = &mut s[..n];
            let qh = &q[t * dim + h * hs..t * dim + (h + 1) * hs];
            scores(s, qh, k, stride, scale);
            let m = max(s);
            let sum = exp_shift_sum(s, m);
            let inv = 1.0 / sum;
            let o = &mut out[t * dim + h * hs..t * dim + (h + 1) * hs];
            for (d, o) in o.iter_mut().enumerate() {
                *o = dot(s, &v[d * stride..d * stride + n]) * inv;
            }
            lse[h * stride + t] = m + sum.ln();
        }
    }
}

/// `s[j] = sum_d (q[d] * scale) * k[d][j]`.
#[inline(always)]
fn scores(s: &mut [f32], qh: &[f32], k: &[f32], stride: usize, scale: f32) {
    let n = s.len();
    let q0 = qh[0] * scale;
    for (s, k) in s.iter_mut().zip(&k[..n]) {
        *s = q0 * k;
    }
    for (d, q) in qh.iter().enumerate().skip(1) {
        axpy(s, q * scale, &k[d * stride..d * stride + n]);
    }
}

/// Backward of [`attention`], recomputing each probability row from `lse`. `dout` is the
/// gradient of `out` (`[len][dim]`); writes `dq` (`[len][dim]`, overwritten) and accumulates
/// into `dkt`/`dvt` (transposed like `kt`/`vt`, zeroed by the caller). `p` and `dp` are scratch
/// of `len` values.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
pub fn attention_backward(
    dq: &mut [f32],
    dkt: &mut [f32],
    dvt: &mut [f32],
    dout: &[f32],
    out: &[f32],
    lse: &[f32],
    q: &[f32],
    kt: &[f32],
    vt: &[f32],
    (p, dp): (&mut [f32], &mut [f32]),
    a: Attn,
) {
    let Attn { len, stride, n_heads, head_size: hs, kv_mul } = a;
    let dim = n_heads * hs;
    let scale = 1.0 / (hs as f32).sqrt();
    for h in 0..n_heads {
        let g = h / kv_mul;
        let span = g * hs * stride..(g + 1) * hs * stride;
        let (k, v) = (&kt[span.clone()], &vt[span.clone()]);
        let (dk, dv) = (&mut dkt[span.clone()], &mut dvt[span]);
        for t in 0..len {
            let n = t + 1;
            let (p, dp) = (&mut p[..n], &mut dp[..n]);
            let row = t * dim + h * hs..t * dim + (h + 1) * hs;
            let (qh, doh, oh) = (&q[row.clone()], &dout[row.clone()], &out[row.clone()]);
            scores(p, qh, k, stride, scale);
            let l = lse[h * stride + t];
            for x in p.iter_mut() {
                *x = exp(*x - l);
            }
            // dp[j] = dout . v[j]; dv[j] += p[j] dout.
            for (s, vv) in dp.iter_mut().zip(&v[..n]) {
                *s = doh[0] * vv;
            }
            for d in 1..hs {
                axpy(dp, doh[d], &v[d * stride..d * stride + n]);
            }
            for d in 0..hs {
                axpy(&mut dv[d * stride..d * stride + n], doh[d], p);
            }
            // ds = p (dp - sum_j p_j dp_j), and sum_j p_j dp_j = dout . out.
            let dsum = dot(doh, oh);
            for (ds, p) in dp.iter_mut().zip(p.iter()) {
                *ds = p * (*ds - dsum);
            }
            let dqh = &mut dq[row];
            for d in 0..hs {
                dqh[d] = dot(dp, &k[d * stride..d * stride + n]) * scale;
                axpy(&mut dk[d * stride..d * stride + n], qh[d] * scale, dp);
            }
        }
    }
}

/// [`attention`] for a head size known at compile time, `L` lanes per block of positions: the
/// scores, the probabilities and the weighted sum of each query row stay in registers, two
/// passes over the row. `stride` must be a multiple of `L`, and `kt`/`vt` must hold finite
/// values (zeros) from `len` up to the next multiple of `L`.
#[inline(always)]
pub fn attention_blocked<const HS: usize, const L: usize>(
    out: &mut [f32],
    lse: &mut [f32],
    q: &[f32],
    kt: &[f32],
    vt: &[f32],
    s: &mut [f32],
    a: Attn,
) {
    let Attn { len, stride, n_heads, head_size, kv_mul } = a;
    assert!(head_size == HS && stride.is_multiple_of(L) && s.len() >= stride);
    let dim = n_heads * HS;
    let scale = 1.0 / (HS as f32).sqrt();
    for h in 0..n_heads {
        let g = h / kv_mul;
        let k = &kt[g * HS * stride..(g + 1) * HS * stride];
        let v = &vt[g * HS * stride..(g + 1) * HS * stride];
        for t in 0..len {
            let nb = (t + 1).div_ceil(L);
            let qh: &[f32; HS] = q[t * dim + h * HS..][..HS].try_into().unwrap();
            let qs: [f32; HS] = core::array::from_fn(|d| qh[d] * scale);
            let mut mx = [f32::NEG_INFINITY; L];
            for b in 0..nb {
                let j0 = b * L;
                let mut sc = [0.0f32; L];
                for d in 0..HS {
                    let kd: &[f32; L] = k[d * stride + j0..][..L].try_into().unwrap();
                    for l in 0..L {
                        sc[l] += qs[d] * kd[l];
                    }
                }
                if b + 1 == nb {
                    for (l, x) in sc.iter_mut().enumerate() {
                        if j0 + l > t {
                            *x = f32::NEG_INFINITY;
                        }
                    }
                }
                for l in 0..L {
                    mx[l] = if sc[l] > mx[l] { sc[l] } else { mx[l] };
                }
                s[j0..j0 + L].copy_from_slice(&sc);
            }
            let m = mx.iter().fold(f32::NEG_INFINITY, |a, b| if *b > a { *b } else { a });
            let mut sum = [0.0f32; L];
            let mut acc = [[0.0f32; L]; HS];
            for b in 0..nb {
                let j0 = b * L;
                let sc: &[f32; L] = s[j0..j0 + L].try_into().unwrap();
                let mut p: [f32; L] = core::array::from_fn(|l| exp(sc[l] - m));
                if b + 1 == nb {
                    for (l, x) in p.iter_mut().enumerate() {
                        if j0 + l > t {
                            *x = 0.0;
                        }
                    }
                }
                for l in 0..L {
                    sum[l] += p[l];
                }
                for d in 0..HS {
                    let vd: &[f32; L] = v[d * stride + j0..][..L].try_into().unwrap();
                    for l in 0..L {
                        acc[d][l] += p[l] * vd[l];
                    }
                }
            }
            let total = sum.iter().sum::<f32>();
            let inv = 1.0 / total;
            let o = &mut out[t * dim + h * HS..][..HS];
            for d in 0..HS {
                o[d] = acc[d].iter().sum::<f32>() * inv;
            }
            lse[h * stride + t] = m + total.ln();
        }
    }
}

/// [`attention_backward`] for a head size known at compile time, `L` lanes per block: one pass
/// per query row (scores, probabilities, `dp`, `ds`, and the `dq`, `dk`, `dv` updates), same
/// requirements as [`attention_blocked`].
#[allow(clippy::too_many_arguments)]
#[inline(always)]
pub fn attention_backward_blocked<const HS: usize, const L: usize>(
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
    assert!(head_size == HS && stride.is_multiple_of(L));
    let dim = n_heads * HS;
    let scale = 1.0 / (HS as f32).sqrt();
    for h in 0..n_heads {
        let g = h / kv_mul;
        let span = g * HS * stride..(g + 1) * HS * stride;
        let (k, v) = (&kt[span.clone()], &vt[span.clone()]);
        let (dk, dv) = (&mut dkt[span.clone()], &mut dvt[span]);
        for t in 0..len {
            let nb = (t + 1).div_ceil(L);
            let row = t * dim + h * HS;
            let qh: &[f32; HS] = q[row..][..HS].try_into().unwrap();
            let doh: &[f32; HS] = dout[row..][..HS].try_into().unwrap();
            let oh: &[f32; HS] = out[row..][..HS].try_into().unwrap();
            let qs: [f32; HS] = core::array::from_fn(|d| qh[d] * scale);
            let mut dsum = 0.0f32;
            for d in 0..HS {
                dsum += doh[d] * oh[d];
            }
            let lv = lse[h * stride + t];
            let mut acc = [[0.0f32; L]; HS];
            for b in 0..nb {
                let j0 = b * L;
                let mut sc = [0.0f32; L];
                let mut dp = [0.0f32; L];
                for d in 0..HS {
                    let kd: &[f32; L] = k[d * stride + j0..][..L].try_into().unwrap();
                    let vd: &[f32; L] = v[d * stride + j0..][..L].try_into().unwrap();
                    for l in 0..L {
                        sc[l] += qs[d] * kd[l];
                        dp[l] += doh[d] * vd[l];
                    }
                }
                let mut p: [f32; L] = core::array::from_fn(|l| exp(sc[l] - lv));
                if b + 1 == nb {
                    for (l, x) in p.iter_mut().enumerate() {
                        if j0 + l > t {
                            *x = 0.0;
                        }
                    }
                }
                let ds: [f32; L] = core::array::from_fn(|l| p[l] * (dp[l] - dsum));
                for d in 0..HS {
                    let kd: &[f32; L] = k[d * stride + j0..][..L].try_into().unwrap();
                    let dvd: &mut [f32; L] = (&mut dv[d * stride + j0..][..L]).try_into().unwrap();
                    for l in 0..L {
                        dvd[l] += doh[d] * p[l];
                        acc[d][l] += ds[l] * kd[l];
                    }
                    let dkd: &mut [f32; L] = (&mut dk[d * stride + j0..][..L]).try_into().unwrap();
                    for l in 0..L {
                        dkd[l] += qs[d] * ds[l];
                    }
                }
            }
            let dqh = &mut dq[row..][..HS];
            for d in 0..HS {
                dqh[d] = acc[d].iter().sum::<f32>() * scale;
            }
        }
    }
}

/// The unfused baseline (for comparison only): attention as per-head matrix products, the way
/// a tensor framework runs it. Per head: `S = Q K^T` (all `T x T` scores, the masked half
/// included) by sgemm, a row softmax, `O = P V` by sgemm. `tt` is scratch of `len * stride`.
pub fn attention_unfused(
    out: &mut [f32],
    lse: &mut [f32],
    q: &[f32],
    kt: &[f32],
    vt: &[f32],
    tt: &mut [f32],
    a: Attn,
) {
    let Attn { len, stride, n_heads, head_size: hs, kv_mul } = a;
    let dim = n_heads * hs;
    let scale = 1.0 / (hs as f32).sqrt();
    for h in 0..n_heads {
        let g = h / kv_mul;
        let (k, v) = (&kt[g * hs * stride..], &vt[g * hs * stride..]);
        gemm((len, hs, len), &q[h * hs..], (dim, 1), k, (stride, 1), 0.0, tt, (stride, 1));
        for t in 0..len {
            let row = &mut tt[t * stride..t * stride + len];
            for x in row[..=t].iter_mut() {
                *x *= scale;
            }
            let m = max(&row[..=t]);
            let sum = exp_shift_sum(&mut row[..=t], m);
            for x in row[..=t].iter_mut() {
                *x /= sum;
            }
            row[t + 1..].fill(0.0);
            lse[h * stride + t] = m + sum.ln();
        }
        gemm((len, len, hs), tt, (stride, 1), v, (1, stride), 0.0, &mut out[h * hs..], (dim, 1));
    }
}

/// Backward of [`attention_unfused`]: per head, `P` recomputed from `lse`, then `dP = dO V^T`,
/// `dV^T += dO^T P`, `dS = P (dP - rowsum(P dP))`, `dQ = dS K`, `dK^T += Q^T dS`, all by sgemm.
/// `tt` is scratch of `2 * len * stride`.
#[allow(clippy::too_many_arguments)]
pub fn attention_backward_unfused(
    (dq, dkt, dvt): (&mut [f32], &mut [f32], &mut [f32]),
    dout: &[f32],
    lse: &[f32],
    q: &[f32],
    kt: &[f32],
    vt: &[f32],
    tt: &mut [f32],
    a: Attn,
) {
    let Attn { len, stride, n_heads, head_size: hs, kv_mul } = a;
    let dim = n_heads * hs;
    let scale = 1.0 / (hs as f32).sqrt();
    let (p, dp) = tt.split_at_mut(len * stride);
    for h in 0..n_heads {
        let g = h / kv_mul;
        let (k, v) = (&kt[g * hs * stride..], &vt[g * hs * stride..]);
        gemm((len, hs, len), &q[h * hs..], (dim, 1), k, (stride, 1), 0.0, p, (stride, 1));
        for t in 0..len {
            let row = &mut p[t * stride..t * stride + len];
            let l = lse[h * stride + t];
            for x in row[..=t].iter_mut() {
                *x = exp(*x * scale - l);
            }
            row[t + 1..].fill(0.0);
        }
        gemm((len, hs, len), &dout[h * hs..], (dim, 1), v, (stride, 1), 0.0, dp, (stride, 1));
        let dvt_h = &mut dvt[g * hs * stride..(g + 1) * hs * stride];
        gemm((hs, len, len), &dout[h * hs..], (1, dim), p, (stride, 1), 1.0, dvt_h, (stride, 1));
        for t in 0..len {
            let (pr, dr) = (&p[t * stride..t * stride + len], &mut dp[t * stride..t * stride + len]);
            let s = dot(pr, dr);
            for (d, p) in dr.iter_mut().zip(pr) {
                *d = p * (*d - s) * scale;
            }
        }
        gemm((len, len, hs), dp, (stride, 1), k, (1, stride), 0.0, &mut dq[h * hs..], (dim, 1));
        let dkt_h = &mut dkt[g * hs * stride..(g + 1) * hs * stride];
        gemm((hs, len, len), &q[h * hs..], (1, dim), dp, (stride, 1), 1.0, dkt_h, (stride, 1));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_is_accurate_over_the_range_softmax_uses() {
        let mut worst = 0.0f64;
        let mut x = -87.0f32;
        while x <= 88.0 {
            let want = (x as f64).exp();
            worst = worst.max(((exp(x) as f64) - want).abs() / want);
            x += 0.0137;
        }
        assert!(worst < 5e-7, "relative error {worst:e}");
        assert_eq!(exp(0.0), 1.0);
        assert!(exp(-1000.0) < 1e-37 && exp(-1000.0) >= 0.0);
    }

    #[test]
    fn reductions_match_plain_sums() {
        let a: Vec<f32> = (0..37).map(|i| (i as f32 * 0.37).sin()).collect();
        let b: Vec<f32> = (0..37).map(|i| (i as f32 * 0.11).cos()).collect();
        let plain: f32 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
        assert!((dot(&a, &b) - plain).abs() < 1e-5);
        assert_eq!(max(&a), a.iter().cloned().fold(f32::NEG_INFINITY, f32::max));
    }
}
