//! Encoding with a trained vocabulary, identical to the engine's `tokenizer::encode`.

use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap};

use super::{chunks, class, BpeError, Class, HostVocab, BYTE_BASE, RESERVED_SCORE};

/// Piece lookup with the engine's merge rule.
#[derive(Clone, Debug)]
pub(crate) struct Lookup {
    pub pieces: Vec<Vec<u8>>,
    pub scores: Vec<f32>,
    /// Piece bytes to the lowest id holding them (the engine's lookup does the same).
    pub ids: HashMap<Vec<u8>, u32>,
}

impl Lookup {
    pub fn new(pieces: Vec<Vec<u8>>, scores: Vec<f32>) -> Lookup {
        let mut ids = HashMap::with_capacity(pieces.len());
        for (i, p) in pieces.iter().enumerate() {
            ids.entry(p.clone()).or_insert(i as u32);
        }
        Lookup { pieces, scores, ids }
    }

    /// Adds a piece (never a duplicate) and returns its id.
    pub fn push(&mut self, piece: Vec<u8>, score: f32) -> u32 {
        let id = self.pieces.len() as u32;
        self.ids.entry(piece.clone()).or_insert(id);
        self.pieces.push(piece);
        self.scores.push(score);
        id
    }

    fn piece(&self, id: u32) -> &[u8] {
        self.pieces.get(id as usize).map_or(&[], |p| p.as_slice())
    }

    /// Appends the engine's initial tokens for `text`: each character's piece, or its bytes as
    /// byte-fallback tokens.
    pub fn chars(&self, text: &str, out: &mut Vec<u32>) {
        let mut buf = [0u8; 4];
        for c in text.chars() {
            let s = c.encode_utf8(&mut buf);
            match self.ids.get(s.as_bytes()) {
                Some(&id) => out.push(id),
                None => out.extend(s.bytes().map(|b| u32::from(b) + BYTE_BASE)),
            }
        }
    }

    /// The id and score of the piece `a ++ b` when the engine would merge into it.
    fn pair(&self, a: u32, b: u32, scratch: &mut Vec<u8>) -> Option<(u32, f32)> {
        scratch.clear();
        scratch.extend_from_slice(self.piece(a));
        scratch.extend_from_slice(self.piece(b));
        let &id = self.ids.get(scratch.as_slice())?;
        let score = self.scores[id as usize];
        (score > RESERVED_SCORE).then_some((id, score))
    }

    /// The engine's merge loop with the same result in O(n log n): while some adjacent pair
    /// concatenates to a piece scoring above the floor, merge the best-scoring such pair (the
    /// leftmost on ties). Tokens form a linked list; candidate pairs wait in a heap ordered by
    /// (score, leftmost), and a candidate is dropped when either token changed since.
    pub fn merge(&self, toks: &mut Vec<u32>, scratch: &mut Vec<u8>) {
        let n = toks.len();
        if n < 2 {
            return;
        }
        const NONE: usize = usize::MAX;
        let mut next: Vec<usize> = (1..=n).map(|i| if i == n { NONE } else { i }).collect();
        let mut prev: Vec<usize> = (0..n).map(|i| if i == 0 { NONE } else { i - 1 }).collect();
        let mut ver = vec![0u32; n];
        let mut alive = vec![true; n];
        let mut heap = BinaryHeap::new();
        let push =
            |heap: &mut BinaryHeap<Cand>, toks: &[u32], ver: &[u32], l: usize, r: usize, s: &mut Vec<u8>| {
                if let Some((id, score)) = self.pair(toks[l], toks[r], s) {
                    // + 0.0 turns -0.0 into 0.0: the engine's `>` treats them as equal.
                    heap.push(Cand { score: score + 0.0, left: l, right: r, lver: ver[l], rver: ver[r], id });
                }
            };
        for i in 0..n - 1 {
            push(&mut heap, toks, &ver, i, i + 1, scratch);
        }
        while let Some(c) = heap.pop() {
            let (l, r) = (c.left, c.right);
            if !alive[l] || !alive[r] || next[l] != r || ver[l] != c.lver || ver[r] != c.rver {
                continue;
            }
            toks[l] = c.id;
            ver[l] += 1;
            alive[r] = false;
            next[l] = next[r];
            if next[r] != NONE {
                prev[next[r]] = l;
            }
            if prev[l] != NONE {
                push(&mut heap, toks, &ver, prev[l], l, scratch);
            }
            if next[l] != NONE {
                push(&mut heap, toks, &ver, l, next[l], scratch);
            }
        }
        let mut k = 0;
        for i in 0..n {
            if alive[i] {
                toks[k] = toks[i];
                k += 1;
            }
        }
        toks.truncate(k);
    }

    /// The engine's merge loop written out as llama2.c does it (quadratic): the reference
    /// [`Lookup::merge`] is tested against.
    #[cfg(test)]
    pub fn merge_reference(&self, toks: &mut Vec<u32>, scratch: &mut Vec<u8>) {
        loop {
            let mut best: Option<(usize, u32)> = None;
            let mut best_score = RESERVED_SCORE;
            for (i, pair) in toks.windows(2).enumerate() {
                scratch.clear();
                scratch.extend_from_slice(self.piece(pair[0]));
                scratch.extend_from_slice(self.piece(pair[1]));
                if let Some(&id) = self.ids.get(scratch.as_slice()) {
                    let score = self.scores[id as usize];
                    if score > best_score {
                        best_score = score;
                        best = Some((i, id));
                    }
                }
            }
            let Some((i, id)) = best else { return };
            toks[i] = id;
            toks.remove(i + 1);
        }
    }
}

/// A merge candidate: the heap pops the best score first, then the leftmost pair.
struct Cand {
    score: f32,
    left: usize,
    right: usize,
    lver: u32,
    rver: u32,
    id: u32,
}

impl Ord for Cand {
    fn cmp(&self, other: &Self) -> Ordering {
        self.score.total_cmp(&other.score).then(other.left.cmp(&self.left))
    }
}

impl PartialOrd for Cand {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Cand {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Cand {}

/// Encodes text exactly like the engine's `tokenizer::encode` (without BOS/EOS), fast: for a
/// vocabulary made by [`train`](super::train) it encodes chunk by chunk (see the module docs)
/// and caches each distinct chunk. Any other vocabulary is encoded by running the engine's
/// algorithm on the whole text (exact but quadratic).
#[derive(Clone, Debug)]
pub struct Encoder {
    look: Lookup,
    space: u32,
    chunk_safe: bool,
    cache: HashMap<String, Vec<u32>>,
    scratch: Vec<u8>,
}

/// Chunks kept in the cache at most (a natural-language corpus has far fewer distinct ones).
const CACHE_LIMIT: usize = 1 << 20;

impl Encoder {
    /// Fails only when the vocabulary has no `" "` piece (the engine needs it too).
    pub fn new(vocab: &HostVocab) -> Result<Encoder, BpeError> {
        let n = vocab.pieces.len().min(vocab.scores.len());
        let look = Lookup::new(vocab.pieces[..n].to_vec(), vocab.scores[..n].to_vec());
        let space = *look.ids.get(b" ".as_slice()).ok_or(BpeError::NoSpacePiece)?;
        let chunk_safe = look.pieces.iter().zip(&look.scores).all(|(p, &s)| {
            s <= RESERVED_SCORE
                || match core::str::from_utf8(p) {
                    Ok(text) => text.chars().count() <= 1 || chunks(text).count() == 1,
                    Err(_) => false,
                }
        });
        Ok(Encoder { look, space, chunk_safe, cache: HashMap::new(), scratch: Vec::new() })
    }

    /// True when the vocabulary's pieces never cross a pre-split boundary, so the fast
    /// chunk-by-chunk path is used.
    pub fn is_chunk_safe(&self) -> bool {
        self.chunk_safe
    }

    /// The engine's token ids for `text`: the dummy-prefix space first when `text` is not
    /// empty, no BOS or EOS.
    pub fn encode(&mut self, text: &str) -> Vec<u32> {
        let mut out = Vec::new();
        self.encode_into(text, &mut out);
        out
    }

    /// As [`Encoder::encode`], appending to `out`.
    pub fn encode_into(&mut self, text: &str, out: &mut Vec<u32>) {
        if text.is_empty() {
            return;
        }
        if !self.chunk_safe {
            let start = out.len();
            out.push(self.space);
            self.look.chars(text, out);
            let mut toks = out.split_off(start);
            self.look.merge(&mut toks, &mut self.scratch);
            out.extend(toks);
            return;
        }
        // The chunks of " " + text: the dummy-prefix space joins a leading letter run or digit,
        // and stands alone before anything else.
        let mut it = chunks(text);
        match text.chars().next().map(class) {
            Some(Class::Letter | Class::Digit) => {
                let head = it.next().unwrap_or("");
                self.encode_chunk(&format!(" {head}"), out);
            }
            _ => out.push(self.space),
        }
        for chunk in it {
            self.encode_chunk(chunk, out);
        }
    }

    fn encode_chunk(&mut self, chunk: &str, out: &mut Vec<u32>) {
        if let Some(ids) = self.cache.get(chunk) {
            out.extend_from_slice(ids);
            return;
        }
        let mut toks = Vec::with_capacity(chunk.len());
        self.look.chars(chunk, &mut toks);
        self.look.merge(&mut toks, &mut self.scratch);
        out.extend_from_slice(&toks);
        if self.cache.len() < CACHE_LIMIT {
            self.cache.insert(chunk.to_string(), toks);
        }
    }
}

/// The text of `ids` under `vocab`: pieces concatenated, byte pieces as their byte, `<unk>`,
/// `<s>`, `</s>` and unknown ids as nothing. The dummy-prefix space [`Encoder::encode`] adds
/// is kept.
pub fn decode(vocab: &HostVocab, ids: &[u32]) -> Vec<u8> {
    let mut out = Vec::new();
    for &id in ids {
        if id < BYTE_BASE {
            continue;
        }
        let Some(p) = vocab.pieces.get(id as usize) else { continue };
        match p.as_slice() {
            [b'<', b'0', b'x', hi, lo, b'>'] if hi.is_ascii_hexdigit() && lo.is_ascii_hexdigit() => {
                let hex = |c: u8| (c as char).to_digit(16).unwrap_or(0) as u8;
                out.push(hex(*hi) * 16 + hex(*lo));
            }
            _ => out.extend_from_slice(p),
        }
    }
    out
}
