//! MicroLoRA: a rank-1 or rank-2 adapter learnt on the device, on the integer path.
//!
//! **Where.** The adapter sits on the feed-forward down projection (`w2`) of the model's last
//! layer: that layer's output gains `B (A h)`, `h` the layer's SwiGLU activation (`hidden_dim`
//! values), `A` `rank x hidden_dim`, `B` `dim x rank`. Nothing after it mixes positions (only
//! the output norm and the classifier follow), so the gradient of a position's loss reaches the
//! adapter through that position alone: training needs no stored activations, no backward
//! pass through attention, and a memory that does not grow with the text.
//!
//! **Inference** ([`IntLora`]): `A` and `B` as int8 with one [`Scale`] per row, applied in the
//! integer forward pass ([`IntState::forward_lora`], [`WithLora`] for the generic loops) with
//! integer arithmetic only, bit-identical on the host and the chip. `B` starts at zero, so a new
//! adapter changes nothing.
//!
//! **Training** ([`LoraTrainer`]): an f32 master copy of `A` and `B` and AdamW's moments, in a
//! fixed-size value (no allocation, [`LoraTrainer::ram_bytes`]). A step runs the text through
//! the integer forward pass with the current int8 adapter and, per position, the cross-entropy
//! gradient through the classifier and the output RMSNorm into `A` and `B` (straight-through the
//! int8 rounding), then one AdamW update and a fresh int8 copy. The gradient is f32: on a chip
//! without an FPU that is IEEE soft-float, which gives the host's results exactly (the same
//! operations in the same order), at a cost measured in docs/BENCHMARKS.md.

use crate::error::{Error, Result};
use crate::infer::integer::{sat32, shr_round, Scale, FRAC};
use crate::infer::{IntState, Step};
use crate::model::Model;

/// Largest adapter rank.
pub const MAX_RANK: usize = 2;
/// Widest feed-forward layer an adapter covers.
pub const MAX_HIDDEN: usize = 512;
/// Widest model an adapter covers.
pub const MAX_DIM: usize = 256;

/// An adapter as the integer forward pass applies it: int8 rows with one scale each.
#[derive(Clone, Debug, PartialEq)]
pub struct IntLora {
    pub rank: usize,
    /// The layer whose `w2` output it changes (the model's last).
    pub layer: usize,
    pub dim: usize,
    pub hidden: usize,
    /// `A`, `rank` rows of `hidden`.
    pub a: [i8; MAX_RANK * MAX_HIDDEN],
    pub a_scale: [Scale; MAX_RANK],
    /// `B` transposed, `rank` rows of `dim`.
    pub bt: [i8; MAX_RANK * MAX_DIM],
    pub b_scale: [Scale; MAX_RANK],
}

impl IntLora {
    /// Whether `B` is all zero: then `B (A h)` is exactly 0 and the adapter changes no output.
    pub fn changes_nothing(&self) -> bool {
        self.bt[..self.rank * self.dim].iter().all(|&b| b == 0)
    }

    /// Adds `B (A h)` to `out` (Q16.16), `h` the layer's SwiGLU activation (Q16.16).
    pub(crate) fn apply(&self, h: &[i32], out: &mut [i32]) {
        for j in 0..self.rank {
            let row = &self.a[j * self.hidden..(j + 1) * self.hidden];
            let acc = row.iter().zip(h).fold(0i64, |s, (&a, &x)| s.saturating_add(a as i64 * x as i64));
            // u_j in Q16.16, then times B's row scale: each B entry times it is the Q16.16 term.
            let (sa, sb) = (self.a_scale[j], self.b_scale[j]);
            let u = sat32(shr_round(acc.saturating_mul(sa.m as i64), -sa.e));
            let w = sat32(shr_round((u as i64).saturating_mul(sb.m as i64), -sb.e));
            let col = &self.bt[j * self.dim..(j + 1) * self.dim];
            for (o, &b) in out.iter_mut().zip(col) {
                *o = o.saturating_add(sat32(b as i64 * w as i64));
            }
        }
    }

    /// Bytes of its adapter file ([`IntLora::write`]).
    pub fn file_len(&self) -> usize {
        8 + 4 + 8 + 8 * self.rank + self.rank * (self.hidden + self.dim) + 4
    }

    /// Bytes of the adapter's weights and scales as stored (int8 and one f32 scale a row).
    pub fn stored_bytes(&self) -> usize {
        self.rank * (self.hidden + self.dim) + 4 * 2 * self.rank
    }
}

/// Start of an adapter file: name and format version 1.
pub const FILE_MAGIC: &[u8; 8] = b"RVLORA\x00\x01";

/// Bytes of an adapter file at most (rank 2 on the widest model).
pub const MAX_FILE: usize = 8 + 4 + 8 + 16 + MAX_RANK * (MAX_HIDDEN + MAX_DIM) + 4;

/// The identity an adapter file records of its base model: the CRC-32 of the whole model image.
pub fn model_id(image: &[u8]) -> u32 {
    crate::gguf::crc32(image)
}

impl IntLora {
    /// Writes the adapter file into `out`: [`FILE_MAGIC`], the base model's [`model_id`],
    /// rank, layer, dim and hidden (u16 each, little-endian), the 2 x rank row scales (f32
    /// bits), `A` then `B` transposed (int8), and the CRC-32 of everything before it. Its
    /// length, or [`Error::BufferTooSmall`].
    pub fn write(&self, model: u32, out: &mut [u8]) -> Result<usize> {
        let (r, h, d) = (self.rank, self.hidden, self.dim);
        let len = self.file_len();
        let have = out.len();
        let out = out.get_mut(..len).ok_or(Error::BufferTooSmall { need: len, have })?;
        let mut at = 0;
        let mut put = |b: &[u8]| {
            out[at..at + b.len()].copy_from_slice(b);
            at += b.len();
        };
        put(FILE_MAGIC);
        put(&model.to_le_bytes());
        for v in [r, self.layer, d, h] {
            put(&(v as u16).to_le_bytes());
        }
        for s in self.a_scale[..r].iter().chain(&self.b_scale[..r]) {
            put(&scale_bits(*s).to_le_bytes());
        }
        put(bytemuck::cast_slice(&self.a[..r * h]));
        put(bytemuck::cast_slice(&self.bt[..r * d]));
        let crc = crate::gguf::crc32(&out[..len - 4]);
        out[len - 4..].copy_from_slice(&crc.to_le_bytes());
        Ok(len)
    }

    /// Reads an adapter file for the model whose image has [`model_id`] `model` and shape
    /// `model_config`: a wrong magic or version, a damaged file (checksum), an adapter of
    /// another model, a shape or rank that does not fit are each an error, never a panic.
    pub fn read(bytes: &[u8], model: u32, model_config: &crate::model::Config) -> Result<IntLora> {
        if bytes.len() > MAX_FILE {
            return Err(Error::Invalid { what: "adapter file larger than any adapter" });
        }
        if bytes.get(..8) != Some(&FILE_MAGIC[..]) {
            return Err(Error::BadMagic { expected: "RVLORA (a MicroLoRA adapter file, version 1)" });
        }
        let (body, tail) =
            bytes.split_at(bytes.len().checked_sub(4).ok_or(Error::Truncated { what: "adapter file" })?);
        let stored = u32::from_le_bytes([tail[0], tail[1], tail[2], tail[3]]);
        let computed = crate::gguf::crc32(body);
        if stored != computed {
            return Err(Error::Checksum { stored, computed });
        }
        let u16_at = |i: usize| body.get(i..i + 2).map(|b| u16::from_le_bytes([b[0], b[1]]) as usize);
        let trained_for = body.get(8..12).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]));
        let (Some(r), Some(layer), Some(d), Some(h), Some(id)) =
            (u16_at(12), u16_at(14), u16_at(16), u16_at(18), trained_for)
        else {
            return Err(Error::Truncated { what: "adapter file header" });
        };
        if id != model {
            return Err(Error::Invalid {
                what: "adapter trained for a different model (its checksum differs)",
            });
        }
        if !(1..=MAX_RANK).contains(&r)
            || d != model_config.dim
            || h != model_config.hidden_dim
            || layer + 1 != model_config.n_layers
        {
            return Err(Error::Invalid { what: "adapter shape does not match the model" });
        }
        if body.len() != 20 + 8 * r + r * (h + d) {
            return Err(Error::Truncated { what: "adapter weights" });
        }
        let mut lora = IntLora::zero(r, layer, d, h);
        let scale = |i: usize| {
            let b = &body[20 + 4 * i..24 + 4 * i];
            Scale::from_ieee_bits(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        };
        for j in 0..r {
            (lora.a_scale[j], lora.b_scale[j]) = (scale(j), scale(r + j));
        }
        let w = &body[20 + 8 * r..];
        for (q, &b) in lora.a[..r * h].iter_mut().zip(&w[..r * h]) {
            *q = b as i8;
        }
        for (q, &b) in lora.bt[..r * d].iter_mut().zip(&w[r * h..]) {
            *q = b as i8;
        }
        Ok(lora)
    }

    /// An adapter that changes nothing.
    const fn zero(rank: usize, layer: usize, dim: usize, hidden: usize) -> IntLora {
        IntLora {
            rank,
            layer,
            dim,
            hidden,
            a: [0; MAX_RANK * MAX_HIDDEN],
            a_scale: [Scale::ZERO; MAX_RANK],
            bt: [0; MAX_RANK * MAX_DIM],
            b_scale: [Scale::ZERO; MAX_RANK],
        }
    }
}

/// A scale back to the f32 it was decoded from (exact: its mantissa has 16 bits).
fn scale_bits(s: Scale) -> u32 {
    if s.m == 0 {
        return 0;
    }
    // value = m * 2^e with m < 2^16: as f32, m << 8 is a 24-bit significand.
    let (neg, m) = (s.m < 0, s.m.unsigned_abs());
    let lz = m.leading_zeros() - 8;
    let sig = m << lz;
    let exp = s.e - lz as i32 + 23 + 127;
    if exp <= 0 || exp >= 255 {
        return 0;
    }
    (u32::from(neg) << 31) | ((exp as u32) << 23) | (sig & 0x7f_ffff)
}

/// A forward pass with an adapter, for the generic loops ([`crate::infer::generate`],
/// [`crate::infer::nll`], the console's answers): the integer state plus the adapter.
pub struct WithLora<'a, 's> {
    pub state: &'a mut IntState<'s>,
    pub lora: Option<&'a IntLora>,
}

impl Step for WithLora<'_, '_> {
    type Logit = i32;

    fn capacity(&self) -> usize {
        self.state.seq_len()
    }

    fn prefill_token<const L: usize>(&mut self, model: &Model<'_, L>, token: u32, pos: usize) -> Result<()> {
        self.state.prefill_lora(model, token, pos, self.lora)
    }

    fn logits<const L: usize>(&mut self, model: &Model<'_, L>, token: u32, pos: usize) -> Result<&mut [i32]> {
        self.state.forward_lora(model, token, pos, self.lora)
    }
}

/// How an adapter is trained.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LoraConfig {
    /// 1 or 2.
    pub rank: usize,
    /// AdamW's learning rate.
    pub lr: f32,
    /// Seed of `A`'s initial values (`B` starts at zero).
    pub seed: u64,
}

impl Default for LoraConfig {
    fn default() -> Self {
        LoraConfig { rank: 2, lr: 0.003, seed: 1 }
    }
}

/// The trainable adapter: f32 master weights and AdamW's moments, in one fixed-size value.
#[derive(Clone, Debug)]
pub struct LoraTrainer {
    pub config: LoraConfig,
    dim: usize,
    hidden: usize,
    a: [f32; MAX_RANK * MAX_HIDDEN],
    bt: [f32; MAX_RANK * MAX_DIM],
    m: [f32; MAX_RANK * (MAX_HIDDEN + MAX_DIM)],
    v: [f32; MAX_RANK * (MAX_HIDDEN + MAX_DIM)],
    grad: [f32; MAX_RANK * (MAX_HIDDEN + MAX_DIM)],
    steps: u32,
    /// The int8 copy the forward pass uses.
    int: IntLora,
}

/// What one training step measured.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StepReport {
    /// Mean cross-entropy (nats) of the text's tokens before the update.
    pub loss: f32,
    /// Tokens scored.
    pub tokens: usize,
}

impl LoraTrainer {
    /// A trainer that holds no adapter yet: all zeros, so a board's `static` of it sits in
    /// .bss; [`Self::reset`] sets it up in place.
    pub const EMPTY: LoraTrainer = LoraTrainer {
        config: LoraConfig { rank: 1, lr: 0.003, seed: 1 },
        dim: 0,
        hidden: 0,
        a: [0.0; MAX_RANK * MAX_HIDDEN],
        bt: [0.0; MAX_RANK * MAX_DIM],
        m: [0.0; MAX_RANK * (MAX_HIDDEN + MAX_DIM)],
        v: [0.0; MAX_RANK * (MAX_HIDDEN + MAX_DIM)],
        grad: [0.0; MAX_RANK * (MAX_HIDDEN + MAX_DIM)],
        steps: 0,
        int: IntLora::zero(1, 0, 0, 0),
    };

    /// A new adapter for `model`'s last layer: `A` small seeded values, `B` zero (so it changes
    /// nothing yet). A rank outside 1..=[`MAX_RANK`] or a model wider than the limits is
    /// [`Error::Invalid`].
    pub fn new<const L: usize>(model: &Model<'_, L>, config: LoraConfig) -> Result<Self> {
        let mut t = Self::EMPTY;
        t.reset(&model.config, config)?;
        Ok(t)
    }

    /// [`Self::new`] in place (a board's trainer is too large to build on its stack and move):
    /// on an error the trainer is left as it was.
    pub fn reset(&mut self, c: &crate::model::Config, config: LoraConfig) -> Result<()> {
        if !(1..=MAX_RANK).contains(&config.rank) {
            return Err(Error::Invalid { what: "adapter rank outside 1-2" });
        }
        if c.hidden_dim > MAX_HIDDEN || c.dim > MAX_DIM || c.n_layers == 0 {
            return Err(Error::Invalid {
                what: "model too wide for an adapter (dim 256, hidden 512 at most)",
            });
        }
        if !(config.lr.is_finite() && config.lr > 0.0) {
            return Err(Error::Invalid { what: "adapter learning rate must be a positive number" });
        }
        let (dim, hidden) = (c.dim, c.hidden_dim);
        (self.config, self.dim, self.hidden, self.steps) = (config, dim, hidden, 0);
        self.a.fill(0.0);
        self.bt.fill(0.0);
        self.m.fill(0.0);
        self.v.fill(0.0);
        self.grad.fill(0.0);
        self.int = IntLora::zero(config.rank, c.n_layers - 1, dim, hidden);
        // A: uniform in +-1/sqrt(hidden) from splitmix64 (the usual LoRA start).
        let mut s = config.seed;
        let bound = 1.0 / libm::sqrtf(hidden as f32);
        for x in self.a[..config.rank * hidden].iter_mut() {
            s = s.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = s;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^= z >> 31;
            *x = ((z >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * bound;
        }
        self.requantize();
        Ok(())
    }

    /// A trainer that goes on from a saved adapter (its int8 weights become the master copy;
    /// the optimizer starts afresh). `config.rank` is the adapter's.
    pub fn from_adapter<const L: usize>(
        model: &Model<'_, L>,
        config: LoraConfig,
        adapter: &IntLora,
    ) -> Result<Self> {
        let mut t = Self::EMPTY;
        t.resume(&model.config, config, adapter)?;
        Ok(t)
    }

    /// [`Self::from_adapter`] in place; on an error the trainer is left as it was.
    pub fn resume(&mut self, c: &crate::model::Config, config: LoraConfig, adapter: &IntLora) -> Result<()> {
        if (adapter.dim, adapter.hidden, adapter.layer + 1) != (c.dim, c.hidden_dim, c.n_layers) {
            return Err(Error::Invalid { what: "adapter shape does not match the model" });
        }
        self.reset(c, LoraConfig { rank: adapter.rank, ..config })?;
        let (r, h, d) = (adapter.rank, self.hidden, self.dim);
        for j in 0..r {
            let (sa, sb) = (
                f32::from_bits(scale_bits(adapter.a_scale[j])),
                f32::from_bits(scale_bits(adapter.b_scale[j])),
            );
            for i in 0..h {
                self.a[j * h + i] = adapter.a[j * h + i] as f32 * sa;
            }
            for k in 0..d {
                self.bt[j * d + k] = adapter.bt[j * d + k] as f32 * sb;
            }
        }
        self.int.clone_from(adapter);
        Ok(())
    }

    /// The adapter as the forward pass applies it.
    pub fn adapter(&self) -> &IntLora {
        &self.int
    }

    /// RAM of the trainer (master weights, moments, gradient and the int8 copy), in bytes.
    pub fn ram_bytes(&self) -> usize {
        core::mem::size_of::<Self>()
    }

    /// Updates taken so far.
    pub fn steps(&self) -> u32 {
        self.steps
    }

    /// Mean cross-entropy of `tokens` (each predicting the next) with the current adapter,
    /// without training.
    pub fn loss<const L: usize>(
        &mut self,
        model: &Model<'_, L>,
        state: &mut IntState<'_>,
        tokens: &[u32],
    ) -> Result<f32> {
        self.run(model, state, tokens, false)
    }

    /// One training step on `tokens` (BOS first, at most the state's capacity): the loss before
    /// the update, and the update of `A` and `B`.
    pub fn step<const L: usize>(
        &mut self,
        model: &Model<'_, L>,
        state: &mut IntState<'_>,
        tokens: &[u32],
    ) -> Result<StepReport> {
        let loss = self.run(model, state, tokens, true)?;
        let n = (tokens.len() - 1) as f32;
        let (r, h, d) = (self.config.rank, self.hidden, self.dim);
        let len = r * (h + d);
        for g in &mut self.grad[..len] {
            *g /= n;
        }
        // AdamW (beta 0.9 / 0.999, no weight decay: the adapter starts at no change).
        self.steps += 1;
        let t = self.steps as f32;
        let (b1, b2, eps) = (0.9f32, 0.999f32, 1e-8f32);
        let (c1, c2) = (1.0 - libm::powf(b1, t), 1.0 - libm::powf(b2, t));
        let lr = self.config.lr;
        for i in 0..len {
            let g = self.grad[i];
            self.m[i] = b1 * self.m[i] + (1.0 - b1) * g;
            self.v[i] = b2 * self.v[i] + (1.0 - b2) * g * g;
            let delta = lr * (self.m[i] / c1) / (libm::sqrtf(self.v[i] / c2) + eps);
            if i < r * h {
                self.a[i] -= delta;
            } else {
                self.bt[i - r * h] -= delta;
            }
        }
        self.requantize();
        Ok(StepReport { loss, tokens: tokens.len() - 1 })
    }

    /// Runs `tokens` through the model with the adapter; with `grad`, sums the gradient of
    /// every position's loss into `self.grad` (cleared first). The mean loss.
    fn run<const L: usize>(
        &mut self,
        model: &Model<'_, L>,
        state: &mut IntState<'_>,
        tokens: &[u32],
        grad: bool,
    ) -> Result<f32> {
        if tokens.len() < 2 {
            return Err(Error::Invalid { what: "adapter text needs at least one token after BOS" });
        }
        if tokens.len() > state.seq_len() {
            return Err(Error::ContextFull { need: tokens.len(), capacity: state.seq_len() });
        }
        if model.config.dim != self.dim || model.config.hidden_dim != self.hidden {
            return Err(Error::Invalid { what: "adapter made for another model shape" });
        }
        let (r, h, d) = (self.config.rank, self.hidden, self.dim);
        self.grad[..r * (h + d)].fill(0.0);
        let eps = model.config.norm_eps;
        let mut loss = 0.0f64;
        let (mut row, mut dy, mut dx) = ([0i32; MAX_DIM], [0.0f32; MAX_DIM], [0.0f32; MAX_DIM]);
        for (pos, pair) in tokens.windows(2).enumerate() {
            let (token, target) = (pair[0], pair[1] as usize);
            state.forward_lora(model, token, pos, Some(&self.int))?;
            let (x, hb, logits) = state.lora_inputs();
            // Softmax of the logits, in f64 for the sum.
            let max = logits.iter().fold(f32::NEG_INFINITY, |m, &l| m.max(real(l)));
            let sum: f64 = logits.iter().map(|&l| libm::exp((real(l) - max) as f64)).sum();
            let target_logit = logits.get(target).map_or(f32::NEG_INFINITY, |&l| real(l));
            loss += libm::log(sum) + (max - target_logit) as f64;
            if !grad {
                continue;
            }
            // dL/d(normed state) = sum over the vocabulary of (p - onehot) times the row.
            dy[..d].fill(0.0);
            for (v, &l) in logits.iter().enumerate() {
                let p = (libm::exp((real(l) - max) as f64) / sum) as f32;
                let dz = p - if v == target { 1.0 } else { 0.0 };
                state.classifier_row(model, v, &mut row[..d])?;
                for (g, &w) in dy[..d].iter_mut().zip(&row[..d]) {
                    *g += dz * real(w);
                }
            }
            // Through the output RMSNorm: y = x r w, r = 1 / sqrt(mean(x^2) + eps).
            let norm = model.output_norm;
            let ms = x.iter().map(|&v| real(v) * real(v)).sum::<f32>() / d as f32 + eps;
            let rinv = 1.0 / libm::sqrtf(ms);
            let dot: f32 = (0..d).map(|i| norm[i] * dy[i] * real(x[i])).sum();
            for i in 0..d {
                dx[i] = rinv * norm[i] * dy[i] - real(x[i]) * rinv * rinv * rinv / d as f32 * dot;
            }
            // Into B (transposed) and A: the layer's output gained B u, u = A h.
            for j in 0..r {
                let arow = &self.a[j * h..(j + 1) * h];
                let u: f32 = arow.iter().zip(hb).map(|(&a, &v)| a * real(v)).sum();
                let bcol = &self.bt[j * d..(j + 1) * d];
                let ga: f32 = bcol.iter().zip(&dx[..d]).map(|(b, g)| b * g).sum();
                let (ga_rows, gb_rows) = self.grad[..r * (h + d)].split_at_mut(r * h);
                for (g, &v) in ga_rows[j * h..(j + 1) * h].iter_mut().zip(hb) {
                    *g += ga * real(v);
                }
                for (g, &e) in gb_rows[j * d..(j + 1) * d].iter_mut().zip(&dx[..d]) {
                    *g += e * u;
                }
            }
        }
        Ok((loss / (tokens.len() - 1) as f64) as f32)
    }

    /// The int8 copy of the master weights: one scale per row, `amax / 127`.
    fn requantize(&mut self) {
        let (r, h, d) = (self.config.rank, self.hidden, self.dim);
        for j in 0..r {
            self.int.a_scale[j] = quantize(&self.a[j * h..(j + 1) * h], &mut self.int.a[j * h..(j + 1) * h]);
            self.int.b_scale[j] =
                quantize(&self.bt[j * d..(j + 1) * d], &mut self.int.bt[j * d..(j + 1) * d]);
        }
    }
}

/// `q = round(x / s)` with `s = amax / 127`; the scale as the integer path reads it.
fn quantize(x: &[f32], q: &mut [i8]) -> Scale {
    let amax = x.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    if amax == 0.0 {
        q.fill(0);
        return Scale::ZERO;
    }
    let s = amax / 127.0;
    for (q, v) in q.iter_mut().zip(x) {
        *q = libm::roundf(v / s).clamp(-127.0, 127.0) as i8;
    }
    Scale::from_ieee_bits(s.to_bits())
}

/// Q16.16 to f32.
fn real(v: i32) -> f32 {
    v as f32 / (1u32 << FRAC) as f32
}

/// Steps the console's `lora train <text>` takes on its text.
pub const DEVICE_STEPS: usize = 4;

/// A device's adapter for its model: the trainer (whose int8 copy generation applies while
/// it is on), the model's identity for the adapter's files, and whether it changed since it
/// was last saved or loaded. Its size is fixed ([`LoraTrainer::ram_bytes`] plus a few
/// words) whatever the rank; [`DeviceLora::EMPTY`] is all zeros, so a board keeps it in .bss.
#[derive(Clone, Debug)]
pub struct DeviceLora {
    trainer: LoraTrainer,
    model: u32,
    ready: bool,
    on: bool,
    unsaved: bool,
}

/// What [`DeviceLora::train`] did.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Trained {
    /// Tokens scored (the text's, after BOS).
    pub tokens: usize,
    pub steps: usize,
    /// Mean cross-entropy (nats a token) of the text before the first step and after the last.
    pub before: f32,
    pub after: f32,
    /// Counter ticks of the training steps (the two loss passes excluded), when counted.
    pub ticks: Option<u64>,
}

/// What `lora stats` shows.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DeviceLoraStats {
    pub on: bool,
    pub rank: usize,
    pub layer: usize,
    /// Bytes of the adapter file ([`IntLora::write`]): what `lora save` writes to flash.
    pub file_bytes: usize,
    /// Bytes of the int8 weights and scales generation reads.
    pub adapter_bytes: usize,
    /// RAM of the whole device adapter (trainer, moments, int8 copy).
    pub ram_bytes: usize,
    pub steps: u32,
    pub unsaved: bool,
}

impl DeviceLora {
    pub const EMPTY: DeviceLora =
        DeviceLora { trainer: LoraTrainer::EMPTY, model: 0, ready: false, on: false, unsaved: false };

    /// Sets up a fresh adapter (rank [`LoraConfig::default`]'s, changing nothing yet) for the
    /// model of shape `c` whose image has [`model_id`] `model`.
    pub fn attach(&mut self, c: &crate::model::Config, model: u32) -> Result<()> {
        self.trainer.reset(c, LoraConfig::default())?;
        (self.model, self.ready, self.on, self.unsaved) = (model, true, true, false);
        Ok(())
    }

    /// A fresh adapter of `rank` (on, changing nothing yet); on an error nothing changes.
    pub fn reset(&mut self, c: &crate::model::Config, rank: usize) -> Result<()> {
        self.require_ready()?;
        self.trainer.reset(c, LoraConfig { rank, ..LoraConfig::default() })?;
        (self.on, self.unsaved) = (true, false);
        Ok(())
    }

    /// The adapter generation applies: `None` while off (or before [`Self::attach`]), and while
    /// it changes nothing (fresh or reset: `B` is zero), so a console with an untrained adapter
    /// generates, and speculates, as without one.
    pub fn active(&self) -> Option<&IntLora> {
        (self.ready && self.on).then(|| self.trainer.adapter()).filter(|a| !a.changes_nothing())
    }

    /// Applies the adapter (`true`) or runs the base model alone (`false`).
    pub fn set_on(&mut self, on: bool) -> Result<()> {
        self.require_ready()?;
        self.on = on;
        Ok(())
    }

    /// Writes the adapter file into `out` (at least [`MAX_FILE`] bytes do); its length.
    pub fn write_file(&self, out: &mut [u8]) -> Result<usize> {
        self.require_ready()?;
        self.trainer.adapter().write(self.model, out)
    }

    /// After the file was kept: nothing is unsaved.
    pub fn mark_saved(&mut self) {
        self.unsaved = false;
    }

    /// Takes the adapter in `file` (refused when damaged, of another model or of another
    /// shape: then nothing changes) and turns it on; training goes on from it.
    pub fn load_file(&mut self, c: &crate::model::Config, file: &[u8]) -> Result<()> {
        self.require_ready()?;
        let adapter = IntLora::read(file, self.model, c)?;
        self.trainer.resume(c, LoraConfig::default(), &adapter)?;
        (self.on, self.unsaved) = (true, false);
        Ok(())
    }

    /// Up to `steps` training steps on `tokens` (BOS first, two tokens at least, at most the
    /// state's context), with the loss before and after; the adapter is on afterwards.
    /// `counter` (a board's instruction counter) measures the steps alone; `stop` is asked
    /// after each step (a console's Ctrl-C) and ends the training there. With 0 steps: the
    /// loss of `tokens` under the adapter as it is (on or off), nothing changed.
    pub fn train<const L: usize>(
        &mut self,
        model: &Model<'_, L>,
        state: &mut IntState<'_>,
        tokens: &[u32],
        steps: usize,
        counter: Option<fn() -> u64>,
        stop: &mut dyn FnMut() -> bool,
    ) -> Result<Trained> {
        self.require_ready()?;
        let before = self.loss(model, state, tokens)?;
        if steps == 0 {
            return Ok(Trained { tokens: tokens.len() - 1, steps, before, after: before, ticks: None });
        }
        let (mut done, mut ticks) = (0, 0u64);
        while done < steps {
            let start = counter.map(|f| f());
            self.trainer.step(model, state, tokens)?;
            ticks += counter.zip(start).map_or(0, |(f, s)| f().wrapping_sub(s));
            (self.on, self.unsaved, done) = (true, true, done + 1);
            if stop() {
                break;
            }
        }
        let after = self.loss(model, state, tokens)?;
        let ticks = counter.map(|_| ticks);
        Ok(Trained { tokens: tokens.len() - 1, steps: done, before, after, ticks })
    }

    /// Mean cross-entropy (nats a token) of `tokens` with the adapter while it is on.
    fn loss<const L: usize>(
        &self,
        model: &Model<'_, L>,
        state: &mut IntState<'_>,
        tokens: &[u32],
    ) -> Result<f32> {
        if tokens.len() < 2 {
            return Err(Error::Invalid { what: "adapter text needs at least one token after BOS" });
        }
        if tokens.len() > state.seq_len() {
            return Err(Error::ContextFull { need: tokens.len(), capacity: state.seq_len() });
        }
        let mut sum = 0.0f64;
        for (pos, pair) in tokens.windows(2).enumerate() {
            let logits = state.forward_lora(model, pair[0], pos, self.active())?;
            sum += crate::infer::nll(logits, pair[1]);
        }
        Ok((sum / (tokens.len() - 1) as f64) as f32)
    }

    pub fn stats(&self) -> DeviceLoraStats {
        let a = self.trainer.adapter();
        DeviceLoraStats {
            on: self.on,
            rank: a.rank,
            layer: a.layer,
            file_bytes: a.file_len(),
            adapter_bytes: a.stored_bytes(),
            ram_bytes: core::mem::size_of::<Self>(),
            steps: self.trainer.steps(),
            unsaved: self.unsaved,
        }
    }

    fn require_ready(&self) -> Result<()> {
        match self.ready {
            true => Ok(()),
            false => Err(Error::Invalid { what: "no adapter on this board (its model is too wide for one)" }),
        }
    }
}
