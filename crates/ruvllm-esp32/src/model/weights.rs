//! Weights read in place from a GGUF image (zero-copy: on the chip they stay in flash).

use crate::error::{Error, Result};
use crate::gguf::{self, GgmlType, Gguf, TensorInfo, Value, ValueType};
use crate::infer::integer::sparse::SparseRows;
use crate::model::Config;
use crate::packed;
use crate::tokenizer::Vocab;

/// Most layers a [`Model`] can hold by default; firmware picks a smaller bound to save RAM.
pub const DEFAULT_MAX_LAYERS: usize = 64;

/// Metadata key of the optional fixed-point RoPE table the integer forward pass needs: an I32
/// array rather than a tensor, so other GGUF readers (llama.cpp) see exactly llama's tensors.
pub const ROPE_KEY: &str = "ruvllm.rope";
/// Fractional bits of that table: Q1.30 in i32, so cos 1.0 is exactly `1 << 30`.
pub const ROPE_FRAC: u32 = 30;
/// Metadata of an image cut to one pipeline node's layers (`federation::cut`): the model
/// layer its first layer is, and how many layers the whole model has.
pub const CUT_FIRST_KEY: &str = "ruvllm.cut.first";
pub const CUT_TOTAL_KEY: &str = "ruvllm.cut.layers";

/// Where an image cut to some layers sits in its whole model: its layers are the model's
/// `first..first + n_layers` of `total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cut {
    pub first: usize,
    pub total: usize,
}

/// Metadata of an image cut to one tensor-parallel node's shard (`federation::cut::shard`):
/// six U32 values, its query heads, KV heads and FFN rows as `[start, end)` pairs.
pub const SHARD_KEY: &str = "ruvllm.shard";

/// The part of every layer an image cut to a tensor-parallel shard holds: the rows of `wq`
/// (`heads`), `wk` and `wv` (`kv_heads`), `w1` and `w3` (`hidden`), and those columns of `wo`
/// and `w2`; numbered in the whole model, whose shape the config keeps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardCut {
    pub heads: core::ops::Range<usize>,
    pub kv_heads: core::ops::Range<usize>,
    pub hidden: core::ops::Range<usize>,
}

/// Bytes of one Q8_0 block (f16 scale, 32 int8 values).
const Q8_0_BYTES: usize = gguf::Q8_0_BYTES as usize;

/// Numeric format of a model's matrices (norms are always f32).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Precision {
    F32,
    /// Symmetric int8 with one f32 scale per group of `group` values along each row.
    Q8,
    /// Layer matrices ternary (2-bit codes, one f32 scale per row), embeddings q8.
    Ternary,
    /// Layer matrices binary (sign bits, one f32 scale per row), embeddings q8.
    Binary,
}

impl Precision {
    pub fn name(self) -> &'static str {
        match self {
            Precision::F32 => "f32",
            Precision::Q8 => "q8",
            Precision::Ternary => "ternary",
            Precision::Binary => "binary",
        }
    }

    /// Activations are quantized to int8 for the matmuls and the KV cache is int8 (every
    /// precision but f32).
    pub fn int8_activations(self) -> bool {
        self != Precision::F32
    }
}

/// A row-major `[rows][cols]` matrix.
#[derive(Debug, Clone, Copy)]
pub enum Matrix<'a> {
    F32 {
        w: &'a [f32],
        rows: usize,
        cols: usize,
    },
    Q8 {
        q: &'a [i8],
        s: &'a [f32],
        rows: usize,
        cols: usize,
    },
    /// GGUF's Q8_0: per row `cols / 32` blocks of [`Q8_0_BYTES`](gguf::Q8_0_BYTES) bytes, each an
    /// f16 scale then 32 int8 values. The same numbers as [`Matrix::Q8`] with groups of 32 and
    /// f16 scales, in the layout other GGUF readers (llama.cpp) compute with.
    Q8Block {
        b: &'a [u8],
        rows: usize,
        cols: usize,
    },
    /// A pruned q8 matrix as sparse rows ([`crate::infer::integer::sparse`]): only its non-zero
    /// codes, with the dense matrix's group scales `s` (`[rows][groups]`). The same numbers as
    /// [`Matrix::Q8`] with those codes; checked at load, so its kernels read it without a bounds
    /// failure.
    Sparse {
        m: SparseRows<'a>,
        s: &'a [f32],
    },
    /// [`crate::packed`] ternary rows (`ternary_row_bytes(cols)` bytes each), one scale per row.
    Ternary {
        q: &'a [u8],
        s: &'a [f32],
        rows: usize,
        cols: usize,
    },
    /// [`crate::packed`] binary rows (`binary_row_bytes(cols)` bytes each), one scale per row.
    Binary {
        q: &'a [u8],
        s: &'a [f32],
        rows: usize,
        cols: usize,
    },
}

impl<'a> Matrix<'a> {
    pub fn rows(&self) -> usize {
        match *self {
            Matrix::F32 { rows, .. }
            | Matrix::Q8 { rows, .. }
            | Matrix::Q8Block { rows, .. }
            | Matrix::Ternary { rows, .. }
            | Matrix::Binary { rows, .. } => rows,
            Matrix::Sparse { m, .. } => m.rows(),
        }
    }

    pub fn cols(&self) -> usize {
        match *self {
            Matrix::F32 { cols, .. }
            | Matrix::Q8 { cols, .. }
            | Matrix::Q8Block { cols, .. }
            | Matrix::Ternary { cols, .. }
            | Matrix::Binary { cols, .. } => cols,
            Matrix::Sparse { m, .. } => m.cols(),
        }
    }

    /// Bytes this matrix occupies in the image.
    pub fn bytes(&self) -> usize {
        match *self {
            Matrix::F32 { w, .. } => core::mem::size_of_val(w),
            Matrix::Q8 { q, s, .. } => q.len() + core::mem::size_of_val(s),
            Matrix::Q8Block { b, .. } => b.len(),
            Matrix::Sparse { m, s } => m.len() + core::mem::size_of_val(s),
            Matrix::Ternary { q, s, .. } | Matrix::Binary { q, s, .. } => q.len() + core::mem::size_of_val(s),
        }
    }

    /// Every float of the matrix is finite: its weights (f32) or its scales (the rest).
    pub fn is_finite(&self) -> bool {
        match *self {
            Matrix::F32 { w: v, .. }
            | Matrix::Q8 { s: v, .. }
            | Matrix::Sparse { s: v, .. }
            | Matrix::Ternary { s: v, .. }
            | Matrix::Binary { s: v, .. } => all_finite(v),
            // A half is infinite or NaN when its exponent bits are all set.
            Matrix::Q8Block { b, .. } => b.chunks_exact(Q8_0_BYTES).all(|k| k[1] & 0x7c != 0x7c),
        }
    }

    /// Copies row `r` into `out` as f32 (the embedding lookup).
    pub fn row_into(&self, r: usize, out: &mut [f32], group: usize) {
        match *self {
            Matrix::F32 { w, cols, .. } => out.copy_from_slice(&w[r * cols..(r + 1) * cols]),
            Matrix::Q8 { q, s, cols, .. } => {
                let ng = cols.div_ceil(group);
                crate::quant::dequantize_row(
                    &q[r * cols..(r + 1) * cols],
                    &s[r * ng..(r + 1) * ng],
                    out,
                    group,
                );
            }
            // `code as f32 * scale` of each kept code, as `dequantize_row` of the dense codes.
            Matrix::Sparse { m, s } => {
                let ng = m.cols().div_ceil(group);
                out[..m.cols()].fill(0.0);
                m.for_row(r, |c, v| out[c] = v as f32 * s[r * ng + c / group]);
            }
            Matrix::Q8Block { b, cols, .. } => {
                let row = &b[r * (cols / 32) * Q8_0_BYTES..(r + 1) * (cols / 32) * Q8_0_BYTES];
                for (o, k) in out.chunks_mut(32).zip(row.chunks_exact(Q8_0_BYTES)) {
                    let d = gguf::f16_to_f32(u16::from_le_bytes([k[0], k[1]]));
                    o.iter_mut().zip(&k[2..]).for_each(|(o, q)| *o = *q as i8 as f32 * d);
                }
            }
            // `code as f32 * scale`: exactly what `quant::project_row` gives.
            Matrix::Ternary { q, s, cols, .. } => {
                let row = &q[r * packed::ternary_row_bytes(cols)..];
                for (j, o) in out.iter_mut().enumerate().take(cols) {
                    *o = packed::ternary_at(row, j) as f32 * s[r];
                }
            }
            Matrix::Binary { q, s, cols, .. } => {
                let row = &q[r * packed::binary_row_bytes(cols)..];
                for (j, o) in out.iter_mut().enumerate().take(cols) {
                    *o = packed::binary_at(row, j) as f32 * s[r];
                }
            }
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub struct Layer<'a> {
    pub attn_norm: &'a [f32],
    pub wq: Matrix<'a>,
    pub wk: Matrix<'a>,
    pub wv: Matrix<'a>,
    pub wo: Matrix<'a>,
    pub ffn_norm: &'a [f32],
    /// SwiGLU gate (llama2.c's w1).
    pub w1: Matrix<'a>,
    /// Down projection (w2).
    pub w2: Matrix<'a>,
    /// Up projection (w3).
    pub w3: Matrix<'a>,
}

/// A llama-architecture model whose weights borrow the GGUF image.
#[derive(Debug, Clone)]
pub struct Model<'a, const MAX_LAYERS: usize = DEFAULT_MAX_LAYERS> {
    pub config: Config,
    pub precision: Precision,
    /// Quantization group size (meaningful for [`Precision::Q8`]).
    pub group: usize,
    pub token_embd: Matrix<'a>,
    pub layers: heapless::Vec<Layer<'a>, MAX_LAYERS>,
    pub output_norm: &'a [f32],
    /// The classifier: the embedding table itself when shared.
    pub output: Matrix<'a>,
    pub vocab: Vocab<'a>,
    /// [`ROPE_KEY`]: `[seq_len][head_size / 2]` pairs `(cos, sin)` in Q1.30, computed on the
    /// host in f64. Only the integer path reads it; images written before it existed lack it.
    pub rope: Option<RopeTable<'a>>,
    /// The image's checksum was present and verified.
    pub checksum_verified: bool,
    /// Set when the image holds only some layers of a model (one pipeline node's): it runs
    /// only as that node, never alone.
    pub cut: Option<Cut>,
    /// Set when the image holds only one tensor-parallel shard of every layer: its matrices
    /// are that shard's rows and columns; it runs only as that node, never alone.
    pub shard: Option<ShardCut>,
}

impl<'a, const MAX_LAYERS: usize> Model<'a, MAX_LAYERS> {
    /// Reads a model written by `convert` (or any llama GGUF whose matrices are F32). The
    /// checksum, when present, is verified: a corrupt image is refused.
    pub fn from_gguf(bytes: &'a [u8]) -> Result<Self> {
        let g = Gguf::parse(bytes)?;
        let checksum_verified = g.verify_checksum()?;
        Self::from_parsed(&g, checksum_verified)
    }

    /// As [`Model::from_gguf`] but without reading the whole image for its checksum: for a
    /// chip that verified it once at boot. Every f32 (weights, scales, norms) is still checked
    /// to be finite, once here and never per token.
    pub fn from_gguf_unverified(bytes: &'a [u8]) -> Result<Self> {
        Self::from_parsed(&Gguf::parse(bytes)?, false)
    }

    fn from_parsed(g: &Gguf<'a>, checksum_verified: bool) -> Result<Self> {
        if g.get_str("general.architecture")? != "llama" {
            return Err(Error::Unsupported { what: "architecture other than llama" });
        }
        let u = |k: &'static str| g.get_u32(k).map(|v| v as usize);
        let dim = u("llama.embedding_length")?;
        let n_heads = u("llama.attention.head_count")?;
        let tokens = g.get_array("tokenizer.ggml.tokens")?;
        let config = Config {
            dim,
            hidden_dim: u("llama.feed_forward_length")?,
            n_layers: u("llama.block_count")?,
            n_heads,
            n_kv_heads: g.get_u32("llama.attention.head_count_kv").map(|v| v as usize).unwrap_or(n_heads),
            head_dim: crate::model::config::head_dim_from(
                opt_u32(g, crate::model::config::KEY_LENGTH)?,
                opt_u32(g, crate::model::config::VALUE_LENGTH)?,
                dim,
                n_heads,
            )?,
            vocab_size: tokens.len,
            seq_len: u("llama.context_length")?,
            shared_classifier: g.tensor("output.weight").is_none(),
            norm_eps: g.get_f32("llama.attention.layer_norm_rms_epsilon").unwrap_or(1e-5),
            rope_theta: g.get_f32("llama.rope.freq_base").unwrap_or(10000.0),
        };
        config.validate()?;
        if config.n_layers > MAX_LAYERS {
            return Err(Error::Unsupported { what: "more layers than this build's MAX_LAYERS" });
        }
        if let Ok(rot) = g.get_u32("llama.rope.dimension_count") {
            if rot as usize != config.head_size() {
                return Err(Error::Unsupported { what: "partial rotary embedding" });
            }
        }
        let group = g.get_u32("ruvllm.quant.group_size").map(|v| v as usize).unwrap_or(crate::quant::GROUP);
        if group == 0 || group > 4096 {
            return Err(Error::Invalid { what: "quantization group size" });
        }
        let token_embd = matrix(g, "token_embd.weight", config.vocab_size, dim, group)?;
        let (d, h, kv) = (dim, config.hidden_dim, config.kv_dim());
        // The layers' format decides (ternary and binary images keep q8 embeddings).
        let mut name = heapless::String::<64>::new();
        layer_name(&mut name, 0, "attn_q.weight")?;
        let precision = match shard_of(g, &config)? {
            Some(c) if c.heads.is_empty() => {
                layer_name(&mut name, 0, "ffn_gate.weight")?;
                precision_of(&matrix(g, &name, c.hidden.len(), d, group)?)
            }
            Some(c) => precision_of(&matrix(g, &name, c.heads.len() * config.head_size(), d, group)?),
            None => precision_of(&matrix(g, &name, config.q_dim(), d, group)?),
        };
        if matches!(precision, Precision::Ternary | Precision::Binary) {
            if !group.is_multiple_of(8) {
                return Err(Error::Unsupported {
                    what: "packed weights with a group size not a multiple of 8",
                });
            }
            if !matches!(token_embd, Matrix::Q8 { .. }) {
                return Err(Error::Unsupported { what: "ternary/binary layers without q8 embeddings" });
            }
        } else {
            same_precision(&token_embd, precision)?;
        }
        let shard = shard_of(g, &config)?;
        // A shard's matrices: its heads' and rows' part (a whole model's otherwise).
        let hs = config.head_size();
        let (q, kv, h) = match &shard {
            Some(c) => (c.heads.len() * hs, c.kv_heads.len() * hs, c.hidden.len()),
            None => (config.q_dim(), kv, h),
        };
        let mut layers = heapless::Vec::new();
        for l in 0..config.n_layers {
            let mut m = |suffix: &str, rows: usize, cols: usize| -> Result<Matrix<'a>> {
                // A shard holding no heads (or no FFN rows) has no such matrices at all.
                if rows == 0 || cols == 0 {
                    return Ok(Matrix::Q8 { q: &[], s: &[], rows, cols });
                }
                layer_name(&mut name, l, suffix)?;
                let m = matrix(g, &name, rows, cols, group)?;
                same_precision(&m, precision)?;
                Ok(m)
            };
            let wq = m("attn_q.weight", q, d)?;
            let wk = m("attn_k.weight", kv, d)?;
            let wv = m("attn_v.weight", kv, d)?;
            let wo = m("attn_output.weight", d, q)?;
            let w1 = m("ffn_gate.weight", h, d)?;
            let w2 = m("ffn_down.weight", d, h)?;
            let w3 = m("ffn_up.weight", h, d)?;
            layer_name(&mut name, l, "attn_norm.weight")?;
            let attn_norm = vector(g, &name, d)?;
            layer_name(&mut name, l, "ffn_norm.weight")?;
            let ffn_norm = vector(g, &name, d)?;
            let layer = Layer { attn_norm, wq, wk, wv, wo, ffn_norm, w1, w2, w3 };
            for (tensor, v) in LAYER_TENSORS.into_iter().zip([attn_norm, ffn_norm]) {
                check_finite(v, tensor, Some(l))?;
            }
            for (tensor, m) in LAYER_TENSORS[2..].iter().zip([wq, wk, wv, wo, w1, w2, w3]) {
                check_matrix(&m, tensor, Some(l))?;
            }
            layers.push(layer).map_err(|_| Error::Unsupported { what: "too many layers" })?;
        }
        check_matrix(&token_embd, "token_embd.weight", None)?;
        let output = if config.shared_classifier {
            token_embd
        } else {
            let m = matrix(g, "output.weight", config.vocab_size, d, group)?;
            same_precision(&m, if precision.int8_activations() { Precision::Q8 } else { precision })?;
            check_matrix(&m, "output.weight", None)?;
            m
        };
        let output_norm = vector(g, "output_norm.weight", d)?;
        check_finite(output_norm, "output_norm.weight", None)?;
        let scores = g.get_array("tokenizer.ggml.scores")?;
        let index = g.get_array("ruvllm.tokenizer.index").map_err(|_| Error::Missing {
            what: "ruvllm.tokenizer.index (convert the model with `ruvllm-esp32 convert`)",
        })?;
        let vocab = Vocab::new(
            config.vocab_size,
            tokens.payload,
            scores.payload,
            index.payload,
            g.get_u32("tokenizer.ggml.bos_token_id").unwrap_or(1),
            g.get_u32("tokenizer.ggml.eos_token_id").unwrap_or(2),
        )?;
        Ok(Model {
            config,
            precision,
            group,
            token_embd,
            layers,
            output_norm,
            output,
            vocab,
            rope: rope_table(g, &config)?,
            checksum_verified,
            cut: cut_of(g, config.n_layers)?,
            shard,
        })
    }

    /// Bytes of weights by kind: (f32 bytes, int8 bytes incl. their scales).
    pub fn weight_bytes(&self) -> usize {
        let mut total = self.token_embd.bytes() + self.output_norm.len() * 4;
        for l in &self.layers {
            total += (l.attn_norm.len() + l.ffn_norm.len()) * 4;
            for m in [l.wq, l.wk, l.wv, l.wo, l.w1, l.w2, l.w3] {
                total += m.bytes();
            }
        }
        if !self.config.shared_classifier {
            total += self.output.bytes();
        }
        total
    }
}

/// The RoPE table read in place from its metadata array: little-endian i32 values,
/// `head_size` per position. A metadata array has no alignment, so values are read bytewise.
#[derive(Clone, Copy, Debug)]
pub struct RopeTable<'a> {
    bytes: &'a [u8],
    per_pos: usize,
}

impl<'a> RopeTable<'a> {
    /// Position `pos`'s `(cos, sin)` pairs as 8 bytes each; empty past the table's end.
    pub fn at(&self, pos: usize) -> &'a [u8] {
        let start = pos.saturating_mul(self.per_pos);
        self.bytes.get(start..start.saturating_add(self.per_pos)).unwrap_or(&[])
    }
}

/// The optional RoPE table, checked against the config so per-token code can index it freely.
fn rope_table<'a>(g: &Gguf<'a>, c: &Config) -> Result<Option<RopeTable<'a>>> {
    let Some(v) = g.get(ROPE_KEY) else {
        return Ok(None);
    };
    let hs = c.head_size();
    match v {
        Value::Array(a) if a.elem == ValueType::I32 && Some(a.len) == c.seq_len.checked_mul(hs) => {
            Ok(Some(RopeTable { bytes: a.payload, per_pos: hs * 4 }))
        }
        _ => Err(Error::Invalid { what: "ruvllm.rope: not context length x head size I32 values" }),
    }
}

/// A layer's tensors (llama.cpp names after `blk.{i}.`): the norms, then the matrices in the
/// order wq, wk, wv, wo, w1 (gate), w2 (down), w3 (up).
pub(crate) const LAYER_TENSORS: [&str; 9] = [
    "attn_norm.weight",
    "ffn_norm.weight",
    "attn_q.weight",
    "attn_k.weight",
    "attn_v.weight",
    "attn_output.weight",
    "ffn_gate.weight",
    "ffn_down.weight",
    "ffn_up.weight",
];

/// Refuses a tensor with a NaN or infinite value (`tensor` is its llama.cpp name, without the
/// `blk.{layer}.` prefix of a layer's), so no damaged weight reaches the forward pass.
/// Whether every value is finite: chunks checked whole (no exit inside one), so the check
/// vectorizes; a model's megabyte of f32 weights is checked at every load.
pub(crate) fn all_finite(v: &[f32]) -> bool {
    // The same loop on 512-bit registers where the CPU has them (the check was some 5% of a
    // short `gen`'s time on 128-bit ones).
    #[cfg(all(target_arch = "x86_64", feature = "std"))]
    if std::is_x86_feature_detected!("avx512f") {
        // SAFETY: the CPU has AVX-512F.
        return unsafe { all_finite_avx512(v) };
    }
    all_finite_any(v)
}

#[inline(always)]
fn all_finite_any(v: &[f32]) -> bool {
    v.chunks(256).all(|c| c.iter().fold(true, |ok, x| ok & x.is_finite()))
}

#[cfg(all(target_arch = "x86_64", feature = "std"))]
#[target_feature(enable = "avx512f")]
unsafe fn all_finite_avx512(v: &[f32]) -> bool {
    all_finite_any(v)
}

pub(crate) fn check_finite(v: &[f32], tensor: &'static str, layer: Option<usize>) -> Result<()> {
    if all_finite(v) {
        Ok(())
    } else {
        Err(Error::NonFinite { tensor, layer })
    }
}

fn check_matrix(m: &Matrix<'_>, tensor: &'static str, layer: Option<usize>) -> Result<()> {
    if m.is_finite() {
        Ok(())
    } else {
        Err(Error::NonFinite { tensor, layer })
    }
}

fn layer_name(name: &mut heapless::String<64>, l: usize, suffix: &str) -> Result<()> {
    use core::fmt::Write;
    name.clear();
    write!(name, "blk.{l}.{suffix}").map_err(|_| Error::Invalid { what: "tensor name too long" })
}

fn precision_of(m: &Matrix<'_>) -> Precision {
    match m {
        Matrix::F32 { .. } => Precision::F32,
        Matrix::Q8 { .. } | Matrix::Q8Block { .. } | Matrix::Sparse { .. } => Precision::Q8,
        Matrix::Ternary { .. } => Precision::Ternary,
        Matrix::Binary { .. } => Precision::Binary,
    }
}

fn same_precision(m: &Matrix<'_>, p: Precision) -> Result<()> {
    if precision_of(m) == p {
        Ok(())
    } else {
        Err(Error::Unsupported { what: "matrices of mixed precision" })
    }
}

fn tensor<'a>(g: &Gguf<'a>, name: &str) -> Result<TensorInfo<'a>> {
    g.tensor(name).ok_or(Error::Missing { what: "a weight tensor (token_embd, blk.N.*, output_norm)" })
}

fn check_dims(t: &TensorInfo<'_>, dims: &[usize]) -> Result<()> {
    let matches =
        t.n_dims <= 4 && t.dims.iter().enumerate().all(|(i, d)| *d == dims.get(i).map_or(1, |v| *v as u64));
    if matches {
        Ok(())
    } else {
        Err(Error::Invalid { what: "tensor shape does not match the model config" })
    }
}

fn vector<'a>(g: &Gguf<'a>, name: &str, n: usize) -> Result<&'a [f32]> {
    let t = tensor(g, name)?;
    check_dims(&t, &[n])?;
    if t.ty != GgmlType::F32 {
        return Err(Error::Unsupported { what: "norm weights that are not F32" });
    }
    gguf::as_f32(t.data)
}

/// GGUF stores a `[rows][cols]` matrix with ne0 = cols. Int8 matrices come with a
/// `<name>.scale` F32 tensor of `[rows][groups(cols)]`.
///
/// Ternary and binary matrices have no `<name>` tensor (so no other reader takes their bytes for
/// weights): `<name>.tern` / `<name>.bin` hold the packed rows ([`crate::packed`]) as I8 of dims
/// `[row bytes, rows]`, and `<name>.scale` one F32 per row, dims `[1, rows]`.
fn matrix<'a>(g: &Gguf<'a>, name: &str, rows: usize, cols: usize, group: usize) -> Result<Matrix<'a>> {
    let suffixed = |suffix: &str| -> Result<heapless::String<72>> {
        let mut s = heapless::String::<72>::new();
        s.push_str(name)
            .and_then(|_| s.push_str(suffix))
            .map_err(|_| Error::Invalid { what: "tensor name too long" })?;
        Ok(s)
    };
    if g.tensor(name).is_none() {
        if let Some(t) = g.tensor(&suffixed(SPARSE_SUFFIX)?) {
            return sparse_matrix(g, &t, &suffixed(".scale")?, rows, cols, group);
        }
        for (suffix, ternary) in [(".tern", true), (".bin", false)] {
            let Some(t) = g.tensor(&suffixed(suffix)?) else { continue };
            let stride =
                if ternary { packed::ternary_row_bytes(cols) } else { packed::binary_row_bytes(cols) };
            check_dims(&t, &[stride, rows])?;
            if t.ty != GgmlType::I8 {
                return Err(Error::Invalid { what: "packed ternary/binary weights that are not I8 bytes" });
            }
            let st = g
                .tensor(&suffixed(".scale")?)
                .ok_or(Error::Missing { what: "the .scale tensor of a ternary/binary matrix" })?;
            check_dims(&st, &[1, rows])?;
            if st.ty != GgmlType::F32 {
                return Err(Error::Invalid { what: "ternary/binary scales that are not F32" });
            }
            let (q, s) = (t.data, gguf::as_f32(st.data)?);
            return if ternary {
                packed::validate_ternary(q, rows, cols)?;
                Ok(Matrix::Ternary { q, s, rows, cols })
            } else {
                packed::validate_binary(q, rows, cols)?;
                Ok(Matrix::Binary { q, s, rows, cols })
            };
        }
    }
    let t = tensor(g, name)?;
    check_dims(&t, &[cols, rows])?;
    match t.ty {
        GgmlType::F32 => Ok(Matrix::F32 { w: gguf::as_f32(t.data)?, rows, cols }),
        GgmlType::I8 => {
            let sname = suffixed(".scale")?;
            let st =
                g.tensor(&sname).ok_or(Error::Missing { what: "the .scale tensor of an int8 matrix" })?;
            check_dims(&st, &[cols.div_ceil(group), rows])?;
            if st.ty != GgmlType::F32 {
                return Err(Error::Invalid { what: "int8 scales that are not F32" });
            }
            Ok(Matrix::Q8 { q: gguf::as_i8(t.data), s: gguf::as_f32(st.data)?, rows, cols })
        }
        // The activation is quantized in the image's groups, which must be Q8_0's blocks.
        GgmlType::Q8_0 if group != 32 => Err(Error::Unsupported {
            what: "Q8_0 weights in an image whose quantization groups are not 32 (ruvllm.quant.group_size)",
        }),
        // The parser checked the bytes against the element count; rows must be whole blocks.
        GgmlType::Q8_0 if cols.is_multiple_of(32) => Ok(Matrix::Q8Block { b: t.data, rows, cols }),
        GgmlType::Q8_0 => Err(Error::Unsupported {
            what: "Q8_0 tensor whose rows are not whole blocks of 32 (the engine reads F32, Q8_0 with rows of 32k, and its own int8)",
        }),
        _ => Err(Error::Unsupported {
            what: "tensor type (the engine reads F32, Q8_0 and its own int8; convert F16 and k-quant files first)",
        }),
    }
}

/// The image's [`ShardCut`], if it is one; a shard whose ranges fall outside the model, or
/// whose heads are not its KV heads' queries, is refused.
fn shard_of(g: &Gguf<'_>, c: &crate::model::Config) -> Result<Option<ShardCut>> {
    let Some(v) = g.get(SHARD_KEY) else { return Ok(None) };
    let bad = Error::Invalid { what: "ruvllm.shard: not six U32 values of ranges inside the model" };
    let Value::Array(a) = v else { return Err(bad) };
    if a.len != 6 {
        return Err(bad);
    }
    let mut r = [0usize; 6];
    for (i, x) in r.iter_mut().enumerate() {
        *x = a.u32_at(i).ok_or(bad)? as usize;
    }
    let (heads, kv_heads, hidden) = (r[0]..r[1], r[2]..r[3], r[4]..r[5]);
    let kv_mul = c.n_heads / c.n_kv_heads.max(1);
    let ok = heads.start <= heads.end
        && kv_heads.start <= kv_heads.end
        && hidden.start <= hidden.end
        && kv_heads.end <= c.n_kv_heads
        && hidden.end <= c.hidden_dim
        && heads == (kv_heads.start * kv_mul..kv_heads.end * kv_mul)
        && !(heads.is_empty() && hidden.is_empty());
    if !ok {
        return Err(bad);
    }
    Ok(Some(ShardCut { heads, kv_heads, hidden }))
}

/// An optional u32 key: absent is `None`, present with another type an error.
fn opt_u32(g: &Gguf<'_>, key: &'static str) -> Result<Option<u32>> {
    match g.get_u32(key) {
        Ok(v) => Ok(Some(v)),
        Err(Error::Missing { .. }) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Suffix of a sparse matrix's tensor (`<name>.sparse`, which replaces `<name>`).
pub const SPARSE_SUFFIX: &str = ".sparse";

/// `<name>.sparse`: I8 bytes of one dimension, the encoding of
/// [`crate::infer::integer::sparse`], with the dense matrix's `<name>.scale` (F32
/// `[groups, rows]`). Every count and column is checked here.
fn sparse_matrix<'a>(
    g: &Gguf<'a>,
    t: &TensorInfo<'a>,
    scale: &str,
    rows: usize,
    cols: usize,
    group: usize,
) -> Result<Matrix<'a>> {
    if t.ty != GgmlType::I8 || t.n_dims != 1 {
        return Err(Error::Invalid { what: "sparse rows that are not one dimension of I8 bytes" });
    }
    if group > crate::infer::integer::sparse::MAX_GROUP {
        return Err(Error::Unsupported { what: "sparse rows in quantization groups over 255" });
    }
    let st = g.tensor(scale).ok_or(Error::Missing { what: "the .scale tensor of a sparse matrix" })?;
    check_dims(&st, &[cols.div_ceil(group), rows])?;
    if st.ty != GgmlType::F32 {
        return Err(Error::Invalid { what: "sparse-row scales that are not F32" });
    }
    let m = SparseRows::new(t.data, rows, cols, group)?;
    Ok(Matrix::Sparse { m, s: gguf::as_f32(st.data)? })
}

/// The image's [`Cut`], if it is one; a cut whose layers fall outside its model is refused.
fn cut_of(g: &Gguf<'_>, n_layers: usize) -> Result<Option<Cut>> {
    let (Some(first), Some(total)) = (g.get(CUT_FIRST_KEY), g.get(CUT_TOTAL_KEY)) else {
        if g.get(CUT_FIRST_KEY).is_some() || g.get(CUT_TOTAL_KEY).is_some() {
            return Err(Error::Invalid { what: "a cut image needs both ruvllm.cut keys" });
        }
        return Ok(None);
    };
    let (Some(first), Some(total)) = (first.as_u32(), total.as_u32()) else {
        return Err(Error::Invalid { what: "ruvllm.cut keys must be integers" });
    };
    let (first, total) = (first as usize, total as usize);
    if first.checked_add(n_layers).is_none_or(|end| end > total) {
        return Err(Error::Invalid { what: "a cut image's layers fall outside its model" });
    }
    Ok(Some(Cut { first, total }))
}
