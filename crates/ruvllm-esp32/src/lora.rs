//! MicroLoRA: rank-1 or rank-2 adapters learnt on the device, on the integer path.
//!
//! **Where.** An adapter set ([`Sites`]) covers chosen projections (`wq`, `wk`, `wv`, `wo`,
//! `w1`, `w2`, `w3`: [`Target`]) of chosen layers: each gains `B (A x)` on its output, `x`
//! the projection's input, `A` `rank x inputs`, `B` `outputs x rank`. The device's default is
//! the last layer's feed-forward down projection (`w2`) alone: nothing after it mixes
//! positions (only the output norm and the classifier follow), so the gradient of a position's
//! loss reaches it through that position alone and a step needs no stored activations. Any
//! other set needs the backward pass through the layers above it (attention included), which
//! keeps per-position activations in a work buffer the caller sizes at start
//! ([`LoraTrainer::work_len`]).
//!
//! **Inference** ([`IntLora`]): `A` and `B` as int8 with one [`Scale`] per row, applied in the
//! integer forward pass ([`IntState::forward_lora`], [`WithLora`] for the generic loops) with
//! integer arithmetic only, bit-identical on the host and the chip. `B` starts at zero, so a new
//! adapter changes nothing.
//!
//! **Training** ([`LoraTrainer`]): an f32 master copy of the adapters and AdamW's moments, in a
//! fixed-size value (no allocation, [`LoraTrainer::ram_bytes`]). A step runs the text through
//! the integer forward pass with the current int8 adapters; the cross-entropy gradient goes
//! through the classifier and the output RMSNorm, then (for sets below the last `w2`) back
//! through the layers in f32, recomputed from the residual stream the integer pass had at the
//! lowest adapted layer, into the adapters only (straight-through the int8 rounding); then one
//! AdamW update and a fresh int8 copy. On a chip without an FPU the f32 is IEEE soft-float,
//! which gives the host's results exactly, at a cost measured in docs/BENCHMARKS.md.

use crate::error::{Error, Result};
use crate::infer::integer::{sat32, shr_round, Scale, FRAC};
use crate::infer::{IntState, Step};
use crate::kernels::reference;
use crate::model::{Config, Model};

/// Largest adapter rank.
pub const MAX_RANK: usize = 2;
/// Widest feed-forward layer an adapter covers.
pub const MAX_HIDDEN: usize = 512;
/// Widest model an adapter covers.
pub const MAX_DIM: usize = 256;
/// Most projections one adapter set covers (every projection of 6 layers, or 3 of 16).
pub const MAX_SITES: usize = 48;
/// Widest attention head the backward pass takes (its RoPE table sits on the stack).
const MAX_HEAD: usize = 64;
/// Most layers an adapter set names.
pub const MAX_LAYERS: usize = 64;
/// Parameters of a device's adapter set: a rank-2 adapter on the widest model's `w2`, what the
/// board's RAM plan holds (`DeviceLora`, a few KB of int8 and 26 KB of training state).
pub const DEVICE_PARAMS: usize = MAX_RANK * (MAX_HIDDEN + MAX_DIM);
/// Parameters of a host's adapter set (`lora train` from the CLI): every projection of every
/// layer at rank 2 of a stories260K-sized model (11,560) fits.
pub const HOST_PARAMS: usize = 16384;

/// A projection of a layer that can carry an adapter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    Wq,
    Wk,
    Wv,
    Wo,
    W1,
    W2,
    W3,
}

impl Target {
    pub const ALL: [Target; 7] =
        [Target::Wq, Target::Wk, Target::Wv, Target::Wo, Target::W1, Target::W2, Target::W3];

    pub fn name(self) -> &'static str {
        ["wq", "wk", "wv", "wo", "w1", "w2", "w3"][self as usize]
    }

    pub fn parse(s: &str) -> Option<Target> {
        Self::ALL.into_iter().find(|t| t.name() == s)
    }

    fn bit(self) -> u8 {
        1 << self as u8
    }

    fn attention(self) -> bool {
        matches!(self, Target::Wq | Target::Wk | Target::Wv | Target::Wo)
    }

    /// (inputs, outputs) of the projection.
    pub fn shape(self, d: &Dims) -> (usize, usize) {
        // A table, not a match: a match compiles to a jump table on rv32, an indirect jump that
        // the board's float-free check (which follows every call from the integer step)
        // cannot follow.
        let (dim, kv, hid) = (d.dim, d.kv_dim, d.hidden);
        [(dim, dim), (dim, kv), (dim, kv), (dim, dim), (dim, hid), (hid, dim), (dim, hid)][self as usize]
    }
}

/// The widths an adapter set depends on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Dims {
    pub dim: usize,
    pub kv_dim: usize,
    pub hidden: usize,
    pub n_layers: usize,
}

impl Dims {
    pub fn of(c: &Config) -> Dims {
        Dims { dim: c.dim, kv_dim: c.kv_dim(), hidden: c.hidden_dim, n_layers: c.n_layers }
    }
}

/// Which projections of which layers an adapter set covers: every chosen target of every chosen
/// layer (a bit each).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sites {
    pub layers: u64,
    pub targets: u8,
}

impl Sites {
    /// The device's default: the last layer's `w2`.
    pub fn last_w2(c: &Config) -> Sites {
        Sites { layers: 1u64 << (c.n_layers.clamp(1, MAX_LAYERS) - 1), targets: Target::W2.bit() }
    }

    /// `targets` of each of `layers`: a layer the model does not have, or an empty list, is
    /// [`Error::Invalid`].
    pub fn new(c: &Config, layers: &[usize], targets: &[Target]) -> Result<Sites> {
        if c.n_layers > MAX_LAYERS {
            return Err(Error::Invalid { what: "model has more layers than an adapter set names (64)" });
        }
        let mut s = Sites { layers: 0, targets: 0 };
        for &l in layers {
            if l >= c.n_layers {
                return Err(Error::Invalid { what: "adapter layer outside the model" });
            }
            s.layers |= 1 << l;
        }
        for t in targets {
            s.targets |= t.bit();
        }
        if s.layers == 0 || s.targets == 0 {
            return Err(Error::Invalid { what: "an adapter set needs a layer and a projection" });
        }
        Ok(s)
    }

    pub fn has(self, layer: usize, t: Target) -> bool {
        layer < MAX_LAYERS && self.layers >> layer & 1 == 1 && self.targets & t.bit() != 0
    }

    /// The sites, layer by layer, in [`Target::ALL`]'s order (the order of their parameters).
    pub fn iter(self) -> impl Iterator<Item = (usize, Target)> {
        (0..MAX_LAYERS).filter(move |l| self.layers >> l & 1 == 1).flat_map(move |l| {
            Target::ALL.into_iter().filter(move |t| self.targets & t.bit() != 0).map(move |t| (l, t))
        })
    }

    pub fn count(self) -> usize {
        self.layers.count_ones() as usize * self.targets.count_ones() as usize
    }

    /// The lowest adapted layer.
    pub fn lowest(self) -> usize {
        self.layers.trailing_zeros() as usize
    }

    /// Parameters of the set at `rank`.
    pub fn params(self, d: &Dims, rank: usize) -> usize {
        self.iter().map(|(_, t)| t.shape(d)).map(|(n, m)| rank * (n + m)).sum()
    }

    /// Whether a step's gradient reaches every site through each position alone (the set is
    /// the last layer's `w2`): then it needs no work buffer.
    fn position_local(self, d: &Dims) -> bool {
        let last = d.n_layers.checked_sub(1).filter(|&l| l < MAX_LAYERS);
        last.is_some_and(|l| self == Sites { layers: 1u64 << l, targets: Target::W2.bit() })
    }
}

/// An adapter set as the integer forward pass reads it.
#[derive(Clone, Copy, Debug)]
pub struct LoraRef<'a> {
    rank: usize,
    sites: Sites,
    dims: Dims,
    w: &'a [i8],
    scales: &'a [Scale],
}

impl LoraRef<'_> {
    /// Site `(layer, t)`'s index and the offset of its parameters.
    fn locate(&self, layer: usize, t: Target) -> Option<(usize, usize)> {
        locate(self.sites, &self.dims, self.rank, layer, t)
    }

    /// Adds `B (A h)` to `out` (Q16.16) when the set covers projection `t` of `layer`, `h`
    /// the projection's input (Q16.16).
    pub(crate) fn apply(&self, layer: usize, t: Target, h: &[i32], out: &mut [i32]) {
        let Some((i, off)) = self.locate(layer, t) else { return };
        let ((n, m), r) = (t.shape(&self.dims), self.rank);
        let (a, bt) = self.w[off..off + r * (n + m)].split_at(r * n);
        for j in 0..r {
            let row = &a[j * n..(j + 1) * n];
            let acc = row.iter().zip(h).fold(0i64, |s, (&a, &x)| s.saturating_add(a as i64 * x as i64));
            // u_j in Q16.16, then times B's row scale: each B entry times it is the Q16.16 term.
            let (sa, sb) = (self.scales[2 * r * i + j], self.scales[2 * r * i + r + j]);
            let u = sat32(shr_round(acc.saturating_mul(sa.m as i64), -sa.e));
            let w = sat32(shr_round((u as i64).saturating_mul(sb.m as i64), -sb.e));
            for (o, &b) in out.iter_mut().zip(&bt[j * m..(j + 1) * m]) {
                *o = o.saturating_add(sat32(b as i64 * w as i64));
            }
        }
    }
}

/// Index and parameter offset of site `(layer, t)` in `sites` at `rank`.
fn locate(sites: Sites, d: &Dims, rank: usize, layer: usize, t: Target) -> Option<(usize, usize)> {
    if !sites.has(layer, t) {
        return None;
    }
    let mut off = 0;
    for (i, (l, u)) in sites.iter().enumerate() {
        if (l, u) == (layer, t) {
            return Some((i, off));
        }
        let (n, m) = u.shape(d);
        off += rank * (n + m);
    }
    None
}

/// An adapter set as the integer forward pass applies it: int8 rows with one scale each, for
/// at most `P` parameters ([`DEVICE_PARAMS`] on a device, [`HOST_PARAMS`] on the host).
#[derive(Clone, Debug, PartialEq)]
pub struct IntLora<const P: usize = DEVICE_PARAMS> {
    pub rank: usize,
    pub sites: Sites,
    pub dims: Dims,
    /// Site after site: `A` (`rank` rows of its inputs), then `B` transposed (`rank` rows of
    /// its outputs).
    pub w: [i8; P],
    /// Site after site: `A`'s `rank` row scales, then `B`'s.
    pub scales: [Scale; 2 * MAX_RANK * MAX_SITES],
}

/// The error of an adapter set that does not fit the memory it was given.
pub const OVER_BUDGET: Error =
    Error::Invalid { what: "adapter set above the memory budget (fewer layers or projections, or rank 1)" };

impl<const P: usize> IntLora<P> {
    /// The view the forward pass reads.
    pub fn view(&self) -> LoraRef<'_> {
        LoraRef { rank: self.rank, sites: self.sites, dims: self.dims, w: &self.w, scales: &self.scales }
    }

    /// Parameters in use.
    pub fn params(&self) -> usize {
        self.sites.params(&self.dims, self.rank)
    }

    /// Whether every `B` is all zero: then the set changes no output.
    pub fn changes_nothing(&self) -> bool {
        let (r, mut off) = (self.rank, 0);
        self.sites.iter().all(|(_, t)| {
            let (n, m) = t.shape(&self.dims);
            let zero = self.w[off + r * n..off + r * (n + m)].iter().all(|&b| b == 0);
            off += r * (n + m);
            zero
        })
    }

    /// Bytes of its adapter file ([`IntLora::write`]).
    pub fn file_len(&self) -> usize {
        HEADER + 4 + self.stored_bytes()
    }

    /// Bytes of the adapters' weights and scales as stored (int8 and one f32 scale a row).
    pub fn stored_bytes(&self) -> usize {
        self.params() + 4 * 2 * self.rank * self.sites.count()
    }

    /// A set that changes nothing; [`OVER_BUDGET`] when it needs more than `P` parameters or
    /// [`MAX_SITES`] sites.
    pub fn zero(rank: usize, sites: Sites, dims: Dims) -> Result<Self> {
        let mut z = Self::EMPTY;
        z.set_shape(rank, sites, dims)?;
        Ok(z)
    }

    const EMPTY: Self = IntLora {
        rank: 1,
        sites: Sites { layers: 0, targets: 0 },
        dims: Dims { dim: 0, kv_dim: 0, hidden: 0, n_layers: 0 },
        w: [0; P],
        scales: [Scale::ZERO; 2 * MAX_RANK * MAX_SITES],
    };

    fn set_shape(&mut self, rank: usize, sites: Sites, dims: Dims) -> Result<()> {
        if !(1..=MAX_RANK).contains(&rank) {
            return Err(Error::Invalid { what: "adapter rank outside 1-2" });
        }
        if sites.count() > MAX_SITES || sites.params(&dims, rank) > P {
            return Err(OVER_BUDGET);
        }
        (self.rank, self.sites, self.dims) = (rank, sites, dims);
        self.w.fill(0);
        self.scales.fill(Scale::ZERO);
        Ok(())
    }
}

/// Start of an adapter file: name and format version 2 (version 1 held the last layer's `w2`
/// only; it still loads, as that set).
pub const FILE_MAGIC: &[u8; 8] = b"RVLORA\x00\x02";
const MAGIC_V1: &[u8; 8] = b"RVLORA\x00\x01";
/// Bytes before the scales: magic, model id, rank, dim, kv_dim, hidden, layers, target bits
/// (u16 each), layer bits (u64).
const HEADER: usize = 8 + 4 + 6 * 2 + 8;
const HEADER_V1: usize = 8 + 4 + 4 * 2;

/// Bytes of an adapter file holding at most `p` parameters.
pub const fn max_file(p: usize) -> usize {
    HEADER + 4 * 2 * MAX_RANK * MAX_SITES + p + 4
}

/// Bytes of a device's adapter file at most.
pub const MAX_FILE: usize = max_file(DEVICE_PARAMS);

/// The identity an adapter file records of its base model: the CRC-32 of the whole model image.
pub fn model_id(image: &[u8]) -> u32 {
    crate::gguf::crc32(image)
}

impl<const P: usize> IntLora<P> {
    /// Writes the adapter file into `out`: [`FILE_MAGIC`], the base model's [`model_id`], rank,
    /// dim, kv_dim, hidden, layer count and target bits (u16 each, little-endian), the layer
    /// bits (u64), each site's 2 x rank row scales (f32 bits), each site's `A` then `B`
    /// transposed (int8), and the CRC-32 of everything before it. Its length, or
    /// [`Error::BufferTooSmall`].
    pub fn write(&self, model: u32, out: &mut [u8]) -> Result<usize> {
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
        let d = &self.dims;
        for v in [self.rank, d.dim, d.kv_dim, d.hidden, d.n_layers, self.sites.targets as usize] {
            put(&(v as u16).to_le_bytes());
        }
        put(&self.sites.layers.to_le_bytes());
        for s in &self.scales[..2 * self.rank * self.sites.count()] {
            put(&scale_bits(*s).to_le_bytes());
        }
        put(bytemuck::cast_slice(&self.w[..self.params()]));
        let crc = crate::gguf::crc32(&out[..len - 4]);
        out[len - 4..].copy_from_slice(&crc.to_le_bytes());
        Ok(len)
    }

    /// Reads an adapter file (version 2, or version 1: the last layer's `w2`) for the model
    /// whose image has [`model_id`] `model` and shape `model_config`: a wrong magic or
    /// version, a damaged file (checksum), an adapter of another model, a shape or rank that
    /// does not fit are each an error, never a panic.
    pub fn read(bytes: &[u8], model: u32, model_config: &Config) -> Result<Self> {
        if bytes.len() > max_file(P) {
            return Err(Error::Invalid { what: "adapter file larger than any adapter set this build holds" });
        }
        let v1 = bytes.get(..8) == Some(&MAGIC_V1[..]);
        if bytes.get(..8) != Some(&FILE_MAGIC[..]) && !v1 {
            return Err(Error::BadMagic { expected: "RVLORA (a MicroLoRA adapter file, version 1 or 2)" });
        }
        let (body, tail) =
            bytes.split_at(bytes.len().checked_sub(4).ok_or(Error::Truncated { what: "adapter file" })?);
        let stored = u32::from_le_bytes([tail[0], tail[1], tail[2], tail[3]]);
        let computed = crate::gguf::crc32(body);
        if stored != computed {
            return Err(Error::Checksum { stored, computed });
        }
        let u16_at =
            |i: usize| body.get(i..i + 2).map_or(usize::MAX, |b| u16::from_le_bytes([b[0], b[1]]) as usize);
        let trained_for = body.get(8..12).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]));
        let header = if v1 { HEADER_V1 } else { HEADER };
        if body.len() < header {
            return Err(Error::Truncated { what: "adapter file header" });
        }
        if trained_for != Some(model) {
            return Err(Error::Invalid {
                what: "adapter trained for a different model (its checksum differs)",
            });
        }
        let dims = Dims::of(model_config);
        let (rank, sites, same) = if v1 {
            // rank, layer, dim, hidden: the last layer's w2.
            let (r, layer) = (u16_at(12), u16_at(14));
            let same = (u16_at(16), u16_at(18), layer + 1) == (dims.dim, dims.hidden, dims.n_layers);
            (r, Sites::last_w2(model_config), same)
        } else {
            let b = &body[24..32];
            let layers = u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]);
            let shape = (u16_at(14), u16_at(16), u16_at(18), u16_at(20));
            let targets = u16_at(22);
            let fits = targets < 1 << 7 && (dims.n_layers >= MAX_LAYERS || layers >> dims.n_layers == 0);
            let sites = Sites { layers, targets: targets as u8 };
            (u16_at(12), sites, fits && shape == (dims.dim, dims.kv_dim, dims.hidden, dims.n_layers))
        };
        if !(1..=MAX_RANK).contains(&rank) || !same || sites.count() == 0 {
            return Err(Error::Invalid { what: "adapter shape does not match the model" });
        }
        let mut lora = Self::zero(rank, sites, dims)?;
        let (ns, np) = (2 * rank * sites.count(), sites.params(&dims, rank));
        if body.len() != header + 4 * ns + np {
            return Err(Error::Truncated { what: "adapter weights" });
        }
        for (i, s) in lora.scales[..ns].iter_mut().enumerate() {
            let b = &body[header + 4 * i..header + 4 * i + 4];
            *s = Scale::from_ieee_bits(u32::from_le_bytes([b[0], b[1], b[2], b[3]]));
        }
        for (q, &b) in lora.w[..np].iter_mut().zip(&body[header + 4 * ns..]) {
            *q = b as i8;
        }
        Ok(lora)
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

/// A forward pass with an adapter set, for the generic loops ([`crate::infer::generate`],
/// [`crate::infer::nll`], the console's answers): the integer state plus the adapters.
pub struct WithLora<'a, 's, const P: usize = DEVICE_PARAMS> {
    pub state: &'a mut IntState<'s>,
    pub lora: Option<&'a IntLora<P>>,
}

impl<const P: usize> Step for WithLora<'_, '_, P> {
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

/// The trainable adapter set: f32 master weights and AdamW's moments, in one fixed-size value.
#[derive(Clone, Debug)]
pub struct LoraTrainer<const P: usize = DEVICE_PARAMS> {
    pub config: LoraConfig,
    w: [f32; P],
    m: [f32; P],
    v: [f32; P],
    grad: [f32; P],
    steps: u32,
    /// The int8 copy the forward pass uses (and the set's shape).
    int: IntLora<P>,
}

/// What one training step measured.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StepReport {
    /// Mean cross-entropy (nats) of the text's tokens before the update.
    pub loss: f32,
    /// Tokens scored.
    pub tokens: usize,
}

impl<const P: usize> LoraTrainer<P> {
    /// A trainer that holds no adapter yet: all zeros, so a board's `static` of it sits in
    /// .bss; [`Self::reset`] sets it up in place.
    pub const EMPTY: Self = LoraTrainer {
        config: LoraConfig { rank: 1, lr: 0.003, seed: 1 },
        w: [0.0; P],
        m: [0.0; P],
        v: [0.0; P],
        grad: [0.0; P],
        steps: 0,
        int: IntLora::EMPTY,
    };

    /// A new adapter on `model`'s last layer's `w2` ([`Sites::last_w2`]).
    pub fn new<const L: usize>(model: &Model<'_, L>, config: LoraConfig) -> Result<Self> {
        Self::on(model, config, Sites::last_w2(&model.config))
    }

    /// A new adapter set on `sites`: `A` small seeded values, `B` zero (so it changes nothing
    /// yet). A rank outside 1..=[`MAX_RANK`] or a model wider than the limits is
    /// [`Error::Invalid`], a set larger than `P` parameters [`OVER_BUDGET`].
    pub fn on<const L: usize>(model: &Model<'_, L>, config: LoraConfig, sites: Sites) -> Result<Self> {
        let mut t = Self::EMPTY;
        t.reset(&model.config, config, sites)?;
        Ok(t)
    }

    /// [`Self::on`] in place (a board's trainer is too large to build on its stack and move):
    /// on an error the trainer is left as it was.
    pub fn reset(&mut self, c: &Config, config: LoraConfig, sites: Sites) -> Result<()> {
        if !(1..=MAX_RANK).contains(&config.rank) {
            return Err(Error::Invalid { what: "adapter rank outside 1-2" });
        }
        if c.hidden_dim > MAX_HIDDEN || c.dim > MAX_DIM || c.n_layers == 0 || c.n_layers > MAX_LAYERS {
            return Err(Error::Invalid {
                what: "model too wide for an adapter (dim 256, hidden 512, 64 layers at most)",
            });
        }
        if !(config.lr.is_finite() && config.lr > 0.0) {
            return Err(Error::Invalid { what: "adapter learning rate must be a positive number" });
        }
        // The default set (the last layer's w2) never reaches the attention; others do, and
        // their backward pass assumes heads of dim / n_heads.
        if c.head_dim > 0 && sites != Sites::last_w2(c) {
            return Err(Error::Unsupported {
                what: "adapters other than the last layer's w2 on a model whose attention heads were removed (not yet)",
            });
        }
        let dims = Dims::of(c);
        if sites.count() == 0 || (dims.n_layers < MAX_LAYERS && sites.layers >> dims.n_layers != 0) {
            return Err(Error::Invalid { what: "adapter layer outside the model" });
        }
        if !sites.position_local(&dims) && c.dim / c.n_heads.max(1) > MAX_HEAD {
            return Err(Error::Unsupported {
                what: "adapters below the last layer's w2 on heads of more than 64 values",
            });
        }
        self.int.set_shape(config.rank, sites, dims)?;
        (self.config, self.steps) = (config, 0);
        self.w.fill(0.0);
        self.m.fill(0.0);
        self.v.fill(0.0);
        self.grad.fill(0.0);
        // Each A: uniform in +-1/sqrt(inputs) from splitmix64 (the usual LoRA start).
        let (mut s, r, mut off) = (config.seed, config.rank, 0);
        for (_, t) in sites.iter() {
            let (n, m) = t.shape(&dims);
            let bound = 1.0 / libm::sqrtf(n as f32);
            for x in self.w[off..off + r * n].iter_mut() {
                s = s.wrapping_add(0x9E37_79B9_7F4A_7C15);
                let mut z = s;
                z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
                z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
                z ^= z >> 31;
                *x = ((z >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * bound;
            }
            off += r * (n + m);
        }
        self.requantize();
        Ok(())
    }

    /// A trainer that goes on from a saved adapter set (its int8 weights become the master
    /// copy; the optimizer starts afresh). `config.rank` is the adapter's.
    pub fn from_adapter<const L: usize, const Q: usize>(
        model: &Model<'_, L>,
        config: LoraConfig,
        adapter: &IntLora<Q>,
    ) -> Result<Self> {
        let mut t = Self::EMPTY;
        t.resume(&model.config, config, adapter)?;
        Ok(t)
    }

    /// [`Self::from_adapter`] in place; on an error the trainer is left as it was.
    pub fn resume<const Q: usize>(
        &mut self,
        c: &Config,
        config: LoraConfig,
        adapter: &IntLora<Q>,
    ) -> Result<()> {
        if adapter.dims != Dims::of(c) {
            return Err(Error::Invalid { what: "adapter shape does not match the model" });
        }
        self.reset(c, LoraConfig { rank: adapter.rank, ..config }, adapter.sites)?;
        let r = adapter.rank;
        for (i, rows) in row_spans(adapter.sites, &adapter.dims, r).enumerate() {
            for (j, (start, len)) in rows.enumerate() {
                let s = f32::from_bits(scale_bits(adapter.scales[2 * r * i + j]));
                for (x, &q) in self.w[start..start + len].iter_mut().zip(&adapter.w[start..start + len]) {
                    *x = q as f32 * s;
                }
            }
        }
        let np = adapter.params();
        self.int.w[..np].copy_from_slice(&adapter.w[..np]);
        let ns = 2 * r * adapter.sites.count();
        self.int.scales[..ns].copy_from_slice(&adapter.scales[..ns]);
        Ok(())
    }

    /// The adapter set as the forward pass applies it.
    pub fn adapter(&self) -> &IntLora<P> {
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

    /// f32 values of work buffer a step on `tokens` tokens needs ([`work_len`]).
    pub fn work_len<const L: usize>(&self, model: &Model<'_, L>, tokens: usize) -> usize {
        work_len(&model.config, self.int.sites, tokens)
    }

    /// Mean cross-entropy of `tokens` (each predicting the next) with the current adapter,
    /// without training.
    pub fn loss<const L: usize>(
        &mut self,
        model: &Model<'_, L>,
        state: &mut IntState<'_>,
        tokens: &[u32],
    ) -> Result<f32> {
        check_text(state, tokens)?;
        let mut sum = 0.0f64;
        for (pos, pair) in tokens.windows(2).enumerate() {
            let logits = state.forward_lora(model, pair[0], pos, Some(&self.int))?;
            sum += crate::infer::nll(logits, pair[1]);
        }
        Ok((sum / (tokens.len() - 1) as f64) as f32)
    }

    /// One training step on `tokens` (BOS first, at most the state's capacity) of the last
    /// layer's `w2` alone; other sets need [`Self::step_with`].
    pub fn step<const L: usize>(
        &mut self,
        model: &Model<'_, L>,
        state: &mut IntState<'_>,
        tokens: &[u32],
    ) -> Result<StepReport> {
        self.step_with(model, state, tokens, &mut [])
    }

    /// One training step on `tokens`: the loss before the update, and the update of every
    /// adapter. `work` holds at least [`Self::work_len`] values (else
    /// [`Error::BufferTooSmall`], nothing changed).
    pub fn step_with<const L: usize>(
        &mut self,
        model: &Model<'_, L>,
        state: &mut IntState<'_>,
        tokens: &[u32],
        work: &mut [f32],
    ) -> Result<StepReport> {
        check_text(state, tokens)?;
        if Dims::of(&model.config) != self.int.dims {
            return Err(Error::Invalid { what: "adapter made for another model shape" });
        }
        let need = self.work_len(model, tokens.len());
        let have = work.len();
        let work = work.get_mut(..need).ok_or(Error::BufferTooSmall { need, have })?;
        let np = self.int.params();
        self.grad[..np].fill(0.0);
        let loss = if need == 0 {
            self.run_local(model, state, tokens)?
        } else {
            self.run(model, state, tokens, work)?
        };
        let n = (tokens.len() - 1) as f32;
        // AdamW (beta 0.9 / 0.999, no weight decay: the adapter starts at no change).
        self.steps += 1;
        let t = self.steps as f32;
        let (b1, b2, eps) = (0.9f32, 0.999f32, 1e-8f32);
        let (c1, c2) = (1.0 - libm::powf(b1, t), 1.0 - libm::powf(b2, t));
        let lr = self.config.lr;
        for i in 0..np {
            let g = self.grad[i] / n;
            self.m[i] = b1 * self.m[i] + (1.0 - b1) * g;
            self.v[i] = b2 * self.v[i] + (1.0 - b2) * g * g;
            self.w[i] -= lr * (self.m[i] / c1) / (libm::sqrtf(self.v[i] / c2) + eps);
        }
        self.requantize();
        Ok(StepReport { loss: (loss / n as f64) as f32, tokens: tokens.len() - 1 })
    }

    /// The gradient of the last layer's `w2` alone, position by position right after its
    /// forward pass (nothing after it mixes positions). The summed loss.
    fn run_local<const L: usize>(
        &mut self,
        model: &Model<'_, L>,
        state: &mut IntState<'_>,
        tokens: &[u32],
    ) -> Result<f64> {
        let (d, r) = (self.int.dims, self.int.rank);
        let mut loss = 0.0f64;
        let (mut dy, mut hb) = ([0.0f32; MAX_DIM], [0.0f32; MAX_HIDDEN]);
        for (pos, pair) in tokens.windows(2).enumerate() {
            state.forward_lora(model, pair[0], pos, Some(&self.int))?;
            loss += head_grad(model, state, pair[1] as usize, &mut dy[..d.dim])?;
            for (h, &v) in hb.iter_mut().zip(state.lora_inputs().1) {
                *h = real(v);
            }
            let (n, m) = Target::W2.shape(&d);
            let np = r * (n + m);
            site_back(&self.w[..np], &mut self.grad[..np], r, n, m, &hb[..n], &dy[..d.dim], None);
        }
        Ok(loss)
    }

    /// The gradient of any set: the integer forward pass keeps the residual stream entering
    /// the lowest adapted layer and the gradient at the top; then layer by layer downwards,
    /// each recomputed in f32 from the residual stream entering it, back through its
    /// feed-forward block and attention into its adapters. The summed loss.
    fn run<const L: usize>(
        &mut self,
        model: &Model<'_, L>,
        state: &mut IntState<'_>,
        tokens: &[u32],
        work: &mut [f32],
    ) -> Result<f64> {
        let (d, sites) = (self.int.dims, self.int.sites);
        let (t, l0) = (tokens.len() - 1, sites.lowest());
        let layers = d.n_layers - l0;
        let (res, rest) = work.split_at_mut(t * d.dim * layers);
        let (dy, rest) = rest.split_at_mut(t * d.dim);
        let mut b = Buffers::carve(rest, &d, model.config.n_heads, t);
        let mut keep = [0i32; MAX_DIM];
        let mut loss = 0.0f64;
        for (pos, pair) in tokens.windows(2).enumerate() {
            state.forward_lora_keep(model, pair[0], pos, self.int.view(), l0, &mut keep[..d.dim])?;
            loss += head_grad(model, state, pair[1] as usize, &mut dy[pos * d.dim..(pos + 1) * d.dim])?;
            for (x, &v) in res[pos * d.dim..(pos + 1) * d.dim].iter_mut().zip(&keep) {
                *x = real(v);
            }
        }
        let f = Float { model, w: &self.w, rank: self.int.rank, sites, dims: d, t };
        let span = t * d.dim;
        for i in 0..layers - 1 {
            let (below, above) = res.split_at_mut((i + 1) * span);
            f.layer(l0 + i, &below[i * span..], &mut b, Some(&mut above[..span]))?;
        }
        for i in (0..layers).rev() {
            let x = &res[i * span..(i + 1) * span];
            f.layer(l0 + i, x, &mut b, None)?;
            f.back(l0 + i, x, &mut b, dy, &mut self.grad, i > 0)?;
        }
        Ok(loss)
    }

    /// The int8 copy of the master weights: one scale per row, `amax / 127`.
    fn requantize(&mut self) {
        let r = self.int.rank;
        for (i, rows) in row_spans(self.int.sites, &self.int.dims, r).enumerate() {
            for (j, (start, len)) in rows.enumerate() {
                self.int.scales[2 * r * i + j] =
                    quantize(&self.w[start..start + len], &mut self.int.w[start..start + len]);
            }
        }
    }
}

/// Per site, its rows as (offset, length): `A`'s `r` rows, then `B` transposed's `r` rows, in
/// the order of the site's scales.
fn row_spans(
    sites: Sites,
    d: &Dims,
    r: usize,
) -> impl Iterator<Item = impl Iterator<Item = (usize, usize)>> + '_ {
    let mut off = 0;
    sites.iter().map(move |(_, t)| {
        let ((n, m), at) = (t.shape(d), off);
        off += r * (n + m);
        (0..2 * r).map(move |j| if j < r { (at + j * n, n) } else { (at + r * n + (j - r) * m, m) })
    })
}

/// f32 values of work buffer a training step of the set `sites` on `tokens` tokens needs (0 for
/// the last layer's `w2` alone): the residual stream entering every layer from the lowest
/// adapted one, its gradient, and one layer's activations and their gradients, for each
/// position.
pub fn work_len(c: &Config, sites: Sites, tokens: usize) -> usize {
    let d = Dims::of(c);
    if sites.count() == 0 || sites.position_local(&d) {
        return 0;
    }
    let t = tokens.saturating_sub(1);
    let layers = d.n_layers.saturating_sub(sites.lowest());
    t * d.dim * (layers + 1) + Buffers::len(&d, c.n_heads, t)
}

/// Bytes a trainer of `P` parameters and its work buffer for `tokens` tokens hold.
pub fn training_bytes<const P: usize>(c: &Config, sites: Sites, tokens: usize) -> usize {
    core::mem::size_of::<LoraTrainer<P>>() + 4 * work_len(c, sites, tokens)
}

/// A training text: BOS and at least one token, within the state's context.
fn check_text(state: &IntState<'_>, tokens: &[u32]) -> Result<()> {
    if tokens.len() < 2 {
        return Err(Error::Invalid { what: "adapter text needs at least one token after BOS" });
    }
    if tokens.len() > state.seq_len() {
        return Err(Error::ContextFull { need: tokens.len(), capacity: state.seq_len() });
    }
    Ok(())
}

/// After a forward pass: the position's loss, and into `dy` the gradient of it with respect to
/// the final residual stream (through the classifier and the output RMSNorm).
fn head_grad<const L: usize>(
    model: &Model<'_, L>,
    state: &IntState<'_>,
    target: usize,
    dy: &mut [f32],
) -> Result<f64> {
    let d = dy.len();
    let (x, _, logits) = state.lora_inputs();
    // Softmax of the logits, in f64 for the sum.
    let max = logits.iter().fold(f32::NEG_INFINITY, |m, &l| m.max(real(l)));
    let sum: f64 = logits.iter().map(|&l| libm::exp((real(l) - max) as f64)).sum();
    let target_logit = logits.get(target).map_or(f32::NEG_INFINITY, |&l| real(l));
    // dL/d(normed state) = sum over the vocabulary of (p - onehot) times the row.
    let (mut row, mut dn) = ([0i32; MAX_DIM], [0.0f32; MAX_DIM]);
    for (v, &l) in logits.iter().enumerate() {
        let p = (libm::exp((real(l) - max) as f64) / sum) as f32;
        let dz = p - if v == target { 1.0 } else { 0.0 };
        state.classifier_row(model, v, &mut row[..d])?;
        for (g, &w) in dn[..d].iter_mut().zip(&row[..d]) {
            *g += dz * real(w);
        }
    }
    let mut xf = [0.0f32; MAX_DIM];
    for (f, &v) in xf.iter_mut().zip(x) {
        *f = real(v);
    }
    dy.fill(0.0);
    rmsnorm_back(dy, &xf[..d], model.output_norm, &dn[..d], model.config.norm_eps);
    Ok(libm::log(sum) + (max - target_logit) as f64)
}

/// Adds to `dx` the gradient through `y = x r w`, `r = 1 / sqrt(mean(x^2) + eps)`, of `dy`.
fn rmsnorm_back(dx: &mut [f32], x: &[f32], w: &[f32], dy: &[f32], eps: f32) {
    let d = x.len();
    let ms = x.iter().map(|&v| v * v).sum::<f32>() / d as f32 + eps;
    let rinv = 1.0 / libm::sqrtf(ms);
    let dot: f32 = (0..d).map(|i| w[i] * dy[i] * x[i]).sum();
    for i in 0..d {
        dx[i] += rinv * w[i] * dy[i] - x[i] * rinv * rinv * rinv / d as f32 * dot;
    }
}

/// One site's `out += B (A x)` with the master weights `w` (`A` rows, then `B` transposed).
fn site_fwd(w: &[f32], r: usize, n: usize, m: usize, x: &[f32], out: &mut [f32]) {
    let (a, bt) = w.split_at(r * n);
    for j in 0..r {
        let u: f32 = a[j * n..(j + 1) * n].iter().zip(x).map(|(a, v)| a * v).sum();
        for (o, b) in out.iter_mut().zip(&bt[j * m..(j + 1) * m]) {
            *o += b * u;
        }
    }
}

/// One site's backward pass: `dy` the gradient of its output, `x` its input; into `g` the
/// gradient of `A` and `B`, and into `dx` (when wanted) the adapter's share of the input's.
#[allow(clippy::too_many_arguments)]
fn site_back(
    w: &[f32],
    g: &mut [f32],
    r: usize,
    n: usize,
    m: usize,
    x: &[f32],
    dy: &[f32],
    mut dx: Option<&mut [f32]>,
) {
    let (a, bt) = w.split_at(r * n);
    let (ga, gb) = g.split_at_mut(r * n);
    for j in 0..r {
        let arow = &a[j * n..(j + 1) * n];
        let u: f32 = arow.iter().zip(x).map(|(a, v)| a * v).sum();
        let e: f32 = bt[j * m..(j + 1) * m].iter().zip(dy).map(|(b, g)| b * g).sum();
        for (g, &v) in ga[j * n..(j + 1) * n].iter_mut().zip(x) {
            *g += e * v;
        }
        for (g, &dv) in gb[j * m..(j + 1) * m].iter_mut().zip(dy) {
            *g += dv * u;
        }
        if let Some(dx) = dx.as_deref_mut() {
            for (d, &a) in dx.iter_mut().zip(arow) {
                *d += e * a;
            }
        }
    }
}

/// One layer's activations and their gradients for every position, carved from the work buffer.
struct Buffers<'w> {
    a: &'w mut [f32],
    q: &'w mut [f32],
    k: &'w mut [f32],
    v: &'w mut [f32],
    o: &'w mut [f32],
    x1: &'w mut [f32],
    b: &'w mut [f32],
    h1: &'w mut [f32],
    h3: &'w mut [f32],
    hb: &'w mut [f32],
    dh: &'w mut [f32],
    db: &'w mut [f32],
    dq: &'w mut [f32],
    dk: &'w mut [f32],
    dv: &'w mut [f32],
    da: &'w mut [f32],
    att: &'w mut [f32],
}

impl<'w> Buffers<'w> {
    /// Widths per position: (dim-wide, kv-wide, hidden-wide) buffers; plus the attention row.
    const WIDE: (usize, usize, usize) = (8, 4, 4);

    fn len(d: &Dims, heads: usize, t: usize) -> usize {
        let (nd, nk, nh) = Self::WIDE;
        t * (nd * d.dim + nk * d.kv_dim + nh * d.hidden) + heads * t
    }

    fn carve(mut w: &'w mut [f32], d: &Dims, heads: usize, t: usize) -> Buffers<'w> {
        let mut take = |n: usize| {
            let (head, rest) = core::mem::take(&mut w).split_at_mut(n);
            w = rest;
            head
        };
        let (dd, kv, h) = (t * d.dim, t * d.kv_dim, t * d.hidden);
        Buffers {
            a: take(dd),
            q: take(dd),
            k: take(kv),
            v: take(kv),
            o: take(dd),
            x1: take(dd),
            b: take(dd),
            h1: take(h),
            h3: take(h),
            hb: take(h),
            dh: take(h),
            db: take(dd),
            dq: take(dd),
            dk: take(kv),
            dv: take(kv),
            da: take(dd),
            att: take(heads * t),
        }
    }
}

/// The f32 recomputation of layers for the backward pass: the base weights dequantized row by
/// row from the image, the adapters' master weights, `t` positions.
struct Float<'a, 'm, const L: usize> {
    model: &'a Model<'m, L>,
    w: &'a [f32],
    rank: usize,
    sites: Sites,
    dims: Dims,
    t: usize,
}

impl<const L: usize> Float<'_, '_, L> {
    /// `outs = W ins (+ the adapter)` for every position: projection `p` of layer `l`.
    fn project(&self, l: usize, p: Target, ins: &[f32], outs: &mut [f32]) -> Result<()> {
        let (n, m) = p.shape(&self.dims);
        let mut row = [0i32; MAX_HIDDEN];
        let mut rf = [0.0f32; MAX_HIDDEN];
        for r in 0..m {
            IntState::weight_row(self.model, l, p, r, &mut row[..n])?;
            for (f, &v) in rf.iter_mut().zip(&row[..n]) {
                *f = real(v);
            }
            for (x, o) in ins.chunks_exact(n).zip(outs.chunks_exact_mut(m)) {
                o[r] = rf[..n].iter().zip(x).map(|(a, b)| a * b).sum();
            }
        }
        if let Some((_, off)) = locate(self.sites, &self.dims, self.rank, l, p) {
            let w = &self.w[off..off + self.rank * (n + m)];
            for (x, o) in ins.chunks_exact(n).zip(outs.chunks_exact_mut(m)) {
                site_fwd(w, self.rank, n, m, x, o);
            }
        }
        Ok(())
    }

    /// The gradient through projection `p` of layer `l` for every position: into `grad` its
    /// adapter's, and, with `dins`, added to `dins` the input's (`W^T dy` and the adapter's).
    fn project_back(
        &self,
        l: usize,
        p: Target,
        ins: &[f32],
        dys: &[f32],
        grad: &mut [f32],
        mut dins: Option<&mut [f32]>,
    ) -> Result<()> {
        let (n, m) = p.shape(&self.dims);
        if let Some((_, off)) = locate(self.sites, &self.dims, self.rank, l, p) {
            let np = self.rank * (n + m);
            let (w, g) = (&self.w[off..off + np], &mut grad[off..off + np]);
            for (i, (x, dy)) in ins.chunks_exact(n).zip(dys.chunks_exact(m)).enumerate() {
                let dx = dins.as_deref_mut().map(|d| &mut d[i * n..(i + 1) * n]);
                site_back(w, g, self.rank, n, m, x, dy, dx);
            }
        }
        let Some(dins) = dins else { return Ok(()) };
        let mut row = [0i32; MAX_HIDDEN];
        for r in 0..m {
            IntState::weight_row(self.model, l, p, r, &mut row[..n])?;
            for (dx, dy) in dins.chunks_exact_mut(n).zip(dys.chunks_exact(m)) {
                let g = dy[r];
                for (d, &w) in dx.iter_mut().zip(&row[..n]) {
                    *d += g * real(w);
                }
            }
        }
        Ok(())
    }

    /// Layer `l`'s forward pass over every position from the residual stream `x` entering it,
    /// keeping its activations in `b`; with `out`, the residual stream leaving it.
    fn layer(&self, l: usize, x: &[f32], b: &mut Buffers<'_>, out: Option<&mut [f32]>) -> Result<()> {
        let (d, c) = (&self.dims, &self.model.config);
        let layer = &self.model.layers[l];
        let hs = d.dim / c.n_heads;
        for (a, x) in b.a.chunks_exact_mut(d.dim).zip(x.chunks_exact(d.dim)) {
            reference::rmsnorm(a, x, layer.attn_norm, c.norm_eps);
        }
        self.project(l, Target::Wq, b.a, b.q)?;
        self.project(l, Target::Wk, b.a, b.k)?;
        self.project(l, Target::Wv, b.a, b.v)?;
        let mut tab = [0.0f32; MAX_HEAD];
        for pos in 0..self.t {
            reference::rope_table(&mut tab[..hs], pos, hs, c.rope_theta);
            reference::rope(&mut b.q[pos * d.dim..(pos + 1) * d.dim], &tab[..hs]);
            reference::rope(&mut b.k[pos * d.kv_dim..(pos + 1) * d.kv_dim], &tab[..hs]);
        }
        let shape = crate::kernels::AttnShape {
            head_size: hs,
            kv_dim: d.kv_dim,
            kv_mul: c.n_heads / c.n_kv_heads.max(1),
        };
        for pos in 0..self.t {
            let n = pos + 1;
            reference::attention_f32(
                &mut b.o[pos * d.dim..(pos + 1) * d.dim],
                &b.q[pos * d.dim..(pos + 1) * d.dim],
                &b.k[..n * d.kv_dim],
                &b.v[..n * d.kv_dim],
                &mut b.att[..c.n_heads * n],
                shape,
            );
        }
        self.project(l, Target::Wo, b.o, b.x1)?;
        for (x1, x) in b.x1.iter_mut().zip(x) {
            *x1 += x;
        }
        for (bn, x1) in b.b.chunks_exact_mut(d.dim).zip(b.x1.chunks_exact(d.dim)) {
            reference::rmsnorm(bn, x1, layer.ffn_norm, c.norm_eps);
        }
        self.project(l, Target::W1, b.b, b.h1)?;
        self.project(l, Target::W3, b.b, b.h3)?;
        for ((hb, &h1), &h3) in b.hb.iter_mut().zip(b.h1.iter()).zip(b.h3.iter()) {
            *hb = h1 / (1.0 + libm::expf(-h1)) * h3;
        }
        if let Some(out) = out {
            self.project(l, Target::W2, b.hb, out)?;
            for (o, x1) in out.iter_mut().zip(b.x1.iter()) {
                *o += x1;
            }
        }
        Ok(())
    }

    /// Layer `l`'s backward pass after [`Self::layer`] filled `b`: `dy` (the gradient of the
    /// residual stream leaving it, every position) becomes the gradient of the stream entering
    /// it when `need_dx`; the adapters' gradients are added into `grad`.
    fn back(
        &self,
        l: usize,
        x: &[f32],
        b: &mut Buffers<'_>,
        dy: &mut [f32],
        grad: &mut [f32],
        need_dx: bool,
    ) -> Result<()> {
        let (d, c) = (&self.dims, &self.model.config);
        let layer = &self.model.layers[l];
        let attn = need_dx || Target::ALL.iter().any(|&p| p.attention() && self.sites.has(l, p));
        let ffn_in = attn || self.sites.has(l, Target::W1) || self.sites.has(l, Target::W3);
        // The feed-forward block: y = x1 + W2 (silu(W1 b) * W3 b), b = norm(x1).
        b.dh.fill(0.0);
        self.project_back(l, Target::W2, b.hb, dy, grad, Some(b.dh))?;
        if !ffn_in {
            return Ok(());
        }
        for i in 0..b.dh.len() {
            let (h1, h3, g) = (b.h1[i], b.h3[i], b.dh[i]);
            let s = 1.0 / (1.0 + libm::expf(-h1));
            b.hb[i] = g * h1 * s; // d h3
            b.dh[i] = g * h3 * s * (1.0 + h1 * (1.0 - s)); // d h1
        }
        b.db.fill(0.0);
        let db = attn.then_some(&mut *b.db);
        self.project_back(l, Target::W1, b.b, b.dh, grad, db)?;
        let db = attn.then_some(&mut *b.db);
        self.project_back(l, Target::W3, b.b, b.hb, grad, db)?;
        if !attn {
            return Ok(());
        }
        for ((g, x1), db) in
            dy.chunks_exact_mut(d.dim).zip(b.x1.chunks_exact(d.dim)).zip(b.db.chunks_exact(d.dim))
        {
            rmsnorm_back(g, x1, layer.ffn_norm, db, c.norm_eps);
        }
        // Attention: x1 = x + Wo o, o = softmax(q k / sqrt(hs)) v per head.
        let dob = &mut *b.db;
        dob.fill(0.0);
        self.project_back(l, Target::Wo, b.o, dy, grad, Some(dob))?;
        let hs = d.dim / c.n_heads;
        let kv_mul = c.n_heads / c.n_kv_heads.max(1);
        let scale = 1.0 / libm::sqrtf(hs as f32);
        b.dq.fill(0.0);
        b.dk.fill(0.0);
        b.dv.fill(0.0);
        for pos in 0..self.t {
            for h in 0..c.n_heads {
                let koff = (h / kv_mul) * hs;
                let qh = &b.q[pos * d.dim + h * hs..pos * d.dim + (h + 1) * hs];
                let doh = &dob[pos * d.dim + h * hs..pos * d.dim + (h + 1) * hs];
                let p = &mut b.att[..pos + 1];
                for (u, s) in p.iter_mut().enumerate() {
                    let k = &b.k[u * d.kv_dim + koff..u * d.kv_dim + koff + hs];
                    *s = qh.iter().zip(k).map(|(a, b)| a * b).sum::<f32>() * scale;
                }
                reference::softmax(p);
                // dp_u = do . v_u; ds = p (dp - sum p dp).
                let mut dots = 0.0f32;
                for (u, &pu) in p.iter().enumerate() {
                    let v = &b.v[u * d.kv_dim + koff..u * d.kv_dim + koff + hs];
                    dots += pu * doh.iter().zip(v).map(|(a, b)| a * b).sum::<f32>();
                }
                for (u, &pu) in p.iter().enumerate() {
                    let at = u * d.kv_dim + koff;
                    let dp: f32 = doh.iter().zip(&b.v[at..at + hs]).map(|(a, b)| a * b).sum();
                    let ds = pu * (dp - dots) * scale;
                    for i in 0..hs {
                        b.dq[pos * d.dim + h * hs + i] += ds * b.k[at + i];
                        b.dk[at + i] += ds * qh[i];
                        b.dv[at + i] += pu * doh[i];
                    }
                }
            }
        }
        // Back through RoPE: the inverse rotation.
        let mut tab = [0.0f32; MAX_HEAD];
        for pos in 0..self.t {
            reference::rope_table(&mut tab[..hs], pos, hs, c.rope_theta);
            for cs in tab[..hs].chunks_exact_mut(2) {
                cs[1] = -cs[1];
            }
            reference::rope(&mut b.dq[pos * d.dim..(pos + 1) * d.dim], &tab[..hs]);
            reference::rope(&mut b.dk[pos * d.kv_dim..(pos + 1) * d.kv_dim], &tab[..hs]);
        }
        b.da.fill(0.0);
        let da = need_dx.then_some(&mut *b.da);
        self.project_back(l, Target::Wq, b.a, b.dq, grad, da)?;
        let da = need_dx.then_some(&mut *b.da);
        self.project_back(l, Target::Wk, b.a, b.dk, grad, da)?;
        let da = need_dx.then_some(&mut *b.da);
        self.project_back(l, Target::Wv, b.a, b.dv, grad, da)?;
        if need_dx {
            for ((g, x), da) in
                dy.chunks_exact_mut(d.dim).zip(x.chunks_exact(d.dim)).zip(b.da.chunks_exact(d.dim))
            {
                rmsnorm_back(g, x, layer.attn_norm, da, c.norm_eps);
            }
        }
        Ok(())
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
        self.trainer.reset(c, LoraConfig::default(), Sites::last_w2(c))?;
        (self.model, self.ready, self.on, self.unsaved) = (model, true, true, false);
        Ok(())
    }

    /// A fresh adapter of `rank` (on, changing nothing yet); on an error nothing changes.
    pub fn reset(&mut self, c: &crate::model::Config, rank: usize) -> Result<()> {
        self.require_ready()?;
        self.trainer.reset(c, LoraConfig { rank, ..LoraConfig::default() }, Sites::last_w2(c))?;
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
        let adapter = IntLora::<DEVICE_PARAMS>::read(file, self.model, c)?;
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
        if steps > 0 && self.trainer.work_len(model, tokens.len()) > 0 {
            return Err(Error::Unsupported {
                what: "this adapter set trains on the host only (ruvllm-esp32 lora train --layers ...)",
            });
        }
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
            layer: a.sites.lowest(),
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

#[cfg(all(test, feature = "std"))]
mod tests;
