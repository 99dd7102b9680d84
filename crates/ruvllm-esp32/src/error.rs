//! One error type for everything that reads untrusted input (model files, tokenizer data,
//! prompts) or runs out of a fixed capacity. Variants carry `&'static str` context so the type
//! stays `no_std` and allocation-free, and every message fits on one line.

use core::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Error {
    /// The input ended before a structure it announced (`what` names the structure).
    Truncated { what: &'static str },
    /// The file does not start with the magic bytes of the format we expected.
    BadMagic { expected: &'static str },
    /// A well-formed input that uses a feature this engine does not implement.
    Unsupported { what: &'static str },
    /// A value that cannot be right (absurd dimension, offset past the end, bad UTF-8, ...).
    Invalid { what: &'static str },
    /// A required GGUF key or tensor is missing.
    Missing { what: &'static str },
    /// The stored checksum does not match the data.
    Checksum { stored: u32, computed: u32 },
    /// A byte buffer is not aligned for in-place reading of its tensors.
    Misaligned { what: &'static str },
    /// A caller-provided buffer is smaller than required.
    BufferTooSmall { need: usize, have: usize },
    /// A position or token count exceeds the context length the state was built for.
    ContextFull { need: usize, capacity: usize },
    /// A fixed-capacity container (a vector index) has no free slot left.
    Full { capacity: usize },
    /// The flash under a persistent store failed (driver error, out of bounds, power lost
    /// mid-operation) or has no room left for a write (`what` says which).
    Storage { what: &'static str },
    /// A weight or scale of a tensor (llama.cpp name, `blk.{layer}.` prefixed for a layer's) is
    /// NaN or infinite.
    NonFinite { tensor: &'static str, layer: Option<usize> },
    /// A tokenizer built for another vocabulary size than the model's.
    VocabMismatch { tokenizer: usize, model: usize },
    /// A persistent store found data it cannot use and could not repair (`what` says what was
    /// found and what to do).
    Corrupt { what: &'static str },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Truncated { what } => write!(f, "truncated input: {what} runs past the end"),
            Error::BadMagic { expected } => write!(f, "wrong magic: not a {expected} file"),
            Error::Unsupported { what } => write!(f, "unsupported: {what}"),
            Error::Invalid { what } => write!(f, "invalid: {what}"),
            Error::Missing { what } => write!(f, "missing: {what}"),
            Error::Checksum { stored, computed } => write!(
                f,
                "checksum mismatch: stored {stored:#010x}, computed {computed:#010x} (corrupt image)"
            ),
            Error::Misaligned { what } => write!(f, "misaligned: {what}"),
            Error::BufferTooSmall { need, have } => {
                write!(f, "buffer too small: need {need} bytes, have {have}")
            }
            Error::ContextFull { need, capacity } => {
                write!(f, "context full: need {need} positions, capacity is {capacity}")
            }
            Error::Full { capacity } => write!(f, "full: all {capacity} slots are in use"),
            Error::NonFinite { tensor, layer } => {
                f.write_str("invalid: tensor ")?;
                if let Some(l) = layer {
                    write!(f, "blk.{l}.")?;
                }
                write!(f, "{tensor} holds a NaN or infinite weight or scale (a damaged or diverged model)")
            }
            Error::VocabMismatch { tokenizer, model } => write!(
                f,
                "the tokenizer has {tokenizer} tokens but the model's vocabulary has {model}: use the model's own tokenizer"
            ),
            Error::Storage { what } => write!(f, "storage: {what}"),
            Error::Corrupt { what } => write!(f, "corrupt store: {what}"),
        }
    }
}

// In core since Rust 1.81 (the MSRV is above it): `?` into `Box<dyn Error>` works without std.
impl core::error::Error for Error {}

pub type Result<T> = core::result::Result<T, Error>;
