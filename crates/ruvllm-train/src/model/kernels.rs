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
    let x = x.clamp(-87.0, 88.0);
    let n = (x * std::f32::consts::LOG2_E + 0.5).floor();
    let r = x - n * 0.693_359_4 + n * 2.121_944_4e-4;
    let p = 1.987_569_1e-4;
    let p = p * r + 1.398_199_9e-3;
    let p = p * r + 8.333_452e-3;
    let p = p * r + 4.166_579_6e-2;
    let p = p * r + 1.666_666_5e-1;
    let p = p * r + 5.000_000_1e-1;
    let e = p * (r * r) + r + 1.0;
    e * f32::from_bits(((n as i32 + 127) as u32) << 23)
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
pub fn attention(out: &mut [f32], lse: &mut [f32], q: &[f32], kt: &[f32], vt: &[f32], s: &mut [f32], a: Attn) {
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
