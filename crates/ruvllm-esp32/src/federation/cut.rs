//! A model image cut to one pipeline node's layers, so a board holds only its part of a model
//! too big for one chip: the same metadata, tokenizer, embeddings, final norm and classifier,
//! and only the layers `first..end`, renumbered from 0, with [`CUT_FIRST_KEY`] and
//! [`CUT_TOTAL_KEY`] saying where they sit ([`Model::cut`](crate::model::Model::cut)). Every
//! tensor's bytes are copied as they are, so the node computes exactly what the whole model
//! does in those layers.

use alloc::format;
use alloc::vec::Vec;
use core::ops::Range;

use crate::error::{Error, Result};
use crate::gguf::{Gguf, GgufWriter, Value, ValueType, CHECKSUM_KEY};
use crate::model::{CUT_FIRST_KEY, CUT_TOTAL_KEY};

/// The image of `layers` of the model in `image` (the image itself when `layers` is all of
/// them). The image's checksum is verified first; a cut is not cut again.
pub fn cut(image: &[u8], layers: Range<usize>) -> Result<Vec<u8>> {
    let g = Gguf::parse(image)?;
    g.verify_checksum()?;
    if g.get(CUT_FIRST_KEY).is_some() {
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
