//! The BPE trainer (see the module docs of [`super`]).

use std::borrow::Cow;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};

use super::encode::Lookup;
use super::{
    byte_piece, chunks, class, BpeError, Class, HostVocab, FIRST_PIECE, MAX_VOCAB, MIN_VOCAB, RESERVED_SCORE,
};

/// Trains a byte-fallback BPE vocabulary of exactly `vocab_size` pieces on `text`, encoded as
/// one whole (layout and method in the module docs). Same as [`train_documents`] with one
/// document.
///
/// Errors: the corpus fails [`check_text`](super::check_text); `vocab_size` is below [`MIN_VOCAB`] or above
/// [`MAX_VOCAB`]; the corpus cannot make that many pieces ([`BpeError::CorpusTooSmall`] says
/// how many it can).
pub fn train(text: &str, vocab_size: usize) -> Result<HostVocab, BpeError> {
    train_documents(&[text], vocab_size)
}

/// As [`train`] for a corpus that will be encoded one document at a time (each with its own
/// dummy-prefix space, as llama2.c encodes each story after BOS): the first word of every
/// document is counted with its leading space, as the engine will see it.
///
/// The documents together must pass [`check_text`](super::check_text)'s rules: not all empty, no NUL, at most 10%
/// control characters.
pub fn train_documents(docs: &[&str], vocab_size: usize) -> Result<HostVocab, BpeError> {
    let (mut chars, mut control, mut empty) = (0usize, 0usize, true);
    let mut offset = 0;
    for doc in docs {
        if let Some(i) = doc.bytes().position(|b| b == 0) {
            return Err(BpeError::NulByte { offset: offset + i });
        }
        let (c, k) = super::count_control(doc);
        chars += c;
        control += k;
        empty &= doc.trim().is_empty();
        offset += doc.len();
    }
    if empty {
        return Err(BpeError::EmptyCorpus);
    }
    if control * 100 > chars * super::MAX_CONTROL_PERCENT {
        return Err(BpeError::MostlyControl { control, chars });
    }
    if vocab_size < MIN_VOCAB {
        return Err(BpeError::VocabTooSmall { requested: vocab_size, min: MIN_VOCAB });
    }
    if vocab_size > MAX_VOCAB {
        return Err(BpeError::VocabTooLarge { requested: vocab_size, max: MAX_VOCAB });
    }

    // Unique chunks of " " + doc (the engine's dummy prefix), sorted for determinism. Very
    // long chunks are cut for counting (pieces learned from the parts are still single chunks).
    let mut chunk_counts: HashMap<Cow<'_, str>, u64> = HashMap::new();
    for doc in docs.iter().filter(|d| !d.is_empty()) {
        let mut it = chunks(doc);
        match doc.chars().next().map(class) {
            Some(Class::Letter | Class::Digit) => {
                let head = it.next().unwrap_or("");
                let (first, rest) = head.split_at(cut(head, MAX_TRAIN_CHUNK - 1));
                count(&mut chunk_counts, Cow::Owned(format!(" {first}")));
                for part in parts(rest) {
                    count(&mut chunk_counts, Cow::Borrowed(part));
                }
            }
            _ => count(&mut chunk_counts, Cow::Borrowed(" ")),
        }
        for c in it {
            for part in parts(c) {
                count(&mut chunk_counts, Cow::Borrowed(part));
            }
        }
    }
    let mut uniq: Vec<(Cow<'_, str>, u64)> = chunk_counts.into_iter().collect();
    uniq.sort_unstable_by(|a, b| a.0.cmp(&b.0));

    // Characters, most frequent first; " " always first.
    let mut char_counts: HashMap<char, u64> = HashMap::new();
    for (c, n) in &uniq {
        let n = *n;
        for ch in c.chars() {
            *char_counts.entry(ch).or_insert(0) += n;
        }
    }
    char_counts.remove(&' ');
    let mut chars: Vec<(char, u64)> = char_counts.into_iter().collect();
    chars.sort_unstable_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    chars.truncate(vocab_size - MIN_VOCAB);

    let mut pieces: Vec<Vec<u8>> = vec![b"<unk>".to_vec(), b"<s>".to_vec(), b"</s>".to_vec()];
    pieces.extend((0..=255u8).map(byte_piece));
    let scores = vec![RESERVED_SCORE; pieces.len()];
    let mut look = Lookup::new(pieces, scores);
    let score_of = |id: u32| 0.0 - (id - FIRST_PIECE) as f32;
    for ch in core::iter::once(' ').chain(chars.iter().map(|c| c.0)) {
        let id = look.pieces.len() as u32;
        look.push(ch.to_string().into_bytes(), score_of(id));
    }

    let mut t = Trainer {
        words: Vec::with_capacity(uniq.len()),
        freq: uniq.iter().map(|u| u.1 as i64).collect(),
        counts: HashMap::new(),
        occ: HashMap::new(),
        heap: BinaryHeap::new(),
        scratch: Vec::new(),
    };
    for (c, _) in &uniq {
        let mut toks = Vec::with_capacity(c.len());
        look.chars(c, &mut toks);
        t.words.push(toks);
    }
    drop(uniq);

    let mut changed = Vec::new();
    for w in 0..t.words.len() {
        t.add(&look, w, 1, &mut changed);
    }
    t.push_changed(&mut changed);

    while look.pieces.len() < vocab_size {
        let Some(best) = t.pop_best() else {
            return Err(BpeError::CorpusTooSmall { requested: vocab_size, possible: look.pieces.len() });
        };
        if look.ids.contains_key(&best) {
            // Cannot happen (a learned piece is one chunk, a reserved piece is not), but a
            // duplicate piece would shadow the engine's lookup: never add one.
            t.counts.remove(&best);
            continue;
        }
        let id = look.pieces.len() as u32;
        look.push(best.clone(), score_of(id));
        let mut ws = t.occ.remove(&best).unwrap_or_default();
        ws.sort_unstable();
        ws.dedup();
        for w in ws {
            let w = w as usize;
            if !t.has_pair(&look, w, &best) {
                continue;
            }
            t.add(&look, w, -1, &mut changed);
            look.merge(&mut t.words[w], &mut t.scratch);
            t.add(&look, w, 1, &mut changed);
        }
        t.counts.remove(&best);
        t.push_changed(&mut changed);
    }

    let max_token_length = look.pieces.iter().map(Vec::len).max().unwrap_or(0) as u32;
    Ok(HostVocab {
        pieces: look.pieces,
        scores: look.scores,
        max_token_length,
        bos: super::BOS,
        eos: super::EOS,
    })
}

/// Chunks longer than this many bytes are cut for counting (a guard for text without spaces).
const MAX_TRAIN_CHUNK: usize = 256;

/// The largest char boundary of `s` at or below `max`.
fn cut(s: &str, max: usize) -> usize {
    if s.len() <= max {
        return s.len();
    }
    (0..=max).rev().find(|&i| s.is_char_boundary(i)).unwrap_or(0)
}

/// `s` in consecutive parts of at most [`MAX_TRAIN_CHUNK`] bytes, cut at char boundaries.
fn parts(mut s: &str) -> impl Iterator<Item = &str> {
    core::iter::from_fn(move || {
        if s.is_empty() {
            return None;
        }
        // A char has at most 4 bytes, so the cut is never 0.
        let (head, tail) = s.split_at(cut(s, MAX_TRAIN_CHUNK));
        s = tail;
        Some(head)
    })
}

fn count<'a>(counts: &mut HashMap<Cow<'a, str>, u64>, chunk: Cow<'a, str>) {
    *counts.entry(chunk).or_insert(0) += 1;
}

/// Merge candidates over the unique chunks.
struct Trainer {
    /// Current segmentation of each unique chunk: the engine's encoding with the pieces so far.
    words: Vec<Vec<u32>>,
    /// Occurrences of each unique chunk.
    freq: Vec<i64>,
    /// Candidate piece (the concatenation of an adjacent pair) to its weighted count.
    counts: HashMap<Vec<u8>, i64>,
    /// Candidate to the chunks that held it at some point (stale entries are skipped).
    occ: HashMap<Vec<u8>, Vec<u32>>,
    /// (count, candidate), lazily invalidated: an entry is live when it matches `counts`.
    heap: BinaryHeap<(i64, Reverse<Vec<u8>>)>,
    scratch: Vec<u8>,
}

impl Trainer {
    /// The candidate of a pair; `None` when a byte token is involved (they never merge).
    fn pair_key(look: &Lookup, a: u32, b: u32, buf: &mut Vec<u8>) -> bool {
        if a < FIRST_PIECE || b < FIRST_PIECE {
            return false;
        }
        buf.clear();
        buf.extend_from_slice(&look.pieces[a as usize]);
        buf.extend_from_slice(&look.pieces[b as usize]);
        true
    }

    /// Adds (`sign` 1) or removes (-1) chunk `w`'s pairs from the candidate counts.
    fn add(&mut self, look: &Lookup, w: usize, sign: i64, changed: &mut Vec<Vec<u8>>) {
        let n = self.freq[w] * sign;
        for i in 1..self.words[w].len() {
            let (a, b) = (self.words[w][i - 1], self.words[w][i]);
            if !Self::pair_key(look, a, b, &mut self.scratch) {
                continue;
            }
            match self.counts.get_mut(self.scratch.as_slice()) {
                Some(c) => *c += n,
                None => {
                    self.counts.insert(self.scratch.clone(), n);
                }
            }
            if sign > 0 {
                match self.occ.get_mut(self.scratch.as_slice()) {
                    Some(v) => v.push(w as u32),
                    None => {
                        self.occ.insert(self.scratch.clone(), vec![w as u32]);
                    }
                }
            }
            changed.push(self.scratch.clone());
        }
    }

    fn has_pair(&mut self, look: &Lookup, w: usize, key: &[u8]) -> bool {
        let words = &self.words[w];
        (1..words.len())
            .any(|i| Self::pair_key(look, words[i - 1], words[i], &mut self.scratch) && self.scratch == key)
    }

    /// Pushes the new counts of the changed candidates onto the heap.
    fn push_changed(&mut self, changed: &mut Vec<Vec<u8>>) {
        changed.sort_unstable();
        changed.dedup();
        for key in changed.drain(..) {
            match self.counts.get(&key) {
                Some(&c) if c > 0 => self.heap.push((c, Reverse(key))),
                _ => {
                    self.counts.remove(&key);
                }
            }
        }
    }

    /// The most frequent candidate (ties: smallest bytes).
    fn pop_best(&mut self) -> Option<Vec<u8>> {
        while let Some((c, Reverse(key))) = self.heap.pop() {
            if self.counts.get(&key) == Some(&c) {
                return Some(key);
            }
        }
        None
    }
}
