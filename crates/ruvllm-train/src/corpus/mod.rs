//! A deterministic generator of simple stories and facts, in the spirit of TinyStories.
//!
//! The built-in model is trained on this text, so nothing is ever downloaded. Every document
//! is one paragraph of plain ASCII; documents are separated by a blank line (`"\n\n"`).
//!
//! * About three documents in four are short stories (typically 60-150 words) built from
//!   plot templates: lost and found, sharing, a problem and a helper, a trip, learning
//!   something, a small adventure, a bedtime story, a new friend and a rainy day. Each draws
//!   its characters (many names, children and animals, with matching he/she pronouns), objects,
//!   colors, places, feelings and weather from word lists, varies the wording of every step,
//!   speaks in dialogue (`"Why are you sad?" asked Mom.`) and ends on a short moral or closing
//!   line. The story logic is coherent: the thing lost is the thing found, the helper who
//!   helps is the one thanked.
//! * The rest are fact documents: a handful of simple true sentences about one topic
//!   (animals, colors, weather, food, the body, numbers and sums, days, seasons, shapes).
//! * After about one such document in three comes a question-answer document (`qa`): an
//!   everyday fact, a question about it and the answer copied from it, in the format of the
//!   library's grounded answers (`ruvllm_esp32::knowledge::answer`).
//!
//! Determinism: randomness comes from a built-in SplitMix64 generator (no external crate, so
//! no version drift), and document `i` depends only on `(seed, i)`, so the same seed gives
//! byte-identical text on every platform and documents can be produced in any order. The
//! question-answer document after document `i` has its own generator, so stories and facts
//! are the same with or without it.

mod facts;
pub(crate) mod qa;
mod stories;
mod words;

pub(crate) use crate::rng::Rng;

#[cfg(test)]
mod tests;

/// Seed of the built-in model's training corpus.
pub const DEFAULT_SEED: u64 = 0x0005_EED0_F570_E1E5;

/// Documents in the built-in model's training corpus (about 18 MB of text: some 38,500
/// stories and facts and 13,500 question-answer documents).
pub const DEFAULT_DOCS: usize = 52_000;

/// The generator of document `index` under `seed`.
fn doc_rng(seed: u64, index: u64) -> Rng {
    let mut mix = Rng::new(seed ^ 0xD1B5_4A32_D192_ED03);
    let base = mix.next_u64();
    let mut r = Rng::new(base ^ index.wrapping_mul(0xA076_1D64_78BD_642F));
    r.next_u64();
    r
}

/// Document `index` of the corpus for `seed`: one paragraph of ASCII text, no newline.
pub fn document(seed: u64, index: u64) -> String {
    document_sentences(seed, index).1.join(" ")
}

/// What a document is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DocKind {
    Story,
    /// Simple true sentences about one topic, the first naming it.
    Facts,
}

/// Document `index` for `seed` as its kind and its sentences ([`document`] joins them).
pub fn document_sentences(seed: u64, index: u64) -> (DocKind, Vec<String>) {
    let mut rng = doc_rng(seed, index);
    if rng.chance(76) {
        (DocKind::Story, stories::story(&mut rng))
    } else {
        (DocKind::Facts, facts::facts(&mut rng))
    }
}

/// Percent of documents followed by a question-answer document.
const QA_PERCENT: usize = 35;

/// The question-answer document after document `index`, if any.
pub fn qa_document(seed: u64, index: u64) -> Option<String> {
    let mut rng = doc_rng(seed ^ 0x0A5A_E3F1_9C2B_7D46, index);
    rng.chance(QA_PERCENT).then(|| qa::qa(&mut rng))
}

/// The fact and all question forms of the question-answer document after document `index`, if
/// any: the same fact as [`qa_document`]'s (which asks one of the questions).
pub fn qa_fact(seed: u64, index: u64) -> Option<(String, Vec<String>)> {
    let mut rng = doc_rng(seed ^ 0x0A5A_E3F1_9C2B_7D46, index);
    rng.chance(QA_PERCENT).then(|| qa::fact_and_questions(&mut rng))
}

/// The endless sequence of documents for `seed`: document 0, its question-answer document if
/// any, document 1, ...
pub fn documents(seed: u64) -> impl Iterator<Item = String> {
    (0u64..).flat_map(move |i| std::iter::once(document(seed, i)).chain(qa_document(seed, i)))
}

/// `n_docs` documents for `seed`, separated by blank lines (no trailing newline).
pub fn generate(seed: u64, n_docs: usize) -> String {
    let mut out = String::new();
    for (i, doc) in documents(seed).take(n_docs).enumerate() {
        if i > 0 {
            out.push_str("\n\n");
        }
        out.push_str(&doc);
    }
    out
}

/// Whole documents for `seed` until the text holds at least `min_bytes` bytes.
pub fn generate_bytes(seed: u64, min_bytes: usize) -> String {
    let mut out = String::with_capacity(min_bytes.saturating_add(1024).min(1 << 30));
    for doc in documents(seed) {
        if out.len() >= min_bytes {
            break;
        }
        if !out.is_empty() {
            out.push_str("\n\n");
        }
        out.push_str(&doc);
    }
    out
}

/// "a" or "an" for a phrase, by its first letter (the word lists avoid words such as
/// "unicorn" or "hour" where the letter misleads).
pub(crate) fn article(phrase: &str) -> &'static str {
    match phrase.as_bytes().first() {
        Some(b'a' | b'e' | b'i' | b'o' | b'u' | b'A' | b'E' | b'I' | b'O' | b'U') => "an",
        _ => "a",
    }
}

/// The phrase with its indefinite article: `a("apple")` is "an apple".
pub(crate) fn a(phrase: &str) -> String {
    format!("{} {}", article(phrase), phrase)
}

/// The text with its first letter (after an opening quote) upper-cased.
pub(crate) fn cap(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut done = false;
    for c in s.chars() {
        if !done && c.is_ascii_alphabetic() {
            out.push(c.to_ascii_uppercase());
            done = true;
        } else {
            out.push(c);
        }
    }
    out
}

/// English words for 0..=20.
pub(crate) fn number_word(n: usize) -> &'static str {
    const W: [&str; 21] = [
        "zero",
        "one",
        "two",
        "three",
        "four",
        "five",
        "six",
        "seven",
        "eight",
        "nine",
        "ten",
        "eleven",
        "twelve",
        "thirteen",
        "fourteen",
        "fifteen",
        "sixteen",
        "seventeen",
        "eighteen",
        "nineteen",
        "twenty",
    ];
    W.get(n).copied().unwrap_or("many")
}
