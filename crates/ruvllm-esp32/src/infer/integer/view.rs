//! The bridge from [`Model`] (whose image slices are typed `f32`) to integer views: the image's
//! f32 words are reinterpreted as their IEEE-754 bits, in place (no conversion, no copy). Only
//! this file and the compile-time tables name float types.

use super::sparse::SparseRows;
use crate::error::{Error, Result};
use crate::model::{Layer, Matrix, Model, Precision, RopeTable};

/// An int8 matrix with its group scales as IEEE-754 bits.
#[derive(Clone, Copy)]
pub(super) struct QMat<'a> {
    pub q: &'a [i8],
    pub s: &'a [u32],
    pub cols: usize,
}

/// Packed ternary or binary rows ([`crate::packed`]) with one scale per row as IEEE-754 bits.
#[derive(Clone, Copy)]
pub(super) struct PMat<'a> {
    pub q: &'a [u8],
    pub s: &'a [u32],
    pub cols: usize,
}

/// GGUF Q8_0 rows: `cols / 32` blocks each, an f16 scale then 32 int8 values.
#[derive(Clone, Copy)]
pub(super) struct BMat<'a> {
    pub b: &'a [u8],
    pub cols: usize,
}

/// Sparse rows of a pruned q8 matrix with its group scales as IEEE-754 bits.
#[derive(Clone, Copy)]
pub(super) struct SMat<'a> {
    pub m: SparseRows<'a>,
    pub s: &'a [u32],
}

/// A matrix in any of the integer path's formats (embeddings and classifier: the int8 ones).
#[derive(Clone, Copy)]
pub(super) enum LMat<'a> {
    Q8(QMat<'a>),
    Q8Block(BMat<'a>),
    Sparse(SMat<'a>),
    Ternary(PMat<'a>),
    Binary(PMat<'a>),
}

pub(super) struct IntLayer<'a> {
    pub attn_norm: &'a [u32],
    pub wq: LMat<'a>,
    pub wk: LMat<'a>,
    pub wv: LMat<'a>,
    pub wo: LMat<'a>,
    pub ffn_norm: &'a [u32],
    pub w1: LMat<'a>,
    pub w2: LMat<'a>,
    pub w3: LMat<'a>,
}

/// Every size the integer state is carved for; a model passed to `forward` must match it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Shape {
    pub dim: usize,
    pub hidden: usize,
    pub n_layers: usize,
    pub n_heads: usize,
    pub n_kv_heads: usize,
    /// Values per head (`dim / n_heads` unless heads were removed).
    pub head: usize,
    pub vocab: usize,
    pub group: usize,
    pub model_seq_len: usize,
    /// The layer matrices' format (q8, ternary or binary), which sizes the lookup tables.
    pub weights: Precision,
}

impl Shape {
    pub fn head_size(&self) -> usize {
        self.head
    }

    /// Width of the query and of the attention's output.
    pub fn q_dim(&self) -> usize {
        self.n_heads * self.head
    }

    pub fn kv_dim(&self) -> usize {
        self.n_kv_heads * self.head_size()
    }

    /// Entries (i32) of the packed kernels' lookup table for the widest matmul input: 16 per
    /// nibble of a packed row (a pair of ternary weights, or four binary ones).
    pub fn lut_entries(&self) -> usize {
        let widest = self.dim.max(self.hidden).max(self.q_dim());
        match self.weights {
            Precision::Ternary => 2 * crate::packed::ternary_row_bytes(widest) * 16,
            Precision::Binary => 2 * crate::packed::binary_row_bytes(widest) * 16,
            Precision::F32 | Precision::Q8 => 0,
        }
    }
}

pub(super) fn shape<const L: usize>(m: &Model<'_, L>) -> Shape {
    let c = &m.config;
    Shape {
        dim: c.dim,
        hidden: c.hidden_dim,
        n_layers: c.n_layers,
        n_heads: c.n_heads,
        n_kv_heads: c.n_kv_heads,
        head: c.head_size(),
        vocab: c.vocab_size,
        group: m.group,
        model_seq_len: c.seq_len,
        weights: m.precision,
    }
}

/// What the integer path needs from the model, checked: q8 (or ternary/binary layers with q8
/// embeddings) and the RoPE table.
pub(super) fn require<'a, const L: usize>(m: &Model<'a, L>) -> Result<RopeTable<'a>> {
    if m.precision == Precision::F32 {
        return Err(Error::Unsupported { what: "integer path on an f32 image (convert with --quant q8)" });
    }
    m.rope.ok_or(Error::Missing {
        what: "ruvllm.rope, the integer path's RoPE table (re-convert the model with this version)",
    })
}

/// `norm_eps` as IEEE-754 bits.
pub(super) fn eps_bits<const L: usize>(m: &Model<'_, L>) -> u32 {
    m.config.norm_eps.to_bits()
}

pub(super) fn bits(v: &[f32]) -> &[u32] {
    bytemuck::cast_slice(v)
}

/// An int8 matrix (embeddings, classifier).
pub(super) fn int8<'a>(m: &Matrix<'a>) -> Result<LMat<'a>> {
    match *m {
        Matrix::Q8 { q, s, cols, .. } => Ok(LMat::Q8(QMat { q, s: bits(s), cols })),
        Matrix::Q8Block { b, cols, .. } => Ok(LMat::Q8Block(BMat { b, cols })),
        _ => Err(Error::Unsupported { what: "integer path on matrices that are not q8 here" }),
    }
}

pub(super) fn lmat<'a>(m: &Matrix<'a>) -> Result<LMat<'a>> {
    // Three ways out of a match at most: a fourth makes a jump table on rv32 (see `matmul`).
    match *m {
        Matrix::Sparse { m, s } => Ok(LMat::Sparse(SMat { m, s: bits(s) })),
        Matrix::Ternary { .. } | Matrix::Binary { .. } => packed(m),
        _ => int8(m),
    }
}

#[inline(never)]
fn packed<'a>(m: &Matrix<'a>) -> Result<LMat<'a>> {
    match *m {
        Matrix::Ternary { q, s, cols, .. } => Ok(LMat::Ternary(PMat { q, s: bits(s), cols })),
        Matrix::Binary { q, s, cols, .. } => Ok(LMat::Binary(PMat { q, s: bits(s), cols })),
        _ => int8(m),
    }
}

pub(super) fn layer<'a>(l: &Layer<'a>) -> Result<IntLayer<'a>> {
    Ok(IntLayer {
        attn_norm: bits(l.attn_norm),
        wq: lmat(&l.wq)?,
        wk: lmat(&l.wk)?,
        wv: lmat(&l.wv)?,
        wo: lmat(&l.wo)?,
        ffn_norm: bits(l.ffn_norm),
        w1: lmat(&l.w1)?,
        w2: lmat(&l.w2)?,
        w3: lmat(&l.w3)?,
    })
}

impl LMat<'_> {
    /// Bytes of the image one full pass over this matrix reads.
    pub fn bytes(&self) -> usize {
        match self {
            LMat::Q8(m) => m.q.len() + 4 * m.s.len(),
            LMat::Q8Block(m) => m.b.len(),
            LMat::Sparse(m) => m.m.len() + 4 * m.s.len(),
            LMat::Ternary(p) | LMat::Binary(p) => p.q.len() + 4 * p.s.len(),
        }
    }

    /// Bytes of one row.
    pub fn row_bytes(&self) -> usize {
        let rows = match self {
            LMat::Q8(m) => m.q.len() / m.cols.max(1),
            LMat::Q8Block(m) => m.b.len() / (m.cols / 32 * crate::gguf::Q8_0_BYTES as usize).max(1),
            LMat::Sparse(m) => m.m.rows(),
            LMat::Ternary(p) | LMat::Binary(p) => p.s.len(),
        };
        self.bytes() / rows.max(1)
    }
}
