//! The learned n-gram embedder: the same hashed features as [`NgramEmbedder`], each picking a
//! row of an int8 table learned on the corpus (ruvllm-train's `embedder` module), read in
//! place from flash.
//!
//! [`NgramEmbedder`]: super::NgramEmbedder

use super::ngram::{for_each_feature, table_row};
use super::{normalize, Embedder};
use crate::error::{Error, Result};

/// First bytes of a table file.
pub const TABLE_MAGIC: &[u8; 8] = b"RVNGRAM1";
/// Bytes before the table: magic, rows (u32), dim (u32), word weight (u8), skip common (u8),
/// two reserved bytes, CRC-32 of the table (u32), all little-endian.
pub const TABLE_HEADER: usize = 24;

/// Features of one text that count: 4096 x 255 x 127 stays inside an `i32` sum. A longer
/// text is embedded from its start.
const MAX_FEATURES: usize = 4096;

/// Hashed character 3-grams (and whole words, weighted) summed over rows of a learned
/// `rows x D` int8 table, then scaled to unit length. The sum is exact in `i32`, so the
/// embedding costs one float pass of `D` values per text.
#[derive(Debug, Clone, Copy)]
pub struct TableEmbedder<'a, const D: usize> {
    table: &'a [i8],
    rows: usize,
    word_weight: u8,
    skip_common: bool,
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

impl<'a, const D: usize> TableEmbedder<'a, D> {
    /// Reads a table file in place. Refuses a wrong magic, a dimension other than `D`, a length
    /// that does not match, and a table whose checksum fails.
    pub fn from_bytes(bytes: &'a [u8]) -> Result<Self> {
        if bytes.len() < TABLE_HEADER || &bytes[..8] != TABLE_MAGIC {
            return Err(Error::Invalid { what: "not an n-gram table file (bad magic)" });
        }
        let rows = u32_at(bytes, 8) as usize;
        let dim = u32_at(bytes, 12) as usize;
        if dim != D || D == 0 {
            return Err(Error::Invalid { what: "n-gram table has another dimension than the embedder" });
        }
        if rows == 0 || rows.checked_mul(dim) != Some(bytes.len() - TABLE_HEADER) {
            return Err(Error::Invalid { what: "n-gram table file has the wrong length" });
        }
        let data = &bytes[TABLE_HEADER..];
        if crc32fast::hash(data) != u32_at(bytes, 20) {
            return Err(Error::Invalid { what: "n-gram table checksum mismatch" });
        }
        // SAFETY: i8 and u8 have the same size and alignment; every bit pattern is valid.
        let table = unsafe { core::slice::from_raw_parts(data.as_ptr() as *const i8, data.len()) };
        Ok(TableEmbedder { table, rows, word_weight: bytes[16], skip_common: bytes[17] != 0 })
    }

    pub fn rows(&self) -> usize {
        self.rows
    }
}

/// A table file's bytes (the trainer writes it; [`TableEmbedder::from_bytes`] reads it).
#[cfg(feature = "alloc")]
pub fn table_file(
    rows: usize,
    dim: usize,
    word_weight: u8,
    skip_common: bool,
    table: &[i8],
) -> alloc::vec::Vec<u8> {
    assert_eq!(table.len(), rows * dim, "table is rows x dim");
    let data: alloc::vec::Vec<u8> = table.iter().map(|&x| x as u8).collect();
    let mut out = alloc::vec::Vec::with_capacity(TABLE_HEADER + data.len());
    out.extend_from_slice(TABLE_MAGIC);
    out.extend_from_slice(&(rows as u32).to_le_bytes());
    out.extend_from_slice(&(dim as u32).to_le_bytes());
    out.extend_from_slice(&[word_weight, skip_common as u8, 0, 0]);
    out.extend_from_slice(&crc32fast::hash(&data).to_le_bytes());
    out.extend_from_slice(&data);
    out
}

impl<const D: usize> TableEmbedder<'_, D> {
    /// The table rows of `text`'s features summed (exact in `i32`); the number of words.
    fn accumulate(&self, text: &str, acc: &mut [i32; D]) -> usize {
        let (rows, table, ww) = (self.rows, self.table, self.word_weight as i32);
        let mut left = MAX_FEATURES;
        for_each_feature(text, self.skip_common, ww as f32, |h, w| {
            if left == 0 {
                return;
            }
            left -= 1;
            // Weights are 1 (a 3-gram) or the word weight: integers.
            let w = if w == 1.0 { 1 } else { ww };
            let row = &table[table_row(h, rows) * D..][..D];
            acc.iter_mut().zip(row).for_each(|(a, &x)| *a += w * x as i32);
        })
    }

    /// `text`'s direction in int8 (the largest value +-127) and the inverse length of that
    /// int8 vector, so that a cosine is an integer dot product and two multiplies: integer
    /// work but for one square root, for the chips without an FPU. `None` when no feature
    /// counts (no word, or only common words when the table skips them).
    pub fn embed_i8(&self, text: &str, out: &mut [i8; D]) -> Option<f32> {
        let mut acc = [0i32; D];
        if self.accumulate(text, &mut acc) == 0 {
            return None;
        }
        let max = acc.iter().map(|a| a.unsigned_abs()).max().unwrap_or(0);
        if max == 0 {
            return None;
        }
        let mut n2 = 0i64;
        for (o, &a) in out.iter_mut().zip(&acc) {
            // |a| <= max, so the quotient is in -127..=127; a word's sum is far below the
            // i32 bound of a * 127, a long text's may not be.
            let q = if max <= (i32::MAX / 127) as u32 {
                a * 127 / max as i32
            } else {
                (a as i64 * 127 / max as i64) as i32
            };
            *o = q as i8;
            n2 += i64::from(q * q);
        }
        Some(1.0 / libm::sqrtf(n2 as f32))
    }
}

impl<const D: usize> Embedder<D> for TableEmbedder<'_, D> {
    fn embed(&mut self, text: &str, out: &mut [f32; D]) -> Result<()> {
        let mut acc = [0i32; D];
        if self.accumulate(text, &mut acc) == 0 {
            return Err(Error::Invalid { what: "text has nothing to embed (no word)" });
        }
        out.iter_mut().zip(&acc).for_each(|(o, &a)| *o = a as f32);
        normalize(out)
    }
}
