//! Scalar reference kernels: the definition of every operation, used on chips without a fast
//! path and as the truth that fast paths are tested against. Sums run left to right in f32,
//! the same order as llama2.c, so fp32 output matches it bit for bit.

use super::{AttnShape, CacheQ8, QueryQ8};
pub use crate::sample::softmax;

/// `out[i] = sum_j w[i * n + j] * x[j]` with `n = x.len()`, `w` row-major `[out.len()][n]`.
pub fn matvec_f32(out: &mut [f32], w: &[f32], x: &[f32]) {
    let n = x.len();
    for (o, row) in out.iter_mut().zip(w.chunks_exact(n)) {
        let mut acc = 0.0f32;
        for (a, b) in row.iter().zip(x) {
            acc += a * b;
        }
        *o = acc;
    }
}

/// INT8 matrix-vector product. `wq` is `[out.len()][n]` int8 with `groups(n)` scales per row in
/// `ws`; `xq`/`xs` is the activation quantized with the same grouping. Each group's products
/// are summed exactly in i32 and scaled once.
pub fn matvec_q8(out: &mut [f32], wq: &[i8], ws: &[f32], xq: &[i8], xs: &[f32], group: usize) {
    let n = xq.len();
    let ng = n.div_ceil(group);
    for ((o, row), rs) in out.iter_mut().zip(wq.chunks_exact(n)).zip(ws.chunks_exact(ng)) {
        let mut acc = 0.0f32;
        for (((wg, xg), sw), sx) in row.chunks(group).zip(xq.chunks(group)).zip(rs).zip(xs) {
            let mut isum = 0i32;
            for (a, b) in wg.iter().zip(xg) {
                isum += *a as i32 * *b as i32;
            }
            acc += isum as f32 * (sw * sx);
        }
        *o = acc;
    }
}

/// [`matvec_q8`] over sparse rows ([`crate::infer::integer::sparse`]) with the dense matrix's
/// group scales `ws`: each group's exact sum over its kept codes is the dense group's sum, and
/// every group (an empty one too) adds `isum * (sw * sx)` in the same order, so the result is
/// [`matvec_q8`]'s on the same codes bit for bit. `out` may be shorter than the matrix.
pub fn matvec_q8_sparse(
    out: &mut [f32],
    m: &crate::infer::integer::sparse::SparseRows<'_>,
    ws: &[f32],
    xq: &[i8],
    xs: &[f32],
) {
    let (b, cols, group) = (m.bytes(), m.cols(), m.group());
    let ng = cols.div_ceil(group);
    let mut at = 0;
    for (o, rs) in out.iter_mut().take(m.rows()).zip(ws.chunks_exact(ng)) {
        let mut acc = 0.0f32;
        for (g, (sw, sx)) in rs.iter().zip(&xs[..ng]).enumerate() {
            let n = b[at] as usize;
            let xg = &xq[g * group..(g * group + group).min(cols)];
            let mut isum = 0i32;
            for p in b[at + 1..at + 1 + 2 * n].chunks_exact(2) {
                isum += p[1] as i8 as i32 * xg[p[0] as usize] as i32;
            }
            at += 1 + 2 * n;
            acc += isum as f32 * (sw * sx);
        }
        *o = acc;
    }
}

/// [`matvec_q8`] over GGUF Q8_0 rows: `wb` holds `out.len()` rows of `n / 32` blocks, each an
/// f16 scale then 32 int8 values; `xq`/`xs` is the activation quantized in groups of 32. The
/// same arithmetic as `matvec_q8` with the block's scale as the group's.
pub fn matvec_q8_block(out: &mut [f32], wb: &[u8], xq: &[i8], xs: &[f32]) {
    const BLOCK: usize = crate::gguf::Q8_0_BYTES as usize;
    let row_bytes = xq.len() / 32 * BLOCK;
    for (o, row) in out.iter_mut().zip(wb.chunks_exact(row_bytes.max(1))) {
        let mut acc = 0.0f32;
        for ((b, xg), sx) in row.chunks_exact(BLOCK).zip(xq.chunks_exact(32)).zip(xs) {
            let sw = crate::gguf::f16_to_f32(u16::from_le_bytes([b[0], b[1]]));
            let mut isum = 0i32;
            for (a, x) in b[2..].iter().zip(xg) {
                isum += *a as i8 as i32 * *x as i32;
            }
            acc += isum as f32 * (sw * sx);
        }
        *o = acc;
    }
}

/// Ternary matrix-vector product. `wq` holds `out.len()` packed rows of
/// `packed::ternary_row_bytes(n)` bytes ([`crate::packed`]) with one scale per row in `ws`;
/// `xq`/`xs` is the activation quantized in groups of `group`. Per activation group the int8
/// values the codes select are added (+1) or subtracted (-1) in i32, that sum times the group's
/// scale is accumulated, and the row's total times the row's scale.
pub fn matvec_ternary(out: &mut [f32], wq: &[u8], ws: &[f32], xq: &[i8], xs: &[f32], group: usize) {
    let n = xq.len();
    let stride = crate::packed::ternary_row_bytes(n);
    for ((o, row), rs) in out.iter_mut().zip(wq.chunks_exact(stride)).zip(ws) {
        let mut acc = 0.0f32;
        for (g, (xg, sx)) in xq.chunks(group).zip(xs).enumerate() {
            let mut isum = 0i32;
            for (j, x) in xg.iter().enumerate() {
                // A product with -1, 0 or +1: the same sum as adding and subtracting, and no
                // data-dependent branch.
                isum += crate::packed::ternary_at(row, g * group + j) as i32 * *x as i32;
            }
            acc += isum as f32 * sx;
        }
        *o = acc * rs;
    }
}

/// Binary matrix-vector product, as [`matvec_ternary`] with sign codes (`binary_row_bytes(n)`
/// bytes a row): every activation is added or subtracted.
pub fn matvec_binary(out: &mut [f32], wq: &[u8], ws: &[f32], xq: &[i8], xs: &[f32], group: usize) {
    let n = xq.len();
    let stride = crate::packed::binary_row_bytes(n);
    for ((o, row), rs) in out.iter_mut().zip(wq.chunks_exact(stride)).zip(ws) {
        let mut acc = 0.0f32;
        for (g, (xg, sx)) in xq.chunks(group).zip(xs).enumerate() {
            let mut isum = 0i32;
            for (j, x) in xg.iter().enumerate() {
                isum += crate::packed::binary_at(row, g * group + j) as i32 * *x as i32;
            }
            acc += isum as f32 * sx;
        }
        *o = acc * rs;
    }
}

/// Attention for one layer and all query heads at one position (llama2.c's order of
/// operations). `q` is `[n_heads][head_size]`; `keys`/`values` hold the positions seen so far,
/// `[positions][kv_dim]`; `att` is scratch of at least `n_heads * positions`; `out` is
/// `[n_heads][head_size]`.
pub fn attention_f32(
    out: &mut [f32],
    q: &[f32],
    keys: &[f32],
    values: &[f32],
    att: &mut [f32],
    shape: AttnShape,
) {
    let AttnShape { head_size, kv_dim, kv_mul } = shape;
    let positions = keys.len() / kv_dim;
    let scale = 1.0 / libm::sqrtf(head_size as f32);
    for (h, (qh, oh)) in q.chunks_exact(head_size).zip(out.chunks_exact_mut(head_size)).enumerate() {
        let kv_off = (h / kv_mul) * head_size;
        let att = &mut att[h * positions..(h + 1) * positions];
        for (a, k) in att.iter_mut().zip(keys.chunks_exact(kv_dim)) {
            let mut score = 0.0f32;
            for (x, y) in qh.iter().zip(&k[kv_off..kv_off + head_size]) {
                score += x * y;
            }
            *a = score * scale;
        }
        softmax(att);
        oh.fill(0.0);
        for (a, v) in att.iter().zip(values.chunks_exact(kv_dim)) {
            for (o, x) in oh.iter_mut().zip(&v[kv_off..kv_off + head_size]) {
                *o += a * x;
            }
        }
    }
}

/// Attention over an int8 KV cache. Scores are integer dot products of the quantized query
/// and keys, one i32 sum per run of values that shares a query group and a key group, each
/// scaled once; the weighted sum of values is in f32.
pub fn attention_q8(
    out: &mut [f32],
    query: QueryQ8<'_>,
    cache: CacheQ8<'_>,
    att: &mut [f32],
    shape: AttnShape,
    group: usize,
) {
    let AttnShape { head_size, kv_dim, kv_mul } = shape;
    let ng = kv_dim.div_ceil(group);
    let positions = cache.keys.len() / kv_dim;
    let scale = 1.0 / libm::sqrtf(head_size as f32);
    for (h, oh) in out.chunks_exact_mut(head_size).enumerate().take(query.q.len() / head_size) {
        let off = (h / kv_mul) * head_size;
        let att = &mut att[h * positions..(h + 1) * positions];
        let rows = cache.keys.chunks_exact(kv_dim).zip(cache.key_scales.chunks_exact(ng));
        for (a, (k, ks)) in att.iter_mut().zip(rows) {
            *a = dot_qq(query, h * head_size, k, ks, off, head_size, group) * scale;
        }
        softmax(att);
        oh.fill(0.0);
        let rows = cache.values.chunks_exact(kv_dim).zip(cache.value_scales.chunks_exact(ng));
        for (a, (v, vs)) in att.iter().zip(rows) {
            axpy_q8(oh, *a, v, vs, off, group);
        }
    }
}

/// `dequant(q[qoff..qoff + n]) . dequant(k[koff..koff + n])`: an exact i32 sum over each run
/// that stays inside one query group and one key group.
fn dot_qq(query: QueryQ8<'_>, qoff: usize, k: &[i8], ks: &[f32], koff: usize, n: usize, group: usize) -> f32 {
    let mut total = 0.0f32;
    let mut i = 0;
    while i < n {
        let (a, b) = (qoff + i, koff + i);
        let len = (group - a % group).min(group - b % group).min(n - i);
        let mut isum = 0i32;
        for (x, y) in query.qq[a..a + len].iter().zip(&k[b..b + len]) {
            isum += *x as i32 * *y as i32;
        }
        total += isum as f32 * (query.qs[a / group] * ks[b / group]);
        i += len;
    }
    total
}

/// Splits `off..off + n` at group boundaries: yields (start, len, group index).
fn group_segments(off: usize, n: usize, group: usize) -> impl Iterator<Item = (usize, usize, usize)> {
    let mut i = 0;
    core::iter::from_fn(move || {
        if i >= n {
            return None;
        }
        let j = off + i;
        let len = (group - j % group).min(n - i);
        i += len;
        Some((j, len, j / group))
    })
}

/// `out += a * dequant(q[off..off + out.len()])`.
fn axpy_q8(out: &mut [f32], a: f32, q: &[i8], scales: &[f32], off: usize, group: usize) {
    for (j, len, g) in group_segments(off, out.len(), group) {
        let w = a * scales[g];
        for (o, b) in out[j - off..j - off + len].iter_mut().zip(&q[j..j + len]) {
            *o += w * *b as f32;
        }
    }
}

/// `o = w * (x / rms(x))`, llama2.c's RMSNorm.
pub fn rmsnorm(o: &mut [f32], x: &[f32], w: &[f32], eps: f32) {
    let mut ss = 0.0f32;
    for v in x {
        ss += v * v;
    }
    ss /= x.len() as f32;
    ss += eps;
    let inv = 1.0 / libm::sqrtf(ss);
    for ((o, x), w) in o.iter_mut().zip(x).zip(w) {
        *o = w * (inv * x);
    }
}

/// SwiGLU gate: `h1 = silu(h1) * h3`.
pub fn swiglu(h1: &mut [f32], h3: &[f32]) {
    for (a, b) in h1.iter_mut().zip(h3) {
        let s = *a * (1.0 / (1.0 + libm::expf(-*a)));
        *a = s * b;
    }
}

/// Cosine and sine of every rotation angle at `pos`: `table` gets `head_size / 2` pairs
/// `(cos, sin)`. Computed once per token, shared by every layer and head.
pub fn rope_table(table: &mut [f32], pos: usize, head_size: usize, theta: f32) {
    for (i, cs) in table.chunks_exact_mut(2).enumerate() {
        rope_pair(cs, pos, rope_freq(i, head_size, theta));
    }
}

/// The frequency of pair `i` of a head of `head_size` values.
pub fn rope_freq(i: usize, head_size: usize, theta: f32) -> f32 {
    1.0 / libm::powf(theta, (2 * i) as f32 / head_size as f32)
}

/// One pair's cosine and sine at `pos` for frequency `freq` (from [`rope_freq`]).
#[inline]
pub fn rope_pair(cs: &mut [f32], pos: usize, freq: f32) {
    let val = pos as f32 * freq;
    cs[0] = libm::cosf(val);
    cs[1] = libm::sinf(val);
}

/// Rotary position embedding over adjacent pairs (llama2.c / GGML "normal" mode), head by head,
/// with a table from [`rope_table`].
pub fn rope(v: &mut [f32], table: &[f32]) {
    for head in v.chunks_exact_mut(table.len()) {
        for (pair, cs) in head.chunks_exact_mut(2).zip(table.chunks_exact(2)) {
            let (v0, v1) = (pair[0], pair[1]);
            pair[0] = v0 * cs[0] - v1 * cs[1];
            pair[1] = v0 * cs[1] + v1 * cs[0];
        }
    }
}
