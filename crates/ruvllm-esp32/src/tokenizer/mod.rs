//! llama2.c-compatible byte-pair tokenizer that reads its vocabulary in place from the model
//! image (flash): no RAM copies, no heap.
//!
//! Two conventions for a space are read: SentencePiece's, as GGUF's `tokenizer.ggml.model =
//! "llama"` promises and `convert` writes (a space is U+2581 "▁" in the pieces; BOS/EOS are
//! `<s>`/`</s>`), and llama2.c's tokenizer.bin (plain spaces), as older images of this engine
//! hold. A vocabulary with a `"▁"` piece and no `" "` piece is SentencePiece's. Text is the same
//! either way: encoding turns each space into the space piece, decoding turns U+2581 back.
//!
//! Vocabulary payloads (raw GGUF array payloads, all little-endian, no alignment needed):
//! - `tokenizer.ggml.tokens`: per token a u64 byte length followed by the bytes;
//! - `tokenizer.ggml.scores`: one f32 per token;
//! - `ruvllm.tokenizer.index`: 2*n u32: [0,n) byte offset of token i's length prefix within
//!   the tokens payload, [n,2n) token ids sorted by piece bytes (ties by id).

use core::cmp::Ordering;

use crate::{Error, Result};

#[cfg(test)]
mod tests;

/// Score llama2.c starts its best-merge search from: merges scoring at or below it never happen.
const MERGE_FLOOR: f32 = -1e10;

/// Byte-fallback tokens start after `<unk>`, `<s>`, `</s>` (llama2.c hard-codes this).
const BYTE_TOKEN_BASE: u32 = 3;

/// U+2581, SentencePiece's mark for a space inside pieces.
pub const SPACE_MARK: &[u8] = "\u{2581}".as_bytes();

/// Longest piece a SentencePiece-convention vocabulary may hold: [`decode`] translates its
/// U+2581 marks into a buffer of this size.
pub const DECODE_MAX: usize = 128;

/// A validated vocabulary borrowed from the model image.
#[derive(Clone, Copy, Debug)]
pub struct Vocab<'a> {
    n: usize,
    pieces: &'a [u8],
    scores: &'a [u8],
    /// Only the offsets half of the index payload.
    offsets: &'a [u8],
    /// Only the sorted-ids half of the index payload.
    sorted: &'a [u8],
    bos: u32,
    eos: u32,
    /// Longest piece, so impossible merge candidates are skipped without a search.
    max_piece_len: usize,
    /// Id of the piece a space encodes to: `" "`, or `"▁"` when [`Vocab::spm`].
    space: Option<u32>,
    /// Pieces mark spaces with U+2581 (SentencePiece's convention; see the module docs).
    spm: bool,
}

/// Reads the `i`-th little-endian u32 of `bytes`; `None` past the end.
#[inline]
fn u32_at(bytes: &[u8], i: usize) -> Option<u32> {
    let start = i.checked_mul(4)?;
    let b = bytes.get(start..start.checked_add(4)?)?;
    Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

/// Piece bytes of the entry whose u64 length prefix starts at `offset`; `None` if out of bounds.
fn piece_at(pieces: &[u8], offset: usize) -> Option<&[u8]> {
    let body = offset.checked_add(8)?;
    let b = pieces.get(offset..body)?;
    let len = u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]);
    let len = usize::try_from(len).ok()?;
    pieces.get(body..body.checked_add(len)?)
}

/// Compares `piece` with the concatenation `a ++ b` without building it, so merge candidates
/// need no scratch buffer and no length limit.
fn cmp_concat(piece: &[u8], a: &[u8], b: &[u8]) -> Ordering {
    let (head, tail) = piece.split_at(piece.len().min(a.len()));
    match head.cmp(&a[..head.len()]) {
        Ordering::Equal if piece.len() < a.len() => Ordering::Less,
        Ordering::Equal => tail.cmp(b),
        other => other,
    }
}

impl<'a> Vocab<'a> {
    /// Validates everything once (payload lengths match `n`, every offset and length in
    /// bounds, the sorted list is a strictly ordered permutation, scores finite, BOS/EOS in
    /// range), so later accessors are infallible and panic-free.
    pub fn new(
        n: usize,
        pieces: &'a [u8],
        scores: &'a [u8],
        index: &'a [u8],
        bos: u32,
        eos: u32,
    ) -> Result<Self> {
        if n == 0 || u32::try_from(n).is_err() {
            return Err(Error::Invalid { what: "tokenizer vocabulary size" });
        }
        let score_bytes = n.checked_mul(4).ok_or(Error::Invalid { what: "tokenizer vocabulary size" })?;
        if scores.len() != score_bytes {
            return Err(Error::Invalid { what: "tokenizer.ggml.scores length differs from vocabulary size" });
        }
        if Some(index.len()) != score_bytes.checked_mul(2) {
            return Err(Error::Invalid { what: "ruvllm.tokenizer.index length is not 2 * vocabulary size" });
        }
        if bos as usize >= n || eos as usize >= n {
            return Err(Error::Invalid { what: "tokenizer BOS/EOS id out of range" });
        }
        let (offsets, sorted) = index.split_at(score_bytes);

        if scores.chunks_exact(4).any(|c| !f32::from_le_bytes([c[0], c[1], c[2], c[3]]).is_finite()) {
            return Err(Error::Invalid { what: "tokenizer score is not finite" });
        }

        let mut max_piece_len = 0;
        for i in 0..n {
            let off = u32_at(offsets, i).ok_or(Error::Truncated { what: "tokenizer offsets" })?;
            let piece = piece_at(pieces, off as usize)
                .ok_or(Error::Invalid { what: "token offset or length past end of tokenizer.ggml.tokens" })?;
            max_piece_len = max_piece_len.max(piece.len());
        }

        let mut vocab =
            Vocab { n, pieces, scores, offsets, sorted, bos, eos, max_piece_len, space: None, spm: false };

        // Strictly increasing (bytes, id) pairs cannot repeat an id, so n in-range ids that
        // are strictly ordered are exactly a permutation: no "seen" bitmap (heap) needed.
        let mut prev: Option<u32> = None;
        for k in 0..n {
            let id = u32_at(sorted, k).ok_or(Error::Truncated { what: "tokenizer sorted ids" })?;
            if id as usize >= n {
                return Err(Error::Invalid { what: "sorted token id out of range" });
            }
            if let Some(p) = prev {
                let ord = vocab.piece(p).cmp(vocab.piece(id)).then(p.cmp(&id));
                if ord != Ordering::Less {
                    return Err(Error::Invalid { what: "tokenizer index is not sorted by piece bytes" });
                }
            }
            prev = Some(id);
        }
        vocab.space = vocab.lookup(b" ");
        if vocab.space.is_none() {
            vocab.space = vocab.lookup(SPACE_MARK);
            vocab.spm = vocab.space.is_some();
        }
        if vocab.spm && max_piece_len > DECODE_MAX {
            return Err(Error::Unsupported { what: "tokenizer pieces longer than 128 bytes" });
        }
        Ok(vocab)
    }

    /// Whether pieces follow SentencePiece's convention (U+2581 for a space).
    pub fn spm(&self) -> bool {
        self.spm
    }

    /// Number of tokens.
    pub fn len(&self) -> usize {
        self.n
    }

    /// Always false: [`Vocab::new`] rejects empty vocabularies.
    pub fn is_empty(&self) -> bool {
        self.n == 0
    }

    /// Piece bytes of `id`; empty for an out-of-range id.
    pub fn piece(&self, id: u32) -> &'a [u8] {
        u32_at(self.offsets, id as usize).and_then(|off| piece_at(self.pieces, off as usize)).unwrap_or(&[])
    }

    /// Merge score of `id`; 0 for an out-of-range id.
    pub fn score(&self, id: u32) -> f32 {
        u32_at(self.scores, id as usize).map_or(0.0, f32::from_bits)
    }

    /// Id whose piece is exactly `bytes` (the lowest such id if pieces repeat).
    pub fn lookup(&self, bytes: &[u8]) -> Option<u32> {
        self.lookup_by(|piece| piece.cmp(bytes))
    }

    /// Id whose piece is exactly `a ++ b`.
    fn lookup_concat(&self, a: &[u8], b: &[u8]) -> Option<u32> {
        if a.len() + b.len() > self.max_piece_len {
            return None;
        }
        self.lookup_by(|piece| cmp_concat(piece, a, b))
    }

    /// Lower-bound binary search over the sorted ids; `cmp` orders a piece against the key.
    fn lookup_by(&self, cmp: impl Fn(&[u8]) -> Ordering) -> Option<u32> {
        let (mut lo, mut hi) = (0usize, self.n);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            let id = u32_at(self.sorted, mid)?;
            if cmp(self.piece(id)) == Ordering::Less {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        let id = u32_at(self.sorted, lo)?;
        (cmp(self.piece(id)) == Ordering::Equal).then_some(id)
    }

    /// Bytes of the longest piece: a text of `n` bytes encodes to at least
    /// `n.div_ceil(max_piece_len)` tokens, which callers check against the context first.
    pub fn max_piece_len(&self) -> usize {
        self.max_piece_len
    }

    /// Beginning-of-sequence token id.
    pub fn bos(&self) -> u32 {
        self.bos
    }

    /// End-of-sequence token id.
    pub fn eos(&self) -> u32 {
        self.eos
    }
}

/// Appends ids to `out` but keeps counting past its end, so an overflow can report the
/// exact capacity needed.
struct Sink<'o> {
    out: &'o mut [u32],
    count: usize,
}

impl Sink<'_> {
    fn push(&mut self, id: u32) {
        if let Some(slot) = self.out.get_mut(self.count) {
            *slot = id;
        }
        self.count += 1;
    }
}

/// Byte-fallback token of `byte`, checked against the vocabulary size.
fn byte_token(vocab: &Vocab, byte: u8) -> Result<u32> {
    let id = u32::from(byte) + BYTE_TOKEN_BASE;
    if (id as usize) < vocab.len() {
        Ok(id)
    } else {
        Err(Error::Invalid { what: "vocabulary too small for byte-fallback tokens" })
    }
}

#[inline]
fn is_continuation(b: u8) -> bool {
    b & 0xC0 == 0x80
}

/// Work words [`encode_with`] needs per token of the unmerged sequence (`text.len() + 2` tokens
/// at most: BOS, the dummy prefix, one per byte).
pub const WORK_PER_TOKEN: usize = 5;

/// [`encode_with`] with its work area on the heap.
#[cfg(any(feature = "alloc", test))]
pub fn encode(vocab: &Vocab, text: &[u8], bos: bool, eos: bool, out: &mut [u32]) -> Result<usize> {
    #[cfg(feature = "alloc")]
    use alloc::vec;
    let tokens = text.len().saturating_add(2);
    let mut work = vec![0u32; tokens.saturating_mul(WORK_PER_TOKEN)];
    encode_with(vocab, text, bos, eos, out, &mut work)
}

/// llama2.c-compatible BPE encode. Writes ids into `out` and returns how many. `text.len() + 3`
/// slots always suffice; `work` needs [`WORK_PER_TOKEN`] words per unmerged token
/// (`WORK_PER_TOKEN * (text.len() + 2)` always suffice). No heap: on a chip both are fixed arrays.
///
/// Like llama2.c: optional BOS; a dummy-prefix `" "` token when `text` is non-empty; text is
/// split into UTF-8 code points (a lead or ASCII byte plus following continuation bytes, at
/// most 4 bytes per group), each looked up or else emitted as byte tokens `byte + 3`; then the
/// adjacent pair whose concatenation is in the vocabulary with the highest score is merged
/// (first pair on ties) until none is left; then optional EOS. Unlike C strings a 0 byte does
/// not end the text; it is encoded like any other byte. The result is llama2.c's, but found in
/// O(n log n) (see `merge_pairs`) where llama2.c rescans every pair after each merge.
///
/// Errors: [`Error::BufferTooSmall`] (`need` in tokens, or in work words) when `out` cannot hold
/// the unmerged sequence or `work` is short; [`Error::Missing`] when the vocabulary has no `" "`
/// piece; [`Error::Invalid`] when byte fallback needs an id beyond the vocabulary.
pub fn encode_with(
    vocab: &Vocab,
    text: &[u8],
    bos: bool,
    eos: bool,
    out: &mut [u32],
    work: &mut [u32],
) -> Result<usize> {
    let have = out.len();
    let mut sink = Sink { out, count: 0 };
    if bos {
        sink.push(vocab.bos());
    }
    let space = vocab.space.ok_or(Error::Missing { what: "tokenizer piece for a space (\" \" or \"▁\")" });
    if !text.is_empty() {
        sink.push(space?);
    }

    let mut start = 0;
    while start < text.len() {
        // Group the byte at `start` with following continuation bytes, 4 bytes at most.
        let mut end = start + 1;
        while end < text.len() && end - start < 4 && text.get(end).copied().is_some_and(is_continuation) {
            end += 1;
        }
        let point = text.get(start..end).unwrap_or(&[]);
        let id = if point == b" " { space.ok() } else { vocab.lookup(point) };
        match id {
            Some(id) => sink.push(id),
            None => {
                for &b in point {
                    sink.push(byte_token(vocab, b)?);
                }
            }
        }
        start = end;
    }

    let need = sink.count + usize::from(eos);
    let Sink { out, count } = sink;
    if need > have {
        return Err(Error::BufferTooSmall { need, have });
    }
    let need_work = count.saturating_mul(WORK_PER_TOKEN);
    if work.len() < need_work {
        return Err(Error::BufferTooSmall { need: need_work, have: work.len() });
    }
    // count <= out.len() was checked above, so this never falls back.
    let toks = out.get_mut(..count).unwrap_or_default();
    let len = merge_pairs(vocab, toks, work);

    if eos {
        if let Some(slot) = out.get_mut(len) {
            *slot = vocab.eos();
        }
        return Ok(len + 1);
    }
    Ok(len)
}

/// "No position" in the merge's links and heap.
const NONE: u32 = u32::MAX;

/// llama2.c's merge loop on `toks` in place, with the same result: while some adjacent pair
/// concatenates to a piece scoring above [`MERGE_FLOOR`], merge the best-scoring pair (the
/// leftmost on ties). Instead of rescanning every pair after each merge (quadratic), tokens
/// form a linked list and each position's pair with its right neighbour waits in a binary heap
/// indexed by position, ordered by (score, leftmost); a merge changes only the two pairs next
/// to it. O(n log n) time, `WORK_PER_TOKEN * toks.len()` words of `work`.
fn merge_pairs(vocab: &Vocab, toks: &mut [u32], work: &mut [u32]) -> usize {
    let n = toks.len();
    if n < 2 || u32::try_from(n).is_err() {
        return n;
    }
    let (next, rest) = work.split_at_mut(n);
    let (prev, rest) = rest.split_at_mut(n);
    let (cand, rest) = rest.split_at_mut(n);
    let (slot, rest) = rest.split_at_mut(n);
    let heap = rest.get_mut(..n).unwrap_or_default();
    let mut m = Merge { vocab, toks, next, prev, cand, slot, heap, len: 0 };
    for i in 0..n {
        m.next[i] = if i + 1 < n { i as u32 + 1 } else { NONE };
        m.prev[i] = if i > 0 { i as u32 - 1 } else { NONE };
        m.slot[i] = NONE;
    }
    for i in 0..n {
        m.refresh(i);
    }
    while m.len > 0 {
        let l = m.heap[0] as usize;
        let r = m.next[l] as usize;
        m.toks[l] = m.cand[l];
        // `r` leaves the list (and the heap); `l` and its left neighbour get new pairs.
        m.remove(r);
        m.next[l] = m.next[r];
        if let Some(after) = m.prev.get_mut(m.next[r] as usize) {
            *after = l as u32;
        }
        m.refresh(l);
        if m.prev[l] != NONE {
            m.refresh(m.prev[l] as usize);
        }
    }
    // Position 0 never leaves the list (only right halves of pairs do): walk it from there.
    let (mut i, mut k) = (0u32, 0usize);
    while i != NONE {
        m.toks[k] = m.toks[i as usize];
        k += 1;
        i = m.next[i as usize];
    }
    k
}

/// The state of [`merge_pairs`]: per position its neighbours, the id its pair with the right
/// neighbour merges into (or [`NONE`]), and its slot in the heap of mergeable positions.
struct Merge<'v, 'a, 'w> {
    vocab: &'v Vocab<'a>,
    toks: &'w mut [u32],
    next: &'w mut [u32],
    prev: &'w mut [u32],
    cand: &'w mut [u32],
    slot: &'w mut [u32],
    heap: &'w mut [u32],
    len: usize,
}

impl Merge<'_, '_, '_> {
    /// Recomputes position `i`'s pair with its right neighbour and places it in the heap.
    fn refresh(&mut self, i: usize) {
        let v = self.vocab;
        self.cand[i] = match self.toks.get(self.next[i] as usize) {
            Some(&b) => v
                .lookup_concat(v.piece(self.toks[i]), v.piece(b))
                .filter(|id| v.score(*id) > MERGE_FLOOR)
                .unwrap_or(NONE),
            None => NONE,
        };
        self.place(i);
    }

    /// Takes position `i` out of the heap (its token left the list).
    fn remove(&mut self, i: usize) {
        self.cand[i] = NONE;
        self.place(i);
    }

    /// Moves position `i` in, within or out of the heap after its candidate changed.
    fn place(&mut self, i: usize) {
        let at = self.slot[i];
        match (self.cand[i] != NONE, at != NONE) {
            (true, true) => {
                let k = self.up(at as usize);
                self.down(k);
            }
            (true, false) => {
                self.heap[self.len] = i as u32;
                self.slot[i] = self.len as u32;
                self.len += 1;
                self.up(self.len - 1);
            }
            (false, true) => {
                let k = at as usize;
                self.len -= 1;
                self.swap(k, self.len);
                self.slot[i] = NONE;
                if k < self.len {
                    let k = self.up(k);
                    self.down(k);
                }
            }
            (false, false) => {}
        }
    }

    /// Whether position `a`'s pair merges before `b`'s: higher score, then leftmost (list
    /// order is position order).
    fn before(&self, a: u32, b: u32) -> bool {
        let (sa, sb) = (self.vocab.score(self.cand[a as usize]), self.vocab.score(self.cand[b as usize]));
        sa > sb || (sa == sb && a < b)
    }

    fn swap(&mut self, i: usize, j: usize) {
        self.heap.swap(i, j);
        self.slot[self.heap[i] as usize] = i as u32;
        self.slot[self.heap[j] as usize] = j as u32;
    }

    fn up(&mut self, mut k: usize) -> usize {
        while k > 0 && self.before(self.heap[k], self.heap[(k - 1) / 2]) {
            self.swap(k, (k - 1) / 2);
            k = (k - 1) / 2;
        }
        k
    }

    fn down(&mut self, mut k: usize) {
        loop {
            let mut best = k;
            for c in [2 * k + 1, 2 * k + 2] {
                if c < self.len && self.before(self.heap[c], self.heap[best]) {
                    best = c;
                }
            }
            if best == k {
                return;
            }
            self.swap(k, best);
            k = best;
        }
    }
}

/// Parses a `<0xHH>` byte piece (two hex digits, either case).
fn parse_byte_piece(piece: &[u8]) -> Option<u8> {
    match piece {
        [b'<', b'0', b'x', hi, lo, b'>'] => {
            let hex = |c: u8| (c as char).to_digit(16);
            Some((hex(*hi)? * 16 + hex(*lo)?) as u8)
        }
        _ => None,
    }
}

/// The bytes to print for `token` following `prev`, like llama2.c's decode: after BOS a
/// leading space is stripped (sentencepiece's dummy prefix), and a `<0xHH>` piece becomes the
/// raw byte. With SentencePiece's convention U+2581 becomes a space and BOS/EOS print nothing
/// (as llama.cpp renders them). Translated bytes go through `scratch`. Out-of-range ids decode
/// to nothing.
pub fn decode<'a>(vocab: &Vocab<'a>, prev: u32, token: u32, scratch: &'a mut [u8; DECODE_MAX]) -> &'a [u8] {
    let raw = vocab.piece(token);
    if let Some(b) = parse_byte_piece(raw) {
        scratch[0] = b;
        return &scratch[..1];
    }
    let mut piece = raw;
    if vocab.spm {
        if token == vocab.bos || token == vocab.eos {
            return &[];
        }
        // Vocab::new bounded every piece by DECODE_MAX, and the text is never longer.
        let mut len = 0;
        for (slot, b) in scratch.iter_mut().zip(unmark_spaces(raw)) {
            *slot = b;
            len += 1;
        }
        piece = &scratch[..len];
    }
    if prev == vocab.bos() {
        if let Some(rest) = piece.strip_prefix(b" ") {
            piece = rest;
        }
    }
    piece
}

/// `text` cut to at most `max` bytes at a character boundary.
pub(crate) fn truncate(text: &str, max: usize) -> &str {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.get(..end).unwrap_or_default()
}

/// The bytes of a SentencePiece piece with each U+2581 mark turned back into a space.
pub fn unmark_spaces(piece: &[u8]) -> impl Iterator<Item = u8> + '_ {
    let mut rest = piece;
    core::iter::from_fn(move || {
        let &b = rest.first()?;
        let (out, used) = if rest.starts_with(SPACE_MARK) { (b' ', SPACE_MARK.len()) } else { (b, 1) };
        rest = rest.get(used..).unwrap_or(&[]);
        Some(out)
    })
}

/// llama2.c's safe_printf rule: a single-byte piece that is neither printable ASCII nor
/// whitespace (C locale `isprint`/`isspace`) is not printed. An empty piece prints nothing,
/// so it also counts as not printable.
pub fn is_printable(piece: &[u8]) -> bool {
    match piece {
        [] => false,
        [b] => matches!(b, 0x20..=0x7E | 0x09..=0x0D),
        _ => true,
    }
}
