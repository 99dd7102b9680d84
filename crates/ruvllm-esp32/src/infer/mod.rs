//! The forward pass. All memory lives in one caller-provided arena sized by
//! [`State::arena_len`], so a token never allocates and the chip's RAM budget is known before
//! anything runs.

mod arena;
mod batch;
mod eval;
mod generate;
pub mod integer;
mod pattern;

pub use batch::Batch;
pub use eval::{nll, score, LogitValue, Score};
pub(crate) use generate::emit;
pub use generate::{generate, generate_int, generate_int_sampled, GenStats, TokenFlow};
pub use integer::{parts, reduce, shard, IntBatch, IntState, Parts, Shard, TensorState};
pub use pattern::{Pattern, PatternError, MAX_RANDOM, PATTERNS};

use crate::error::{Error, Result};
pub use crate::kernels::PackedModel;
use crate::kernels::{reference, AttnShape, CacheQ8, Kernels, PackedQ8, QueryQ8};
use crate::model::{Config, Matrix, Model, Precision};
use arena::Carver;
use pattern::Scratch;

/// One forward pass over a model, as the shared generation and scoring loops see it: the f32 /
/// q8 [`State`] and the integer [`IntState`] both implement it.
pub trait Step {
    /// One logit: `f32`, or the integer path's Q16.16 `i32`.
    type Logit: Copy;

    /// Positions this state can hold.
    fn capacity(&self) -> usize;

    /// Runs a token whose logits nobody reads (a prompt token).
    fn prefill_token<const L: usize>(&mut self, model: &Model<'_, L>, token: u32, pos: usize) -> Result<()>;

    /// Runs a token and returns the logits for the next one.
    fn logits<const L: usize>(
        &mut self,
        model: &Model<'_, L>,
        token: u32,
        pos: usize,
    ) -> Result<&mut [Self::Logit]>;
}

impl Step for State<'_> {
    type Logit = f32;

    fn capacity(&self) -> usize {
        self.seq_len
    }

    fn prefill_token<const L: usize>(&mut self, model: &Model<'_, L>, token: u32, pos: usize) -> Result<()> {
        self.prefill(model, token, pos)
    }

    fn logits<const L: usize>(&mut self, model: &Model<'_, L>, token: u32, pos: usize) -> Result<&mut [f32]> {
        self.forward(model, token, pos)
    }
}

/// A state whose cache is a ring of its `seq_len` slots ([`State::sliding`],
/// [`IntState::sliding`]): each position attends to the last `seq_len` positions, and positions
/// run on past the cache (and past the model's context).
pub struct Sliding<S>(S);

impl Sliding<State<'_>> {
    /// Runs `token` at `pos` (any position) and returns the logits for the next token.
    pub fn forward<const L: usize>(
        &mut self,
        model: &Model<'_, L>,
        token: u32,
        pos: usize,
    ) -> Result<&mut [f32]> {
        self.0.step(model, token, pos, true, true)?;
        Ok(self.0.logits)
    }
}

impl Step for Sliding<State<'_>> {
    type Logit = f32;

    fn capacity(&self) -> usize {
        usize::MAX
    }

    fn prefill_token<const L: usize>(&mut self, model: &Model<'_, L>, token: u32, pos: usize) -> Result<()> {
        self.0.step(model, token, pos, false, true)
    }

    fn logits<const L: usize>(&mut self, model: &Model<'_, L>, token: u32, pos: usize) -> Result<&mut [f32]> {
        self.forward(model, token, pos)
    }
}

/// The key/value cache: f32 for the f32 path, int8 with per-group scales for the INT8 path
/// (a quarter of the RAM, which is what lets a 512-token context fit an ESP32-C3).
enum KvCache<'s> {
    F32 { k: &'s mut [f32], v: &'s mut [f32] },
    Q8 { k: &'s mut [i8], ks: &'s mut [f32], v: &'s mut [i8], vs: &'s mut [f32] },
}

/// Pairs of a head whose RoPE frequencies a [`State`] keeps.
const ROPE_FREQS: usize = 32;

/// Activations and KV cache for one sequence.
pub struct State<'s> {
    seq_len: usize,
    kernels: Kernels,
    x: &'s mut [f32],
    xb: &'s mut [f32],
    xb2: &'s mut [f32],
    hb: &'s mut [f32],
    hb2: &'s mut [f32],
    q: &'s mut [f32],
    kv_row: &'s mut [f32],
    att: &'s mut [f32],
    logits: &'s mut [f32],
    rope: &'s mut [f32],
    /// [`reference::rope_freq`] of each pair, computed once (a `powf` each): heads of up to
    /// `2 * ROPE_FREQS` values; larger ones compute them at every position.
    rope_freq: [f32; ROPE_FREQS],
    /// Quantized activation (INT8 path): values and group scales.
    xq: &'s mut [i8],
    xs: &'s mut [f32],
    kv: KvCache<'s>,
    /// A sparse pattern's scratch ([`State::sparse`]), of the cache's kind; `None`: every
    /// position.
    sparse: Option<SparseRows<'s>>,
    /// The model's int8 matrices repacked for the host's fastest kernel
    /// ([`State::with_packed`]).
    packed: Option<&'s PackedModel>,
}

/// A sparse pattern's scratch for an f32 or an int8 cache.
enum SparseRows<'s> {
    F32(Scratch<'s, f32, f32>),
    Q8(Scratch<'s, i8, f32>),
}

impl<'s> SparseRows<'s> {
    fn select(&mut self, pos: usize) {
        match self {
            SparseRows::F32(s) => s.select(pos),
            SparseRows::Q8(s) => s.select(pos),
        }
    }

    fn sparse(&self) -> Option<Pattern> {
        match self {
            SparseRows::F32(s) => s.sparse(),
            SparseRows::Q8(s) => s.sparse(),
        }
    }
}

/// Sizes of every buffer, in elements; the single source for both sizing and carving.
struct Plan {
    f32s: [usize; 10],
    kv_f32: usize,
    kv_i8: usize,
    kv_scales: usize,
    xq: usize,
    xs: usize,
}

impl Plan {
    fn new(c: &Config, p: Precision, group: usize, seq_len: usize) -> Plan {
        let (d, h, kv) = (c.dim, c.hidden_dim, c.kv_dim());
        let cache = c.n_layers * seq_len * kv;
        // Attention scratch: the fast kernels keep scores for blocks of eight heads.
        let att = c.n_heads.next_multiple_of(8) * seq_len;
        let q = c.q_dim();
        // x, xb, xb2 (the attention's output), hb, hb2, q, ...
        let f32s = [d, d, q, h, h, q, kv, att, c.vocab_size, c.head_size()];
        let widest = d.max(h).max(q);
        match p {
            Precision::F32 => Plan { f32s, kv_f32: cache, kv_i8: 0, kv_scales: 0, xq: 0, xs: 0 },
            // Ternary and binary run the q8 path's activations and cache.
            Precision::Q8 | Precision::Ternary | Precision::Binary => Plan {
                f32s,
                kv_f32: 0,
                kv_i8: cache,
                kv_scales: c.n_layers * seq_len * kv.div_ceil(group),
                xq: widest,
                xs: widest.div_ceil(group),
            },
        }
    }

    /// Arena words of a sparse pattern's scratch of `rows` positions: their indices and the
    /// copied keys and values (with scales on the q8 path).
    fn sparse_len(c: &Config, p: Precision, group: usize, rows: usize) -> usize {
        let kv = c.kv_dim();
        let copies = match p {
            Precision::F32 => 2 * rows * kv,
            _ => 2 * (rows * kv).div_ceil(4) + 2 * rows * kv.div_ceil(group),
        };
        rows + copies
    }

    /// Total arena length in f32 units (int8 buffers are rounded up to whole f32s).
    fn len(&self) -> usize {
        let i8_words = |n: usize| n.div_ceil(4);
        self.f32s.iter().sum::<usize>()
            + 2 * self.kv_f32
            + 2 * i8_words(self.kv_i8)
            + 2 * self.kv_scales
            + i8_words(self.xq)
            + self.xs
    }
}

impl<'s> State<'s> {
    /// Arena length (in f32 elements) a model needs for a context of `seq_len` positions.
    pub fn arena_len<const L: usize>(model: &Model<'_, L>, seq_len: usize) -> usize {
        Plan::new(&model.config, model.precision, model.group, seq_len).len()
    }

    /// RAM in bytes for the activations and KV cache of `config` at `seq_len` positions.
    pub fn ram_bytes(config: &Config, precision: Precision, group: usize, seq_len: usize) -> usize {
        Plan::new(config, precision, group, seq_len).len() * 4
    }

    /// Builds the state inside `arena` for up to `seq_len` positions (at most the model's).
    pub fn new<const L: usize>(
        model: &Model<'_, L>,
        arena: &'s mut [f32],
        seq_len: usize,
        kernels: Kernels,
    ) -> Result<State<'s>> {
        if seq_len == 0 || seq_len > model.config.seq_len {
            return Err(Error::ContextFull { need: seq_len, capacity: model.config.seq_len });
        }
        let plan = Plan::new(&model.config, model.precision, model.group, seq_len);
        if arena.len() < plan.len() {
            return Err(Error::BufferTooSmall { need: plan.len() * 4, have: arena.len() * 4 });
        }
        let mut c = Carver(arena);
        let [d0, d1, d2, h0, h1, d3, kv, att, voc, rope] = plan.f32s;
        let (x, xb, xb2, hb, hb2, q) =
            (c.words(d0), c.words(d1), c.words(d2), c.words(h0), c.words(h1), c.words(d3));
        let (kv_row, att, logits, rope) = (c.words(kv), c.words(att), c.words(voc), c.words(rope));
        let kv = match model.precision {
            Precision::F32 => KvCache::F32 { k: c.words(plan.kv_f32), v: c.words(plan.kv_f32) },
            Precision::Q8 | Precision::Ternary | Precision::Binary => KvCache::Q8 {
                k: c.i8(plan.kv_i8),
                ks: c.words(plan.kv_scales),
                v: c.i8(plan.kv_i8),
                vs: c.words(plan.kv_scales),
            },
        };
        let (xq, xs) = (c.i8(plan.xq), c.words(plan.xs));
        let (sparse, packed) = (None, None);
        let (hs, theta) = (model.config.head_size(), model.config.rope_theta);
        let rope_freq = core::array::from_fn(|i| reference::rope_freq(i, hs, theta));
        Ok(State {
            seq_len,
            kernels,
            x,
            xb,
            xb2,
            hb,
            hb2,
            q,
            kv_row,
            att,
            logits,
            rope,
            rope_freq,
            xq,
            xs,
            kv,
            sparse,
            packed,
        })
    }

    /// Arena length (in f32 elements) of [`State::sparse`] with `pattern` at `seq_len`.
    pub fn sparse_arena_len<const L: usize>(model: &Model<'_, L>, seq_len: usize, pattern: Pattern) -> usize {
        let (c, p, g) = (&model.config, model.precision, model.group);
        Plan::new(c, p, g, seq_len).len() + Plan::sparse_len(c, p, g, pattern.bound(seq_len))
    }

    /// RAM in bytes that `pattern` needs at `seq_len` positions: a window's ring of its own
    /// positions ([`State::sliding`]), full attention's cache, or the cache and the scratch
    /// of [`State::sparse`].
    pub fn pattern_ram_bytes(
        c: &Config,
        p: Precision,
        group: usize,
        seq_len: usize,
        pattern: Pattern,
    ) -> usize {
        let words = match pattern {
            Pattern::Window(w) => Plan::new(c, p, group, w.min(seq_len)).len(),
            Pattern::Full => Plan::new(c, p, group, seq_len).len(),
            _ => {
                Plan::new(c, p, group, seq_len).len() + Plan::sparse_len(c, p, group, pattern.bound(seq_len))
            }
        };
        words * 4
    }

    /// A state whose attention follows `pattern` ([`Pattern`]): each position's positions are
    /// listed before the layers run, and only their rows of the cache are read. The cache
    /// holds all `seq_len` positions (a window's memory is bounded by [`State::sliding`]
    /// instead); `arena` needs [`State::sparse_arena_len`]. A pattern that lists every
    /// position gives [`State::new`]'s numbers bit for bit.
    pub fn sparse<const L: usize>(
        model: &Model<'_, L>,
        arena: &'s mut [f32],
        seq_len: usize,
        kernels: Kernels,
        pattern: Pattern,
    ) -> Result<State<'s>> {
        let (c, p, g) = (&model.config, model.precision, model.group);
        let need = Self::sparse_arena_len(model, seq_len.min(c.seq_len), pattern);
        if arena.len() < need {
            return Err(Error::BufferTooSmall { need: need * 4, have: arena.len() * 4 });
        }
        let (main, rest) = arena.split_at_mut(Plan::new(c, p, g, seq_len).len());
        let mut state = State::new(model, main, seq_len, kernels)?;
        let rows = pattern.bound(seq_len);
        let mut c = Carver(rest);
        let idx = bytemuck::cast_slice_mut(c.words(rows));
        let (kv, ng) = (model.config.kv_dim(), model.config.kv_dim().div_ceil(g));
        state.sparse = Some(match model.precision {
            Precision::F32 => SparseRows::F32(Scratch::new(
                pattern,
                idx,
                (c.words(rows * kv), &mut []),
                (c.words(rows * kv), &mut []),
            )),
            _ => SparseRows::Q8(Scratch::new(
                pattern,
                idx,
                (c.i8(rows * kv), c.words(rows * ng)),
                (c.i8(rows * kv), c.words(rows * ng)),
            )),
        });
        Ok(state)
    }

    /// The attention pattern, unless it is full attention.
    pub fn pattern(&self) -> Option<Pattern> {
        self.sparse.as_ref().and_then(SparseRows::sparse)
    }

    /// Changes a [`State::sparse`] state's pattern, for the positions that follow (those
    /// already cached keep their keys and values): refused when its rows do not fit the
    /// scratch the state was built with, or the state has none.
    pub fn set_pattern<const L: usize>(&mut self, model: &Model<'_, L>, pattern: Pattern) -> Result<()> {
        let (seq_len, c) = (self.seq_len, &model.config);
        let row_bytes = Plan::sparse_len(c, model.precision, model.group, 1) * 4;
        match &mut self.sparse {
            Some(SparseRows::F32(s)) => s.set(pattern, seq_len, row_bytes),
            Some(SparseRows::Q8(s)) => s.set(pattern, seq_len, row_bytes),
            // Built without scratch: attention is already full (the dense path).
            None if pattern == Pattern::Full => Ok(()),
            None => Err(Error::BufferTooSmall { need: pattern.bound(seq_len) * row_bytes, have: 0 }),
        }
    }

    /// A state whose attention sees the last `window` positions only (the current one
    /// included), decided before computing: the cache is a ring of `window` slots (the RAM of
    /// [`State::arena_len`]`(model, window)`), so positions run on past the model's context.
    /// Each key is rotated by its absolute position when it enters the cache and each query by
    /// its own, so a score depends only on their distance, wherever the slot sits; the angles
    /// come from the absolute position in f32 (exact integers up to 2^24). Positions before
    /// `window` give exactly [`State::new`]'s numbers; after it the ring's order changes the
    /// order of the attention's sums.
    pub fn sliding<const L: usize>(
        model: &Model<'_, L>,
        arena: &'s mut [f32],
        window: usize,
        kernels: Kernels,
    ) -> Result<Sliding<State<'s>>> {
        Ok(Sliding(Self::new(model, arena, window, kernels)?))
    }

    /// Runs the int8 matrices through `packed` (built from this state's model by
    /// [`PackedModel::new`]): the same floats, sooner.
    pub fn with_packed(mut self, packed: Option<&'s PackedModel>) -> Self {
        self.packed = packed;
        self
    }

    /// Positions this state can hold.
    pub fn seq_len(&self) -> usize {
        self.seq_len
    }

    pub fn kernels(&self) -> Kernels {
        self.kernels
    }

    /// Runs `token` at position `pos` and returns the logits for the next token.
    pub fn forward<const L: usize>(
        &mut self,
        model: &Model<'_, L>,
        token: u32,
        pos: usize,
    ) -> Result<&mut [f32]> {
        self.step(model, token, pos, true, false)?;
        Ok(self.logits)
    }

    /// Runs a prompt token whose logits nobody reads: the classifier is skipped.
    pub fn prefill<const L: usize>(&mut self, model: &Model<'_, L>, token: u32, pos: usize) -> Result<()> {
        self.step(model, token, pos, false, false)
    }

    /// Runs `token` at `pos` without the classifier and returns the final hidden state: the
    /// residual stream after the last layer, through the output RMSNorm.
    pub fn hidden<const L: usize>(&mut self, model: &Model<'_, L>, token: u32, pos: usize) -> Result<&[f32]> {
        self.step(model, token, pos, false, false)?;
        reference::rmsnorm(self.xb, self.x, model.output_norm, model.config.norm_eps);
        Ok(self.xb)
    }

    fn step<const L: usize>(
        &mut self,
        model: &Model<'_, L>,
        token: u32,
        pos: usize,
        logits: bool,
        ring: bool,
    ) -> Result<()> {
        let c = &model.config;
        if token as usize >= c.vocab_size {
            return Err(Error::Invalid { what: "token id outside the vocabulary" });
        }
        if pos >= self.seq_len && !ring {
            return Err(Error::ContextFull { need: pos + 1, capacity: self.seq_len });
        }
        // This position's cache slot, and how many slots hold positions it attends to (all of
        // them until `pos`, without a ring; the whole ring once it has wrapped).
        let (slot, seen) = (pos % self.seq_len, (pos + 1).min(self.seq_len));
        let (hs, kv_dim, group) = (c.head_size(), c.kv_dim(), model.group);
        let shape = AttnShape { head_size: hs, kv_dim, kv_mul: c.n_heads / c.n_kv_heads };
        let k = self.kernels;
        model.token_embd.row_into(token as usize, self.x, group);
        if hs / 2 <= ROPE_FREQS {
            for (cs, f) in self.rope.chunks_exact_mut(2).zip(&self.rope_freq) {
                reference::rope_pair(cs, pos, *f);
            }
        } else {
            reference::rope_table(self.rope, pos, hs, c.rope_theta);
        }
        if let Some(s) = &mut self.sparse {
            s.select(pos);
        }
        let ng = kv_dim.div_ceil(group);
        for (l, layer) in model.layers.iter().enumerate() {
            reference::rmsnorm(self.xb, self.x, layer.attn_norm, c.norm_eps);
            let cache_row = (l * self.seq_len + slot) * kv_dim;
            let layer_range = l * self.seq_len * kv_dim..(l * self.seq_len + seen) * kv_dim;
            let srow = (l * self.seq_len + slot) * ng;
            let s_range = l * self.seq_len * ng..(l * self.seq_len + seen) * ng;
            // q, k, v for this position; k and v go straight into the cache.
            let packed = self.packed;
            let pk = |slot: usize| packed_matrix(packed, Some(l), slot);
            let mut mv = |out: &mut [f32], m: &Matrix<'_>, slot: usize, quantized: bool| {
                matvec(k, out, (m, pk(slot)), self.xb, self.xq, self.xs, group, quantized)
            };
            mv(self.q, &layer.wq, 0, false);
            match &mut self.kv {
                KvCache::F32 { k: kc, v: vc } => {
                    let krow = &mut kc[cache_row..cache_row + kv_dim];
                    mv(krow, &layer.wk, 1, true);
                    reference::rope(krow, self.rope);
                    mv(&mut vc[cache_row..cache_row + kv_dim], &layer.wv, 2, true);
                    reference::rope(self.q, self.rope);
                    let mut rows: pattern::Rows<'_, f32, f32> =
                        (&kc[layer_range.clone()], &[], &vc[layer_range], &[]);
                    if let Some(SparseRows::F32(s)) = &mut self.sparse {
                        rows = s.gather(rows, kv_dim, 0);
                    }
                    (k.attention_f32)(self.xb2, self.q, rows.0, rows.2, self.att, shape);
                }
                KvCache::Q8 { k: kc, ks, v: vc, vs } => {
                    mv(self.kv_row, &layer.wk, 1, true);
                    reference::rope(self.kv_row, self.rope);
                    (k.quantize)(
                        self.kv_row,
                        &mut kc[cache_row..cache_row + kv_dim],
                        &mut ks[srow..srow + ng],
                        group,
                    );
                    mv(self.kv_row, &layer.wv, 2, true);
                    (k.quantize)(
                        self.kv_row,
                        &mut vc[cache_row..cache_row + kv_dim],
                        &mut vs[srow..srow + ng],
                        group,
                    );
                    reference::rope(self.q, self.rope);
                    // The query in int8 too (xq is free again: wk and wv are done with it), and
                    // q itself replaced by the values the int8 query stands for.
                    let d = self.q.len();
                    let (qq, qs) = (&mut self.xq[..d], &mut self.xs[..d.div_ceil(group)]);
                    (k.quantize)(self.q, qq, qs, group);
                    crate::quant::dequantize_row(qq, qs, self.q, group);
                    let query = QueryQ8 { q: self.q, qq, qs };
                    let mut rows =
                        (&kc[layer_range.clone()], &ks[s_range.clone()], &vc[layer_range], &vs[s_range]);
                    if let Some(SparseRows::Q8(s)) = &mut self.sparse {
                        rows = s.gather(rows, kv_dim, ng);
                    }
                    let (keys, key_scales, values, value_scales) = rows;
                    let cache = CacheQ8 { keys, key_scales, values, value_scales };
                    (k.attention_q8)(self.xb2, query, cache, self.att, shape, group);
                }
            }
            matvec(k, self.xb, (&layer.wo, pk(3)), self.xb2, self.xq, self.xs, group, false);
            add(self.x, self.xb);
            reference::rmsnorm(self.xb, self.x, layer.ffn_norm, c.norm_eps);
            matvec(k, self.hb, (&layer.w1, pk(4)), self.xb, self.xq, self.xs, group, false);
            matvec(k, self.hb2, (&layer.w3, pk(5)), self.xb, self.xq, self.xs, group, true);
            (k.swiglu)(self.hb, self.hb2);
            matvec(k, self.xb, (&layer.w2, pk(6)), self.hb, self.xq, self.xs, group, false);
            add(self.x, self.xb);
        }
        if logits {
            reference::rmsnorm(self.xb, self.x, model.output_norm, c.norm_eps);
            let out = packed_matrix(self.packed, None, 0);
            matvec(k, self.logits, (&model.output, out), self.xb, self.xq, self.xs, group, false);
        }
        Ok(())
    }
}

fn add(x: &mut [f32], y: &[f32]) {
    for (a, b) in x.iter_mut().zip(y) {
        *a += b;
    }
}

/// `out = m * x`. On the INT8 path `x` is quantized into `xq`/`xs` first, unless `reuse` says
/// the previous call already quantized this same `x`.
#[allow(clippy::too_many_arguments)]
fn matvec(
    k: Kernels,
    out: &mut [f32],
    (m, packed): (&Matrix<'_>, Option<&PackedQ8>),
    x: &[f32],
    xq: &mut [i8],
    xs: &mut [f32],
    group: usize,
    reuse: bool,
) {
    if !reuse {
        quantize_for(k, m, x, xq, xs, group);
    }
    #[cfg(all(target_arch = "x86_64", feature = "std"))]
    if let (Some(p), Matrix::Q8 { q, s, cols, .. }) = (packed, m) {
        let (xq, xs) = (&xq[..*cols], &xs[..cols.div_ceil(group)]);
        return crate::kernels::x86::matvec_q8_packed(out, p, q, s, xq, xs);
    }
    #[cfg(not(all(target_arch = "x86_64", feature = "std")))]
    if let Some(p) = packed {
        match *p {}
    }
    product(k, out, m, x, xq, xs, group)
}

/// Layer `layer`'s matrix in `slot` (wq, wk, wv, wo, w1, w3, w2), or the classifier for
/// `None`, as `packed` holds it.
fn packed_matrix(packed: Option<&PackedModel>, layer: Option<usize>, slot: usize) -> Option<&PackedQ8> {
    #[cfg(all(target_arch = "x86_64", feature = "std"))]
    return packed?.get(layer, slot);
    #[cfg(not(all(target_arch = "x86_64", feature = "std")))]
    {
        let _ = (layer, slot);
        match *packed? {}
    }
}

/// Quantizes the activation `x` the way `m`'s product reads it (nothing for an f32 matrix).
fn quantize_for(k: Kernels, m: &Matrix<'_>, x: &[f32], xq: &mut [i8], xs: &mut [f32], group: usize) {
    let cols = m.cols();
    match *m {
        Matrix::F32 { .. } => {}
        // The loader checked that this image's groups are Q8_0's 32. The activation's scales
        // are kept at f16 precision, as GGUF's Q8_0 x Q8_0 product (llama.cpp) stores them, so
        // both compute the same sums of the same products.
        Matrix::Q8Block { .. } => {
            let xs = &mut xs[..cols.div_ceil(group)];
            (k.quantize)(x, &mut xq[..cols], xs, group);
            for s in xs.iter_mut() {
                *s = crate::gguf::f16_to_f32(crate::gguf::f32_to_f16(*s));
            }
        }
        Matrix::Q8 { .. } | Matrix::Sparse { .. } | Matrix::Ternary { .. } | Matrix::Binary { .. } => {
            (k.quantize)(x, &mut xq[..cols], &mut xs[..cols.div_ceil(group)], group)
        }
    }
}

/// `out = m * x` with `x` already quantized into `xq`/`xs` where `m` needs it. `out` may be
/// shorter than `m`: its first `out.len()` rows.
fn product(k: Kernels, out: &mut [f32], m: &Matrix<'_>, x: &[f32], xq: &[i8], xs: &[f32], group: usize) {
    match *m {
        Matrix::F32 { w, .. } => (k.matvec_f32)(out, w, x),
        Matrix::Q8 { q, s, cols, .. } => {
            (k.matvec_q8)(out, q, s, &xq[..cols], &xs[..cols.div_ceil(group)], group)
        }
        // No zero multiplied: the reference q8 kernel's sums over the kept codes.
        Matrix::Sparse { m, s } => {
            let ng = m.cols().div_ceil(group);
            reference::matvec_q8_sparse(out, &m, s, &xq[..m.cols()], &xs[..ng])
        }
        Matrix::Q8Block { b, cols, .. } => {
            (k.matvec_q8_block)(out, b, &xq[..cols], &xs[..cols.div_ceil(group)])
        }
        Matrix::Ternary { q, s, cols, .. } | Matrix::Binary { q, s, cols, .. } => {
            let (xq, xs) = (&xq[..cols], &xs[..cols.div_ceil(group)]);
            let kernel = if matches!(m, Matrix::Ternary { .. }) { k.matvec_ternary } else { k.matvec_binary };
            kernel(out, q, s, xq, xs, group)
        }
    }
}
