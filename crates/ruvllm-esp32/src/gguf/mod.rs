//! Zero-copy GGUF (v2/v3, little-endian) reader.
//!
//! [`Gguf::parse`] walks and bounds-checks the whole header once and keeps only offsets, so it
//! needs no allocation and can run on a memory-mapped flash partition. Every later lookup
//! re-walks the already validated header, which keeps the struct tiny; lookups are linear
//! scans, which is fine for the few dozen keys and a few hundred tensors a model has.
//!
//! # Checksum
//!
//! Images written by [`GgufWriter`] carry `ruvllm.checksum` (u32): the CRC-32 (IEEE) of every
//! byte of the image, header and metadata and tensor infos and data alike, except the 4 bytes of
//! that value itself (skipped, not zeroed): `crc32(image[..at] ++ image[at + 4..])` where `at` is
//! the value's offset. The image is the whole file (the writer pads its end to the alignment, so
//! it ends where [`Gguf::image_len`] says). [`Gguf::verify_checksum`] recomputes it in place, in
//! one pass and without allocation, so a chip checks its flash image at boot the same way. An
//! image that carries any `ruvllm.*` key or tensor was written by this engine and must carry a
//! valid checksum; a GGUF from another tool (none) is read unverified.

#[cfg(feature = "alloc")]
pub mod writer;
#[cfg(feature = "alloc")]
pub use writer::GgufWriter;

use crate::error::{Error, Result};

/// The four bytes every GGUF file starts with.
pub const MAGIC: &[u8; 4] = b"GGUF";
/// Alignment used when `general.alignment` is absent.
pub const DEFAULT_ALIGNMENT: usize = 32;
/// Key of the image's CRC-32 written by `GgufWriter` (the rule is in the module docs).
pub const CHECKSUM_KEY: &str = "ruvllm.checksum";
/// Prefix of every key and tensor name this engine adds: an image that has one was written by
/// `convert` (or `train`) and so must carry [`CHECKSUM_KEY`].
pub const OWN_PREFIX: &str = "ruvllm.";
/// What [`Gguf::verify_checksum`] reports for an image of this engine without its checksum.
pub const CHECKSUM_MISSING: &str =
    "the checksum (ruvllm.checksum) of an image written by convert: its header is damaged";
/// What it reports for an image whose checksum follows the older rule (data section only).
pub const CHECKSUM_OLD: &str =
    "an image of an older version whose checksum leaves its header unverified: convert the model again";
const MAX_DIMS: usize = 4;

/// crc32fast uses carry-less multiplication where the CPU has it (the host: about 0.1 cycle per
/// byte, which keeps start-up short) and a table elsewhere.
pub fn crc32(bytes: &[u8]) -> u32 {
    crc32fast::hash(bytes)
}

/// The image checksum: CRC-32 of `image` without the 4 bytes at `value_at` (see module docs).
pub fn image_crc(image: &[u8], value_at: usize) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(image.get(..value_at).unwrap_or(image));
    h.update(image.get(value_at.saturating_add(4)..).unwrap_or(&[]));
    h.finalize()
}

/// Tensor element types this engine reads; everything else is kept as its raw id.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GgmlType {
    F32,
    F16,
    Q8_0,
    I8,
    /// Used for the fixed-point RoPE table of the integer path (`ruvllm.rope`).
    I32,
    Other(u32),
}

/// Elements per Q8_0 block.
pub const Q8_0_BLOCK: u64 = 32;
/// Bytes per Q8_0 block: an f16 scale and 32 int8 values.
pub const Q8_0_BYTES: u64 = 34;

impl GgmlType {
    pub fn id(self) -> u32 {
        match self {
            GgmlType::F32 => 0,
            GgmlType::F16 => 1,
            GgmlType::Q8_0 => 8,
            GgmlType::I8 => 24,
            GgmlType::I32 => 26,
            GgmlType::Other(id) => id,
        }
    }

    pub fn from_id(id: u32) -> Self {
        match id {
            0 => GgmlType::F32,
            1 => GgmlType::F16,
            8 => GgmlType::Q8_0,
            24 => GgmlType::I8,
            26 => GgmlType::I32,
            other => GgmlType::Other(other),
        }
    }

    /// (elements per block, bytes per block). Types we don't compute with are still listed so
    /// that a llama.cpp file with k-quants can be parsed and inspected.
    fn block_layout(self) -> Option<(u64, u64)> {
        Some(match self.id() {
            0 => (1, 4),        // F32
            1 | 30 => (1, 2),   // F16, BF16
            2 | 20 => (32, 18), // Q4_0, IQ4_NL
            3 => (32, 20),      // Q4_1
            6 => (32, 22),      // Q5_0
            7 => (32, 24),      // Q5_1
            8 => (32, 34),      // Q8_0
            9 => (32, 36),      // Q8_1
            10 => (256, 84),    // Q2_K
            11 => (256, 110),   // Q3_K
            12 => (256, 144),   // Q4_K
            13 => (256, 176),   // Q5_K
            14 => (256, 210),   // Q6_K
            15 => (256, 292),   // Q8_K
            23 => (256, 136),   // IQ4_XS
            24 => (1, 1),       // I8
            25 => (1, 2),       // I16
            26 => (1, 4),       // I32
            27 | 28 => (1, 8),  // I64, F64
            _ => return None,
        })
    }

    /// Bytes needed for `n` elements; `None` if `n` is not a whole number of blocks, the size
    /// overflows, or the type is unknown.
    pub fn bytes_for(self, n: u64) -> Option<u64> {
        let (block, bytes) = self.block_layout()?;
        if !n.is_multiple_of(block) {
            return None;
        }
        (n / block).checked_mul(bytes)
    }
}

/// Type tag of a metadata value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ValueType {
    U8,
    I8,
    U16,
    I16,
    U32,
    I32,
    F32,
    Bool,
    Str,
    Array,
    U64,
    I64,
    F64,
}

impl ValueType {
    pub fn from_id(id: u32) -> Option<Self> {
        Some(match id {
            0 => ValueType::U8,
            1 => ValueType::I8,
            2 => ValueType::U16,
            3 => ValueType::I16,
            4 => ValueType::U32,
            5 => ValueType::I32,
            6 => ValueType::F32,
            7 => ValueType::Bool,
            8 => ValueType::Str,
            9 => ValueType::Array,
            10 => ValueType::U64,
            11 => ValueType::I64,
            12 => ValueType::F64,
            _ => return None,
        })
    }

    pub fn id(self) -> u32 {
        match self {
            ValueType::U8 => 0,
            ValueType::I8 => 1,
            ValueType::U16 => 2,
            ValueType::I16 => 3,
            ValueType::U32 => 4,
            ValueType::I32 => 5,
            ValueType::F32 => 6,
            ValueType::Bool => 7,
            ValueType::Str => 8,
            ValueType::Array => 9,
            ValueType::U64 => 10,
            ValueType::I64 => 11,
            ValueType::F64 => 12,
        }
    }

    /// Encoded size of a fixed-size value; `None` for strings and arrays.
    pub fn fixed_size(self) -> Option<usize> {
        Some(match self {
            ValueType::U8 | ValueType::I8 | ValueType::Bool => 1,
            ValueType::U16 | ValueType::I16 => 2,
            ValueType::U32 | ValueType::I32 | ValueType::F32 => 4,
            ValueType::U64 | ValueType::I64 | ValueType::F64 => 8,
            ValueType::Str | ValueType::Array => return None,
        })
    }
}

/// A metadata value borrowed from the file.
#[derive(Clone, Copy, Debug)]
pub enum Value<'a> {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    F32(f32),
    Bool(bool),
    Str(&'a str),
    Array(Array<'a>),
    U64(u64),
    I64(i64),
    F64(f64),
}

impl Value<'_> {
    /// Any integer value that fits in `u32`.
    pub fn as_u32(&self) -> Option<u32> {
        match *self {
            Value::U8(v) => Some(v.into()),
            Value::U16(v) => Some(v.into()),
            Value::U32(v) => Some(v),
            Value::I8(v) => u32::try_from(v).ok(),
            Value::I16(v) => u32::try_from(v).ok(),
            Value::I32(v) => u32::try_from(v).ok(),
            Value::U64(v) => u32::try_from(v).ok(),
            Value::I64(v) => u32::try_from(v).ok(),
            _ => None,
        }
    }
}

/// A metadata array: element type, count and the raw bytes of all elements.
#[derive(Clone, Copy, Debug)]
pub struct Array<'a> {
    pub elem: ValueType,
    pub len: usize,
    /// Raw bytes of all elements; for strings the u64-length-prefixed sequence.
    pub payload: &'a [u8],
}

impl<'a> Array<'a> {
    /// Raw bytes of each string element (empty iterator for non-string arrays).
    pub fn str_iter(&self) -> impl Iterator<Item = &'a [u8]> {
        let mut cur = Cursor::new(self.payload);
        let n = if self.elem == ValueType::Str { self.len } else { 0 };
        (0..n).map_while(move |_| cur.gguf_bytes().ok())
    }

    fn fixed_at<const N: usize>(&self, ty: ValueType, i: usize) -> Option<[u8; N]> {
        if self.elem != ty || i >= self.len {
            return None;
        }
        let start = i.checked_mul(N)?;
        let b = self.payload.get(start..start.checked_add(N)?)?;
        b.try_into().ok()
    }

    pub fn u32_at(&self, i: usize) -> Option<u32> {
        self.fixed_at::<4>(ValueType::U32, i).map(u32::from_le_bytes)
    }

    pub fn i32_at(&self, i: usize) -> Option<i32> {
        self.fixed_at::<4>(ValueType::I32, i).map(i32::from_le_bytes)
    }

    pub fn f32_at(&self, i: usize) -> Option<f32> {
        self.fixed_at::<4>(ValueType::F32, i).map(f32::from_le_bytes)
    }
}

/// One tensor's description and its bytes inside the data section.
#[derive(Clone, Copy, Debug)]
pub struct TensorInfo<'a> {
    pub name: &'a str,
    pub n_dims: usize,
    /// `dims[0]` is the contiguous (innermost) dimension; unused entries are 1.
    pub dims: [u64; 4],
    pub ty: GgmlType,
    /// Exactly this tensor's bytes.
    pub data: &'a [u8],
}

impl TensorInfo<'_> {
    pub fn n_elements(&self) -> u64 {
        // Cannot overflow: parse checked the product.
        self.dims.iter().fold(1u64, |a, d| a.saturating_mul(*d))
    }
}

/// Bounds-checked little-endian reader over a byte slice.
#[derive(Clone, Copy)]
struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Cursor { buf, pos: 0 }
    }

    fn remaining(&self) -> usize {
        self.buf.len().saturating_sub(self.pos)
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let end = self.pos.checked_add(n).ok_or(Error::Truncated { what: "GGUF header" })?;
        let b = self.buf.get(self.pos..end).ok_or(Error::Truncated { what: "GGUF header" })?;
        self.pos = end;
        Ok(b)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N]> {
        let b = self.take(N)?;
        b.try_into().map_err(|_| Error::Truncated { what: "GGUF header" })
    }

    fn u8(&mut self) -> Result<u8> {
        Ok(self.array::<1>()?[0])
    }

    fn u32(&mut self) -> Result<u32> {
        self.array::<4>().map(u32::from_le_bytes)
    }

    fn u64(&mut self) -> Result<u64> {
        self.array::<8>().map(u64::from_le_bytes)
    }

    /// A u64 length that must fit in the remaining input.
    fn len(&mut self) -> Result<usize> {
        let n = self.u64()?;
        usize::try_from(n)
            .ok()
            .filter(|n| *n <= self.remaining())
            .ok_or(Error::Truncated { what: "GGUF string or array" })
    }

    fn gguf_bytes(&mut self) -> Result<&'a [u8]> {
        let n = self.len()?;
        self.take(n)
    }

    fn gguf_str(&mut self) -> Result<&'a str> {
        core::str::from_utf8(self.gguf_bytes()?)
            .map_err(|_| Error::Invalid { what: "GGUF string is not UTF-8" })
    }

    fn value(&mut self, ty: ValueType) -> Result<Value<'a>> {
        Ok(match ty {
            ValueType::U8 => Value::U8(self.u8()?),
            ValueType::I8 => Value::I8(self.u8()? as i8),
            ValueType::U16 => Value::U16(u16::from_le_bytes(self.array()?)),
            ValueType::I16 => Value::I16(i16::from_le_bytes(self.array()?)),
            ValueType::U32 => Value::U32(self.u32()?),
            ValueType::I32 => Value::I32(i32::from_le_bytes(self.array()?)),
            ValueType::F32 => Value::F32(f32::from_le_bytes(self.array()?)),
            ValueType::Bool => match self.u8()? {
                0 => Value::Bool(false),
                1 => Value::Bool(true),
                _ => return Err(Error::Invalid { what: "GGUF bool is not 0 or 1" }),
            },
            ValueType::Str => Value::Str(self.gguf_str()?),
            ValueType::U64 => Value::U64(self.u64()?),
            ValueType::I64 => Value::I64(i64::from_le_bytes(self.array()?)),
            ValueType::F64 => Value::F64(f64::from_le_bytes(self.array()?)),
            ValueType::Array => {
                let elem = ValueType::from_id(self.u32()?)
                    .ok_or(Error::Invalid { what: "GGUF array element type" })?;
                let count = self.u64()?;
                let len = usize::try_from(count).map_err(|_| Error::Truncated { what: "GGUF array" })?;
                let start = self.pos;
                match elem.fixed_size() {
                    Some(size) => {
                        let bytes = len.checked_mul(size).ok_or(Error::Truncated { what: "GGUF array" })?;
                        self.take(bytes)?;
                    }
                    None if elem == ValueType::Str => {
                        // Each string needs at least its 8-byte length: reject absurd counts
                        // before looping over them.
                        if len > self.remaining() / 8 {
                            return Err(Error::Truncated { what: "GGUF string array" });
                        }
                        for _ in 0..len {
                            self.gguf_bytes()?;
                        }
                    }
                    None => return Err(Error::Unsupported { what: "nested GGUF arrays" }),
                }
                let payload = self.buf.get(start..self.pos).ok_or(Error::Truncated { what: "GGUF array" })?;
                Value::Array(Array { elem, len, payload })
            }
        })
    }

    fn kv(&mut self) -> Result<(&'a str, Value<'a>)> {
        self.kv_at().map(|(key, _, value)| (key, value))
    }

    /// A key/value pair and the offset of its value in the file.
    fn kv_at(&mut self) -> Result<(&'a str, usize, Value<'a>)> {
        let key = self.gguf_str()?;
        let ty = ValueType::from_id(self.u32()?).ok_or(Error::Invalid { what: "GGUF value type" })?;
        let at = self.pos;
        Ok((key, at, self.value(ty)?))
    }

    /// Steps over a value of type `ty` (validated by [`Gguf::parse`]) without decoding it.
    fn skip_value(&mut self, ty: ValueType) -> Result<()> {
        match ty.fixed_size() {
            Some(size) => self.take(size).map(drop),
            None if ty == ValueType::Str => self.gguf_bytes().map(drop),
            None => self.value(ty).map(drop),
        }
    }

    /// Steps over a tensor info (validated by [`Gguf::parse`]), returning its name's bytes.
    fn skip_tensor_info(&mut self) -> Result<&'a [u8]> {
        let name = self.gguf_bytes()?;
        let n_dims = self.u32()? as usize;
        self.take(n_dims.checked_mul(8).ok_or(Error::Invalid { what: "GGUF tensor dimension count" })? + 12)?;
        Ok(name)
    }

    /// Reads a tensor info; `data` is resolved against `data_section` (empty during the
    /// first pass, when the section's start is not yet known).
    fn tensor_info(&mut self, data_section: Option<(&'a [u8], usize)>) -> Result<TensorInfo<'a>> {
        let name = self.gguf_str()?;
        let n_dims = self.u32()? as usize;
        if n_dims == 0 || n_dims > MAX_DIMS {
            return Err(Error::Invalid { what: "GGUF tensor dimension count" });
        }
        let mut dims = [1u64; MAX_DIMS];
        let mut n: u64 = 1;
        for d in dims.iter_mut().take(n_dims) {
            *d = self.u64()?;
            n = n.checked_mul(*d).ok_or(Error::Invalid { what: "GGUF tensor size overflows" })?;
        }
        let ty = GgmlType::from_id(self.u32()?);
        let offset = self.u64()?;
        let size = ty.bytes_for(n).ok_or(match ty.block_layout() {
            None => Error::Unsupported { what: "GGUF tensor type of unknown size" },
            Some(_) => Error::Invalid { what: "GGUF tensor size is not a whole number of blocks" },
        })?;
        let data = match data_section {
            None => &[][..],
            Some((section, align)) => {
                let off =
                    usize::try_from(offset).map_err(|_| Error::Invalid { what: "GGUF tensor offset" })?;
                if off % align != 0 {
                    return Err(Error::Misaligned { what: "GGUF tensor offset" });
                }
                let size =
                    usize::try_from(size).map_err(|_| Error::Truncated { what: "GGUF tensor data" })?;
                let end = off.checked_add(size).ok_or(Error::Truncated { what: "GGUF tensor data" })?;
                section.get(off..end).ok_or(Error::Truncated { what: "GGUF tensor data" })?
            }
        };
        Ok(TensorInfo { name, n_dims, dims, ty, data })
    }
}

/// A parsed GGUF image. Holds only offsets into `bytes`.
#[derive(Clone, Copy, Debug)]
pub struct Gguf<'a> {
    bytes: &'a [u8],
    version: u32,
    n_kv: usize,
    n_tensors: usize,
    kv_start: usize,
    ti_start: usize,
    data_start: usize,
    alignment: usize,
}

impl<'a> Gguf<'a> {
    /// Walks and bounds-checks the whole header: every KV and tensor info, counts against the
    /// remaining bytes, UTF-8 keys and names, tensor data ranges inside the file and aligned.
    /// After this succeeds no accessor can fail on structure.
    pub fn parse(bytes: &'a [u8]) -> Result<Gguf<'a>> {
        let mut cur = Cursor::new(bytes);
        if cur.take(4).map_err(|_| Error::BadMagic { expected: "GGUF" })? != MAGIC {
            return Err(Error::BadMagic { expected: "GGUF" });
        }
        let version = cur.u32()?;
        if version != 2 && version != 3 {
            return Err(Error::Unsupported { what: "GGUF version (only 2 and 3)" });
        }
        let n_tensors = cur.u64()?;
        let n_kv = cur.u64()?;
        // Smallest encodings: a KV is key length (8) + type (4) + 1 byte; a tensor info is
        // name length (8) + n_dims (4) + one dim (8) + type (4) + offset (8).
        let rem = cur.remaining() as u64;
        if n_kv > rem / 13 || n_tensors > rem / 32 {
            return Err(Error::Truncated { what: "GGUF header (counts exceed file size)" });
        }
        // Both fit in usize now, being smaller than the input length.
        let (n_kv, n_tensors) = (n_kv as usize, n_tensors as usize);

        let kv_start = cur.pos;
        let mut alignment = DEFAULT_ALIGNMENT;
        for _ in 0..n_kv {
            let (key, value) = cur.kv()?;
            if key == "general.alignment" {
                alignment = match value {
                    Value::U32(a) if a != 0 && a.is_power_of_two() => a as usize,
                    _ => return Err(Error::Invalid { what: "general.alignment" }),
                };
            }
        }

        let ti_start = cur.pos;
        for _ in 0..n_tensors {
            cur.tensor_info(None)?;
        }
        let header_end = cur.pos;
        let data_start = header_end
            .checked_next_multiple_of(alignment)
            .ok_or(Error::Invalid { what: "GGUF data offset" })?;
        // A file without tensors may end right after its header.
        let data_start = if data_start > bytes.len() && n_tensors == 0 { bytes.len() } else { data_start };
        let section = bytes.get(data_start..).ok_or(Error::Truncated { what: "GGUF padding before data" })?;

        let mut cur = Cursor { buf: bytes, pos: ti_start };
        for _ in 0..n_tensors {
            cur.tensor_info(Some((section, alignment)))?;
        }

        Ok(Gguf { bytes, version, n_kv, n_tensors, kv_start, ti_start, data_start, alignment })
    }

    pub fn version(&self) -> u32 {
        self.version
    }

    pub fn alignment(&self) -> usize {
        self.alignment
    }

    pub fn n_tensors(&self) -> usize {
        self.n_tensors
    }

    pub fn n_kv(&self) -> usize {
        self.n_kv
    }

    /// All key/value pairs in file order.
    pub fn kvs(&self) -> impl Iterator<Item = (&'a str, Value<'a>)> + 'a {
        let mut cur = Cursor { buf: self.bytes, pos: self.kv_start };
        (0..self.n_kv).map_while(move |_| cur.kv().ok())
    }

    /// The first value stored under `key`. Keys are compared as bytes and other values are
    /// stepped over undecoded: a model's load looks up many keys past its vocabulary.
    pub fn get(&self, key: &str) -> Option<Value<'a>> {
        let mut cur = Cursor { buf: self.bytes, pos: self.kv_start };
        for _ in 0..self.n_kv {
            let k = cur.gguf_bytes().ok()?;
            let ty = ValueType::from_id(cur.u32().ok()?)?;
            if k == key.as_bytes() {
                return cur.value(ty).ok();
            }
            cur.skip_value(ty).ok()?;
        }
        None
    }

    /// Any integer type whose value fits in `u32`.
    pub fn get_u32(&self, key: &'static str) -> Result<u32> {
        self.get(key).ok_or(Error::Missing { what: key })?.as_u32().ok_or(Error::Invalid { what: key })
    }

    /// F32, or F64 narrowed.
    pub fn get_f32(&self, key: &'static str) -> Result<f32> {
        match self.get(key).ok_or(Error::Missing { what: key })? {
            Value::F32(v) => Ok(v),
            Value::F64(v) => Ok(v as f32),
            _ => Err(Error::Invalid { what: key }),
        }
    }

    pub fn get_str(&self, key: &'static str) -> Result<&'a str> {
        match self.get(key).ok_or(Error::Missing { what: key })? {
            Value::Str(s) => Ok(s),
            _ => Err(Error::Invalid { what: key }),
        }
    }

    pub fn get_array(&self, key: &'static str) -> Result<Array<'a>> {
        match self.get(key).ok_or(Error::Missing { what: key })? {
            Value::Array(a) => Ok(a),
            _ => Err(Error::Invalid { what: key }),
        }
    }

    /// All tensors in file order.
    pub fn tensors(&self) -> impl Iterator<Item = TensorInfo<'a>> + 'a {
        let section = self.data_section();
        let align = self.alignment;
        let mut cur = Cursor { buf: self.bytes, pos: self.ti_start };
        (0..self.n_tensors).map_while(move |_| cur.tensor_info(Some((section, align))).ok())
    }

    /// The first tensor called `name`. Names are compared as bytes and only the match is
    /// decoded: a model's load looks up every tensor by name.
    pub fn tensor(&self, name: &str) -> Option<TensorInfo<'a>> {
        let mut cur = Cursor { buf: self.bytes, pos: self.ti_start };
        for _ in 0..self.n_tensors {
            let at = cur.pos;
            if cur.skip_tensor_info().ok()? == name.as_bytes() {
                cur.pos = at;
                return cur.tensor_info(Some((self.data_section(), self.alignment))).ok();
            }
        }
        None
    }

    /// Everything from the (aligned) start of tensor data to the end of the file.
    pub fn data_section(&self) -> &'a [u8] {
        self.bytes.get(self.data_start..).unwrap_or(&[])
    }

    /// Where the image ends: the last tensor's data, padded to the alignment as the writer
    /// pads it. Bytes after that (a flash partition's erased tail) belong to no image.
    pub fn image_len(&self) -> usize {
        let base = self.bytes.as_ptr() as usize;
        let last = self.tensors().map(|t| t.data.as_ptr() as usize - base + t.data.len()).max();
        let end = last.unwrap_or(self.data_start).max(self.data_start);
        end.checked_next_multiple_of(self.alignment).unwrap_or(end).min(self.bytes.len())
    }

    /// Byte offset of the data section within the file.
    pub fn data_offset(&self) -> usize {
        self.data_start
    }

    /// Whether this engine wrote the image: it has a `ruvllm.*` key or tensor. A one-byte
    /// change cannot hide that, as `convert` writes several of them.
    pub fn is_own(&self) -> bool {
        self.kvs().any(|(k, _)| k.starts_with(OWN_PREFIX))
            || self.tensors().any(|t| t.name.starts_with(OWN_PREFIX))
    }

    /// Checks `ruvllm.checksum` against the whole image (rule in the module docs): `Ok(true)`
    /// when it matches, `Ok(false)` for a GGUF of another tool (no `ruvllm.*` names at all).
    /// An image of this engine without the key is refused ([`CHECKSUM_MISSING`]).
    pub fn verify_checksum(&self) -> Result<bool> {
        let mut cur = Cursor { buf: self.bytes, pos: self.kv_start };
        let found = (0..self.n_kv).map_while(|_| cur.kv_at().ok()).find(|(k, _, _)| *k == CHECKSUM_KEY);
        let (at, stored) = match found {
            None if self.is_own() => return Err(Error::Missing { what: CHECKSUM_MISSING }),
            None => return Ok(false),
            Some((_, at, Value::U32(v))) => (at, v),
            Some(_) => return Err(Error::Invalid { what: CHECKSUM_KEY }),
        };
        let computed = image_crc(self.bytes, at);
        if stored == computed {
            Ok(true)
        } else if stored == crc32(self.data_section()) {
            // Images written before the checksum covered the header summed only the data.
            Err(Error::Unsupported { what: CHECKSUM_OLD })
        } else {
            Err(Error::Checksum { stored, computed })
        }
    }
}

/// Zero-copy `i32` view of little-endian tensor bytes (same rules as [`as_f32`]).
pub fn as_i32(bytes: &[u8]) -> Result<&[i32]> {
    let words = as_f32(bytes)?;
    Ok(bytemuck::cast_slice(words))
}

/// Zero-copy `f32` view of little-endian tensor bytes.
pub fn as_f32(bytes: &[u8]) -> Result<&[f32]> {
    if cfg!(target_endian = "big") {
        return Err(Error::Unsupported { what: "in-place f32 view on a big-endian target" });
    }
    if !bytes.len().is_multiple_of(4) {
        return Err(Error::Invalid { what: "f32 tensor length is not a multiple of 4" });
    }
    if bytes.as_ptr().align_offset(core::mem::align_of::<f32>()) != 0 {
        return Err(Error::Misaligned { what: "f32 tensor data" });
    }
    // SAFETY: pointer is aligned for f32, the length covers exactly len/4 values inside
    // `bytes`, every bit pattern is a valid f32, and the lifetime is tied to `bytes`.
    Ok(unsafe { core::slice::from_raw_parts(bytes.as_ptr().cast::<f32>(), bytes.len() / 4) })
}

/// Zero-copy `i8` view.
pub fn as_i8(bytes: &[u8]) -> &[i8] {
    // SAFETY: u8 and i8 have the same size and alignment and every bit pattern is valid.
    unsafe { core::slice::from_raw_parts(bytes.as_ptr().cast::<i8>(), bytes.len()) }
}

/// Exact IEEE half to single conversion, including subnormals, infinities and NaN.
pub fn f16_to_f32(bits: u16) -> f32 {
    f32::from_bits(f16_to_f32_bits(bits))
}

/// The IEEE-754 single bits of a half's value (exact: every half is a single), with integer
/// operations only, for the integer path's Q8_0 scales.
pub fn f16_to_f32_bits(bits: u16) -> u32 {
    let sign = ((bits as u32) & 0x8000) << 16;
    let exp = ((bits >> 10) & 0x1f) as u32;
    let mant = (bits & 0x3ff) as u32;
    match (exp, mant) {
        (0, 0) => sign,
        (0, m) => {
            // Subnormal half: renormalise; shift the leading 1 up to bit 10.
            let shift = m.leading_zeros() - 21;
            let m = (m << shift) & 0x3ff;
            let e = 127 - 15 + 1 - shift;
            sign | (e << 23) | (m << 13)
        }
        (0x1f, m) => sign | 0x7f80_0000 | (m << 13),
        (e, m) => sign | ((e + 127 - 15) << 23) | (m << 13),
    }
}

/// Nearest-even single to half conversion (used by the writer's tests and tooling).
pub fn f32_to_f16(x: f32) -> u16 {
    let bits = x.to_bits();
    let sign = ((bits >> 16) & 0x8000) as u16;
    let exp = ((bits >> 23) & 0xff) as i32;
    let mant = bits & 0x7f_ffff;
    if exp == 0xff {
        let nan = if mant != 0 { 0x200 } else { 0 };
        return sign | 0x7c00 | nan;
    }
    let e = exp - 127 + 15;
    if e >= 0x1f {
        return sign | 0x7c00;
    }
    if e <= 0 {
        if e < -10 {
            return sign;
        }
        // Subnormal half: include the implicit bit, then round right-shifted mantissa.
        let m = mant | 0x80_0000;
        let shift = (14 - e) as u32;
        let half = 1u32 << (shift - 1);
        let rest = m & ((1 << shift) - 1);
        let mut v = m >> shift;
        if rest > half || (rest == half && v & 1 == 1) {
            v += 1;
        }
        return sign | v as u16;
    }
    let mut v = ((e as u32) << 10) | (mant >> 13);
    let rest = mant & 0x1fff;
    if rest > 0x1000 || (rest == 0x1000 && v & 1 == 1) {
        // A carry into the exponent is the correct rounding (up to infinity).
        v += 1;
    }
    sign | v as u16
}

#[cfg(test)]
mod tests;
