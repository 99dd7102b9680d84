//! A character trigram model: how surprising a text's letters are to English as the built-in
//! corpus writes it. Random letters ("qwzx vbnm"), keyboard runs and blobs are full of
//! trigrams English never writes; everyday words, also ones the corpus never used, are made of
//! common ones. It is the cheap half of [`super::language`]'s score: a table lookup a
//! character (tens of instructions on a chip), where the language model costs millions a
//! token.
//!
//! **Symbols** ([`symbol`]): 32 classes: a boundary (start of text, any run of whitespace),
//! the 26 letters (case folded), a digit, sentence punctuation, an apostrophe or hyphen,
//! another ASCII symbol, and a non-ASCII character.
//!
//! **File** (read in place, [`CharModel::parse`]): a 16-byte header, `RVCHAR3\0`, the symbol
//! count (32), the unit (8: values are eighths of a bit), two zero bytes and the CRC-32
//! (IEEE) of the table, little-endian; then 32 x 32 x 32 bytes, entry `(a * 32 + b) * 32 + c`
//! the surprise `-log2 P(c | a b)` in eighths of a bit (capped at 255). The trainer
//! (`ruvllm-train`'s `chars`) smooths the counts, so no entry is infinite.

/// Symbol classes.
pub const SYMBOLS: usize = 32;
/// The table's bytes.
pub const TABLE_LEN: usize = SYMBOLS * SYMBOLS * SYMBOLS;
/// The header's bytes.
pub const HEADER_LEN: usize = 16;
/// The file's first 8 bytes.
pub const MAGIC: &[u8; 8] = b"RVCHAR3\0";
/// Table values are this many steps per bit.
pub const UNIT: u8 = 8;
/// A transition at least this surprising (bits) counts as rare ([`CharSurprise::rare`]).
pub const RARE_BITS: f32 = 10.0;
/// Most characters scored (a console line has fewer; the rest of a longer text is not read).
pub const MAX_CHARS: usize = 512;

/// The boundary symbol: start of text and whitespace.
pub const BOUNDARY: u8 = 0;

/// The class of `c` (module docs).
pub fn symbol(c: char) -> u8 {
    match c {
        'a'..='z' => c as u8 - b'a' + 1,
        'A'..='Z' => c as u8 - b'A' + 1,
        '0'..='9' => 27,
        '.' | ',' | '?' | '!' | ':' | ';' => 28,
        '\'' | '-' => 29,
        c if c.is_ascii_whitespace() => BOUNDARY,
        c if c.is_ascii() => 30,
        _ => 31,
    }
}

/// Calls `f(a, b, c)` for each trigram of `text`'s symbols, from the start context (two
/// boundaries) to the last character (at most [`MAX_CHARS`]); whitespace runs are one boundary.
pub fn for_each_trigram(text: &str, mut f: impl FnMut(u8, u8, u8)) {
    let (mut a, mut b) = (BOUNDARY, BOUNDARY);
    for c in text.chars().take(MAX_CHARS) {
        let s = symbol(c);
        if s == BOUNDARY && b == BOUNDARY {
            continue;
        }
        f(a, b, s);
        (a, b) = (b, s);
    }
}

/// Why a character model file is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CharModelError {
    /// Not a character trigram file, or another layout.
    Format,
    /// The table's checksum does not match: a damaged file.
    Checksum,
}

impl core::fmt::Display for CharModelError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            CharModelError::Format => f.write_str("not a character trigram table of 32 symbols"),
            CharModelError::Checksum => f.write_str("character trigram table damaged (checksum mismatch)"),
        }
    }
}

/// A character trigram table read in place (module docs).
#[derive(Debug, Clone, Copy)]
pub struct CharModel<'a> {
    table: &'a [u8],
}

/// How surprising a text's characters are ([`CharModel::surprise`]).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct CharSurprise {
    /// Characters scored.
    pub chars: usize,
    /// Mean surprise, bits a character.
    pub mean_bits: f32,
    /// Fraction of characters at least [`RARE_BITS`] surprising.
    pub rare: f32,
}

impl<'a> CharModel<'a> {
    /// Reads a table file (module docs), checking its header and checksum.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, CharModelError> {
        if bytes.len() != HEADER_LEN + TABLE_LEN
            || &bytes[..8] != MAGIC
            || bytes[8] as usize != SYMBOLS
            || bytes[9] != UNIT
            || bytes[10..12] != [0, 0]
        {
            return Err(CharModelError::Format);
        }
        let table = &bytes[HEADER_LEN..];
        let crc = u32::from_le_bytes([bytes[12], bytes[13], bytes[14], bytes[15]]);
        if crc32fast::hash(table) != crc {
            return Err(CharModelError::Checksum);
        }
        Ok(CharModel { table })
    }

    /// The file of `table` (eighths of a bit, `TABLE_LEN` entries): header, then the table.
    pub fn header(table: &[u8]) -> [u8; HEADER_LEN] {
        let mut h = [0u8; HEADER_LEN];
        h[..8].copy_from_slice(MAGIC);
        h[8] = SYMBOLS as u8;
        h[9] = UNIT;
        h[12..].copy_from_slice(&crc32fast::hash(table).to_le_bytes());
        h
    }

    /// How surprising `text`'s characters are: integer sums of the table's entries.
    pub fn surprise(&self, text: &str) -> CharSurprise {
        let (mut n, mut sum, mut rare) = (0u32, 0u32, 0u32);
        let rare_at = (RARE_BITS * UNIT as f32) as u8;
        for_each_trigram(text, |a, b, c| {
            let v = self.table[(a as usize * SYMBOLS + b as usize) * SYMBOLS + c as usize];
            n += 1;
            sum += u32::from(v);
            rare += u32::from(v >= rare_at);
        });
        let d = n.max(1) as f32;
        CharSurprise { chars: n as usize, mean_bits: sum as f32 / UNIT as f32 / d, rare: rare as f32 / d }
    }
}

/// The table trained on the built-in corpus (`ruvllm-esp32 train-chars -o
/// crates/ruvllm-esp32/data/char-trigrams.bin` rebuilds it byte for byte).
pub static BUILT_IN: &[u8] = include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/data/char-trigrams.bin"));

/// [`BUILT_IN`], parsed (its checksum is checked by a test, not at every call).
pub fn built_in() -> CharModel<'static> {
    CharModel { table: &BUILT_IN[HEADER_LEN.min(BUILT_IN.len())..] }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_built_in_table_parses() {
        assert!(CharModel::parse(BUILT_IN).is_ok());
        assert_eq!(built_in().table.len(), TABLE_LEN);
        let mut bad = BUILT_IN.to_vec();
        bad[HEADER_LEN + 1000] ^= 1;
        assert_eq!(CharModel::parse(&bad).unwrap_err(), CharModelError::Checksum);
        assert_eq!(CharModel::parse(&bad[..100]).unwrap_err(), CharModelError::Format);
        // Any one flipped bit, header or table, is refused; so is any shorter or longer file.
        for at in (0..BUILT_IN.len()).step_by(97).chain(0..HEADER_LEN) {
            let mut bad = BUILT_IN.to_vec();
            bad[at] ^= 1 << (at % 8);
            assert!(CharModel::parse(&bad).is_err(), "bit flip at {at} accepted");
        }
        let mut long = BUILT_IN.to_vec();
        long.push(0);
        assert_eq!(CharModel::parse(&long).unwrap_err(), CharModelError::Format);
        assert_eq!(CharModel::parse(&[]).unwrap_err(), CharModelError::Format);
    }

    #[test]
    fn any_text_is_scored_within_bounds() {
        let m = built_in();
        let long = "a\u{1F600}\0\u{FFFD}Z9 ".repeat(400);
        for text in ["\u{0}", "\u{10FFFF}\u{10FFFF}", "   \t\n  ", long.as_str()] {
            let s = m.surprise(text);
            assert!(
                s.chars <= MAX_CHARS && s.mean_bits.is_finite() && (0.0..=1.0).contains(&s.rare),
                "{s:?}"
            );
        }
    }

    #[test]
    fn whitespace_runs_are_one_boundary_and_case_folds() {
        let mut a = heapless::Vec::<(u8, u8, u8), 16>::new();
        for_each_trigram("  Ab \t c", |x, y, z| a.push((x, y, z)).unwrap());
        assert_eq!(&a[..], &[(0, 0, 1), (0, 1, 2), (1, 2, 0), (2, 0, 3)]);
    }

    #[test]
    fn english_is_less_surprising_than_random_letters() {
        let m = built_in();
        let prose = m.surprise("Remind me to water the tomatoes before the dentist appointment.");
        let keys = m.surprise("qwzx vbnm plkj hgfd zzkt xqvw");
        assert!(prose.mean_bits + 2.0 < keys.mean_bits, "{prose:?} {keys:?}");
        assert!(prose.rare < keys.rare, "{prose:?} {keys:?}");
        assert_eq!(m.surprise("").chars, 0);
    }
}
