//! [`IntState::forward_batch`]: the integer path over several consecutive positions in one
//! pass over the weights, as [`crate::infer::Batch`] does for the float path. Every kernel here
//! computes each row on its own (four rows at a time at most), so a tile of rows run against
//! each position gives every position exactly the numbers [`IntState::forward`] gives it.

use super::view::{self, LMat, PMat, QMat};
use super::{
    add, attention, build_lut, matmul, quantize, rmsnorm, rotate, swiglu, Cache, IntState, Lut, Scale,
};
use crate::error::{Error, Result};
use crate::infer::arena::Carver;
use crate::model::Model;

/// Integer activations for up to `capacity` positions of one batched pass, with their logits
/// (Q16.16) and each position's lookup table for the packed formats.
pub struct IntBatch<'s> {
    capacity: usize,
    x: &'s mut [i32],
    xb: &'s mut [i32],
    xb2: &'s mut [i32],
    q: &'s mut [i32],
    k: &'s mut [i32],
    v: &'s mut [i32],
    hb: &'s mut [i32],
    hb2: &'s mut [i32],
    logits: &'s mut [i32],
    xq: &'s mut [i8],
    xs: &'s mut [i32],
    lut: &'s mut [i32],
    lut_e: [i32; MAX_POSITIONS],
}

/// Positions one integer batch can hold (a speculative pass needs gamma + 1).
pub const MAX_POSITIONS: usize = 17;

/// Per position, in words: `[x, xb, xb2, q, k, v, hb, hb2, logits, xq words, xs, lut]`.
fn per_position(s: &view::Shape) -> [usize; 12] {
    let (d, h, kv, q) = (s.dim, s.hidden, s.kv_dim(), s.q_dim());
    let widest = d.max(h).max(q);
    [d, d, q, q, kv, kv, h, h, s.vocab, widest.div_ceil(4), widest.div_ceil(s.group), s.lut_entries()]
}

impl<'s> IntBatch<'s> {
    /// Arena length (i32 words) for batches of up to `capacity` positions.
    pub fn arena_len<const L: usize>(model: &Model<'_, L>, capacity: usize) -> usize {
        capacity * per_position(&view::shape(model)).iter().sum::<usize>()
    }

    pub fn new<const L: usize>(
        model: &Model<'_, L>,
        arena: &'s mut [i32],
        capacity: usize,
    ) -> Result<IntBatch<'s>> {
        let need = Self::arena_len(model, capacity);
        if capacity == 0 || capacity > MAX_POSITIONS || arena.len() < need {
            return Err(Error::BufferTooSmall { need: need.max(1) * 4, have: arena.len() * 4 });
        }
        let [x, xb, xb2, q, k, v, hb, hb2, logits, xq, xs, lut] = per_position(&view::shape(model));
        let mut c = Carver(arena);
        let mut w = |n: usize| c.words(n * capacity);
        let (x, xb, xb2, q, k, v) = (w(x), w(xb), w(xb2), w(q), w(k), w(v));
        let (hb, hb2, logits) = (w(hb), w(hb2), w(logits));
        let xq = bytemuck::cast_slice_mut::<i32, i8>(w(xq));
        let (xs, lut) = (w(xs), w(lut));
        Ok(IntBatch {
            capacity,
            x,
            xb,
            xb2,
            q,
            k,
            v,
            hb,
            hb2,
            logits,
            xq,
            xs,
            lut,
            lut_e: [0; MAX_POSITIONS],
        })
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// The logits (Q16.16) the last [`IntState::forward_batch`] computed for position `i`.
    pub fn logits(&mut self, i: usize) -> &mut [i32] {
        let n = self.logits.len() / self.capacity;
        &mut self.logits[i * n..(i + 1) * n]
    }
}

/// Rows of `m` from `r0` on, as a matrix of its own.
fn rows_from<'a>(m: &LMat<'a>, r0: usize, group: usize) -> LMat<'a> {
    match *m {
        LMat::Q8(QMat { q, s, cols }) => {
            LMat::Q8(QMat { q: &q[r0 * cols..], s: &s[r0 * cols.div_ceil(group)..], cols })
        }
        LMat::Q8Block(b) => {
            let row = b.cols / 32 * super::BLOCK;
            LMat::Q8Block(view::BMat { b: &b.b[r0 * row..], cols: b.cols })
        }
        LMat::Sparse(m) => LMat::Sparse(view::SMat {
            m: m.m.sub(r0..m.m.rows()),
            s: &m.s[r0 * m.m.cols().div_ceil(group)..],
        }),
        LMat::Ternary(p) => {
            let stride = crate::packed::ternary_row_bytes(p.cols);
            LMat::Ternary(PMat { q: &p.q[r0 * stride..], s: &p.s[r0..], cols: p.cols })
        }
        LMat::Binary(p) => {
            let stride = crate::packed::binary_row_bytes(p.cols);
            LMat::Binary(PMat { q: &p.q[r0 * stride..], s: &p.s[r0..], cols: p.cols })
        }
    }
}

/// Rows per tile: a multiple of the kernels' four-row blocks spanning about 8 KiB of weights
/// (a chip's flash cache holds the tile while every position runs over it).
fn tile_rows(m: &LMat<'_>, group: usize) -> usize {
    let row_bytes = match *m {
        LMat::Q8(q) => q.cols + 4 * q.cols.div_ceil(group),
        LMat::Q8Block(b) => b.cols / 32 * super::BLOCK,
        LMat::Sparse(m) => m.m.len() / m.m.rows().max(1) + 4 * m.m.cols().div_ceil(group),
        LMat::Ternary(p) => crate::packed::ternary_row_bytes(p.cols) + 4,
        LMat::Binary(p) => crate::packed::binary_row_bytes(p.cols) + 4,
    };
    (8 * 1024 / row_bytes.max(1)).max(4) / 4 * 4
}

/// `out[b] = m * x[b]` for the first `n` positions, from their quantized activations, reading
/// `m` tile by tile once for all of them. `build`: the packed formats' tables are built from
/// these activations first (false: the previous call's activations again).
#[allow(clippy::too_many_arguments)]
fn matmul_n(
    n: usize,
    rows: usize,
    out: &mut [i32],
    m: &LMat<'_>,
    xq: &[i8],
    xs: &[i32],
    lut: &mut [i32],
    lut_e: &mut [i32],
    group: usize,
    build: bool,
) {
    let (out_w, q_w, s_w, l_w) = (out.len() / n, xq.len() / n, xs.len() / n, lut.len() / n);
    if let (true, LMat::Ternary(p) | LMat::Binary(p)) = (build, m) {
        let ternary = matches!(m, LMat::Ternary(_));
        let stride = if ternary {
            crate::packed::ternary_row_bytes(p.cols)
        } else {
            crate::packed::binary_row_bytes(p.cols)
        };
        for b in 0..n {
            let t = &mut lut[b * l_w..b * l_w + 32 * stride];
            let (q, s) = (&xq[b * q_w..b * q_w + p.cols], &xs[b * s_w..b * s_w + p.cols.div_ceil(group)]);
            lut_e[b] = build_lut(t, q, s, group, ternary);
        }
    }
    let tile = tile_rows(m, group);
    let mut r0 = 0;
    while r0 < rows {
        let r1 = (r0 + tile).min(rows);
        let sub = rows_from(m, r0, group);
        for b in 0..n {
            let mut l = Lut { t: &mut lut[b * l_w..(b + 1) * l_w], e: lut_e[b] };
            let (q, s) = (&xq[b * q_w..(b + 1) * q_w], &xs[b * s_w..(b + 1) * s_w]);
            matmul(&mut out[b * out_w + r0..b * out_w + r1], &sub, q, s, group, &mut l, false);
        }
        r0 = r1;
    }
}

impl IntState<'_> {
    /// Runs `tokens` at positions `pos..pos + tokens.len()` in one pass over the weights; with
    /// `logits`, [`IntBatch::logits`]`(i)` then holds exactly what [`IntState::forward`] would
    /// have returned after `tokens[i]`. No float anywhere, as in `forward`.
    #[inline(never)]
    pub fn forward_batch<const L: usize>(
        &mut self,
        model: &Model<'_, L>,
        batch: &mut IntBatch<'_>,
        tokens: &[u32],
        pos: usize,
        logits: bool,
    ) -> Result<()> {
        let rope = view::require(model)?;
        let s = self.shape;
        let n = tokens.len();
        if view::shape(model) != s {
            return Err(Error::Invalid { what: "model does not match the integer state's shape" });
        }
        if n == 0 || n > batch.capacity {
            return Err(Error::Invalid { what: "batch of positions empty or larger than its buffers" });
        }
        if tokens.iter().any(|&t| t as usize >= s.vocab) {
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
        let (d, h, kv_dim, g) = (s.dim, s.hidden, s.kv_dim(), s.group);
        // The query and the attention's output: dim wide unless heads were removed.
        let qd = s.q_dim();
        let ng = kv_dim.div_ceil(g);
        let cap = batch.capacity;
        let IntBatch { x, xb, xb2, q, k, v, hb, hb2, logits: out, xq, xs, lut, lut_e, .. } = batch;
        let (q_w, s_w, l_w) = (xq.len() / cap, xs.len() / cap, lut.len() / cap);
        let (xq, xs, lut) = (&mut xq[..q_w * n], &mut xs[..s_w * n], &mut lut[..l_w * n]);
        let lut_e = &mut lut_e[..n];
        let emb = view::int8(&model.token_embd)?;
        for (i, &t) in tokens.iter().enumerate() {
            super::embed(&mut x[i * d..(i + 1) * d], &emb, t as usize, g);
        }
        let quantize_all = |src: &[i32], w: usize, xq: &mut [i8], xs: &mut [i32]| {
            for i in 0..n {
                quantize(
                    &src[i * w..(i + 1) * w],
                    &mut xq[i * q_w..(i + 1) * q_w],
                    &mut xs[i * s_w..(i + 1) * s_w],
                    g,
                );
            }
        };
        for (l, layer) in model.layers.iter().enumerate() {
            let w = view::layer(layer)?;
            for i in 0..n {
                rmsnorm(&mut xb[i * d..(i + 1) * d], &x[i * d..(i + 1) * d], w.attn_norm, self.eps);
            }
            quantize_all(xb, d, xq, xs);
            matmul_n(n, qd, &mut q[..n * qd], &w.wq, xq, xs, lut, lut_e, g, true);
            matmul_n(n, kv_dim, &mut k[..n * kv_dim], &w.wk, xq, xs, lut, lut_e, g, false);
            matmul_n(n, kv_dim, &mut v[..n * kv_dim], &w.wv, xq, xs, lut, lut_e, g, false);
            for i in 0..n {
                let p = pos + i;
                let (row, srow) = ((l * self.seq_len + p) * kv_dim, (l * self.seq_len + p) * ng);
                let kr = &mut k[i * kv_dim..(i + 1) * kv_dim];
                rotate(kr, rope.at(p));
                quantize(kr, &mut self.kc[row..row + kv_dim], &mut self.ks[srow..srow + ng], g);
                let vr = &v[i * kv_dim..(i + 1) * kv_dim];
                quantize(vr, &mut self.vc[row..row + kv_dim], &mut self.vs[srow..srow + ng], g);
            }
            // Each position attends to the cache up to itself, now that all of them are in.
            for i in 0..n {
                let p = pos + i;
                let qi = &mut q[i * qd..(i + 1) * qd];
                rotate(qi, rope.at(p));
                let (qq, qs) = (&mut xq[i * q_w..i * q_w + qd], &mut xs[i * s_w..i * s_w + qd.div_ceil(g)]);
                quantize(qi, qq, qs, g);
                for sc in qs.iter_mut() {
                    *sc = Scale::unpack(*sc).times(self.attn_scale).pack();
                }
                let (start, len) = (l * self.seq_len, p + 1);
                let cache = Cache {
                    keys: &self.kc[start * kv_dim..(start + len) * kv_dim],
                    key_scales: &self.ks[start * ng..(start + len) * ng],
                    values: &self.vc[start * kv_dim..(start + len) * kv_dim],
                    value_scales: &self.vs[start * ng..(start + len) * ng],
                };
                attention(&mut xb2[i * qd..(i + 1) * qd], qq, qs, cache, &mut self.att[..len], &s);
            }
            quantize_all(xb2, qd, xq, xs);
            matmul_n(n, d, &mut xb[..n * d], &w.wo, xq, xs, lut, lut_e, g, true);
            add(&mut x[..n * d], &xb[..n * d]);
            for i in 0..n {
                rmsnorm(&mut xb[i * d..(i + 1) * d], &x[i * d..(i + 1) * d], w.ffn_norm, self.eps);
            }
            quantize_all(xb, d, xq, xs);
            matmul_n(n, h, &mut hb[..n * h], &w.w1, xq, xs, lut, lut_e, g, true);
            matmul_n(n, h, &mut hb2[..n * h], &w.w3, xq, xs, lut, lut_e, g, false);
            for (a, b) in hb[..n * h].iter_mut().zip(hb2.iter()) {
                *a = swiglu(*a, *b);
            }
            quantize_all(hb, h, xq, xs);
            matmul_n(n, d, &mut xb[..n * d], &w.w2, xq, xs, lut, lut_e, g, true);
            add(&mut x[..n * d], &xb[..n * d]);
        }
        if logits {
            for i in 0..n {
                rmsnorm(
                    &mut xb[i * d..(i + 1) * d],
                    &x[i * d..(i + 1) * d],
                    view::bits(model.output_norm),
                    self.eps,
                );
            }
            quantize_all(xb, d, xq, xs);
            let vocab = s.vocab;
            matmul_n(
                n,
                vocab,
                &mut out[..n * vocab],
                &view::int8(&model.output)?,
                xq,
                xs,
                lut,
                lut_e,
                g,
                true,
            );
        }
        Ok(())
    }
}
