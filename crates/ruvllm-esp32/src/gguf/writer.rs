//! In-memory GGUF v3 writer (host side).
//!
//! The whole file is laid out with a zero checksum, then its CRC-32 (every byte but the
//! value's own 4, see the `gguf` module docs) is stored as `ruvllm.checksum`; output is
//! deterministic (keys and tensors in insertion order).

use alloc::string::String;
use alloc::vec::Vec;

use super::{image_crc, GgmlType, ValueType, CHECKSUM_KEY, MAGIC};
use crate::error::{Error, Result};

/// Alignment of the data section and of every tensor in it.
pub const ALIGNMENT: usize = 32;

#[derive(Clone)]
struct PendingTensor {
    name: String,
    dims: Vec<u64>,
    ty: GgmlType,
    data: Vec<u8>,
}

/// Collects metadata and tensors, then [`GgufWriter::finish`] emits the file.
#[derive(Clone, Default)]
pub struct GgufWriter {
    kv: Vec<u8>,
    n_kv: u64,
    tensors: Vec<PendingTensor>,
}

fn put_str(out: &mut Vec<u8>, s: &[u8]) {
    out.extend_from_slice(&(s.len() as u64).to_le_bytes());
    out.extend_from_slice(s);
}

impl GgufWriter {
    pub fn new() -> Self {
        Self::default()
    }

    fn key(&mut self, key: &str, ty: ValueType) {
        put_str(&mut self.kv, key.as_bytes());
        self.kv.extend_from_slice(&ty.id().to_le_bytes());
        self.n_kv += 1;
    }

    pub fn add_u32(&mut self, key: &str, v: u32) {
        self.key(key, ValueType::U32);
        self.kv.extend_from_slice(&v.to_le_bytes());
    }

    pub fn add_i32(&mut self, key: &str, v: i32) {
        self.key(key, ValueType::I32);
        self.kv.extend_from_slice(&v.to_le_bytes());
    }

    pub fn add_f32(&mut self, key: &str, v: f32) {
        self.key(key, ValueType::F32);
        self.kv.extend_from_slice(&v.to_le_bytes());
    }

    pub fn add_bool(&mut self, key: &str, v: bool) {
        self.key(key, ValueType::Bool);
        self.kv.push(v as u8);
    }

    pub fn add_str(&mut self, key: &str, v: &str) {
        self.key(key, ValueType::Str);
        put_str(&mut self.kv, v.as_bytes());
    }

    fn array_header(&mut self, key: &str, elem: ValueType, len: usize) {
        self.key(key, ValueType::Array);
        self.kv.extend_from_slice(&elem.id().to_le_bytes());
        self.kv.extend_from_slice(&(len as u64).to_le_bytes());
    }

    /// String array whose elements are raw bytes (tokenizer pieces need not be UTF-8).
    pub fn add_str_array(&mut self, key: &str, v: &[&[u8]]) {
        self.array_header(key, ValueType::Str, v.len());
        for s in v {
            put_str(&mut self.kv, s);
        }
    }

    pub fn add_f32_array(&mut self, key: &str, v: &[f32]) {
        self.array_header(key, ValueType::F32, v.len());
        v.iter().for_each(|x| self.kv.extend_from_slice(&x.to_le_bytes()));
    }

    pub fn add_i32_array(&mut self, key: &str, v: &[i32]) {
        self.array_header(key, ValueType::I32, v.len());
        v.iter().for_each(|x| self.kv.extend_from_slice(&x.to_le_bytes()));
    }

    pub fn add_u32_array(&mut self, key: &str, v: &[u32]) {
        self.array_header(key, ValueType::U32, v.len());
        v.iter().for_each(|x| self.kv.extend_from_slice(&x.to_le_bytes()));
    }

    /// Adds a tensor; `dims` lists ne0 (the contiguous dimension) first. Fails when the data
    /// length does not match the dims and type.
    pub fn add_tensor(
        &mut self,
        name: &str,
        dims: &[u64],
        ty: GgmlType,
        data: impl Into<Vec<u8>>,
    ) -> Result<()> {
        if dims.is_empty() || dims.len() > 4 {
            return Err(Error::Invalid { what: "tensor must have 1 to 4 dimensions" });
        }
        let n = dims
            .iter()
            .try_fold(1u64, |a, d| a.checked_mul(*d))
            .ok_or(Error::Invalid { what: "tensor size overflows" })?;
        let need = ty.bytes_for(n).ok_or(Error::Unsupported { what: "tensor type or block count" })?;
        let data = data.into();
        if need != data.len() as u64 {
            return Err(Error::Invalid { what: "tensor data length does not match its dims" });
        }
        self.tensors.push(PendingTensor { name: String::from(name), dims: dims.to_vec(), ty, data });
        Ok(())
    }

    /// Emits the file: header, tensor infos, padding, data section. The file is written into
    /// one buffer of its final size, each tensor copied once (a model's converted image is
    /// built this way at every `gen` of a llama2.c checkpoint).
    pub fn finish(self) -> Vec<u8> {
        // Each tensor's offset in the data section, and the section's length.
        let mut offsets = Vec::with_capacity(self.tensors.len());
        let mut len = 0usize;
        for t in &self.tensors {
            len = len.next_multiple_of(ALIGNMENT);
            offsets.push(len as u64);
            len += t.data.len();
        }
        let len = len.next_multiple_of(ALIGNMENT);
        let infos: usize = self.tensors.iter().map(|t| t.name.len() + 8 * t.dims.len() + 32).sum();
        let mut out = Vec::with_capacity(self.kv.len() + infos + 1024 + ALIGNMENT + len);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&3u32.to_le_bytes());
        out.extend_from_slice(&(self.tensors.len() as u64).to_le_bytes());
        out.extend_from_slice(&(self.n_kv + 2).to_le_bytes());
        let mut fixed = GgufWriter::new();
        fixed.add_u32("general.alignment", ALIGNMENT as u32);
        out.extend_from_slice(&fixed.kv);
        out.extend_from_slice(&self.kv);
        let mut tail = GgufWriter::new();
        tail.add_u32(CHECKSUM_KEY, 0);
        out.extend_from_slice(&tail.kv);
        let value_at = out.len() - 4;
        for (t, off) in self.tensors.iter().zip(&offsets) {
            put_str(&mut out, t.name.as_bytes());
            out.extend_from_slice(&(t.dims.len() as u32).to_le_bytes());
            t.dims.iter().for_each(|d| out.extend_from_slice(&d.to_le_bytes()));
            out.extend_from_slice(&t.ty.id().to_le_bytes());
            out.extend_from_slice(&off.to_le_bytes());
        }
        out.resize(out.len().next_multiple_of(ALIGNMENT), 0);
        let base = out.len();
        for (t, off) in self.tensors.iter().zip(&offsets) {
            out.resize(base + *off as usize, 0);
            out.extend_from_slice(&t.data);
        }
        out.resize(base + len, 0);
        let checksum = image_crc(&out, value_at);
        out[value_at..value_at + 4].copy_from_slice(&checksum.to_le_bytes());
        out
    }
}
