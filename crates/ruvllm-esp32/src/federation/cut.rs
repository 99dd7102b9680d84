//! A model image cut to one node's part ([`shard`] for a tensor-parallel node, below), so a
//! board holds only its part of a model too big for one chip. A pipeline node's cut ([`cut`]): the same metadata, tokenizer, embeddings, final norm and classifier,
//! and only the layers `first..end`, renumbered from 0, with [`CUT_FIRST_KEY`] and
//! [`CUT_TOTAL_KEY`] saying where they sit ([`Model::cut`](crate::model::Model::cut)). Every
//! tensor's bytes are copied as they are, so the node computes exactly what the whole model
//! does in those layers.

use alloc::format;
use alloc::vec::Vec;
use core::ops::Range;

use crate::error::{Error, Result};
use crate::gguf::{GgmlType, Gguf, GgufWriter, TensorInfo, Value, ValueType, CHECKSUM_KEY};
use crate::infer::Shard;
use crate::model::{Model, CUT_FIRST_KEY, CUT_TOTAL_KEY, SHARD_KEY};

/// The image of `layers` of the model in `image` (the image itself when `layers` is all of
/// them). The image's checksum is verified first; a cut is not cut again.
pub fn cut(image: &[u8], layers: Range<usize>) -> Result<Vec<u8>> {
    let g = Gguf::parse(image)?;
    g.verify_checksum()?;
    if g.get(CUT_FIRST_KEY).is_some() || g.get(SHARD_KEY).is_some() {
        return Err(Error::Unsupported { what: "cutting an image that is already one node's part" });
    }
    let n = g.get_u32("llama.block_count")? as usize;
    if layers.start >= layers.end || layers.end > n {
        return Err(Error::Invalid {
            what: "a node's layers must be a non-empty range of the model's layers",
        });
    }
    if layers == (0..n) {
        return Ok(image.to_vec());
    }
    let mut w = GgufWriter::new();
    for (key, value) in g.kvs() {
        match key {
            // The writer adds these itself.
            "general.alignment" | CHECKSUM_KEY => {}
            "llama.block_count" => w.add_u32(key, layers.len() as u32),
            _ => copy_value(&mut w, key, value)?,
        }
    }
    w.add_u32(CUT_FIRST_KEY, layers.start as u32);
    w.add_u32(CUT_TOTAL_KEY, n as u32);
    for t in g.tensors() {
        let name = match layer_of(t.name) {
            None => t.name.into(),
            Some((l, _)) if !layers.contains(&l) => continue,
            Some((l, rest)) => format!("blk.{}.{rest}", l - layers.start),
        };
        w.add_tensor(&name, &t.dims[..t.n_dims], t.ty, t.data.to_vec())?;
    }
    Ok(w.finish())
}

/// The image of one tensor-parallel node's shard of the model in `image`: the same metadata,
/// tokenizer, embeddings, norms and classifier, and of every layer only the shard's rows of
/// `wq` (its heads), `wk` and `wv` (its KV heads), `w1` and `w3` (its FFN rows) and those
/// columns of `wo` and `w2` (with their scales), with [`SHARD_KEY`] naming the shard. A matrix
/// the shard holds no part of is left out. Every kept value's bytes are copied unchanged, so
/// the node computes exactly the partial sums the whole image gives it. q8 models only (as
/// tensor parallelism); the image's checksum is verified first; a cut is not cut again.
pub fn shard(image: &[u8], s: &Shard) -> Result<Vec<u8>> {
    let g = Gguf::parse(image)?;
    g.verify_checksum()?;
    if g.get(CUT_FIRST_KEY).is_some() || g.get(SHARD_KEY).is_some() {
        return Err(Error::Unsupported { what: "cutting an image that is already one node's part" });
    }
    let model = <Model<'_>>::from_gguf(image)?;
    // Refuses what tensor parallelism cannot split (packed or sparse rows among them).
    crate::infer::parts(&model)?;
    let c = &model.config;
    let (hs, group) = (c.head_size(), model.group);
    if s.heads.start > s.heads.end
        || s.kv_heads.start > s.kv_heads.end
        || s.hidden.start > s.hidden.end
        || s.heads.end * hs > c.q_dim()
        || s.kv_heads.end * hs > c.kv_dim()
        || s.hidden.end > c.hidden_dim
        || !(s.heads.start * hs).is_multiple_of(group)
        || !s.hidden.start.is_multiple_of(group)
    {
        return Err(Error::Invalid {
            what: "a tensor shard outside the model or off its quantization groups",
        });
    }
    let mut w = GgufWriter::new();
    for (key, value) in g.kvs() {
        match key {
            "general.alignment" | CHECKSUM_KEY => {}
            _ => copy_value(&mut w, key, value)?,
        }
    }
    let r = [&s.heads, &s.kv_heads, &s.hidden].map(|r| [r.start as u32, r.end as u32]);
    w.add_u32_array(SHARD_KEY, r.as_flattened());
    let (q, kv) = (s.heads.start * hs..s.heads.end * hs, s.kv_heads.start * hs..s.kv_heads.end * hs);
    for t in g.tensors() {
        let part = match layer_of(t.name).map(|(_, rest)| rest.trim_end_matches(".scale")) {
            Some("attn_q.weight") => Some((true, q.clone())),
            Some("attn_k.weight" | "attn_v.weight") => Some((true, kv.clone())),
            Some("ffn_gate.weight" | "ffn_up.weight") => Some((true, s.hidden.clone())),
            Some("attn_output.weight") => Some((false, q.clone())),
            Some("ffn_down.weight") => Some((false, s.hidden.clone())),
            _ => None,
        };
        let dims = &t.dims[..t.n_dims];
        match part {
            None => w.add_tensor(t.name, dims, t.ty, t.data.to_vec())?,
            Some((_, r)) if r.is_empty() => {}
            Some((true, r)) => {
                let (data, dims) = slice_rows(&t, r)?;
                w.add_tensor(t.name, &dims, t.ty, data)?
            }
            Some((false, r)) => {
                let (data, dims) = slice_columns(&t, r, group)?;
                w.add_tensor(t.name, &dims, t.ty, data)?
            }
        }
    }
    Ok(w.finish())
}

/// A matrix's (or its scales') dims as (row length in elements, rows).
fn matrix_dims(t: &TensorInfo<'_>) -> Result<(usize, usize)> {
    match t.dims[..t.n_dims] {
        [n, rows] if rows > 0 => Ok((n as usize, rows as usize)),
        _ => Err(Error::Invalid { what: "a layer matrix that is not two-dimensional" }),
    }
}

/// Rows `r` of a matrix or of its scales, and their dims.
fn slice_rows(t: &TensorInfo<'_>, r: Range<usize>) -> Result<(Vec<u8>, [u64; 2])> {
    let (n, rows) = matrix_dims(t)?;
    let per_row = t.data.len() / rows;
    let bytes = t
        .data
        .get(r.start * per_row..r.end * per_row)
        .ok_or(Error::Invalid { what: "a tensor shard past a matrix's rows" })?;
    Ok((bytes.to_vec(), [n as u64, r.len() as u64]))
}

/// Columns `c` (starting on a quantization group) of every row of a matrix, or of its scales
/// (the groups those columns fall in), and their dims.
fn slice_columns(t: &TensorInfo<'_>, c: Range<usize>, group: usize) -> Result<(Vec<u8>, [u64; 2])> {
    let (n, rows) = matrix_dims(t)?;
    let per_row = t.data.len() / rows;
    let scales = t.name.ends_with(".scale");
    // (element range kept in a row, bytes per element or per block of elements)
    let (keep, unit) = match t.ty {
        GgmlType::F32 if scales => (c.start / group..c.end.div_ceil(group), 4),
        GgmlType::I8 if !scales => (c.clone(), 1),
        GgmlType::Q8_0 if !scales && c.start.is_multiple_of(32) && c.end.is_multiple_of(32) => {
            (c.start / 32..c.end / 32, per_row / n.div_ceil(32).max(1))
        }
        _ => {
            return Err(Error::Unsupported {
                what: "a tensor shard of a matrix that is not q8 with whole blocks of columns",
            })
        }
    };
    let mut out = Vec::with_capacity(rows * keep.len() * unit);
    for row in t.data.chunks_exact(per_row) {
        let part = row
            .get(keep.start * unit..keep.end * unit)
            .ok_or(Error::Invalid { what: "a tensor shard past a matrix's columns" })?;
        out.extend_from_slice(part);
    }
    let cols = if t.ty == GgmlType::Q8_0 { keep.len() * 32 } else { keep.len() };
    Ok((out, [cols as u64, rows as u64]))
}

/// `blk.L.rest` as (L, rest).
fn layer_of(name: &str) -> Option<(usize, &str)> {
    let (l, rest) = name.strip_prefix("blk.")?.split_once('.')?;
    Some((l.parse().ok()?, rest))
}

fn copy_value(w: &mut GgufWriter, key: &str, value: Value<'_>) -> Result<()> {
    let unsupported = Error::Unsupported {
        what: "a metadata value of a type the node image cut does not copy (convert the model first)",
    };
    match value {
        Value::U32(v) => w.add_u32(key, v),
        Value::I32(v) => w.add_i32(key, v),
        Value::F32(v) => w.add_f32(key, v),
        Value::Bool(v) => w.add_bool(key, v),
        Value::Str(v) => w.add_str(key, v),
        Value::Array(a) => match a.elem {
            ValueType::Str => w.add_str_array(key, &a.str_iter().collect::<Vec<_>>()),
            ValueType::F32 => {
                w.add_f32_array(key, &(0..a.len).filter_map(|i| a.f32_at(i)).collect::<Vec<_>>())
            }
            ValueType::I32 => {
                w.add_i32_array(key, &(0..a.len).filter_map(|i| a.i32_at(i)).collect::<Vec<_>>())
            }
            ValueType::U32 => {
                w.add_u32_array(key, &(0..a.len).filter_map(|i| a.u32_at(i)).collect::<Vec<_>>())
            }
            _ => return Err(unsupported),
        },
        _ => return Err(unsupported),
    }
    Ok(())
}
