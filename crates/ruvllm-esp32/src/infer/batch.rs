//! The forward pass over several consecutive positions at once: every weight matrix is read
//! once for all of them (a matrix product over the positions' activations, tile by tile of
//! rows), which is what a speculative decoder's verification and a prompt's prefill need. On a
//! chip that streams its weights from flash, one pass over the weights serves every position.
//!
//! Each position gets exactly the numbers [`State::forward`] would give it, bit for bit: the
//! same kernels run on the same rows in the same order, only grouped differently.

use super::arena::Carver;
use super::{product, quantize_for, reference, KvCache, State};
use crate::error::{Error, Result};
use crate::kernels::{AttnShape, CacheQ8, Kernels, QueryQ8};
use crate::model::{Config, Matrix, Model, Precision};

/// Activations for up to `capacity` positions of one batched pass, with their logits.
pub struct Batch<'s> {
    capacity: usize,
    x: &'s mut [f32],
    xb: &'s mut [f32],
    xb2: &'s mut [f32],
    hb: &'s mut [f32],
    hb2: &'s mut [f32],
    q: &'s mut [f32],
    k: &'s mut [f32],
    v: &'s mut [f32],
    rope: &'s mut [f32],
    logits: &'s mut [f32],
    xq: &'s mut [i8],
    xs: &'s mut [f32],
}

/// Buffer sizes per position, in elements: `[x, xb, xb2, hb, hb2, q, k, v, rope, logits]`
/// f32s, then the int8 activation and its scales.
fn per_position(c: &Config, p: Precision, group: usize) -> ([usize; 10], usize, usize) {
    let (d, h, kv, q) = (c.dim, c.hidden_dim, c.kv_dim(), c.q_dim());
    let widest = d.max(h).max(q);
    let (xq, xs) = if p == Precision::F32 { (0, 0) } else { (widest, widest.div_ceil(group)) };
    // x, xb, xb2 (the attention's output), hb, hb2, q, ...
    ([d, d, q, h, h, q, kv, kv, c.head_size(), c.vocab_size], xq, xs)
}

impl<'s> Batch<'s> {
    /// Arena length (in f32 elements) for batches of up to `capacity` positions.
    pub fn arena_len<const L: usize>(model: &Model<'_, L>, capacity: usize) -> usize {
        let (f32s, xq, xs) = per_position(&model.config, model.precision, model.group);
        capacity * (f32s.iter().sum::<usize>() + xq.div_ceil(4) + xs)
    }

    /// Builds the buffers for up to `capacity` positions inside `arena`.
    pub fn new<const L: usize>(
        model: &Model<'_, L>,
        arena: &'s mut [f32],
        capacity: usize,
    ) -> Result<Batch<'s>> {
        let need = Self::arena_len(model, capacity);
        if capacity == 0 || arena.len() < need {
            return Err(Error::BufferTooSmall { need: need.max(1) * 4, have: arena.len() * 4 });
        }
        let (f32s, xq, xs) = per_position(&model.config, model.precision, model.group);
        let mut c = Carver(arena);
        let [x, xb, xb2, hb, hb2, q, k, v, rope, logits] = f32s.map(|n| c.words(n * capacity));
        // Each position's int8 activation in whole words, so every position starts aligned.
        let xq = &mut c.i8(xq.div_ceil(4) * 4 * capacity)[..];
        let xs = c.words(xs * capacity);
        Ok(Batch { capacity, x, xb, xb2, hb, hb2, q, k, v, rope, logits, xq, xs })
    }

    /// Positions one pass can hold.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// The logits the last [`State::forward_batch`] computed for its `i`-th position.
    pub fn logits(&mut self, i: usize) -> &mut [f32] {
        let n = self.logits.len() / self.capacity;
        &mut self.logits[i * n..(i + 1) * n]
    }
}

/// Rows of `m` from `r0` on, as a matrix of its own (the kernels read rows from the start of
/// the slice they get).
fn rows_from<'a>(m: &Matrix<'a>, r0: usize, group: usize) -> Matrix<'a> {
    match *m {
        Matrix::F32 { w, rows, cols } => Matrix::F32 { w: &w[r0 * cols..], rows: rows - r0, cols },
        Matrix::Q8 { q, s, rows, cols } => {
            Matrix::Q8 { q: &q[r0 * cols..], s: &s[r0 * cols.div_ceil(group)..], rows: rows - r0, cols }
        }
        Matrix::Q8Block { b, rows, cols } => {
            let row_bytes = cols / 32 * crate::gguf::Q8_0_BYTES as usize;
            Matrix::Q8Block { b: &b[r0 * row_bytes..], rows: rows - r0, cols }
        }
        Matrix::Sparse { m, s } => {
            Matrix::Sparse { m: m.sub(r0..m.rows()), s: &s[r0 * m.cols().div_ceil(group)..] }
        }
        Matrix::Ternary { q, s, rows, cols } => {
            let stride = crate::packed::ternary_row_bytes(cols);
            Matrix::Ternary { q: &q[r0 * stride..], s: &s[r0..], rows: rows - r0, cols }
        }
        Matrix::Binary { q, s, rows, cols } => {
            let stride = crate::packed::binary_row_bytes(cols);
            Matrix::Binary { q: &q[r0 * stride..], s: &s[r0..], rows: rows - r0, cols }
        }
    }
}

/// Bytes of weights one tile of rows may span: small enough to stay in a chip's 16 KiB flash
/// cache (and a host's L1) while every position of the batch runs over it.
const TILE_BYTES: usize = 8 * 1024;

/// `out[b] = m * x[b]` for the first `n` positions, reading `m` once: tile by tile of rows,
/// each tile against every position. Tiles are whole multiples of eight rows, the kernels'
/// blocks, so each row is computed exactly as the single-position product computes it.
/// `reuse`: `xq`/`xs` already hold these activations quantized (the previous call's `x`).
#[allow(clippy::too_many_arguments)]
fn matmul(
    k: Kernels,
    n: usize,
    out: &mut [f32],
    m: &Matrix<'_>,
    x: &[f32],
    xq: &mut [i8],
    xs: &mut [f32],
    group: usize,
    reuse: bool,
) {
    let (rows, cols) = (m.rows(), m.cols());
    let (out_w, x_w) = (out.len() / n.max(1), x.len() / n.max(1));
    let (q_w, s_w) = (xq.len() / n.max(1), xs.len() / n.max(1));
    if !reuse {
        for b in 0..n {
            let (xq, xs) = (&mut xq[b * q_w..(b + 1) * q_w], &mut xs[b * s_w..(b + 1) * s_w]);
            quantize_for(k, m, &x[b * x_w..b * x_w + cols], xq, xs, group);
        }
    }
    let tile = (TILE_BYTES / (m.bytes() / rows.max(1)).max(1)).max(8) / 8 * 8;
    let mut r0 = 0;
    while r0 < rows {
        let r1 = (r0 + tile).min(rows);
        let sub = rows_from(m, r0, group);
        for b in 0..n {
            let o = &mut out[b * out_w + r0..b * out_w + r1];
            let (xq, xs) = (&xq[b * q_w..(b + 1) * q_w], &xs[b * s_w..(b + 1) * s_w]);
            product(k, o, &sub, &x[b * x_w..b * x_w + cols], xq, xs, group);
        }
        r0 = r1;
    }
}

impl State<'_> {
    /// Runs `tokens` at positions `pos..pos + tokens.len()` in one pass over the weights; with
    /// `logits`, [`Batch::logits`]`(i)` then holds the logits after `tokens[i]`, exactly those
    /// [`State::forward`] would have returned for it. The cache past the last position is left
    /// as it was, and positions after a rejected draft are simply overwritten later: rolling
    /// back is running from an earlier position again.
    pub fn forward_batch<const L: usize>(
        &mut self,
        model: &Model<'_, L>,
        batch: &mut Batch<'_>,
        tokens: &[u32],
        pos: usize,
        logits: bool,
    ) -> Result<()> {
        let c = &model.config;
        let n = tokens.len();
        if n == 0 || n > batch.capacity {
            return Err(Error::Invalid { what: "batch of positions empty or larger than its buffers" });
        }
        if tokens.iter().any(|&t| t as usize >= c.vocab_size) {
            return Err(Error::Invalid { what: "token id outside the vocabulary" });
        }
        if pos + n > self.seq_len {
            return Err(Error::ContextFull { need: pos + n, capacity: self.seq_len });
        }
        if self.pattern().is_some() {
            return Err(Error::Unsupported {
                what: "speculative decoding with a sparse attention pattern (use full attention)",
            });
        }
        let (d, h, hs, kv_dim, group) = (c.dim, c.hidden_dim, c.head_size(), c.kv_dim(), model.group);
        let qd = c.q_dim();
        let shape = AttnShape { head_size: hs, kv_dim, kv_mul: c.n_heads / c.n_kv_heads };
        let ng = kv_dim.div_ceil(group);
        let k = self.kernels;
        let B { x, xb, xb2, hb, hb2, q, k: kb, v: vb, rope, logits: out, xq, xs } = B::of(batch, n);
        for (i, &t) in tokens.iter().enumerate() {
            model.token_embd.row_into(t as usize, &mut x[i * d..(i + 1) * d], group);
            reference::rope_table(&mut rope[i * hs..(i + 1) * hs], pos + i, hs, c.rope_theta);
        }
        let (q_w, s_w) = (xq.len() / n, xs.len() / n);
        for (l, layer) in model.layers.iter().enumerate() {
            for i in 0..n {
                reference::rmsnorm(
                    &mut xb[i * d..(i + 1) * d],
                    &x[i * d..(i + 1) * d],
                    layer.attn_norm,
                    c.norm_eps,
                );
            }
            matmul(k, n, q, &layer.wq, xb, xq, xs, group, false);
            matmul(k, n, kb, &layer.wk, xb, xq, xs, group, true);
            matmul(k, n, vb, &layer.wv, xb, xq, xs, group, true);
            for i in 0..n {
                let p = pos + i;
                let (kr, vr) = (&mut kb[i * kv_dim..(i + 1) * kv_dim], &vb[i * kv_dim..(i + 1) * kv_dim]);
                let table = &rope[i * hs..(i + 1) * hs];
                reference::rope(kr, table);
                let row = (l * self.seq_len + p) * kv_dim;
                let srow = (l * self.seq_len + p) * ng;
                match &mut self.kv {
                    KvCache::F32 { k: kc, v: vc } => {
                        kc[row..row + kv_dim].copy_from_slice(kr);
                        vc[row..row + kv_dim].copy_from_slice(vr);
                    }
                    KvCache::Q8 { k: kc, ks, v: vc, vs } => {
                        (k.quantize)(kr, &mut kc[row..row + kv_dim], &mut ks[srow..srow + ng], group);
                        (k.quantize)(vr, &mut vc[row..row + kv_dim], &mut vs[srow..srow + ng], group);
                    }
                }
            }
            // Each position attends to the cache up to itself, now that all of them are in.
            for i in 0..n {
                let p = pos + i;
                let qi = &mut q[i * qd..(i + 1) * qd];
                reference::rope(qi, &rope[i * hs..(i + 1) * hs]);
                let range = l * self.seq_len * kv_dim..(l * self.seq_len + p + 1) * kv_dim;
                let s_range = l * self.seq_len * ng..(l * self.seq_len + p + 1) * ng;
                let o = &mut xb2[i * qd..(i + 1) * qd];
                match &self.kv {
                    KvCache::F32 { k: kc, v: vc } => {
                        (k.attention_f32)(o, qi, &kc[range.clone()], &vc[range], self.att, shape)
                    }
                    KvCache::Q8 { k: kc, ks, v: vc, vs } => {
                        let (qq, qs) =
                            (&mut xq[i * q_w..i * q_w + qd], &mut xs[i * s_w..i * s_w + qd.div_ceil(group)]);
                        (k.quantize)(qi, qq, qs, group);
                        crate::quant::dequantize_row(qq, qs, qi, group);
                        let query = QueryQ8 { q: qi, qq, qs };
                        let cache = CacheQ8 {
                            keys: &kc[range.clone()],
                            key_scales: &ks[s_range.clone()],
                            values: &vc[range],
                            value_scales: &vs[s_range],
                        };
                        (k.attention_q8)(o, query, cache, self.att, shape, group);
                    }
                }
            }
            matmul(k, n, xb, &layer.wo, xb2, xq, xs, group, false);
            super::add(x, xb);
            for i in 0..n {
                reference::rmsnorm(
                    &mut xb[i * d..(i + 1) * d],
                    &x[i * d..(i + 1) * d],
                    layer.ffn_norm,
                    c.norm_eps,
                );
            }
            matmul(k, n, hb, &layer.w1, xb, xq, xs, group, false);
            matmul(k, n, hb2, &layer.w3, xb, xq, xs, group, true);
            for i in 0..n {
                (k.swiglu)(&mut hb[i * h..(i + 1) * h], &hb2[i * h..(i + 1) * h]);
            }
            matmul(k, n, xb, &layer.w2, hb, xq, xs, group, false);
            super::add(x, xb);
        }
        if logits {
            for i in 0..n {
                reference::rmsnorm(
                    &mut xb[i * d..(i + 1) * d],
                    &x[i * d..(i + 1) * d],
                    model.output_norm,
                    c.norm_eps,
                );
            }
            matmul(k, n, out, &model.output, xb, xq, xs, group, false);
        }
        Ok(())
    }
}

/// The batch's buffers cut to the first `n` positions.
struct B<'a> {
    x: &'a mut [f32],
    xb: &'a mut [f32],
    xb2: &'a mut [f32],
    hb: &'a mut [f32],
    hb2: &'a mut [f32],
    q: &'a mut [f32],
    k: &'a mut [f32],
    v: &'a mut [f32],
    rope: &'a mut [f32],
    logits: &'a mut [f32],
    xq: &'a mut [i8],
    xs: &'a mut [f32],
}

impl<'a> B<'a> {
    fn of(b: &'a mut Batch<'_>, n: usize) -> B<'a> {
        let cap = b.capacity;
        fn cut<T>(s: &mut [T], cap: usize, n: usize) -> &mut [T] {
            let w = s.len() / cap;
            &mut s[..w * n]
        }
        B {
            x: cut(b.x, cap, n),
            xb: cut(b.xb, cap, n),
            xb2: cut(b.xb2, cap, n),
            hb: cut(b.hb, cap, n),
            hb2: cut(b.hb2, cap, n),
            q: cut(b.q, cap, n),
            k: cut(b.k, cap, n),
            v: cut(b.v, cap, n),
            rope: cut(b.rope, cap, n),
            logits: cut(b.logits, cap, n),
            xq: cut(b.xq, cap, n),
            xs: cut(b.xs, cap, n),
        }
    }
}
