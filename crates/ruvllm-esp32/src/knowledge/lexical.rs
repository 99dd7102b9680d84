//! Word-level features of short texts, for lexical retrieval beside the dense embedding.
//!
//! A text becomes a bag of *terms*: its words, lowercased, stopwords dropped, lightly stemmed
//! ("changed", "changes" and "change" meet), each hashed to a `u16`. Nothing allocates: the
//! terms of a stored entry are one fixed-size [`Terms`] value. Why words at all: the dense
//! embedder works on character n-grams, where "when" can outweigh "team meeting"; a word
//! match weighted by how rare the word is among the stored entries (BM25's IDF) does not.

/// Most terms kept for one text: a 128-byte entry has at most ~25 words and the stopwords
/// go; terms past this are ignored.
pub const MAX_TERMS: usize = 24;

/// Longest word kept whole, in bytes; longer words are hashed by this prefix.
const MAX_WORD: usize = 32;

/// Function words and question words: they say nothing about which fact is meant.
const STOPWORDS: &[&str] = &[
    "a", "about", "after", "against", "all", "am", "an", "and", "any", "are", "as", "at", "be", "been",
    "before", "being", "but", "by", "can", "could", "did", "do", "does", "down", "each", "every", "for",
    "from", "had", "has", "have", "he", "here", "how", "i", "if", "in", "into", "is", "it", "its", "me",
    "must", "my", "no", "not", "of", "off", "on", "onto", "or", "our", "out", "over", "per", "s", "shall",
    "she", "should", "so", "some", "t", "than", "that", "the", "their", "them", "then", "there", "these",
    "they", "this", "those", "to", "under", "until", "up", "us", "was", "we", "were", "what", "when",
    "where", "which", "while", "who", "whom", "why", "will", "with", "would", "you", "your",
];

/// True for a lowercased word that carries no content.
pub fn is_stopword(word: &[u8]) -> bool {
    STOPWORDS.iter().any(|s| s.as_bytes() == word)
}

/// Light suffix stripping of a lowercased ASCII word, in place; returns the new length.
/// Plural `-ies`/`-s`, then `-ing`/`-ed`, then a final `-e`, each only when enough stays, so
/// "batteries" → "battery", "changed"/"changes" → "chang", "uses" → "us" as "use" does.
pub fn stem(w: &mut [u8]) -> usize {
    let mut n = w.len();
    if n > 4 && w[..n].ends_with(b"ies") {
        n -= 2;
        w[n - 1] = b'y';
    } else if n > 3 && w[n - 1] == b's' && w[n - 2] != b's' {
        n -= 1;
    }
    if n > 5 && w[..n].ends_with(b"ing") {
        n -= 3;
    } else if n > 4 && w[..n].ends_with(b"ed") {
        n -= 2;
    }
    if n > 3 && w[n - 1] == b'e' {
        n -= 1;
    }
    n
}

/// 16-bit FNV-1a fold of a term's bytes.
fn hash(term: &[u8]) -> u16 {
    let mut h: u32 = 0x811c_9dc5;
    for &b in term {
        h = (h ^ u32::from(b)).wrapping_mul(0x0100_0193);
    }
    (h ^ (h >> 16)) as u16
}

/// Calls `f` with the hash of each content term of `text`, in order (repeats included).
/// Words are runs of alphanumeric characters; a possessive "'s" is dropped with its
/// apostrophe (ASCII or U+2019).
pub fn for_each_term(text: &str, mut f: impl FnMut(u16)) {
    let mut buf = [0u8; MAX_WORD];
    let mut n = 0usize;
    let mut emit = |buf: &mut [u8; MAX_WORD], n: &mut usize| {
        if *n > 0 {
            let w = &mut buf[..(*n).min(MAX_WORD)];
            if !is_stopword(w) {
                let k = stem(w);
                f(hash(&w[..k]));
            }
        }
        *n = 0;
    };
    for c in text.chars() {
        if c.is_alphanumeric() {
            let mut enc = [0u8; 4];
            for &b in c.encode_utf8(&mut enc).as_bytes() {
                if n < MAX_WORD {
                    buf[n] = b.to_ascii_lowercase();
                }
                n += 1;
            }
        } else {
            emit(&mut buf, &mut n);
        }
    }
    emit(&mut buf, &mut n);
}

/// The terms of one text: at most [`MAX_TERMS`] hashes, repeats kept (they are the term
/// frequency). 50 bytes a text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Terms {
    hashes: [u16; MAX_TERMS],
    len: u8,
}

impl Default for Terms {
    fn default() -> Self {
        Terms { hashes: [0; MAX_TERMS], len: 0 }
    }
}

impl Terms {
    /// The terms of `text` (the first [`MAX_TERMS`]).
    pub fn of(text: &str) -> Self {
        let mut t = Terms::default();
        for_each_term(text, |h| {
            if (t.len as usize) < MAX_TERMS {
                t.hashes[t.len as usize] = h;
                t.len += 1;
            }
        });
        t
    }

    /// The term hashes, in text order.
    pub fn as_slice(&self) -> &[u16] {
        &self.hashes[..self.len as usize]
    }

    pub fn len(&self) -> usize {
        self.len as usize
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// How often `term` occurs.
    pub fn count(&self, term: u16) -> usize {
        self.as_slice().iter().filter(|&&h| h == term).count()
    }

    /// True when the two texts share a content term.
    pub fn overlaps(&self, other: &Terms) -> bool {
        self.as_slice().iter().any(|h| other.as_slice().contains(h))
    }
}

/// BM25's term-frequency saturation (Lucene's and tantivy's default).
pub const BM25_K1: f32 = 1.2;
/// BM25's document-length normalization (Lucene's and tantivy's default).
pub const BM25_B: f32 = 0.75;

/// BM25 of each live entry of `docs` for `query`, written to `out` (0 for the others),
/// divided by what an average-length entry holding every query term once would score, and
/// capped at 1: a score in 0..=1 that says how much of the question's weight an entry
/// matches. The IDF is Lucene's and tantivy's, `ln(1 + (N - n + 0.5) / (n + 0.5))`, over the
/// live entries at query time, so it follows adds and forgets with no state to keep. A query
/// term no entry holds still counts in the divisor: a question whose rare words match
/// nothing scores low. Repeated query terms count once. No allocation: `O(terms x entries)`.
pub fn bm25_normalized(query: &Terms, docs: &[Terms], live: impl Fn(usize) -> bool, out: &mut [f32]) {
    out.fill(0.0);
    let mut q = [0u16; MAX_TERMS];
    let mut nq = 0;
    for &h in query.as_slice() {
        if !q[..nq].contains(&h) {
            q[nq] = h;
            nq += 1;
        }
    }
    let (mut n, mut total) = (0usize, 0usize);
    for (i, d) in docs.iter().enumerate() {
        if live(i) {
            n += 1;
            total += d.len();
        }
    }
    if nq == 0 || n == 0 {
        return;
    }
    let avgdl = (total as f32 / n as f32).max(1.0);
    let mut max = 0.0f32;
    for &t in &q[..nq] {
        let df = docs.iter().enumerate().filter(|&(i, d)| live(i) && d.count(t) > 0).count() as f32;
        let idf = libm::logf(1.0 + (n as f32 - df + 0.5) / (df + 0.5));
        max += idf;
        if df == 0.0 {
            continue;
        }
        for (i, (d, o)) in docs.iter().zip(out.iter_mut()).enumerate() {
            let tf = d.count(t) as f32;
            if tf > 0.0 && live(i) {
                let norm = BM25_K1 * (1.0 - BM25_B + BM25_B * d.len() as f32 / avgdl);
                *o += idf * tf * (BM25_K1 + 1.0) / (tf + norm);
            }
        }
    }
    for o in out.iter_mut() {
        *o = (*o / max).min(1.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stemmed(w: &str) -> String {
        let mut b = w.as_bytes().to_vec();
        let n = stem(&mut b);
        String::from_utf8(b[..n].to_vec()).unwrap()
    }

    #[test]
    fn stems_meet() {
        assert_eq!(stemmed("batteries"), "battery");
        assert_eq!(stemmed("changed"), stemmed("change"));
        assert_eq!(stemmed("changes"), stemmed("change"));
        assert_eq!(stemmed("uses"), stemmed("use"));
        assert_eq!(stemmed("watering"), stemmed("water"));
        assert_eq!(stemmed("glass"), "glass");
        assert_eq!(stemmed("bus"), "bus");
    }

    #[test]
    fn terms_drop_stopwords_and_possessives() {
        let t = Terms::of("When is the team meeting?");
        assert_eq!(t.len(), 2);
        assert!(t.overlaps(&Terms::of("The team meetings are at 3pm.")));
        assert!(!t.overlaps(&Terms::of("when do my coworkers sync up")));
        assert_eq!(Terms::of("the landlord's phone"), Terms::of("landlord phone"));
        assert_eq!(Terms::of("the landlord\u{2019}s phone"), Terms::of("landlord phone"));
        assert!(Terms::of("%%%% ####").is_empty());
        assert_eq!(Terms::of(&"word ".repeat(100)).len(), MAX_TERMS);
    }

    #[test]
    fn bm25_weighs_rare_words_and_skips_dead_entries() {
        let docs = [
            Terms::of("Tomatoes need watering when the soil is dry."),
            Terms::of("The team meeting is at 3pm on Thursday."),
            Terms::of("The team lunch is on Friday."),
            Terms::of("The meeting notes are in the blue folder."),
        ];
        let mut out = [0.0f32; 4];
        bm25_normalized(&Terms::of("when is the team meeting"), &docs, |_| true, &mut out);
        assert_eq!(out[0], 0.0);
        assert!(out[1] > out[2] && out[1] > out[3] && out[2] > 0.0, "{out:?}");
        assert!(out.iter().all(|&s| (0.0..=1.0).contains(&s)));
        bm25_normalized(&Terms::of("when is the team meeting"), &docs, |i| i != 1, &mut out);
        assert_eq!(out[1], 0.0);
        // A word no entry holds lowers every score: half the question is unmatched.
        let mut half = [0.0f32; 4];
        bm25_normalized(&Terms::of("team meeting zeppelin"), &docs, |_| true, &mut half);
        bm25_normalized(&Terms::of("team meeting"), &docs, |_| true, &mut out);
        assert!(half[1] < out[1]);
        bm25_normalized(&Terms::of("when is it"), &docs, |_| true, &mut out);
        assert_eq!(out, [0.0; 4]);
    }
}
