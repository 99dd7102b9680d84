//! Tensor parallelism on the integer path: each node holds some attention heads (their rows of
//! `wq`/`wk`/`wv`, their columns of `wo`, their KV cache) and some FFN rows (of `w1`/`w3`, and
//! those columns of `w2`), and turns the residual stream into its *partial* accumulators of
//! `wo` and `w2`: the i64 sums of its quantization groups, before any rounding. The sum of
//! every node's partials is the whole row's accumulator of [`IntState::forward`], so rounding
//! it once ([`reduce`]) gives the single-node residual bit for bit.
//!
//! That needs every quantization group (of 32 values) that an int8 vector is cut into to lie
//! on one node: the query, the KV rows and the attention output are cut by heads, the FFN
//! activation by rows, so a split falls only on group boundaries ([`parts`]). A model whose
//! heads are narrower than a group therefore splits its attention into fewer parts than heads.

use super::view::{self, BMat, LMat, QMat, Shape};
use super::{
    attention, inv_sqrt, matvec, matvec_blocks, norm_eps, quantize, rmsnorm, rotate, rotation_at, sat32,
    scaled, shr_round, swiglu, Cache, IntState, Scale, ACC, BLOCK, FRAC, ROTATION_BYTES,
};
use crate::error::{Error, Result};
use crate::infer::arena::Carver;
use crate::model::Model;
use core::ops::Range;

/// How finely a model splits: attention into parts of whole KV heads whose values fill whole
/// quantization groups, the FFN into parts of one group of rows each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Parts {
    /// Attention parts.
    pub attention: usize,
    /// KV heads per attention part (the last may hold fewer).
    pub kv_heads: usize,
    /// FFN parts (of `group` rows; the last may hold fewer).
    pub ffn: usize,
    pub group: usize,
}

impl Parts {
    /// The most nodes a split can use: each must hold some part.
    pub fn max_nodes(&self) -> usize {
        self.attention.max(self.ffn)
    }
}

const fn gcd(a: usize, b: usize) -> usize {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// The parts `model` splits into (q8 layers only: the packed formats scale whole rows at once).
pub fn parts<const L: usize>(model: &Model<'_, L>) -> Result<Parts> {
    view::require(model)?;
    // Shards cut matrices by rows and columns; sparse rows are read whole.
    let sparse = |m: &crate::model::Matrix<'_>| matches!(m, crate::model::Matrix::Sparse { .. });
    if model.layers.iter().any(|l| [l.wq, l.wk, l.wv, l.wo, l.w1, l.w2, l.w3].iter().any(sparse)) {
        return Err(Error::Unsupported {
            what: "tensor parallelism on sparse rows (convert the pruned model with --dense)",
        });
    }
    let dense = |m: &crate::model::Matrix<'_>| matches!(view::lmat(m), Ok(LMat::Q8(_) | LMat::Q8Block(_)));
    if model.layers.iter().any(|l| !dense(&l.wq)) {
        return Err(Error::Unsupported {
            what: "tensor parallelism on ternary or binary layers (convert with --quant q8)",
        });
    }
    let s = view::shape(model);
    let (hs, g) = (s.head_size(), s.group);
    let kv_heads = g / gcd(g, hs);
    Ok(Parts { attention: s.n_kv_heads.div_ceil(kv_heads), kv_heads, ffn: s.hidden.div_ceil(g), group: g })
}

/// One node's part of every layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shard {
    /// Query heads (empty: no attention here).
    pub heads: Range<usize>,
    /// Their KV heads.
    pub kv_heads: Range<usize>,
    /// FFN rows (empty: no FFN here).
    pub hidden: Range<usize>,
}

/// `i`'s share of `units` units over `n` takers, contiguous and as even as possible.
fn share(units: usize, n: usize, i: usize) -> Range<usize> {
    let (q, r) = (units / n, units % n);
    let start = i * q + i.min(r);
    start..start + q + usize::from(i < r)
}

/// Node `node` of `nodes`: attention parts spread over the first nodes, FFN parts over the
/// last, each as evenly as possible. `Error::Invalid` when there are more nodes than parts
/// ([`Parts::max_nodes`]: the caller can say how many the model allows).
pub fn shard<const L: usize>(model: &Model<'_, L>, nodes: usize, node: usize) -> Result<Shard> {
    let p = parts(model)?;
    if nodes == 0 || nodes > p.max_nodes() || node >= nodes {
        return Err(Error::Invalid {
            what: "more tensor-parallel nodes than the model's shape has parts (whole quantization groups of heads or of FFN rows): use fewer nodes or the pipeline topology",
        });
    }
    let s = view::shape(model);
    let kv_mul = s.n_heads / s.n_kv_heads;
    let (na, nf) = (nodes.min(p.attention), nodes.min(p.ffn));
    let a = if node < na { share(p.attention, na, node) } else { 0..0 };
    let kv_heads = (a.start * p.kv_heads).min(s.n_kv_heads)..(a.end * p.kv_heads).min(s.n_kv_heads);
    let f = match (node + nf).checked_sub(nodes) {
        Some(i) => share(p.ffn, nf, i),
        None => 0..0,
    };
    Ok(Shard {
        heads: kv_heads.start * kv_mul..kv_heads.end * kv_mul,
        kv_heads,
        hidden: (f.start * p.group).min(s.hidden)..(f.end * p.group).min(s.hidden),
    })
}

/// Buffer sizes of one node's shard, in i32 words.
struct Sizes {
    q: usize,
    kv: usize,
    f: usize,
    xq: usize,
    cache: usize,
    scales: usize,
}

impl Sizes {
    fn new(s: &Shape, shard: &Shard, seq_len: usize) -> Sizes {
        let hs = s.head_size();
        let (q, kv, f) = (shard.heads.len() * hs, shard.kv_heads.len() * hs, shard.hidden.len());
        let xq = s.dim.max(f);
        Sizes {
            q,
            kv,
            f,
            xq,
            cache: s.n_layers * seq_len * kv,
            scales: s.n_layers * seq_len * kv.div_ceil(s.group),
        }
    }

    fn len(&self, s: &Shape, seq_len: usize) -> usize {
        let i8_words = |n: usize| n.div_ceil(4);
        s.dim
            + i8_words(self.xq)
            + self.xq.div_ceil(s.group)
            + 3 * self.q.max(1)
            + self.kv
            + seq_len
            + 2 * self.f
            + 2 * (i8_words(self.cache) + self.scales)
    }
}

/// One sequence on one node of a tensor-parallel split: its shard's activations and KV cache.
pub struct TensorState<'s> {
    shard: Shard,
    shape: Shape,
    seq_len: usize,
    eps: u64,
    attn_scale: Scale,
    xb: &'s mut [i32],
    xq: &'s mut [i8],
    xs: &'s mut [i32],
    q: &'s mut [i32],
    out: &'s mut [i32],
    qs: &'s mut [i32],
    kv_row: &'s mut [i32],
    att: &'s mut [i32],
    hb: &'s mut [i32],
    hb2: &'s mut [i32],
    kc: &'s mut [i8],
    ks: &'s mut [i32],
    vc: &'s mut [i8],
    vs: &'s mut [i32],
}

impl<'s> TensorState<'s> {
    /// Arena length in i32 words for `shard` at `seq_len` positions.
    pub fn arena_len<const L: usize>(model: &Model<'_, L>, shard: &Shard, seq_len: usize) -> usize {
        let s = view::shape(model);
        Sizes::new(&s, shard, seq_len).len(&s, seq_len)
    }

    /// The state of `shard` (from [`shard`]) in `arena`, for up to `seq_len` positions.
    pub fn new<const L: usize>(
        model: &Model<'_, L>,
        shard: Shard,
        arena: &'s mut [i32],
        seq_len: usize,
    ) -> Result<Self> {
        parts(model)?;
        let s = view::shape(model);
        if seq_len == 0 || seq_len > s.model_seq_len {
            return Err(Error::ContextFull { need: seq_len, capacity: s.model_seq_len });
        }
        let hs = s.head_size();
        let aligned = |v: usize| (v * hs).is_multiple_of(s.group);
        let kv_mul = s.n_heads / s.n_kv_heads;
        if shard.kv_heads.end > s.n_kv_heads
            || shard.hidden.end > s.hidden
            || shard.heads != (shard.kv_heads.start * kv_mul..shard.kv_heads.end * kv_mul)
            || !aligned(shard.kv_heads.start)
            || !(aligned(shard.kv_heads.end) || shard.kv_heads.end == s.n_kv_heads)
            || !shard.hidden.start.is_multiple_of(s.group)
            || !(shard.hidden.end.is_multiple_of(s.group) || shard.hidden.end == s.hidden)
        {
            return Err(Error::Invalid {
                what: "a tensor shard that does not fall on whole quantization groups",
            });
        }
        if let Some(c) = &model.shard {
            if (&c.heads, &c.kv_heads, &c.hidden) != (&shard.heads, &shard.kv_heads, &shard.hidden) {
                return Err(Error::Invalid { what: "a tensor node's image is cut for another shard" });
            }
        }
        let z = Sizes::new(&s, &shard, seq_len);
        let need = z.len(&s, seq_len);
        if arena.len() < need {
            return Err(Error::BufferTooSmall { need: need * 4, have: arena.len() * 4 });
        }
        let mut c = Carver(arena);
        let (xb, xq, xs) = (c.words(s.dim), c.i8(z.xq), c.words(z.xq.div_ceil(s.group)));
        let (q, out, qs) = (c.words(z.q.max(1)), c.words(z.q.max(1)), c.words(z.q.max(1)));
        let (kv_row, att, hb, hb2) = (c.words(z.kv), c.words(seq_len), c.words(z.f), c.words(z.f));
        let (kc, ks, vc, vs) = (c.i8(z.cache), c.words(z.scales), c.i8(z.cache), c.words(z.scales));
        Ok(TensorState {
            shard,
            shape: s,
            seq_len,
            eps: norm_eps(model),
            attn_scale: inv_sqrt(hs as u64, 0),
            xb,
            xq,
            xs,
            q,
            out,
            qs,
            kv_row,
            att,
            hb,
            hb2,
            kc,
            ks,
            vc,
            vs,
        })
    }

    pub fn shard(&self) -> &Shard {
        &self.shard
    }

    fn check<const L: usize>(&self, model: &Model<'_, L>, layer: usize, pos: usize, x: &[i32]) -> Result<()> {
        if view::shape(model) != self.shape || layer >= self.shape.n_layers || x.len() != self.shape.dim {
            return Err(Error::Invalid { what: "a tensor step for another model, layer or width" });
        }
        if pos >= self.seq_len {
            return Err(Error::ContextFull { need: pos + 1, capacity: self.seq_len });
        }
        Ok(())
    }

    /// One half-layer of layer `layer` at `pos` over the residual stream `x` (`dim` values):
    /// the attention (this shard's heads, their KV cache written at `pos`, and `wo`'s partial
    /// accumulators over their columns) or, with `ffn`, the FFN (this shard's rows of `w1`/`w3`
    /// and `w2`'s partial accumulators over those columns), into `acc` (`dim` values,
    /// overwritten; all zero when the shard holds no part of it).
    pub fn round<const L: usize>(
        &mut self,
        model: &Model<'_, L>,
        layer: usize,
        ffn: bool,
        pos: usize,
        x: &[i32],
        acc: &mut [i64],
    ) -> Result<()> {
        self.check(model, layer, pos, x)?;
        acc.fill(0);
        match ffn {
            false if self.shard.heads.is_empty() => Ok(()),
            true if self.shard.hidden.is_empty() => Ok(()),
            false => self.attention(model, layer, pos, x, acc),
            true => self.ffn(model, layer, x, acc),
        }
    }

    fn attention<const L: usize>(
        &mut self,
        model: &Model<'_, L>,
        layer: usize,
        pos: usize,
        x: &[i32],
        acc: &mut [i64],
    ) -> Result<()> {
        let s = self.shape;
        let (hs, g) = (s.head_size(), s.group);
        let w = view::layer(&model.layers[layer])?;
        rmsnorm(self.xb, x, w.attn_norm, self.eps);
        quantize(self.xb, self.xq, self.xs, g);
        let (qr, kr) = (self.shard.heads.start * hs..self.shard.heads.end * hs, self.kv_row_range());
        let (qd, kvd) = (qr.len(), kr.len());
        // An image cut to this shard holds only these rows and columns, from 0.
        let (qr, kr) = if model.shard.is_some() { (0..qd, 0..kvd) } else { (qr, kr) };
        let ng = kvd.div_ceil(g);
        let mut composed = [0u8; ROTATION_BYTES];
        let rope = rotation_at(&view::require(model)?, pos, s.model_seq_len, &mut composed)?;
        let row = (layer * self.seq_len + pos) * kvd;
        let srow = (layer * self.seq_len + pos) * ng;
        rows(&mut self.kv_row[..kvd], &w.wk, kr.clone(), self.xq, self.xs, g);
        rotate(&mut self.kv_row[..kvd], rope);
        quantize(&self.kv_row[..kvd], &mut self.kc[row..row + kvd], &mut self.ks[srow..srow + ng], g);
        rows(&mut self.kv_row[..kvd], &w.wv, kr, self.xq, self.xs, g);
        quantize(&self.kv_row[..kvd], &mut self.vc[row..row + kvd], &mut self.vs[srow..srow + ng], g);
        rows(&mut self.q[..qd], &w.wq, qr.clone(), self.xq, self.xs, g);
        rotate(&mut self.q[..qd], rope);
        let (qq, qs) = (&mut self.xq[..qd], &mut self.qs[..qd.div_ceil(g)]);
        quantize(&self.q[..qd], qq, qs, g);
        for p in qs.iter_mut() {
            *p = Scale::unpack(*p).times(self.attn_scale).pack();
        }
        let (start, n) = (layer * self.seq_len, pos + 1);
        let cache = Cache {
            keys: &self.kc[start * kvd..(start + n) * kvd],
            key_scales: &self.ks[start * ng..(start + n) * ng],
            values: &self.vc[start * kvd..(start + n) * kvd],
            value_scales: &self.vs[start * ng..(start + n) * ng],
        };
        // This shard's heads as a model of their own: the same per-head work, its own offsets.
        let local =
            Shape { dim: qd, n_heads: self.shard.heads.len(), n_kv_heads: self.shard.kv_heads.len(), ..s };
        attention(&mut self.out[..qd], qq, qs, cache, &mut self.att[..n], &local);
        quantize(&self.out[..qd], self.xq, self.xs, g);
        columns(acc, &w.wo, qr, self.xq, self.xs, g);
        Ok(())
    }

    fn ffn<const L: usize>(
        &mut self,
        model: &Model<'_, L>,
        layer: usize,
        x: &[i32],
        acc: &mut [i64],
    ) -> Result<()> {
        let f = self.shard.hidden.clone();
        let f = if model.shard.is_some() { 0..f.len() } else { f };
        let g = self.shape.group;
        let w = view::layer(&model.layers[layer])?;
        rmsnorm(self.xb, x, w.ffn_norm, self.eps);
        quantize(self.xb, self.xq, self.xs, g);
        rows(self.hb, &w.w1, f.clone(), self.xq, self.xs, g);
        rows(self.hb2, &w.w3, f.clone(), self.xq, self.xs, g);
        for (a, b) in self.hb.iter_mut().zip(self.hb2.iter()) {
            *a = swiglu(*a, *b);
        }
        quantize(self.hb, self.xq, self.xs, g);
        columns(acc, &w.w2, f, self.xq, self.xs, g);
        Ok(())
    }

    fn kv_row_range(&self) -> Range<usize> {
        let hs = self.shape.head_size();
        self.shard.kv_heads.start * hs..self.shard.kv_heads.end * hs
    }
}

/// Rows `r` of `m` times the quantized input: exactly those outputs of the whole matmul.
fn rows(out: &mut [i32], m: &LMat<'_>, r: Range<usize>, xq: &[i8], xs: &[i32], g: usize) {
    match *m {
        LMat::Q8(m) => {
            let (n, ng) = (m.cols, m.cols.div_ceil(g));
            let sub = QMat { q: &m.q[r.start * n..r.end * n], s: &m.s[r.start * ng..r.end * ng], cols: n };
            matvec(out, &sub, xq, xs, g)
        }
        LMat::Q8Block(m) => {
            let row = m.cols / 32 * BLOCK;
            matvec_blocks(out, &BMat { b: &m.b[r.start * row..r.end * row], cols: m.cols }, xq, xs)
        }
        // `parts` admits dense q8 layers only.
        LMat::Sparse(_) | LMat::Ternary(_) | LMat::Binary(_) => out.fill(0),
    }
}

/// Every row of `m` over columns `c` (starting on a group boundary) against the quantized
/// input of those columns: each row's accumulator over those groups, in the matmul's units.
fn columns(acc: &mut [i64], m: &LMat<'_>, c: Range<usize>, xq: &[i8], xs: &[i32], g: usize) {
    let n = c.len();
    let (xq, xs) = (&xq[..n], &xs[..n.div_ceil(g)]);
    let g0 = c.start / g;
    match *m {
        LMat::Q8(m) => {
            let ng = m.cols.div_ceil(g);
            for (r, a) in acc.iter_mut().enumerate() {
                let row = &m.q[r * m.cols + c.start..r * m.cols + c.end];
                for (j, ((wg, xg), sx)) in row.chunks(g).zip(xq.chunks(g)).zip(xs).enumerate() {
                    let isum: i32 = wg.iter().zip(xg).map(|(a, b)| *a as i32 * *b as i32).sum();
                    *a = a.saturating_add(scaled(isum, m.s[r * ng + g0 + j], Scale::unpack(*sx)));
                }
            }
        }
        LMat::Q8Block(m) => {
            let row = m.cols / 32 * BLOCK;
            for (r, a) in acc.iter_mut().enumerate() {
                let blocks = &m.b[r * row + g0 * BLOCK..r * row + (c.end / 32) * BLOCK];
                for ((blk, xg), sx) in blocks.chunks_exact(BLOCK).zip(xq.chunks_exact(32)).zip(xs) {
                    let isum: i32 = blk[2..].iter().zip(xg).map(|(a, b)| *a as i8 as i32 * *b as i32).sum();
                    *a = a.saturating_add(scaled(isum, super::block_scale(blk), Scale::unpack(*sx)));
                }
            }
        }
        LMat::Sparse(_) | LMat::Ternary(_) | LMat::Binary(_) => {}
    }
}

/// Adds every node's partial accumulators (`total`, summed in node order, which is the
/// matmul's own order of groups) to the residual stream `x`, rounded once as the whole matmul
/// rounds them.
pub fn reduce(x: &mut [i32], total: &[i64]) {
    for (x, a) in x.iter_mut().zip(total) {
        *x = x.saturating_add(sat32(shr_round(*a, ACC - FRAC as i32)));
    }
}

impl IntState<'_> {
    /// The coordinator of a tensor-parallel split: embeds `token` into the residual stream
    /// and returns it, for the nodes' partials to be [`reduce`]d into; [`IntState::classify`]
    /// then reads it.
    pub fn embed_residual<const L: usize>(&mut self, model: &Model<'_, L>, token: u32) -> Result<&mut [i32]> {
        if token as usize >= self.shape.vocab {
            return Err(Error::Invalid { what: "token id outside the vocabulary" });
        }
        super::embed(self.x, &view::int8(&model.token_embd)?, token as usize, self.shape.group);
        Ok(self.x)
    }

    /// The residual stream, for the coordinator to hand to the nodes and reduce into.
    pub fn residual_mut(&mut self) -> &mut [i32] {
        self.x
    }
}
