//! Host-side model loading (llama2.c checkpoints, llama2.c tokenizers, GGUF) into plain f32
//! tensors, and conversion to the engine's GGUF layout.
//!
//! Every loader checks the sizes a header announces against the input length before it
//! allocates, so a corrupt or hostile file costs at most a few times its own size in memory; the
//! context length, which no file bounds, is checked against the weights
//! ([`Config::validate`]). Loaders and [`HostModel::to_gguf`] refuse NaN or infinite weights.
//!
//! # Engine GGUF layout (written by [`HostModel::to_gguf`])
//!
//! * Metadata: `general.architecture` = "llama", `general.name`, `llama.context_length`,
//!   `llama.embedding_length`, `llama.block_count`, `llama.feed_forward_length`,
//!   `llama.attention.head_count`, `llama.attention.head_count_kv`,
//!   `llama.rope.dimension_count` (= head size), `llama.attention.layer_norm_rms_epsilon` and
//!   `llama.rope.freq_base` (f32), `llama.vocab_size`, `ruvllm.quant` ("f32" | "q8" | "ternary" | "binary"),
//!   `ruvllm.quant.group_size`, `general.alignment` (32) and `ruvllm.checksum` (CRC-32 of the
//!   whole image but the value itself: the rule is in the `gguf` module docs), and `ruvllm.rope`,
//!   an I32 array of
//!   `seq_len * head_size` values: per position its `head_size / 2` pairs `(cos, sin)` of the
//!   rotation angles in Q1.30, for the integer forward pass. It is metadata, not a tensor, so
//!   llama.cpp (which refuses unexpected tensors) loads the f32 and Q8_0 files.
//! * Tensors (llama.cpp names, dims ne0 = columns = in-features, ne1 = rows): `token_embd`,
//!   `blk.{i}.attn_norm|attn_q|attn_k|attn_v|attn_output|ffn_norm|ffn_gate|ffn_down|ffn_up`,
//!   `output_norm`, and `output` only when the classifier is not shared; all `.weight`.
//!   Norms are F32. With [`Quant::Q8`] each matrix is an I8 tensor plus `<name>.scale`, F32 of
//!   dims `[ceil(cols / GROUP), rows]`: groups run along each row and never cross rows.
//! * With [`Quant::Ternary`] / [`Quant::Binary`] (`ruvllm.quant` "ternary" / "binary"),
//!   `token_embd` and `output` are stored as with q8 (embeddings stay high precision, as in
//!   BitNet) and each layer matrix (`attn_q|attn_k|attn_v|attn_output|ffn_gate|ffn_down|ffn_up`)
//!   has no `<name>` tensor at all, so no GGUF reader takes packed bytes for weights. Instead:
//!   - `<name>.tern` (ternary) or `<name>.bin` (binary): I8 of dims `[row_bytes, rows]`, the
//!     packed codes row by row, `row_bytes = ceil(cols / 4)` (ternary, 2 bits a weight) or
//!     `ceil(cols / 8)` (binary, 1 bit). Weight `j` of a row sits in byte `j / 4` at bit
//!     `2 (j % 4)` (ternary: `00` = 0, `01` = +1, `10` = -1, `11` invalid) or in byte `j / 8` at
//!     bit `j % 8` (binary: `0` = +1, `1` = -1). Padding bits at a row's end are zero.
//!   - `<name>.scale`: F32 of dims `[1, rows]`, the row's scale `quant::absmean(row)`.
//!
//!   A weight's value is `code * scale`, bit for bit [`quant::project_row`] of the f32 row
//!   (codes from [`quant::ternary_code`] / [`quant::binary_code`]). The loader refuses a wrong
//!   size, a `11` code or non-zero padding with a typed error. Convert a QAT model from its
//!   latent f32 weights: already-projected binary rows convert to themselves, but a projected
//!   ternary row's mean |w| is smaller than its scale (zeros count), so it would be re-scaled.
//! * Sparse rows ([`HostModel::to_gguf_sparse`], `convert --prune S` without `--dense`): a q8
//!   block matrix whose int8 codes are at least
//!   [`BREAK_EVEN`](crate::infer::integer::sparse::BREAK_EVEN)% zero has no `<name>` tensor;
//!   `<name>.sparse`, I8 of one dimension, holds the encoding of
//!   [`sparse`](crate::infer::integer::sparse) (per row and group of 32: a count byte, then
//!   (column in the group, code) pairs), and `<name>.scale` the dense matrix's group scales (F32
//!   `[groups, rows]`; for an image of Q8_0 blocks, their f16 scales as f32). The codes and
//!   scales are those the dense image would hold, so both compute the same numbers.
//!   `ruvllm.sparse` (u32) counts such matrices; without any, neither it nor a sparse tensor is
//!   written and the image is [`HostModel::to_gguf`]'s. Other GGUF readers (llama.cpp) do not
//!   read these tensors.
//! * Tokenizer: `tokenizer.ggml.model` = "llama", `.tokens` (piece bytes in SentencePiece's
//!   convention: a space is U+2581, llama2.c's BOS/EOS pieces are `<s>`/`</s>`), `.scores`, `.token_type` (2 unknown, 3 BOS/EOS, 6 `<0xHH>`, 1
//!   otherwise), `.bos_token_id`, `.eos_token_id`, `ruvllm.tokenizer.max_token_length`, and
//!   `ruvllm.tokenizer.index` (u32 x 2n): `[0, n)` byte offset of token i's u64 length prefix
//!   in the tokens array payload, `[n, 2n)` token ids sorted by piece bytes (ties by id).

mod from_gguf;
mod llama2c;

use alloc::format;
use alloc::vec;
use alloc::vec::Vec;

pub use from_gguf::load_gguf;
pub use llama2c::{llama2c_group, load_llama2c, load_tokenizer_bin, to_llama2c_q8};

use crate::error::{Error, Result};
use crate::gguf::{GgmlType, GgufWriter};
use crate::model::Config;
use crate::packed;
use crate::quant;
use crate::tokenizer::{Vocab, SPACE_MARK};

/// One transformer block, matrices row-major `[out][in]` as in llama2.c.
#[derive(Clone, Debug, PartialEq)]
pub struct HostLayer {
    pub attn_norm: Vec<f32>,
    pub wq: Vec<f32>,
    pub wk: Vec<f32>,
    pub wv: Vec<f32>,
    pub wo: Vec<f32>,
    pub ffn_norm: Vec<f32>,
    /// Gate projection.
    pub w1: Vec<f32>,
    /// Down projection.
    pub w2: Vec<f32>,
    /// Up projection.
    pub w3: Vec<f32>,
}

/// A SentencePiece-style vocabulary with plain spaces in its pieces, as llama2.c's
/// tokenizer.bin stores it, and BOS/EOS named `<s>`/`</s>` as SentencePiece names them (GGUF
/// files mark spaces with U+2581: [`HostModel::to_gguf`] and the loaders translate).
#[derive(Clone, Debug, PartialEq)]
pub struct HostVocab {
    pub pieces: Vec<Vec<u8>>,
    pub scores: Vec<f32>,
    pub max_token_length: u32,
    pub bos: u32,
    pub eos: u32,
}

/// A whole model in f32 on the host.
#[derive(Clone, Debug, PartialEq)]
pub struct HostModel {
    pub config: Config,
    pub token_embd: Vec<f32>,
    pub layers: Vec<HostLayer>,
    pub output_norm: Vec<f32>,
    /// `None` when the classifier shares the token embedding.
    pub output: Option<Vec<f32>>,
    pub vocab: Option<HostVocab>,
}

/// Weight storage of the engine GGUF.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Quant {
    F32,
    Q8,
    /// Layer matrices ternary ([`quant::WeightFormat::Ternary`]), embeddings q8.
    Ternary,
    /// Layer matrices binary ([`quant::WeightFormat::Binary`]), embeddings q8.
    Binary,
}

impl Quant {
    /// The `ruvllm.quant` value.
    pub fn name(self) -> &'static str {
        match self {
            Quant::F32 => "f32",
            Quant::Q8 => "q8",
            Quant::Ternary => "ternary",
            Quant::Binary => "binary",
        }
    }

    /// From a `ruvllm.quant` value.
    pub fn from_name(s: &str) -> Option<Quant> {
        [Quant::F32, Quant::Q8, Quant::Ternary, Quant::Binary].into_iter().find(|q| q.name() == s)
    }

    /// Storage of `token_embd` and `output`: embeddings stay q8 in the low-bit formats.
    pub fn embeddings(self) -> Quant {
        match self {
            Quant::Ternary | Quant::Binary => Quant::Q8,
            q => q,
        }
    }
}

/// llama.cpp token types written to `tokenizer.ggml.token_type`.
const TOKEN_NORMAL: i32 = 1;
const TOKEN_UNKNOWN: i32 = 2;
const TOKEN_CONTROL: i32 = 3;
const TOKEN_BYTE: i32 = 6;

/// `size = a * b`, as an error instead of an overflow.
pub(crate) fn mul(a: usize, b: usize) -> Result<usize> {
    a.checked_mul(b).ok_or(Error::Invalid { what: "tensor size overflows" })
}

/// Parameter count with overflow checks (unlike `Config::n_params`, safe on hostile headers
/// and 32-bit hosts).
pub(crate) fn checked_params(c: &Config) -> Result<usize> {
    let (d, h, kv) = (c.dim, c.hidden_dim, c.kv_dim());
    let q = mul(c.n_heads, c.head_size())?;
    let per_layer = [mul(2, d)?, mul(d, q)?, mul(mul(2, d)?, kv)?, mul(q, d)?, mul(mul(3, d)?, h)?];
    let cls = if c.shared_classifier { 0 } else { 1 };
    let total = [mul(c.n_layers, sum(&per_layer)?)?, mul(mul(c.vocab_size, d)?, 1 + cls)?, d];
    sum(&total)
}

fn sum(v: &[usize]) -> Result<usize> {
    v.iter().try_fold(0usize, |a, b| a.checked_add(*b)).ok_or(Error::Invalid { what: "size overflows" })
}

/// True for SentencePiece byte-fallback pieces `<0xHH>`.
fn is_byte_piece(p: &[u8]) -> bool {
    p.len() == 6 && p.starts_with(b"<0x") && p[5] == b'>' && p[3..5].iter().all(|c| c.is_ascii_hexdigit())
}

impl HostModel {
    /// Checks every tensor and the vocabulary against the config.
    pub fn validate(&self) -> Result<()> {
        let c = &self.config;
        c.validate()?;
        let (d, h, kv, v) = (c.dim, c.hidden_dim, c.kv_dim(), c.vocab_size);
        let bad = |ok: bool, what: &'static str| {
            if ok {
                Ok(())
            } else {
                Err(Error::Invalid { what })
            }
        };
        bad(self.token_embd.len() == mul(v, d)?, "token embedding size")?;
        bad(self.layers.len() == c.n_layers, "layer count")?;
        for l in &self.layers {
            bad(l.attn_norm.len() == d && l.ffn_norm.len() == d, "norm size")?;
            let q = c.q_dim();
            bad(l.wq.len() == mul(q, d)? && l.wo.len() == mul(d, q)?, "attention matrix size")?;
            bad(l.wk.len() == mul(kv, d)? && l.wv.len() == mul(kv, d)?, "key/value matrix size")?;
            bad(
                l.w1.len() == mul(h, d)? && l.w2.len() == mul(d, h)? && l.w3.len() == mul(h, d)?,
                "ffn size",
            )?;
        }
        bad(self.output_norm.len() == d, "output norm size")?;
        bad(self.output.is_none() == c.shared_classifier, "classifier sharing flag")?;
        if let Some(o) = &self.output {
            bad(o.len() == mul(v, d)?, "classifier size")?;
        }
        if let Some(voc) = &self.vocab {
            bad(voc.pieces.len() == v && voc.scores.len() == v, "vocabulary size")?;
            bad((voc.bos as usize) < v && (voc.eos as usize) < v, "BOS/EOS id")?;
            bad(voc.scores.iter().all(|s| s.is_finite()), "tokenizer score is not finite")?;
        }
        self.check_finite()
    }

    /// Refuses NaN or infinite weights (after dequantization, so a bad scale shows too), naming
    /// the tensor by its llama.cpp name.
    pub fn check_finite(&self) -> Result<()> {
        use crate::model::weights::{check_finite as finite, LAYER_TENSORS};
        finite(&self.token_embd, "token_embd.weight", None)?;
        for (i, l) in self.layers.iter().enumerate() {
            let tensors = [&l.attn_norm, &l.ffn_norm, &l.wq, &l.wk, &l.wv, &l.wo, &l.w1, &l.w2, &l.w3];
            for (tensor, v) in LAYER_TENSORS.into_iter().zip(tensors) {
                finite(v, tensor, Some(i))?;
            }
        }
        finite(&self.output_norm, "output_norm.weight", None)?;
        finite(self.output.as_deref().unwrap_or_default(), "output.weight", None)
    }

    /// Writes the engine's GGUF (layout in the module docs). `Err(Missing)` without a vocab.
    pub fn to_gguf(&self, quant: Quant) -> Result<Vec<u8>> {
        Ok(self.to_gguf_sparse(quant, false)?.0)
    }

    /// [`HostModel::to_gguf`], with `sparse` (q8 only): each block matrix whose codes are at
    /// least [`sparse::BREAK_EVEN`](crate::infer::integer::sparse::BREAK_EVEN) zero is stored
    /// as sparse rows, the others dense. Also returns how many matrices went sparse; with none,
    /// the image is exactly [`HostModel::to_gguf`]'s.
    pub fn to_gguf_sparse(&self, quant: Quant, sparse: bool) -> Result<(Vec<u8>, usize)> {
        let vocab = self.vocab.as_ref().ok_or(Error::Missing { what: "tokenizer vocabulary" })?;
        self.validate()?;
        let c = &self.config;
        let u32_of = |v: usize, what: &'static str| u32::try_from(v).map_err(|_| Error::Invalid { what });

        let mut w = GgufWriter::new();
        w.add_str("general.architecture", "llama");
        w.add_str("general.name", "ruvllm-esp32 model");
        w.add_u32("llama.context_length", u32_of(c.seq_len, "seq_len")?);
        w.add_u32("llama.embedding_length", u32_of(c.dim, "dim")?);
        w.add_u32("llama.block_count", u32_of(c.n_layers, "n_layers")?);
        w.add_u32("llama.feed_forward_length", u32_of(c.hidden_dim, "hidden_dim")?);
        w.add_u32("llama.attention.head_count", u32_of(c.n_heads, "n_heads")?);
        w.add_u32("llama.attention.head_count_kv", u32_of(c.n_kv_heads, "n_kv_heads")?);
        w.add_u32("llama.rope.dimension_count", u32_of(c.head_size(), "head_size")?);
        // Only for a model whose heads were removed: other images stay as they were.
        if c.head_dim > 0 {
            w.add_u32(crate::model::config::KEY_LENGTH, u32_of(c.head_dim, "head_dim")?);
            w.add_u32(crate::model::config::VALUE_LENGTH, u32_of(c.head_dim, "head_dim")?);
        }
        w.add_f32("llama.attention.layer_norm_rms_epsilon", c.norm_eps);
        w.add_f32("llama.rope.freq_base", c.rope_theta);
        w.add_u32("llama.vocab_size", u32_of(c.vocab_size, "vocab_size")?);
        w.add_str("ruvllm.quant", quant.name());
        w.add_u32("ruvllm.quant.group_size", quant::GROUP as u32);
        add_vocab(&mut w, vocab)?;

        let (d, h, kv) = (c.dim, c.hidden_dim, c.kv_dim());
        // Every row is dim or hidden values long: whole Q8_0 blocks when both are multiples of
        // 32, and then q8 images are standard GGUF (llama.cpp computes with them).
        let blocks = quant == Quant::Q8 && d.is_multiple_of(32) && h.is_multiple_of(32);
        let add_matrix = |w: &mut GgufWriter, name: &str, m: &[f32], rows, cols, quant| {
            add_matrix(w, name, m, rows, cols, quant, blocks)
        };
        let mut sparse_count = 0;
        let sparse = sparse && quant == Quant::Q8;
        let add_block = |w: &mut GgufWriter, name: &str, m: &[f32], rows, cols, count: &mut usize| {
            if sparse && add_sparse(w, name, m, rows, cols, blocks)? {
                *count += 1;
                return Ok(());
            }
            add_matrix(w, name, m, rows, cols, quant)
        };
        add_matrix(&mut w, "token_embd.weight", &self.token_embd, c.vocab_size, d, quant.embeddings())?;
        for (i, l) in self.layers.iter().enumerate() {
            let name = |s: &str| format!("blk.{i}.{s}.weight");
            add_norm(&mut w, &name("attn_norm"), &l.attn_norm)?;
            let n = &mut sparse_count;
            let q = c.q_dim();
            add_block(&mut w, &name("attn_q"), &l.wq, q, d, n)?;
            add_block(&mut w, &name("attn_k"), &l.wk, kv, d, n)?;
            add_block(&mut w, &name("attn_v"), &l.wv, kv, d, n)?;
            add_block(&mut w, &name("attn_output"), &l.wo, d, q, n)?;
            add_norm(&mut w, &name("ffn_norm"), &l.ffn_norm)?;
            add_block(&mut w, &name("ffn_gate"), &l.w1, h, d, n)?;
            add_block(&mut w, &name("ffn_down"), &l.w2, d, h, n)?;
            add_block(&mut w, &name("ffn_up"), &l.w3, h, d, n)?;
        }
        add_norm(&mut w, "output_norm.weight", &self.output_norm)?;
        if let Some(o) = &self.output {
            add_matrix(&mut w, "output.weight", o, c.vocab_size, d, quant.embeddings())?;
        }
        add_rope_table(&mut w, c)?;
        if sparse_count > 0 {
            w.add_u32(SPARSE_KEY, sparse_count as u32);
        }
        Ok((w.finish(), sparse_count))
    }
}

/// Metadata of an image holding sparse rows: how many matrices are stored so (absent: none).
pub const SPARSE_KEY: &str = "ruvllm.sparse";

/// The q8 codes and group scales a dense image would store for `m` (`rows x cols`): GGUF's
/// Q8_0 (f16 scales, as f32) when `blocks`, else the engine's I8 groups with f32 scales.
fn q8_codes(m: &[f32], rows: usize, cols: usize, blocks: bool) -> Result<(Vec<i8>, Vec<f32>)> {
    if blocks {
        let b = q8_0_blocks(m)?;
        let (mut q, mut s) = (Vec::with_capacity(m.len()), Vec::with_capacity(m.len() / 32));
        for k in b.chunks_exact(crate::gguf::Q8_0_BYTES as usize) {
            s.push(crate::gguf::f16_to_f32(u16::from_le_bytes([k[0], k[1]])));
            q.extend(k[2..].iter().map(|v| *v as i8));
        }
        return Ok((q, s));
    }
    let g = quant::groups(cols, quant::GROUP);
    let mut q = vec![0i8; m.len()];
    let mut s = vec![0f32; mul(rows, g)?];
    for ((x, q), s) in m.chunks_exact(cols).zip(q.chunks_exact_mut(cols)).zip(s.chunks_exact_mut(g)) {
        quant::quantize_row(x, q, s, quant::GROUP);
    }
    Ok((q, s))
}

/// Stores `m` as sparse rows (`<name>.sparse`, I8 of one dimension, and `<name>.scale`, F32
/// `[groups, rows]`) when its q8 codes are zero at or past the measured break-even, with the
/// codes and scales the dense image would hold (so both compute the same numbers); `false`
/// (nothing written) below it.
fn add_sparse(
    w: &mut GgufWriter,
    name: &str,
    m: &[f32],
    rows: usize,
    cols: usize,
    blocks: bool,
) -> Result<bool> {
    use crate::infer::integer::sparse;
    let (q, s) = q8_codes(m, rows, cols, blocks)?;
    if !sparse::prefer_sparse(q.iter().filter(|&&c| c == 0).count(), q.len()) {
        return Ok(false);
    }
    let mut b = vec![0u8; sparse::encoded_len(&q, cols, quant::GROUP)];
    let n = sparse::encode(&q, cols, quant::GROUP, &mut b)?;
    b.truncate(n);
    let len = b.len() as u64;
    w.add_tensor(&format!("{name}{}", crate::model::weights::SPARSE_SUFFIX), &[len], GgmlType::I8, b)?;
    let g = quant::groups(cols, quant::GROUP) as u64;
    w.add_tensor(&format!("{name}.scale"), &[g, rows as u64], GgmlType::F32, f32_bytes(&s))?;
    Ok(true)
}

/// GGUF's Q8_0 of `m` (rows of whole blocks): per 32 values the f16 scale `amax / 127`, then
/// each value divided by that scale as stored (f16) and rounded, as [`quant::quantize_row`]
/// does with its f32 scale, so the integers fit the scale every reader sees.
fn q8_0_blocks(m: &[f32]) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(m.len() / 32 * crate::gguf::Q8_0_BYTES as usize);
    for x in m.chunks(32) {
        let amax = x.iter().fold(0.0f32, |a, v| a.max(libm::fabsf(*v)));
        let half = crate::gguf::f32_to_f16(amax / 127.0);
        let scale = crate::gguf::f16_to_f32(half);
        if !scale.is_finite() {
            return Err(Error::Unsupported {
                what: "weights too large for Q8_0's f16 scales (use --quant f32)",
            });
        }
        let inv = if scale > 0.0 { 1.0 / scale } else { 0.0 };
        out.extend_from_slice(&half.to_le_bytes());
        out.extend(x.iter().map(|v| quant::round_to_i8(v * inv) as u8));
    }
    Ok(out)
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    // One copy on a little-endian host (a `flat_map` collect grows its vector step by step).
    #[cfg(target_endian = "little")]
    return bytemuck::cast_slice::<f32, u8>(v).to_vec();
    #[cfg(not(target_endian = "little"))]
    return v.iter().flat_map(|x| x.to_le_bytes()).collect();
}

fn add_norm(w: &mut GgufWriter, name: &str, v: &[f32]) -> Result<()> {
    w.add_tensor(name, &[v.len() as u64], GgmlType::F32, f32_bytes(v))
}

/// A `rows x cols` matrix: F32, or I8 values plus a `.scale` tensor of per-row groups, or packed
/// ternary/binary rows plus one scale per row.
fn add_matrix(
    w: &mut GgufWriter,
    name: &str,
    m: &[f32],
    rows: usize,
    cols: usize,
    quant: Quant,
    blocks: bool,
) -> Result<()> {
    let dims = [cols as u64, rows as u64];
    match quant {
        Quant::F32 => w.add_tensor(name, &dims, GgmlType::F32, f32_bytes(m)),
        Quant::Q8 if blocks => w.add_tensor(name, &dims, GgmlType::Q8_0, q8_0_blocks(m)?),
        Quant::Q8 => {
            let g = quant::groups(cols, quant::GROUP);
            let (q, s) = q8_codes(m, rows, cols, false)?;
            let qb: Vec<u8> = q.iter().map(|v| *v as u8).collect();
            w.add_tensor(name, &dims, GgmlType::I8, qb)?;
            w.add_tensor(&format!("{name}.scale"), &[g as u64, rows as u64], GgmlType::F32, f32_bytes(&s))
        }
        Quant::Ternary | Quant::Binary => {
            let ternary = quant == Quant::Ternary;
            let stride =
                if ternary { packed::ternary_row_bytes(cols) } else { packed::binary_row_bytes(cols) };
            let mut q = vec![0u8; mul(rows, stride)?];
            let mut s = vec![0f32; rows];
            let mut codes = vec![0i8; cols];
            for ((x, q), s) in m.chunks_exact(cols).zip(q.chunks_exact_mut(stride)).zip(s.iter_mut()) {
                *s = quant::absmean(x);
                if ternary {
                    codes.iter_mut().zip(x).for_each(|(c, v)| *c = quant::ternary_code(*v, *s));
                    packed::pack_ternary(&codes, q);
                } else {
                    codes.iter_mut().zip(x).for_each(|(c, v)| *c = quant::binary_code(*v));
                    packed::pack_binary(&codes, q);
                }
            }
            let suffix = if ternary { "tern" } else { "bin" };
            w.add_tensor(&format!("{name}.{suffix}"), &[stride as u64, rows as u64], GgmlType::I8, q)?;
            w.add_tensor(&format!("{name}.scale"), &[1, rows as u64], GgmlType::F32, f32_bytes(&s))
        }
    }
}

/// `ruvllm.rope`: cos/sin of every position and frequency in Q1.30, computed in f64 here so
/// the integer forward pass needs no trigonometry (nor any float) on the chip. Metadata, not a
/// tensor: llama.cpp refuses a file with tensors it does not expect, and ignores unknown keys.
fn add_rope_table(w: &mut GgufWriter, c: &Config) -> Result<()> {
    let hs = c.head_size();
    let one = (1u64 << crate::model::ROPE_FRAC) as f64;
    let mut table = Vec::with_capacity(mul(c.seq_len, hs)?);
    // Each pair's frequency once, not once per position: the same values.
    let freqs: Vec<f64> =
        (0..hs / 2).map(|i| 1.0 / libm::pow(c.rope_theta as f64, (2 * i) as f64 / hs as f64)).collect();
    for pos in 0..c.seq_len {
        for &freq in &freqs {
            let angle = pos as f64 * freq;
            table.extend([libm::cos(angle), libm::sin(angle)].map(|v| libm::round(v * one) as i32));
        }
    }
    w.add_i32_array(crate::model::ROPE_KEY, &table);
    Ok(())
}

impl HostModel {
    /// Widens the feed-forward layer to the next multiple of `multiple` units with zero weights:
    /// a new unit's gate and up rows are zero, so its output silu(0) * 0 is exactly 0, and its
    /// zero column of the down projection adds exactly nothing. The model computes the same
    /// function; with `dim` and the new width multiples of 32, a q8 image is standard Q8_0.
    pub fn pad_hidden(&mut self, multiple: usize) -> Result<()> {
        let (d, h) = (self.config.dim, self.config.hidden_dim);
        let wide =
            h.checked_next_multiple_of(multiple.max(1)).ok_or(Error::Invalid { what: "padded width" })?;
        mul(wide, d)?;
        for l in &mut self.layers {
            l.w1.resize(wide * d, 0.0);
            l.w3.resize(wide * d, 0.0);
            let mut w2 = Vec::with_capacity(d * wide);
            for row in l.w2.chunks_exact(h) {
                w2.extend_from_slice(row);
                w2.resize(w2.len() + wide - h, 0.0);
            }
            l.w2 = w2;
        }
        self.config.hidden_dim = wide;
        self.validate()
    }
}

/// A [`HostVocab`] piece (plain spaces) as GGUF stores it (SentencePiece's convention: spaces
/// as U+2581). A piece that already holds U+2581 could not be told from a space when read back,
/// so it is refused.
fn spm_piece(p: &[u8]) -> Result<Vec<u8>> {
    if p.windows(SPACE_MARK.len()).any(|w| w == SPACE_MARK) {
        return Err(Error::Unsupported { what: "a token holding U+2581, SentencePiece's mark for a space" });
    }
    let mut out = Vec::with_capacity(p.len() + 2 * p.iter().filter(|b| **b == b' ').count());
    for &b in p {
        if b == b' ' {
            out.extend_from_slice(SPACE_MARK);
        } else {
            out.push(b);
        }
    }
    Ok(out)
}

/// The inverse of [`spm_piece`]: U+2581 back to a space.
fn plain_piece(p: &[u8]) -> Vec<u8> {
    crate::tokenizer::unmark_spaces(p).collect()
}

impl HostVocab {
    /// The vocabulary of a model image, in llama2.c's convention whichever the image uses.
    pub fn from_engine(v: &Vocab<'_>) -> HostVocab {
        let pieces: Vec<Vec<u8>> = (0..v.len() as u32)
            .map(|i| if v.spm() { plain_piece(v.piece(i)) } else { v.piece(i).to_vec() })
            .collect();
        let max_token_length = pieces.iter().map(|p| p.len()).max().unwrap_or(0) as u32;
        let scores = (0..v.len() as u32).map(|i| v.score(i)).collect();
        HostVocab { pieces, scores, max_token_length, bos: v.bos(), eos: v.eos() }
    }
}

/// Tokenizer metadata in SentencePiece's convention (what `tokenizer.ggml.model = "llama"`
/// promises other readers) plus `ruvllm.tokenizer.index` (piece offsets, then ids sorted by
/// piece bytes) so the chip can binary-search pieces in place in flash.
fn add_vocab(w: &mut GgufWriter, vocab: &HostVocab) -> Result<()> {
    let n = vocab.pieces.len();
    let spm = vocab.pieces.iter().map(|p| spm_piece(p)).collect::<Result<Vec<_>>>()?;
    let pieces: Vec<&[u8]> = spm.iter().map(|p| p.as_slice()).collect();
    let types: Vec<i32> = (0..n)
        .map(|i| match (i, pieces.get(i)) {
            (0, _) => TOKEN_UNKNOWN,
            (i, _) if i as u32 == vocab.bos || i as u32 == vocab.eos => TOKEN_CONTROL,
            (_, Some(p)) if is_byte_piece(p) => TOKEN_BYTE,
            _ => TOKEN_NORMAL,
        })
        .collect();
    let mut index = Vec::with_capacity(mul(n, 2)?);
    let mut off = 0usize;
    for p in &pieces {
        index.push(u32::try_from(off).map_err(|_| Error::Invalid { what: "tokenizer too large" })?);
        off = off.checked_add(8 + p.len()).ok_or(Error::Invalid { what: "tokenizer too large" })?;
    }
    let mut order: Vec<u32> = (0..n as u32).collect();
    // Stable sort keeps equal pieces in id order.
    order.sort_by(|a, b| pieces[*a as usize].cmp(pieces[*b as usize]));
    index.extend_from_slice(&order);

    // In plain pieces (what HostVocab holds and the loaders give back).
    let max_len = vocab.pieces.iter().map(|p| p.len()).max().unwrap_or(0);
    let max_len = u32::try_from(max_len).map_err(|_| Error::Invalid { what: "token too long" })?;
    w.add_str("tokenizer.ggml.model", "llama");
    w.add_str_array("tokenizer.ggml.tokens", &pieces);
    w.add_f32_array("tokenizer.ggml.scores", &vocab.scores);
    w.add_i32_array("tokenizer.ggml.token_type", &types);
    w.add_u32("tokenizer.ggml.bos_token_id", vocab.bos);
    w.add_u32("tokenizer.ggml.eos_token_id", vocab.eos);
    w.add_u32("ruvllm.tokenizer.max_token_length", vocab.max_token_length.max(max_len));
    w.add_u32_array("ruvllm.tokenizer.index", &index);
    Ok(())
}

#[cfg(test)]
mod tests;
