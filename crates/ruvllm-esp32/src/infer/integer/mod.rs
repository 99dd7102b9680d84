//! The integer-only forward pass, for chips without an FPU (ESP32-C3/C6), where every float
//! operation is a soft-float library call. Nothing in the per-token code computes with floats,
//! so the host and the chip produce the same logits bit for bit.
//!
//! Number formats:
//! - activations (residual stream, q, k, v, FFN) and logits: Q16.16 in i32 ([`FRAC`]);
//! - every matmul input quantized to int8 in groups of 32 exactly like the q8 path
//!   (`amax / 127`, round half away from zero), int8 x int8 summed in i32 per group;
//! - scales (the image's f32 group scales and norm weights, decoded from their bits, and the
//!   activations' `amax / 127`) as [`Scale`]: a 16-bit mantissa and a power of two, so a
//!   weight scale times an activation scale is one 32-bit product and each group's i32 sum
//!   times that one 64-bit product, accumulated per row in i64 with 32 fractional bits;
//! - KV cache: int8 with one packed [`Scale`] per group of 32 per position;
//! - exp, sigmoid, softmax probabilities: Q2.30 from `const` tables; RoPE: the image's Q1.30
//!   `ruvllm.rope` table; RMSNorm: integer square root of the mean square.

mod batch;
mod fixed;
pub mod profile;
#[cfg(target_arch = "riscv32")]
mod rv32;
pub mod sparse;
mod tables;
mod tensor;
mod view;

#[cfg(test)]
mod sample_tests;
#[cfg(test)]
mod tests;

pub use batch::IntBatch;
pub use fixed::{
    argmax, exp_neg, inv_sqrt, isqrt, sample_int, sat32, shr_round, sigmoid, swiglu, weigher, Scale, ACC,
    FRAC, P_FRAC,
};
use profile::{time, Kernel as K};
pub use tables::{EXP2_NEG, SIGMOID};
pub use tensor::{parts, reduce, shard, Parts, Shard, TensorState};

use super::arena::Carver;
use super::pattern::{Rows, Scratch};
use super::{Pattern, Sliding, Step};
use crate::error::{Error, Result};
use crate::model::{Model, ROPE_FRAC};
use crate::quant::quantize_row_fixed;
use view::{BMat, LMat, PMat, QMat, Shape};

/// Buffer sizes in i32 words, the single source for sizing and carving.
struct Plan {
    words: [usize; 9],
    xq: usize,
    xs: usize,
    kv: usize,
    kv_scales: usize,
    /// The packed kernels' lookup table, in words (none for q8).
    lut: usize,
}

impl Plan {
    fn new(s: &Shape, seq_len: usize) -> Plan {
        let (d, h, kv, q) = (s.dim, s.hidden, s.kv_dim(), s.q_dim());
        let widest = d.max(h).max(q);
        Plan {
            // x, xb, xb2 (the attention's output), q, ...
            words: [d, d, q, q, kv, h, h, seq_len, s.vocab],
            xq: widest,
            xs: widest.div_ceil(s.group),
            kv: s.n_layers * seq_len * kv,
            kv_scales: s.n_layers * seq_len * kv.div_ceil(s.group),
            lut: s.lut_entries(),
        }
    }

    /// Words of a sparse pattern's scratch of `rows` positions: their indices and the copied
    /// int8 keys and values with their scales.
    fn sparse_len(s: &Shape, rows: usize) -> usize {
        let kv = s.kv_dim();
        rows + 2 * ((rows * kv).div_ceil(4) + rows * kv.div_ceil(s.group))
    }

    fn len(&self) -> usize {
        let i8_words = |n: usize| n.div_ceil(4);
        self.words.iter().sum::<usize>()
            + i8_words(self.xq)
            + self.xs
            + 2 * (i8_words(self.kv) + self.kv_scales)
            + self.lut
    }
}

/// Activations and int8 KV cache of the integer path, carved from one caller-provided arena.
pub struct IntState<'s> {
    seq_len: usize,
    shape: Shape,
    /// RMSNorm epsilon in units of 2^-32 (the mean square's units).
    eps: u64,
    /// 1 / sqrt(head_size), folded into the query's scales.
    attn_scale: Scale,
    x: &'s mut [i32],
    xb: &'s mut [i32],
    xb2: &'s mut [i32],
    q: &'s mut [i32],
    kv_row: &'s mut [i32],
    hb: &'s mut [i32],
    hb2: &'s mut [i32],
    att: &'s mut [i32],
    logits: &'s mut [i32],
    xq: &'s mut [i8],
    xs: &'s mut [i32],
    kc: &'s mut [i8],
    ks: &'s mut [i32],
    vc: &'s mut [i8],
    vs: &'s mut [i32],
    /// Scratch of the packed (ternary/binary) kernels, built from `xq` per matmul input.
    lut: Lut<'s>,
    /// A sparse pattern's scratch ([`IntState::sparse`]); `None`: every position.
    sparse: Option<Scratch<'s, i8, i32>>,
}

/// The packed kernels' view of one quantized matmul input.
struct Lut<'s> {
    /// 16 entries per nibble of a packed row: the nibble's codes times its activations, times
    /// the activation group's scale on the common exponent `e` (see [`build_lut`]).
    t: &'s mut [i32],
    e: i32,
}

impl<'s> IntState<'s> {
    /// Arena length in i32 words for a context of `seq_len` positions.
    pub fn arena_len<const L: usize>(model: &Model<'_, L>, seq_len: usize) -> usize {
        Plan::new(&view::shape(model), seq_len).len()
    }

    /// RAM in bytes for the activations and KV cache at `seq_len` positions.
    pub fn ram_bytes<const L: usize>(model: &Model<'_, L>, seq_len: usize) -> usize {
        Self::arena_len(model, seq_len) * 4
    }

    /// Bytes of the model image one token reads, all of them from flash on a chip (its 16 KiB
    /// cache holds none of a layer's weights until the next token): every layer's matrices and
    /// norms, the classifier and the final norm, one embedding row and one RoPE row.
    pub fn flash_bytes_per_token<const L: usize>(model: &Model<'_, L>) -> Result<usize> {
        let mut n = 0;
        for layer in model.layers.iter() {
            let w = view::layer(layer)?;
            n += 4 * (w.attn_norm.len() + w.ffn_norm.len());
            n += [w.wq, w.wk, w.wv, w.wo, w.w1, w.w2, w.w3].iter().map(|m| m.bytes()).sum::<usize>();
        }
        n += view::int8(&model.output)?.bytes() + 4 * model.output_norm.len();
        n += view::int8(&model.token_embd)?.row_bytes();
        n += view::require(model)?.at(0).len();
        Ok(n)
    }

    /// Builds the state in `arena` for up to `seq_len` positions. The model must be q8 with
    /// the `ruvllm.rope` table (`Error::Unsupported` / `Error::Missing` otherwise).
    pub fn new<const L: usize>(model: &Model<'_, L>, arena: &'s mut [i32], seq_len: usize) -> Result<Self> {
        view::require(model)?;
        if seq_len == 0 || seq_len > model.config.seq_len {
            return Err(Error::ContextFull { need: seq_len, capacity: model.config.seq_len });
        }
        let shape = view::shape(model);
        let plan = Plan::new(&shape, seq_len);
        if arena.len() < plan.len() {
            return Err(Error::BufferTooSmall { need: plan.len() * 4, have: arena.len() * 4 });
        }
        let eps = norm_eps(model);
        let attn_scale = inv_sqrt(shape.head_size() as u64, 0);
        let mut c = Carver(arena);
        let [d0, d1, d2, d3, kv, h0, h1, att, voc] = plan.words;
        let (x, xb, xb2, q, kv_row) = (c.words(d0), c.words(d1), c.words(d2), c.words(d3), c.words(kv));
        let (hb, hb2, att, logits) = (c.words(h0), c.words(h1), c.words(att), c.words(voc));
        let (xq, xs) = (c.i8(plan.xq), c.words(plan.xs));
        let (kc, ks) = (c.i8(plan.kv), c.words(plan.kv_scales));
        let (vc, vs) = (c.i8(plan.kv), c.words(plan.kv_scales));
        let lut = Lut { t: c.words(plan.lut), e: 0 };
        Ok(IntState {
            seq_len,
            shape,
            eps,
            attn_scale,
            x,
            xb,
            xb2,
            q,
            kv_row,
            hb,
            hb2,
            att,
            logits,
            xq,
            xs,
            kc,
            ks,
            vc,
            vs,
            lut,
            sparse: None,
        })
    }

    /// Arena length in i32 words of [`IntState::sparse`] with `pattern` at `seq_len`.
    pub fn sparse_arena_len<const L: usize>(model: &Model<'_, L>, seq_len: usize, pattern: Pattern) -> usize {
        let s = view::shape(model);
        Plan::new(&s, seq_len).len() + Plan::sparse_len(&s, pattern.bound(seq_len))
    }

    /// RAM in bytes that `pattern` needs at `seq_len` positions, as
    /// [`crate::infer::State::pattern_ram_bytes`] on the integer path.
    pub fn pattern_ram_bytes<const L: usize>(
        model: &Model<'_, L>,
        seq_len: usize,
        pattern: Pattern,
    ) -> usize {
        4 * match pattern {
            Pattern::Window(w) => Self::arena_len(model, w.min(seq_len)),
            Pattern::Full => Self::arena_len(model, seq_len),
            _ => Self::sparse_arena_len(model, seq_len, pattern),
        }
    }

    /// As [`crate::infer::State::sparse`] on the integer path: attention over the positions
    /// `pattern` lists, decided before the layers run; only their cache rows are read. A
    /// pattern that lists every position gives [`IntState::new`]'s numbers bit for bit.
    pub fn sparse<const L: usize>(
        model: &Model<'_, L>,
        arena: &'s mut [i32],
        seq_len: usize,
        pattern: Pattern,
    ) -> Result<Self> {
        view::require(model)?;
        let shape = view::shape(model);
        let need = Self::sparse_arena_len(model, seq_len.min(model.config.seq_len), pattern);
        if arena.len() < need {
            return Err(Error::BufferTooSmall { need: need * 4, have: arena.len() * 4 });
        }
        let (main, rest) = arena.split_at_mut(Plan::new(&shape, seq_len).len());
        let mut state = Self::new(model, main, seq_len)?;
        let rows = pattern.bound(seq_len);
        let (kv, ng) = (shape.kv_dim(), shape.kv_dim().div_ceil(shape.group));
        let mut c = Carver(rest);
        let idx = bytemuck::cast_slice_mut(c.words(rows));
        let (k, ks) = (c.i8(rows * kv), c.words(rows * ng));
        let (v, vs) = (c.i8(rows * kv), c.words(rows * ng));
        state.sparse = Some(Scratch::new(pattern, idx, (k, ks), (v, vs)));
        Ok(state)
    }

    /// The attention pattern, unless it is full attention.
    pub fn pattern(&self) -> Option<Pattern> {
        self.sparse.as_ref().and_then(Scratch::sparse)
    }

    /// Changes an [`IntState::sparse`] state's pattern for the positions that follow: refused
    /// when its rows do not fit the scratch the state was built with, or it has none.
    pub fn set_pattern(&mut self, pattern: Pattern) -> Result<()> {
        let row_bytes = Plan::sparse_len(&self.shape, 1) * 4;
        match &mut self.sparse {
            Some(s) => s.set(pattern, self.seq_len, row_bytes),
            // Built without scratch: attention is already full (the dense path).
            None if pattern == Pattern::Full => Ok(()),
            None => Err(Error::BufferTooSmall { need: pattern.bound(self.seq_len) * row_bytes, have: 0 }),
        }
    }

    /// Positions this state can hold.
    pub fn seq_len(&self) -> usize {
        self.seq_len
    }

    /// As [`crate::infer::State::sliding`] on the integer path: attention over the last
    /// `window` positions through a ring of `window` cache slots, positions past the model's
    /// context. There the image's RoPE table ends; a position's rotation is composed from its
    /// rows ([`rotation_at`]), in integers.
    pub fn sliding<const L: usize>(
        model: &Model<'_, L>,
        arena: &'s mut [i32],
        window: usize,
    ) -> Result<Sliding<Self>> {
        Ok(Sliding(Self::new(model, arena, window)?))
    }

    /// Runs `token` at `pos`; the logits for the next token, in Q16.16 (value = l / 65536).
    pub fn forward<const L: usize>(
        &mut self,
        model: &Model<'_, L>,
        token: u32,
        pos: usize,
    ) -> Result<&[i32]> {
        self.step(model, token, pos, Pass::FULL)?;
        Ok(self.logits)
    }

    /// [`IntState::forward`] with a MicroLoRA adapter set on its projections ([`crate::lora`]).
    pub fn forward_lora<const L: usize, const P: usize>(
        &mut self,
        model: &Model<'_, L>,
        token: u32,
        pos: usize,
        lora: Option<&crate::lora::IntLora<P>>,
    ) -> Result<&mut [i32]> {
        self.step(model, token, pos, Pass { lora: lora.map(|a| a.view()), ..Pass::FULL })?;
        Ok(self.logits)
    }

    /// [`IntState::prefill`] with a MicroLoRA adapter set: the classifier is skipped.
    pub fn prefill_lora<const L: usize, const P: usize>(
        &mut self,
        model: &Model<'_, L>,
        token: u32,
        pos: usize,
        lora: Option<&crate::lora::IntLora<P>>,
    ) -> Result<()> {
        self.step(model, token, pos, Pass { logits: false, lora: lora.map(|a| a.view()), ..Pass::FULL })
    }

    /// [`IntState::forward_lora`] that also copies the residual stream entering layer `at`
    /// into `keep` (`dim` values): where an adapter set's backward pass starts from.
    pub(crate) fn forward_lora_keep<const L: usize>(
        &mut self,
        model: &Model<'_, L>,
        token: u32,
        pos: usize,
        lora: crate::lora::LoraRef<'_>,
        at: usize,
        keep: &mut [i32],
    ) -> Result<&mut [i32]> {
        self.step(model, token, pos, Pass { logits: false, layers: 0..at, lora: Some(lora), ..Pass::FULL })?;
        keep.copy_from_slice(self.x);
        self.step(
            model,
            token,
            pos,
            Pass { layers: at..ALL.end, embeds: false, lora: Some(lora), ..Pass::FULL },
        )?;
        Ok(self.logits)
    }

    /// After a forward pass: the final residual stream, the last layer's SwiGLU activation and
    /// the logits (Q16.16), what an adapter's gradient needs.
    pub(crate) fn lora_inputs(&self) -> (&[i32], &[i32], &[i32]) {
        (self.x, self.hb, self.logits)
    }

    /// Row `v` of the classifier, dequantized to Q16.16 into `out` (`dim` values).
    pub(crate) fn classifier_row<const L: usize>(
        &self,
        model: &Model<'_, L>,
        v: usize,
        out: &mut [i32],
    ) -> Result<()> {
        embed(out, &view::int8(&model.output)?, v, self.shape.group);
        Ok(())
    }

    /// Row `r` of layer `l`'s projection `t`, dequantized to Q16.16 into `out` (its input
    /// width): what an adapter's backward pass multiplies by. int8 layers only.
    pub(crate) fn weight_row<const L: usize>(
        model: &Model<'_, L>,
        l: usize,
        t: crate::lora::Target,
        r: usize,
        out: &mut [i32],
    ) -> Result<()> {
        use crate::lora::Target as T;
        let layer = model.layers.get(l).ok_or(Error::Invalid { what: "adapter layer outside the model" })?;
        let w = view::layer(layer)?;
        let m = match t {
            T::Wq => w.wq,
            T::Wk => w.wk,
            T::Wv => w.wv,
            T::Wo => w.wo,
            T::W1 => w.w1,
            T::W2 => w.w2,
            T::W3 => w.w3,
        };
        if let LMat::Ternary(_) | LMat::Binary(_) = m {
            return Err(Error::Unsupported {
                what: "adapters below the last layer's w2 need a q8 model (convert with --quant q8)",
            });
        }
        embed(out, &m, r, model.group);
        Ok(())
    }

    /// Runs a prompt token whose logits nobody reads: the classifier is skipped.
    pub fn prefill<const L: usize>(&mut self, model: &Model<'_, L>, token: u32, pos: usize) -> Result<()> {
        self.step(model, token, pos, Pass { logits: false, ..Pass::FULL })
    }

    /// One pipeline stage: runs the transformer layers `layers` of `token` at `pos` and returns
    /// the residual stream after them (Q16.16, `dim` values), what the next stage starts from.
    /// The stage holding the model's layer 0 embeds `token`; a later one starts from
    /// `residual`, the stream the stage before returned (`None` only for the first). For a
    /// model cut to one stage's layers ([`Model::cut`]) `layers` counts from the cut's first
    /// layer. Only these layers' KV cache is written, so a sequence must keep one split. The
    /// same integer work as [`IntState::forward`], layer for layer, so a chain of stages gives
    /// its result exactly.
    pub fn run_layers<const L: usize>(
        &mut self,
        model: &Model<'_, L>,
        token: u32,
        pos: usize,
        layers: core::ops::Range<usize>,
        residual: Option<&[i32]>,
    ) -> Result<&[i32]> {
        if layers.start >= layers.end || layers.end > self.shape.n_layers {
            return Err(Error::Invalid {
                what: "stage layers must be a non-empty range of the model's layers",
            });
        }
        let first = layers.start + model.cut.map_or(0, |c| c.first) == 0;
        match (first, residual) {
            (true, None) => self.step(model, token, pos, Pass { logits: false, layers, ..Pass::FULL })?,
            (false, Some(r)) if r.len() == self.shape.dim => {
                self.x.copy_from_slice(r);
                self.step(model, token, pos, Pass { logits: false, layers, embeds: false, ..Pass::FULL })?
            }
            (true, Some(_)) => {
                return Err(Error::Invalid { what: "the first stage embeds its token: no residual" })
            }
            _ => {
                return Err(Error::Invalid { what: "a later stage needs the residual stream of dim values" })
            }
        }
        Ok(self.x)
    }

    /// The classifier over the residual stream the last [`IntState::run_layers`] left: the
    /// output RMSNorm, then the logits for the next token (Q16.16), as `forward` computes them.
    pub fn classify<const L: usize>(&mut self, model: &Model<'_, L>) -> Result<&mut [i32]> {
        self.classifier(model)?;
        Ok(self.logits)
    }

    /// Runs `token` at `pos` without the classifier and returns the final hidden state: the
    /// residual stream after the last layer, through the output RMSNorm (what the classifier
    /// would read), in Q16.16. The embedder pools these over a text's positions.
    pub fn hidden<const L: usize>(&mut self, model: &Model<'_, L>, token: u32, pos: usize) -> Result<&[i32]> {
        self.hidden_after(model, token, pos, usize::MAX)
    }

    /// Like [`IntState::hidden`], but through the first `layers` layers only (all of them
    /// when `layers` is at least the model's count): the residual stream after layer
    /// `layers - 1`, through the output RMSNorm. Only those layers run, and only their KV
    /// cache is written, so a sequence must use one `layers` throughout.
    pub fn hidden_after<const L: usize>(
        &mut self,
        model: &Model<'_, L>,
        token: u32,
        pos: usize,
        layers: usize,
    ) -> Result<&[i32]> {
        self.step(model, token, pos, Pass { logits: false, layers: 0..layers, ..Pass::FULL })?;
        rmsnorm(self.xb, self.x, view::bits(model.output_norm), self.eps);
        Ok(self.xb)
    }

    // Never inlined: the token's whole integer work stays one symbol in a chip's ELF, the root
    // from which a test proves no soft-float routine is reachable. One call per token.
    #[inline(never)]
    fn step<const L: usize>(
        &mut self,
        model: &Model<'_, L>,
        token: u32,
        pos: usize,
        pass: Pass<'_>,
    ) -> Result<()> {
        use crate::lora::Target::{Wk, Wo, Wq, Wv, W1, W2, W3};
        let Pass { logits, layers, embeds, lora, ring } = pass;
        let rope = view::require(model)?;
        let s = self.shape;
        if view::shape(model) != s {
            return Err(Error::Invalid { what: "model does not match the integer state's shape" });
        }
        if token as usize >= s.vocab {
            return Err(Error::Invalid { what: "token id outside the vocabulary" });
        }
        if pos >= self.seq_len && !ring {
            return Err(Error::ContextFull { need: pos + 1, capacity: self.seq_len });
        }
        let (qd, kv_dim, g) = (s.q_dim(), s.kv_dim(), s.group);
        let ng = kv_dim.div_ceil(g);
        // This position's cache slot, and how many slots hold positions it attends to.
        let (slot, seen) = (pos % self.seq_len, (pos + 1).min(self.seq_len));
        // Validated at load: [model seq_len][hs / 2][2]; past it (a ring only), composed.
        let mut composed = [0u8; ROTATION_BYTES];
        let rope = rotation_at(&rope, pos, s.model_seq_len, &mut composed)?;
        if let Some(sp) = &mut self.sparse {
            sp.select(pos);
        }
        if embeds {
            let table = view::int8(&model.token_embd)?;
            time(K::Embed, || embed(self.x, &table, token as usize, g));
        }
        for (l, layer) in model.layers.iter().enumerate().take(layers.end).skip(layers.start) {
            let w = view::layer(layer)?;
            time(K::Rmsnorm, || rmsnorm(self.xb, self.x, w.attn_norm, self.eps));
            time(K::Quantize, || quantize(self.xb, self.xq, self.xs, g));
            time(K::Matvec, || matmul(self.q, &w.wq, self.xq, self.xs, g, &mut self.lut, true));
            if let Some(a) = &lora {
                a.apply(l, Wq, self.xb, self.q);
            }
            let row = (l * self.seq_len + slot) * kv_dim;
            let srow = (l * self.seq_len + slot) * ng;
            let (krow, ksrow) = (&mut self.kc[row..row + kv_dim], &mut self.ks[srow..srow + ng]);
            time(K::Matvec, || matmul(self.kv_row, &w.wk, self.xq, self.xs, g, &mut self.lut, false));
            if let Some(a) = &lora {
                a.apply(l, Wk, self.xb, self.kv_row);
            }
            time(K::Rope, || rotate(self.kv_row, rope));
            time(K::Quantize, || quantize(self.kv_row, krow, ksrow, g));
            let (vrow, vsrow) = (&mut self.vc[row..row + kv_dim], &mut self.vs[srow..srow + ng]);
            time(K::Matvec, || matmul(self.kv_row, &w.wv, self.xq, self.xs, g, &mut self.lut, false));
            if let Some(a) = &lora {
                a.apply(l, Wv, self.xb, self.kv_row);
            }
            time(K::Quantize, || quantize(self.kv_row, vrow, vsrow, g));
            time(K::Rope, || rotate(self.q, rope));
            // The query in int8 too, with 1/sqrt(head_size) folded into its scales.
            let (qq, qs) = (&mut self.xq[..qd], &mut self.xs[..qd.div_ceil(g)]);
            time(K::Quantize, || {
                quantize(self.q, qq, qs, g);
                for p in qs.iter_mut() {
                    *p = Scale::unpack(*p).times(self.attn_scale).pack();
                }
            });
            let (start, n) = (l * self.seq_len, seen);
            let mut rows: Rows<'_, i8, i32> = (
                &self.kc[start * kv_dim..(start + n) * kv_dim],
                &self.ks[start * ng..(start + n) * ng],
                &self.vc[start * kv_dim..(start + n) * kv_dim],
                &self.vs[start * ng..(start + n) * ng],
            );
            if let Some(sp) = &mut self.sparse {
                rows = sp.gather(rows, kv_dim, ng);
            }
            let (keys, key_scales, values, value_scales) = rows;
            let n = keys.len() / kv_dim.max(1);
            let cache = Cache { keys, key_scales, values, value_scales };
            attention(self.xb2, qq, qs, cache, &mut self.att[..n], &s);
            time(K::Quantize, || quantize(self.xb2, self.xq, self.xs, g));
            time(K::Matvec, || matmul(self.xb, &w.wo, self.xq, self.xs, g, &mut self.lut, true));
            if let Some(a) = &lora {
                a.apply(l, Wo, self.xb2, self.xb);
            }
            time(K::Residual, || add(self.x, self.xb));
            time(K::Rmsnorm, || rmsnorm(self.xb, self.x, w.ffn_norm, self.eps));
            time(K::Quantize, || quantize(self.xb, self.xq, self.xs, g));
            time(K::Matvec, || matmul(self.hb, &w.w1, self.xq, self.xs, g, &mut self.lut, true));
            time(K::Matvec, || matmul(self.hb2, &w.w3, self.xq, self.xs, g, &mut self.lut, false));
            if let Some(a) = &lora {
                a.apply(l, W1, self.xb, self.hb);
                a.apply(l, W3, self.xb, self.hb2);
            }
            time(K::Swiglu, || {
                for (a, b) in self.hb.iter_mut().zip(self.hb2.iter()) {
                    *a = swiglu(*a, *b);
                }
            });
            time(K::Quantize, || quantize(self.hb, self.xq, self.xs, g));
            time(K::Matvec, || matmul(self.xb, &w.w2, self.xq, self.xs, g, &mut self.lut, true));
            if let Some(a) = &lora {
                a.apply(l, W2, self.hb, self.xb);
            }
            time(K::Residual, || add(self.x, self.xb));
        }
        if logits {
            self.classifier(model)?;
        }
        Ok(())
    }

    fn classifier<const L: usize>(&mut self, model: &Model<'_, L>) -> Result<()> {
        let g = self.shape.group;
        let out = view::int8(&model.output)?;
        time(K::Classifier, || {
            rmsnorm(self.xb, self.x, view::bits(model.output_norm), self.eps);
            quantize(self.xb, self.xq, self.xs, g);
            matmul(self.logits, &out, self.xq, self.xs, g, &mut self.lut, false);
        });
        Ok(())
    }
}

/// RMSNorm epsilon in units of 2^-32 (the mean square's units).
fn norm_eps<const L: usize>(model: &Model<'_, L>) -> u64 {
    let eps = Scale::from_ieee_bits(view::eps_bits(model));
    shr_round(eps.m as i64, -(eps.e + 32)).max(0) as u64
}

/// Every layer (`step`'s range for a whole forward pass).
const ALL: core::ops::Range<usize> = 0..usize::MAX;

/// What one [`IntState::step`] runs.
#[derive(Clone)]
struct Pass<'l> {
    /// Compute the logits (the classifier) after the layers.
    logits: bool,
    /// The layers to run (a pipeline stage runs some of them).
    layers: core::ops::Range<usize>,
    /// Embed the token; a later pipeline stage starts from the residual stream in `x` instead.
    embeds: bool,
    /// A MicroLoRA adapter set on its layers' projections.
    lora: Option<crate::lora::LoraRef<'l>>,
    /// The cache is a ring ([`Sliding`]): positions past its size wrap.
    ring: bool,
}

impl Pass<'_> {
    /// A whole forward pass: embedding, every layer, the logits.
    const FULL: Pass<'static> = Pass { logits: true, layers: ALL, embeds: true, lora: None, ring: false };
}

impl Step for IntState<'_> {
    type Logit = i32;

    fn capacity(&self) -> usize {
        self.seq_len
    }

    fn prefill_token<const L: usize>(&mut self, model: &Model<'_, L>, token: u32, pos: usize) -> Result<()> {
        self.prefill(model, token, pos)
    }

    fn logits<const L: usize>(&mut self, model: &Model<'_, L>, token: u32, pos: usize) -> Result<&mut [i32]> {
        self.step(model, token, pos, Pass::FULL)?;
        Ok(self.logits)
    }
}

/// Bytes of one position's composed rotation: heads of up to 64 values.
const ROTATION_BYTES: usize = 32 * 8;

/// Position `pos`'s `(cos, sin)` pairs in Q1.30 (8 bytes a pair, as the table stores them):
/// the table's row while `pos` is inside it, else `R(r) * R(last)^q` with `pos = q * last + r`
/// and `last` the table's last row, by squaring (a rotation by a sum of angles is the product
/// of the rotations), rounded at each of the at most 2 log2(q) products: integers only.
pub fn rotation_at<'a>(
    rope: &crate::model::RopeTable<'a>,
    pos: usize,
    rows: usize,
    buf: &'a mut [u8; ROTATION_BYTES],
) -> Result<&'a [u8]> {
    let row = rope.at(pos);
    if !row.is_empty() {
        return Ok(row);
    }
    let per = rope.at(0).len();
    if per > buf.len() || rows < 2 {
        return Err(Error::Unsupported {
            what: "a sliding window past the context with heads over 64 values",
        });
    }
    compose(rope, pos, rows - 1, per, &mut buf[..]);
    Ok(&buf[..per])
}

/// The composition of [`rotation_at`] into `buf`, in a frame of its own (1 KiB of stack) that
/// only a position past the table opens.
#[inline(never)]
fn compose(rope: &crate::model::RopeTable<'_>, pos: usize, last: usize, per: usize, buf: &mut [u8]) {
    let (mut q, r) = (pos / last, pos % last);
    let le = |b: &[u8], i: usize| i32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]) as i64;
    let sh = ROPE_FRAC as i32;
    let mul = |(c1, s1): (i64, i64), (c2, s2): (i64, i64)| {
        (shr_round(c1 * c2 - s1 * s2, sh), shr_round(c1 * s2 + s1 * c2, sh))
    };
    let (base, step) = (rope.at(r), rope.at(last));
    let mut acc = [(0i64, 0i64); ROTATION_BYTES / 8];
    let mut pow = acc;
    for (j, (a, p)) in acc.iter_mut().zip(pow.iter_mut()).take(per / 8).enumerate() {
        *a = (le(base, 8 * j), le(base, 8 * j + 4));
        *p = (le(step, 8 * j), le(step, 8 * j + 4));
    }
    while q > 0 {
        for (a, p) in acc.iter_mut().zip(pow.iter_mut()).take(per / 8) {
            if q & 1 == 1 {
                *a = mul(*a, *p);
            }
            *p = mul(*p, *p);
        }
        q >>= 1;
    }
    for (j, (c, s)) in acc.iter().take(per / 8).enumerate() {
        buf[8 * j..8 * j + 4].copy_from_slice(&(sat32(*c)).to_le_bytes());
        buf[8 * j + 4..8 * j + 8].copy_from_slice(&(sat32(*s)).to_le_bytes());
    }
}

impl Sliding<IntState<'_>> {
    /// Runs `token` at `pos` (any position); the logits for the next token, in Q16.16.
    pub fn forward<const L: usize>(
        &mut self,
        model: &Model<'_, L>,
        token: u32,
        pos: usize,
    ) -> Result<&[i32]> {
        self.0.step(model, token, pos, Pass { ring: true, ..Pass::FULL })?;
        Ok(self.0.logits)
    }
}

impl Step for Sliding<IntState<'_>> {
    type Logit = i32;

    fn capacity(&self) -> usize {
        usize::MAX
    }

    fn prefill_token<const L: usize>(&mut self, model: &Model<'_, L>, token: u32, pos: usize) -> Result<()> {
        self.0.step(model, token, pos, Pass { logits: false, ring: true, ..Pass::FULL })
    }

    fn logits<const L: usize>(&mut self, model: &Model<'_, L>, token: u32, pos: usize) -> Result<&mut [i32]> {
        self.0.step(model, token, pos, Pass { ring: true, ..Pass::FULL })?;
        Ok(self.0.logits)
    }
}

/// One layer's int8 cache up to the current position.
struct Cache<'a> {
    keys: &'a [i8],
    key_scales: &'a [i32],
    values: &'a [i8],
    value_scales: &'a [i32],
}

fn add(x: &mut [i32], y: &[i32]) {
    for (a, b) in x.iter_mut().zip(y) {
        *a = a.saturating_add(*b);
    }
}

/// Quantizes `x` into the first `x.len()` bytes of `q` and one packed [`Scale`] per group.
fn quantize(x: &[i32], q: &mut [i8], scales: &mut [i32], group: usize) {
    let ng = x.len().div_ceil(group);
    let (q, scales) = (&mut q[..x.len()], &mut scales[..ng]);
    quantize_row_fixed(x, q, bytemuck::cast_slice_mut::<i32, u32>(scales), group);
    for s in scales.iter_mut() {
        *s = Scale::of_group(*s as u32, FRAC).pack();
    }
}

/// Row `r` of the embedding (an int8 matrix), dequantized to Q16.16.
fn embed(out: &mut [i32], m: &LMat<'_>, r: usize, group: usize) {
    let value = |v: i8, sc: Scale| sat32(shr_round(v as i64 * sc.m as i64, -(sc.e + FRAC as i32)));
    match m {
        LMat::Q8(m) => {
            let (n, ng) = (m.cols, m.cols.div_ceil(group));
            let (q, s) = (&m.q[r * n..(r + 1) * n], &m.s[r * ng..(r + 1) * ng]);
            for ((og, qg), sb) in out.chunks_mut(group).zip(q.chunks(group)).zip(s) {
                let sc = Scale::from_ieee_bits(*sb);
                og.iter_mut().zip(qg).for_each(|(o, v)| *o = value(*v, sc));
            }
        }
        LMat::Q8Block(m) => {
            let row = m.cols / 32 * BLOCK;
            for (og, blk) in out.chunks_mut(32).zip(m.b[r * row..(r + 1) * row].chunks_exact(BLOCK)) {
                let sc = Scale::from_ieee_bits(block_scale(blk));
                og.iter_mut().zip(&blk[2..]).for_each(|(o, v)| *o = value(*v as i8, sc));
            }
        }
        _ => embed_rest(out, m, r, group),
    }
}

/// [`embed`] for sparse rows (a projection's row for an adapter's backward pass: the dense
/// row's values) and the packed formats (never embeddings: the loader keeps those int8). Apart
/// so that `embed`'s match has three ways out, no jump table.
#[inline(never)]
fn embed_rest(out: &mut [i32], m: &LMat<'_>, r: usize, group: usize) {
    out.fill(0);
    if let LMat::Sparse(m) = m {
        let ng = m.m.cols().div_ceil(group);
        let value = |v: i8, sc: Scale| sat32(shr_round(v as i64 * sc.m as i64, -(sc.e + FRAC as i32)));
        m.m.for_row(r, |c, v| out[c] = value(v, Scale::from_ieee_bits(m.s[r * ng + c / group])));
    }
}

/// Bytes of a GGUF Q8_0 block.
const BLOCK: usize = crate::gguf::Q8_0_BYTES as usize;

/// A Q8_0 block's f16 scale as f32 bits (exact, integer operations only).
fn block_scale(blk: &[u8]) -> u32 {
    crate::gguf::f16_to_f32_bits(u16::from_le_bytes([blk[0], blk[1]]))
}

/// [`matvec`] over GGUF Q8_0 rows (groups of 32 with f16 scales): the same exact group sums
/// and scaling, one row at a time.
fn matvec_blocks(out: &mut [i32], m: &BMat<'_>, xq: &[i8], xs: &[i32]) {
    let nb = m.cols / 32;
    let (xq, xs) = (&xq[..m.cols], &xs[..nb]);
    for (o, row) in out.iter_mut().zip(m.b.chunks_exact((nb * BLOCK).max(1))) {
        let mut acc = 0i64;
        for ((blk, xg), sx) in row.chunks_exact(BLOCK).zip(xq.chunks_exact(32)).zip(xs) {
            let mut isum = 0i32;
            for (a, b) in blk[2..].iter().zip(xg) {
                isum += *a as i8 as i32 * *b as i32;
            }
            acc = acc.saturating_add(scaled(isum, block_scale(blk), Scale::unpack(*sx)));
        }
        *o = sat32(shr_round(acc, ACC - FRAC as i32));
    }
}

/// `out = W x` in Q16.16, from the int8 activation `xq` with packed scales `xs`: each group's
/// exact i32 sum times (weight scale x activation scale), summed in i64. Four rows go through
/// each group together, so every activation byte is loaded once for four multiply-adds (on a
/// chip without SIMD the loads are most of the cost); the arithmetic per row is unchanged.
fn matvec(out: &mut [i32], m: &QMat<'_>, xq: &[i8], xs: &[i32], group: usize) {
    if group == 32 {
        return matvec32(out, m, xq, xs);
    }
    let n = m.cols;
    let ng = n.div_ceil(group);
    let (xq, xs) = (&xq[..n], &xs[..ng]);
    let mut rows = out.chunks_exact_mut(4).zip(m.q.chunks_exact(4 * n)).zip(m.s.chunks_exact(4 * ng));
    for ((o, w), ws) in &mut rows {
        let mut acc = [0i64; 4];
        for (g, (xg, sx)) in xq.chunks(group).zip(xs).enumerate() {
            let x = Scale::unpack(*sx);
            let at = |r: usize| &w[r * n + g * group..r * n + g * group + xg.len()];
            let mut isum = [0i32; 4];
            for ((((xv, a), b), c), d) in xg.iter().zip(at(0)).zip(at(1)).zip(at(2)).zip(at(3)) {
                let xv = *xv as i32;
                isum[0] += *a as i32 * xv;
                isum[1] += *b as i32 * xv;
                isum[2] += *c as i32 * xv;
                isum[3] += *d as i32 * xv;
            }
            for (r, (acc, isum)) in acc.iter_mut().zip(isum).enumerate() {
                *acc = acc.saturating_add(scaled(isum, ws[r * ng + g], x));
            }
        }
        for (o, acc) in o.iter_mut().zip(acc) {
            *o = sat32(shr_round(acc, ACC - FRAC as i32));
        }
    }
    let done = out.len() / 4 * 4;
    for ((o, row), rs) in
        out[done..].iter_mut().zip(m.q[done * n..].chunks_exact(n)).zip(m.s[done * ng..].chunks_exact(ng))
    {
        let mut acc = 0i64;
        for (((wg, xg), sw), sx) in row.chunks(group).zip(xq.chunks(group)).zip(rs).zip(xs) {
            let mut isum = 0i32;
            for (a, b) in wg.iter().zip(xg) {
                isum += *a as i32 * *b as i32;
            }
            acc = acc.saturating_add(scaled(isum, *sw, Scale::unpack(*sx)));
        }
        *o = sat32(shr_round(acc, ACC - FRAC as i32));
    }
}

/// [`matvec`] for groups of 32 (every image `convert` writes): each whole group is a
/// fixed-size block, so the compiler unrolls its 32 values into loads at constant offsets, with
/// no pointer or loop arithmetic per value. The sums and their scaling are exactly [`matvec`]'s.
fn matvec32(out: &mut [i32], m: &QMat<'_>, xq: &[i8], xs: &[i32]) {
    let n = m.cols;
    let (ng, whole) = (n.div_ceil(32), n / 32);
    let (xq, xs) = (&xq[..n], &xs[..ng]);
    let (xb, xtail) = xq.as_chunks::<32>();
    let xscales: &[i32] = xs;
    let mut rows = out.chunks_exact_mut(4).zip(m.q.chunks_exact(4 * n)).zip(m.s.chunks_exact(4 * ng));
    for ((o, w), ws) in &mut rows {
        let row = |r: usize| w[r * n..(r + 1) * n].as_chunks::<32>();
        let (r0, r1, r2, r3) = (row(0), row(1), row(2), row(3));
        let mut acc = [0i64; 4];
        let (s0, s1, s2, s3) = (&ws[..ng], &ws[ng..2 * ng], &ws[2 * ng..3 * ng], &ws[3 * ng..]);
        for (g, x) in xb.iter().enumerate() {
            let [i0, i1, i2, i3] = dot4(x, [&r0.0[g], &r1.0[g], &r2.0[g], &r3.0[g]]);
            let sx = Scale::unpack(xscales[g]);
            // Written out, not looped: the four sums stay in registers.
            acc[0] = acc[0].saturating_add(scaled(i0, s0[g], sx));
            acc[1] = acc[1].saturating_add(scaled(i1, s1[g], sx));
            acc[2] = acc[2].saturating_add(scaled(i2, s2[g], sx));
            acc[3] = acc[3].saturating_add(scaled(i3, s3[g], sx));
        }
        if !xtail.is_empty() {
            let sx = Scale::unpack(xscales[whole]);
            for (r, (acc, tail)) in acc.iter_mut().zip([r0.1, r1.1, r2.1, r3.1]).enumerate() {
                let isum = tail.iter().zip(xtail).map(|(a, b)| *a as i32 * *b as i32).sum();
                *acc = acc.saturating_add(scaled(isum, ws[r * ng + whole], sx));
            }
        }
        for (o, acc) in o.iter_mut().zip(acc) {
            *o = sat32(shr_round(acc, ACC - FRAC as i32));
        }
    }
    let done = out.len() / 4 * 4;
    for ((o, row), rs) in
        out[done..].iter_mut().zip(m.q[done * n..].chunks_exact(n)).zip(m.s[done * ng..].chunks_exact(ng))
    {
        let mut acc = 0i64;
        for (((wg, xg), sw), sx) in row.chunks(32).zip(xq.chunks(32)).zip(rs).zip(xs) {
            let isum = wg.iter().zip(xg).map(|(a, b)| *a as i32 * *b as i32).sum();
            acc = acc.saturating_add(scaled(isum, *sw, Scale::unpack(*sx)));
        }
        *o = sat32(shr_round(acc, ACC - FRAC as i32));
    }
}

/// Four rows' exact sums over one group of 32: each activation loaded once for four products.
/// On RISC-V, [`rv32::dot4`]; elsewhere (and as its reference in tests) [`dot4_portable`].
#[inline(always)]
fn dot4(x: &[i8; 32], w: [&[i8; 32]; 4]) -> [i32; 4] {
    #[cfg(target_arch = "riscv32")]
    return rv32::dot4(x, w);
    #[cfg(not(target_arch = "riscv32"))]
    dot4_portable(x, w)
}

#[cfg_attr(target_arch = "riscv32", allow(dead_code))]
#[inline(always)]
fn dot4_portable(x: &[i8; 32], w: [&[i8; 32]; 4]) -> [i32; 4] {
    let mut s = [0i32; 4];
    for (j, xv) in x.iter().enumerate() {
        let xv = *xv as i32;
        for (s, w) in s.iter_mut().zip(w) {
            *s += w[j] as i32 * xv;
        }
    }
    s
}

/// One group's exact sum times its weight scale (IEEE bits) and activation scale, in the
/// accumulator's fixed point.
#[inline(always)]
fn scaled(isum: i32, weight_scale_bits: u32, x: Scale) -> i64 {
    product_shifted(isum, Scale::from_ieee_bits(weight_scale_bits), x, ACC)
}

/// `shr_round(isum * (a.m * b.m), -(a.e + b.e + extra))`, the rescaling after every exact
/// integer sum. The common case (`b.m >= 0`, a right shift of 1 to 31 bits) takes 32-bit
/// steps: on rv32 the product of an i32 and a u32 is two instructions, and a 64-bit shift by an
/// unknown amount a branchy routine. Both branches give the same value.
#[inline(always)]
fn product_shifted(isum: i32, a: Scale, b: Scale, extra: i32) -> i64 {
    let sh = -(a.e + b.e + extra);
    if (1..=31).contains(&sh) && b.m >= 0 {
        // |a.m| and b.m are below 2^16, so their product fits a u32.
        let v = isum as i64 * (a.m.unsigned_abs() * b.m as u32) as i64;
        return shr_round_31(if a.m < 0 { -v } else { v }, sh as u32);
    }
    shr_round(isum as i64 * (a.m as i64 * b.m as i64), sh)
}

/// [`shr_round`] for a shift of 1 to 31 bits, on 32-bit halves.
#[inline(always)]
fn shr_round_31(v: i64, sh: u32) -> i64 {
    let s = (sh - 1) & 31;
    let (lo, hi) = (v as u32, (v >> 32) as i32);
    // v >> s, then half up on the last bit shifted out.
    let lo = (lo >> s) | (((hi as u32) << 1) << (31 - s));
    let r = (((hi >> s) as i64) << 32) | lo as i64;
    (r >> 1) + (r & 1)
}

/// `out = W x` for a layer matrix of any format. The packed kernels read `xq` through `lut`,
/// which is rebuilt from `xq`/`xs` when `build` (false: the previous call's input again).
fn matmul(
    out: &mut [i32],
    m: &LMat<'_>,
    xq: &[i8],
    xs: &[i32],
    group: usize,
    lut: &mut Lut<'_>,
    build: bool,
) {
    // At most three ways out of each match: a fourth makes a jump table on rv32, an indirect
    // jump the board's float-free check cannot follow.
    match m {
        LMat::Q8(m) => matvec(out, m, xq, xs, group),
        LMat::Q8Block(m) => matvec_blocks(out, m, xq, xs),
        _ => matmul_rest(out, m, xq, xs, group, lut, build),
    }
}

/// [`matmul`] for sparse rows and the packed formats.
#[inline(never)]
fn matmul_rest(
    out: &mut [i32],
    m: &LMat<'_>,
    xq: &[i8],
    xs: &[i32],
    group: usize,
    lut: &mut Lut<'_>,
    build: bool,
) {
    if let LMat::Sparse(m) = m {
        return sparse::matvec_bits(out, &m.m, m.s, xq, xs);
    }
    // `matmul` took the dense q8 kinds.
    let (LMat::Ternary(p) | LMat::Binary(p)) = m else { return };
    let ternary = matches!(m, LMat::Ternary(_));
    let stride = if ternary {
        crate::packed::ternary_row_bytes(p.cols)
    } else {
        crate::packed::binary_row_bytes(p.cols)
    };
    let t = &mut lut.t[..32 * stride];
    if build {
        lut.e = build_lut(t, &xq[..p.cols], &xs[..p.cols.div_ceil(group)], group, ternary);
    }
    matvec_packed(out, p, t, lut.e)
}

/// Fills `t` (16 entries per nibble of a packed row) for the activation `xq` with group scales
/// `xs`: entry `c` of a nibble is the sum of its activations times their codes in `c`, times
/// `X_g`, the group's scale `m_g 2^e_g` as `X_g 2^e` on one exponent `e` (returned) for all
/// groups. `X_g` keeps 16 bits while a row's sum of entries cannot leave i32 (rows of up to
/// 256 values), one bit less per doubling beyond (12 bits at 4,096 values): far below the int8
/// activations' own rounding (1/254 of a group's largest value). Ternary nibbles hold two 2-bit
/// codes (`00` = 0, `01` = +1, `10` = -1, `11` = 0), binary ones four sign bits (`1` = -1).
fn build_lut(t: &mut [i32], xq: &[i8], xs: &[i32], group: usize, ternary: bool) -> i32 {
    let nibbles = (t.len() / 16).max(1) as u64;
    let largest_entry: u64 = if ternary { 2 * 127 } else { 4 * 127 };
    // Every |X_g| <= 2^bits <= limit keeps a row's sum within i32.
    let limit = (i32::MAX as u64 / (largest_entry * nibbles)).max(1);
    let bits = (63 - limit.leading_zeros() as i32).min(16);
    let scales = xs.iter().map(|p| Scale::unpack(*p));
    let top = scales.clone().filter(|s| s.m != 0).map(|s| s.e).max().unwrap_or(0);
    let e = top + 16 - bits;
    let per_group = if ternary { group / 2 } else { group / 4 };
    for ((t, x), s) in t.chunks_mut(16 * per_group.max(1)).zip(xq.chunks(group)).zip(scales) {
        let xg = shr_round(s.m as i64, e - s.e) as i32;
        if ternary {
            let mut pairs = x.chunks(2);
            for t in t.chunks_exact_mut(16) {
                let p = pairs.next().unwrap_or_default();
                let a = p.first().map_or(0, |v| *v as i32 * xg);
                let b = p.get(1).map_or(0, |v| *v as i32 * xg);
                let (s, d) = (a + b, b - a);
                t.copy_from_slice(&[0, a, -a, 0, b, s, d, b, -b, -d, -s, -b, 0, a, -a, 0]);
            }
        } else {
            let mut quads = x.chunks(4);
            for t in t.chunks_exact_mut(16) {
                let q = quads.next().unwrap_or_default();
                let v = |k: usize| q.get(k).map_or(0, |v| *v as i32 * xg);
                let (a, b, c, d) = (v(0), v(1), v(2), v(3));
                // Entry n: the all-positive sum minus twice each value whose bit is set.
                let t0 = a + b + c + d;
                let (t1, t2) = (t0 - 2 * a, t0 - 2 * b);
                let t3 = t1 - 2 * b;
                let lo = [t0, t1, t2, t3, t0 - 2 * c, t1 - 2 * c, t2 - 2 * c, t3 - 2 * c];
                for (i, v) in lo.iter().enumerate() {
                    t[i] = *v;
                    t[i + 8] = *v - 2 * d;
                }
            }
        }
    }
    e
}

/// `out = W x` for packed rows through the table `t` of [`build_lut`]: a row costs two table
/// reads and adds per byte, with no multiplication and nothing per group (the activation scales
/// are in the table), then one product with the row's scale.
fn matvec_packed(out: &mut [i32], m: &PMat<'_>, t: &[i32], e: i32) {
    let stride = t.len() / 32;
    for ((o, row), sb) in out.iter_mut().zip(m.q.chunks_exact(stride.max(1))).zip(m.s) {
        let mut sum = 0i32;
        // Four bytes a step (fixed table offsets, a quarter of the loop overhead), then the rest.
        let (quads, tq) = (row.chunks_exact(4), t.chunks_exact(128));
        let (rest, trest) = (quads.remainder(), &t[128 * (row.len() / 4)..]);
        for (b, t) in quads.zip(tq) {
            let (b0, b1, b2, b3) = (b[0] as usize, b[1] as usize, b[2] as usize, b[3] as usize);
            sum += t[b0 & 15] + t[16 + (b0 >> 4)] + t[32 + (b1 & 15)] + t[48 + (b1 >> 4)];
            sum += t[64 + (b2 & 15)] + t[80 + (b2 >> 4)] + t[96 + (b3 & 15)] + t[112 + (b3 >> 4)];
        }
        for (b, t) in rest.iter().zip(trest.chunks_exact(32)) {
            let b = *b as usize;
            sum += t[b & 15] + t[16 + (b >> 4)];
        }
        let one = Scale { m: 1, e: 0 };
        *o = sat32(product_shifted(sum, Scale::from_ieee_bits(*sb), one, e + FRAC as i32));
    }
}

/// RMSNorm: `o = w * x / sqrt(mean(x^2) + eps)`, the root taken by [`inv_sqrt`].
fn rmsnorm(o: &mut [i32], x: &[i32], w: &[u32], eps: u64) {
    // x^2 of Q16.16 values is in units of 2^-32.
    let ss = x.iter().fold(0u64, |s, v| s.saturating_add((*v as i64 * *v as i64) as u64));
    let mean = ss / (x.len().max(1) as u64);
    let inv = inv_sqrt(mean.saturating_add(eps), 32);
    for ((o, x), wb) in o.iter_mut().zip(x).zip(w) {
        let z = sat32(shr_round(*x as i64 * inv.m as i64, -inv.e));
        let w = Scale::from_ieee_bits(*wb);
        *o = sat32(shr_round(z as i64 * w.m as i64, -w.e));
    }
}

/// RoPE over adjacent pairs, head by head, with this position's Q1.30 `(cos, sin)` pairs.
fn rotate(v: &mut [i32], table: &[u8]) {
    let sh = ROPE_FRAC as i32;
    let le = |b: &[u8]| i32::from_le_bytes([b[0], b[1], b[2], b[3]]) as i64;
    for head in v.chunks_exact_mut(table.len() / 4) {
        for (pair, cs) in head.chunks_exact_mut(2).zip(table.chunks_exact(8)) {
            let (v0, v1, c, s) = (pair[0] as i64, pair[1] as i64, le(&cs[..4]), le(&cs[4..]));
            pair[0] = sat32(shr_round((v0 * c).saturating_sub(v1 * s), sh));
            pair[1] = sat32(shr_round((v0 * s).saturating_add(v1 * c), sh));
        }
    }
}

/// Softmax in place: Q16.16 scores in, Q2.30 probabilities out.
fn softmax(att: &mut [i32]) {
    let max = att.iter().fold(i32::MIN, |m, v| m.max(*v));
    let mut sum = 0u64;
    for a in att.iter_mut() {
        let t = (max as i64 - *a as i64).min(u32::MAX as i64) as u32;
        let e = exp_neg(t);
        *a = e as i32;
        sum += e as u64;
    }
    // The maximum contributes exactly 1.0, so sum >= 2^30 and r <= 2^32.
    let r = (1u64 << 62) / sum.max(1);
    // r = 2^32 only when the maximum is alone (every other exp 0): then p = e. Otherwise r
    // fits 32 bits and the product's high word is one multiply on rv32.
    if r >> 32 == 0 {
        for a in att.iter_mut() {
            *a = ((*a as u32 as u64 * r) >> 32) as i32;
        }
    }
}

/// Splits `a..a + n` and `b..b + n` where either crosses a group boundary: yields (offset
/// from the start, length) of runs that share one group on both sides.
fn segments(a: usize, b: usize, n: usize, group: usize) -> impl Iterator<Item = (usize, usize)> {
    let mut i = 0;
    core::iter::from_fn(move || {
        if i >= n {
            return None;
        }
        let len = (group - (a + i) % group).min(group - (b + i) % group).min(n - i);
        let seg = (i, len);
        i += len;
        Some(seg)
    })
}

/// Attention for all heads at one position over the int8 cache; `att` has one slot per
/// position. Segments are found once per head, not per position.
fn attention(out: &mut [i32], qq: &[i8], qs: &[i32], cache: Cache<'_>, att: &mut [i32], s: &Shape) {
    let (hs, kv_dim, g) = (s.head_size(), s.kv_dim(), s.group);
    let ng = kv_dim.div_ceil(g);
    let kv_mul = s.n_heads / s.n_kv_heads;
    for (h, oh) in out.chunks_exact_mut(hs).enumerate().take(s.n_heads) {
        let (qoff, koff) = (h * hs, (h / kv_mul) * hs);
        time(K::AttentionScores, || {
            att.fill(0);
            for (i, len) in segments(qoff, koff, hs, g) {
                let (a, b) = (qoff + i, koff + i);
                let qv = &qq[a..a + len];
                let sq = Scale::unpack(qs[a / g]);
                let rows = cache.keys.chunks_exact(kv_dim).zip(cache.key_scales.chunks_exact(ng));
                let score = |isum: i32, ks: &[i32]| {
                    sat32(product_shifted(isum, sq, Scale::unpack(ks[b / g]), FRAC as i32))
                };
                // Heads of 8 (every shipped model): the query stays in registers.
                if let Some(q8) = qv.first_chunk::<8>().filter(|_| len == 8) {
                    let q8 = q8.map(|v| v as i32);
                    for (sc, (k, ks)) in att.iter_mut().zip(rows) {
                        let Some(k8) = k[b..].first_chunk::<8>() else { continue };
                        let isum = q8.iter().zip(k8).map(|(x, y)| x * *y as i32).sum();
                        *sc = sc.saturating_add(score(isum, ks));
                    }
                    continue;
                }
                for (sc, (k, ks)) in att.iter_mut().zip(rows) {
                    let isum: i32 = qv.iter().zip(&k[b..b + len]).map(|(x, y)| *x as i32 * *y as i32).sum();
                    *sc = sc.saturating_add(score(isum, ks));
                }
            }
        });
        time(K::Softmax, || softmax(att));
        time(K::AttentionValues, || {
            let one_group = koff / g == (koff + hs - 1) / g;
            if one_group && values_narrow(oh, att, &cache, koff, koff / g, kv_dim) {
                return;
            }
            // out = sum_t p_t v_t, a chunk of lanes at a time so the i64 sums stay on the stack.
            const LANES: usize = 16;
            for (i, len) in segments(koff, koff, hs, g) {
                let (b, gi) = (koff + i, (koff + i) / g);
                let rows = || cache.values.chunks_exact(kv_dim).zip(cache.value_scales.chunks_exact(ng));
                // p (Q2.30) times the value scale, in units of 2^-ACC.
                let weight = |p: i32, vs: &[i32]| {
                    let sv = Scale::unpack(vs[gi]);
                    shr_round(p as i64 * sv.m as i64, P_FRAC as i32 - ACC - sv.e)
                };
                // When every weight fits an i32 (value scales below 0.5: always, in practice), no
                // sum below can overflow (|w| < 2^31, |v| <= 128, at most 2^20 positions), so plain
                // 32x32->64 products give exactly what the saturating path gives, at a fraction of
                // the cost on a 32-bit chip.
                let narrow =
                    att.iter().zip(rows()).all(|(p, (_, vs))| weight(*p, vs).unsigned_abs() < 1 << 31);
                let mut c0 = 0;
                while c0 < len {
                    let lanes = LANES.min(len - c0);
                    let mut acc = [0i64; LANES];
                    for (p, (v, vs)) in att.iter().zip(rows()) {
                        let c = weight(*p, vs);
                        let v = &v[b + c0..b + c0 + lanes];
                        if narrow {
                            let c = c as i32;
                            for (a, x) in acc.iter_mut().zip(v) {
                                *a += c as i64 * *x as i64;
                            }
                        } else {
                            for (a, x) in acc.iter_mut().zip(v) {
                                *a = a.saturating_add(c.saturating_mul(*x as i64));
                            }
                        }
                    }
                    for (o, a) in oh[i + c0..i + c0 + lanes].iter_mut().zip(acc) {
                        *o = sat32(shr_round(a, ACC - FRAC as i32));
                    }
                    c0 += lanes;
                }
            }
        });
    }
}

/// The weighted sum of values of one head whose lanes lie in one group of the cache (as in
/// every shipped model), when every value scale is below 1/4 (m 2^e with e <= -18), so that every weight is below
/// 2^30: what [`attention`]'s general loop computes, with each weight computed once (in place
/// of its probability) and 32-bit sums. A weight splits into 16-bit halves whose sums over 256
/// positions cannot overflow an i32; each block of 256 then joins an exact i64 total. Returns
/// false, touching nothing, when a scale is too large.
fn values_narrow(
    oh: &mut [i32],
    att: &mut [i32],
    cache: &Cache<'_>,
    b: usize,
    gi: usize,
    kv_dim: usize,
) -> bool {
    let ng = cache.value_scales.len() / att.len().max(1);
    let scales = || cache.value_scales.chunks_exact(ng.max(1)).map(|vs| Scale::unpack(vs[gi]));
    if !scales().all(|sv| sv.m == 0 || sv.e <= -18) {
        return false;
    }
    // p * 2^-30 times the scale, in units of 2^-32: shr_round(p * m, -2 - e).
    let one = Scale { m: 1, e: 0 };
    for (p, sv) in att.iter_mut().zip(scales()) {
        *p = product_shifted(*p, sv, one, ACC - P_FRAC as i32) as i32;
    }
    for (c0, out) in (0..oh.len()).step_by(8).zip(oh.chunks_mut(8)) {
        let lanes = out.len();
        let mut total = [0i64; 8];
        for (weights, rows) in att.chunks(256).zip(cache.values.chunks(256 * kv_dim)) {
            let (mut hi, mut lo) = ([0i32; 8], [0i32; 8]);
            let rows = weights.iter().zip(rows.chunks_exact(kv_dim));
            if lanes == 8 {
                // Fixed lanes: the sums stay in registers.
                for (c, v) in rows {
                    let (ch, cl) = (*c >> 16, *c & 0xffff);
                    let Some(x) = v[b + c0..].first_chunk::<8>() else { continue };
                    for j in 0..8 {
                        hi[j] += ch * x[j] as i32;
                        lo[j] += cl * x[j] as i32;
                    }
                }
            } else {
                for (c, v) in rows {
                    let (ch, cl) = (*c >> 16, *c & 0xffff);
                    for ((h, l), x) in hi.iter_mut().zip(lo.iter_mut()).zip(&v[b + c0..b + c0 + lanes]) {
                        *h += ch * *x as i32;
                        *l += cl * *x as i32;
                    }
                }
            }
            for ((t, h), l) in total.iter_mut().zip(hi).zip(lo) {
                *t += ((h as i64) << 16) + l as i64;
            }
        }
        for (o, t) in out.iter_mut().zip(total) {
            *o = sat32(shr_round(t, ACC - FRAC as i32));
        }
    }
    true
}
