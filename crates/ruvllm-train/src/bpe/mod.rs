//! Byte-fallback BPE tokenizer training for the engine, in llama2.c / SentencePiece layout.
//!
//! # Vocabulary layout
//!
//! id 0 `<unk>`, 1 `<s>` (BOS), 2 `</s>` (EOS), ids 3..=258 the byte-fallback pieces
//! `<0x00>`..`<0xFF>`, then the normal pieces: `" "` first (the engine needs it for the
//! dummy prefix), then every character of the corpus (most frequent first, as many as fit),
//! then the learned merges in training order. Pieces hold plain spaces, like llama2.c's
//! `tokenizer.bin`. Normal piece `k` (id `259 + k`) scores `-k`, so the engine's encoder,
//! which repeatedly merges the adjacent pair whose concatenation is the best-scoring piece,
//! replays the merges in training order. The reserved pieces (`<unk>`, `<s>`, `</s>` and the
//! byte pieces) score [`RESERVED_SCORE`], the engine's merge floor, so no merge ever produces
//! them.
//!
//! # Pre-splitting
//!
//! Training sees the text (with the engine's dummy-prefix space in front) cut into chunks:
//!
//! * a run of letters (any alphabetic character, plus `'` so "didn't" stays whole), with the
//!   single space before it when there is one (`" Once"`, `" upon"`);
//! * one ASCII digit, with the single space before it when there is one (`" 7"`);
//! * a run of one repeated other character (`"\n\n"`, `"..."`, `","`);
//! * any other space on its own (`" "`): spaces never join each other.
//!
//! Merges never cross a chunk boundary, and every learned piece is itself one chunk, so it
//! cannot occur across a boundary in any text: a piece made of letters cannot continue past a
//! non-letter, a space only ever starts a piece and always joins the letters or digit after
//! it, and a run of one character is never split. The engine's encoder runs on the whole text
//! without any pre-splitting, yet it can only ever merge within chunks, and the order of the
//! merges inside one chunk does not depend on the rest of the text: so it produces exactly
//! the trainer's segmentation. [`Encoder`] uses that to encode long texts fast (chunk by chunk
//! with a cache) with output identical to the engine's `tokenizer::encode`.
//!
//! # Training
//!
//! The trainer counts the unique chunks once, then keeps each unique chunk's current
//! segmentation: exactly the engine's encoding of that chunk with the pieces learned so far.
//! Candidate pieces are concatenations of adjacent tokens, counted over all chunks weighted by
//! frequency; the most frequent (ties: smallest bytes) becomes the next piece, and only the
//! chunks containing it are re-encoded (by continuing the engine's merge loop, which is exact
//! because the new piece scores lowest of all). Characters beyond the vocabulary's room fall
//! back to byte tokens, which never merge. Chunks longer than 256 bytes (text without spaces)
//! are cut for counting only. [`train`] treats the text as one whole (one dummy prefix);
//! [`train_documents`] gives every document its own, as when each document is encoded
//! separately after BOS.
//!
//! The merge loop is the engine's (llama2.c's) rule computed in O(n log n) with a heap over a
//! linked list of tokens, tested against the plain quadratic loop.

mod encode;
mod train;

#[cfg(test)]
mod tests;

use core::fmt;

pub use encode::{decode, Encoder};
pub use ruvllm_esp32::convert::HostVocab;
pub use train::{train, train_documents};

/// Id of `<unk>`.
pub const UNK: u32 = 0;
/// Id of `<s>`, the beginning-of-sequence token.
pub const BOS: u32 = 1;
/// Id of `</s>`, the end-of-sequence token.
pub const EOS: u32 = 2;
/// Id of the byte-fallback piece `<0x00>`; byte `b` is id `BYTE_BASE + b`.
pub const BYTE_BASE: u32 = 3;
/// Id of the first normal piece (`" "`).
pub const FIRST_PIECE: u32 = 259;
/// Smallest vocabulary [`train`] accepts: the reserved pieces plus `" "`.
pub const MIN_VOCAB: usize = FIRST_PIECE as usize + 1;
/// Largest vocabulary the engine loads.
pub const MAX_VOCAB: usize = ruvllm_esp32::model::config::MAX_VOCAB;
/// Score of the reserved pieces: the engine never merges into a piece scoring this low.
pub const RESERVED_SCORE: f32 = -1e10;

/// Share of control characters (other than tab, newline, carriage return and form feed) above
/// which a text counts as binary.
const MAX_CONTROL_PERCENT: usize = 10;

/// Why a corpus or a vocabulary size was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BpeError {
    /// The corpus is empty or only whitespace.
    EmptyCorpus,
    /// The corpus holds a NUL byte: a binary file, not text.
    NulByte { offset: usize },
    /// The corpus is not valid UTF-8.
    InvalidUtf8 { offset: usize },
    /// Too many control characters for text.
    MostlyControl { control: usize, chars: usize },
    /// The vocabulary cannot even hold the reserved pieces and `" "`.
    VocabTooSmall { requested: usize, min: usize },
    /// More pieces than the engine loads.
    VocabTooLarge { requested: usize, max: usize },
    /// The corpus has too few distinct chunks to learn that many pieces.
    CorpusTooSmall { requested: usize, possible: usize },
    /// The vocabulary has no `" "` piece, which the engine's encoder needs (dummy prefix).
    NoSpacePiece,
}

impl fmt::Display for BpeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BpeError::EmptyCorpus => write!(f, "the corpus is empty (no text to train the tokenizer on)"),
            BpeError::NulByte { offset } => {
                write!(f, "the corpus looks binary: NUL byte at offset {offset} (expected UTF-8 text)")
            }
            BpeError::InvalidUtf8 { offset } => {
                write!(f, "the corpus is not valid UTF-8 text: bad byte sequence at offset {offset}")
            }
            BpeError::MostlyControl { control, chars } => write!(
                f,
                "the corpus looks binary: {control} of its {chars} characters are control characters"
            ),
            BpeError::VocabTooSmall { requested, min } => write!(
                f,
                "vocabulary size {requested} is too small: at least {min} (3 special tokens, 256 byte tokens and \" \")"
            ),
            BpeError::VocabTooLarge { requested, max } => {
                write!(f, "vocabulary size {requested} is too large: the engine loads at most {max}")
            }
            BpeError::CorpusTooSmall { requested, possible } => write!(
                f,
                "the corpus is too small for a vocabulary of {requested}: it can make only {possible} pieces \
                 (use more text or a smaller vocabulary)"
            ),
            BpeError::NoSpacePiece => write!(f, "the vocabulary has no \" \" piece (needed for the dummy prefix)"),
        }
    }
}

impl std::error::Error for BpeError {}

/// Checks that `bytes` is a text corpus (UTF-8, not empty, no NUL, at most 10% control
/// characters other than tab, newline, carriage return and form feed) and returns it as text.
pub fn check_text(bytes: &[u8]) -> Result<&str, BpeError> {
    if let Some(offset) = bytes.iter().position(|&b| b == 0) {
        return Err(BpeError::NulByte { offset });
    }
    let text = core::str::from_utf8(bytes).map_err(|e| BpeError::InvalidUtf8 { offset: e.valid_up_to() })?;
    if text.trim().is_empty() {
        return Err(BpeError::EmptyCorpus);
    }
    let (chars, control) = count_control(text);
    if control * 100 > chars * MAX_CONTROL_PERCENT {
        return Err(BpeError::MostlyControl { control, chars });
    }
    Ok(text)
}

/// (characters, control characters other than tab, newline, carriage return, form feed).
fn count_control(text: &str) -> (usize, usize) {
    let (mut chars, mut control) = (0usize, 0usize);
    for c in text.chars() {
        chars += 1;
        if c.is_control() && !matches!(c, '\t' | '\n' | '\r' | '\x0c') {
            control += 1;
        }
    }
    (chars, control)
}

/// Character classes of the pre-splitter.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Class {
    Letter,
    Digit,
    Space,
    Other,
}

fn class(c: char) -> Class {
    if c == ' ' {
        Class::Space
    } else if c.is_alphabetic() || c == '\'' {
        Class::Letter
    } else if c.is_ascii_digit() {
        Class::Digit
    } else {
        Class::Other
    }
}

/// The pre-split chunks of `text`, in order; they concatenate back to `text`.
pub fn chunks(text: &str) -> Chunks<'_> {
    Chunks { rest: text }
}

/// Iterator of [`chunks`].
#[derive(Clone, Debug)]
pub struct Chunks<'a> {
    rest: &'a str,
}

impl<'a> Iterator for Chunks<'a> {
    type Item = &'a str;

    fn next(&mut self) -> Option<&'a str> {
        let mut it = self.rest.char_indices();
        let (_, first) = it.next()?;
        let mut end = first.len_utf8();
        let mut cls = class(first);
        if cls == Class::Space {
            match it.next().map(|(_, c)| (c, class(c))) {
                Some((c, k @ (Class::Letter | Class::Digit))) => {
                    end += c.len_utf8();
                    cls = k;
                }
                _ => cls = Class::Space,
            }
        }
        match cls {
            Class::Letter => {
                for c in self.rest[end..].chars() {
                    if class(c) != Class::Letter {
                        break;
                    }
                    end += c.len_utf8();
                }
            }
            Class::Other => {
                for c in self.rest[end..].chars() {
                    if c != first {
                        break;
                    }
                    end += c.len_utf8();
                }
            }
            Class::Digit | Class::Space => {}
        }
        let (head, tail) = self.rest.split_at(end);
        self.rest = tail;
        Some(head)
    }
}

/// The `<0xHH>` piece of a byte, as SentencePiece writes it.
pub(crate) fn byte_piece(b: u8) -> Vec<u8> {
    format!("<0x{b:02X}>").into_bytes()
}
