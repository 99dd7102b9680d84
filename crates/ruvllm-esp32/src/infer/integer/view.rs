//! The bridge from [`Model`] (whose image slices are typed `f32`) to integer views: the image's
//! f32 words are reinterpreted as their IEEE-754 bits, in place (no conversion, no copy). Only
//! this file and the compile-time tables name float types.

use crate::error::{Error, Result};
use crate::model::{Layer, Matrix, Model, Precision};

/// An int8 matrix with its group scales as IEEE-754 bits.
#[derive(Clone, Copy)]
pub(super) struct QMat<'a> {
    pub q: &'a [i8],
    pub s: &'a [u32],
    pub cols: usize,
}

pub(super) struct IntLayer<'a> {
    pub attn_norm: &'a [u32],
    pub wq: QMat<'a>,
    pub wk: QMat<'a>,
    pub wv: QMat<'a>,
    pub wo: QMat<'a>,
    pub ffn_norm: &'a [u32],
    pub w1: QMat<'a>,
    pub w2: QMat<'a>,
    pub w3: QMat<'a>,
}

/// Every size the integer state is carved for; a model passed to `forward` must match it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Shape {
    pub dim: usize,
    pub hidden: usize,
    pub n_layers: usize,
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub vocab: usize,
    pub group: usize,
    pub model_seq_len: usize,
}

impl Shape {
    pub fn head_size(&self) -> usize {
        self.dim / self.n_heads
    }

    pub fn kv_dim(&self) -> usize {
        self.n_kv_heads * self.head_size()
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
        vocab: c.vocab_size,
        group: m.group,
        model_seq_len: c.seq_len,
    }
}

/// What the integer path needs from the model, checked: q8 weights and the RoPE table.
pub(super) fn require<'a, const L: usize>(m: &Model<'a, L>) -> Result<&'a [i32]> {
    if m.precision != Precision::Q8 {
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

pub(super) fn qmat<'a>(m: &Matrix<'a>) -> Result<QMat<'a>> {
    match *m {
        Matrix::Q8 { q, s, cols, .. } => Ok(QMat { q, s: bits(s), cols }),
        Matrix::F32 { .. } => Err(Error::Unsupported { what: "integer path on f32 matrices" }),
    }
}

pub(super) fn layer<'a>(l: &Layer<'a>) -> Result<IntLayer<'a>> {
    Ok(IntLayer {
        attn_norm: bits(l.attn_norm),
        wq: qmat(&l.wq)?,
        wk: qmat(&l.wk)?,
        wv: qmat(&l.wv)?,
        wo: qmat(&l.wo)?,
        ffn_norm: bits(l.ffn_norm),
        w1: qmat(&l.w1)?,
        w2: qmat(&l.w2)?,
        w3: qmat(&l.w3)?,
    })
}
