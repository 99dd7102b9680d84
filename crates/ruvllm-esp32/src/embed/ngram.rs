//! The fallback embedder for chips without a model: hashed character n-grams.

use super::{has_word, normalize, Embedder};
use crate::error::{Error, Result};

/// Marks a word's start and end inside its n-grams (`<cat>`: `<ca`, `cat`, `at>`), so a
/// prefix or suffix counts apart from the same letters inside a word.
const START: char = '<';
const END: char = '>';

/// Words so common that they say nothing about a text's topic; skipped when
/// [`NgramEmbedder::skip_common`] is set.
const COMMON: &[&str] = &[
    "a", "an", "the", "is", "are", "was", "be", "of", "to", "in", "on", "at", "and", "or", "it", "its",
    "what", "which", "who", "how", "do", "does", "that", "this", "with", "for", "from", "by", "can",
];

/// Lower-cased character 3-grams of every word (with the boundary markers), optionally plus
/// the whole word ([`NgramEmbedder::word_weight`]), each hashed with 64-bit FNV-1a into two of
/// the `D` buckets with a sign taken from the hash (a sparse random projection that needs no
/// table), then scaled to unit length.
///
/// A word is a maximal run of letters and digits; everything else separates words. Texts of
/// any length are read in one pass with constant memory; only characters past the 32nd of
/// one word are ignored.
#[derive(Debug, Clone, Copy)]
pub struct NgramEmbedder<const D: usize> {
    /// Weight of a whole-word feature relative to one 3-gram. Default 0 (3-grams only): on the
    /// retrieval set that gave the best or near-best hit@1 at every `D` from 64 to 1024.
    pub word_weight: f32,
    /// Skip very common function words (`the`, `is`, `what`, ...).
    pub skip_common: bool,
}

impl<const D: usize> Default for NgramEmbedder<D> {
    fn default() -> Self {
        NgramEmbedder { word_weight: 0.0, skip_common: true }
    }
}

impl<const D: usize> NgramEmbedder<D> {
    pub fn new() -> Self {
        Self::default()
    }
}

/// Calls `f(hash, weight)` for every feature of `text`: the marked 3-grams of each word and,
/// when `word_weight` is not 0, the word itself; words in `COMMON` are skipped when
/// `skip_common` is set. Returns the number of words that gave features. The one feature
/// extractor of the n-gram embedders (random and learned projections alike).
pub fn for_each_feature(
    text: &str,
    skip_common: bool,
    word_weight: f32,
    mut f: impl FnMut(u64, f32),
) -> usize {
    let mut word = [' '; MAX_WORD];
    let mut len = 0usize;
    let mut long = false;
    let mut words = 0;
    // Chars of the text, then one separator to end the last word. Each word's characters
    // are gathered first (to decide whether it is common), then its features hashed.
    for c in text.chars().flat_map(char::to_lowercase).chain(core::iter::once(' ')) {
        if c.is_alphanumeric() {
            if len < MAX_WORD {
                word[len] = c;
                len += 1;
            } else {
                long = true;
            }
            continue;
        }
        if len > 0 {
            let w = &word[..len];
            let common = !long && skip_common && COMMON.iter().any(|s| s.chars().eq(w.iter().copied()));
            if !common {
                word_features(w, word_weight, &mut f);
                words += 1;
            }
            len = 0;
            long = false;
        }
    }
    words
}

/// One word's features: its marked 3-grams and, weighted, the word itself.
fn word_features(w: &[char], word_weight: f32, f: &mut impl FnMut(u64, f32)) {
    let mut win = [START; 3];
    let marked = core::iter::once(START).chain(w.iter().copied()).chain(core::iter::once(END));
    for (i, c) in marked.enumerate() {
        win.rotate_left(1);
        win[2] = c;
        if i >= 2 {
            f(fnv1a(3, &win), 1.0);
        }
    }
    if word_weight != 0.0 {
        f(fnv1a(1, w), word_weight);
    }
}

/// 64-bit FNV-1a over `chars` (each as its 4 little-endian bytes) after a one-byte `kind`.
fn fnv1a(kind: u8, chars: &[char]) -> u64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut h = (OFFSET ^ kind as u64).wrapping_mul(PRIME);
    for c in chars {
        for b in (*c as u32).to_le_bytes() {
            h = (h ^ b as u64).wrapping_mul(PRIME);
        }
    }
    h
}

/// A second independent-looking hash from the first (the splitmix64 finalizer).
pub(crate) fn remix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Adds feature hash `h` with weight `w` to two buckets of `out`.
fn add<const D: usize>(out: &mut [f32; D], h: u64, w: f32) {
    for h in [h, remix(h)] {
        let bucket = ((h >> 1) % D as u64) as usize;
        out[bucket] += if h & 1 == 0 { w } else { -w };
    }
}

/// Characters of a word beyond this many are ignored (its features come from its start).
const MAX_WORD: usize = 32;

impl<const D: usize> Embedder<D> for NgramEmbedder<D> {
    fn embed(&mut self, text: &str, out: &mut [f32; D]) -> Result<()> {
        if D == 0 {
            return Err(Error::Invalid { what: "embedding dimension is zero" });
        }
        if !has_word(text) {
            return Err(Error::Invalid { what: "text has nothing to embed (no word)" });
        }
        out.fill(0.0);
        for_each_feature(text, self.skip_common, self.word_weight, |h, w| add(out, h, w));
        normalize(out)
    }
}

/// The row of a learned `rows`-row table that feature hash `h` selects (a learned embedder's
/// counterpart of the random buckets; the trainer uses the same mapping).
pub fn table_row(h: u64, rows: usize) -> usize {
    (remix(h) % rows.max(1) as u64) as usize
}
