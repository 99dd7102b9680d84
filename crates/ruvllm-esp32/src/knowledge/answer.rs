//! Grounded answers: the answer to a question is a span copied from a retrieved fact.
//!
//! The built-in model is trained on documents of one fixed form (see [`write_prompt`]):
//! `Fact: <fact> Question: <question> Answer: <span>`, the span copied from the fact and the
//! document ended by the next BOS. [`answer`] runs that prompt and picks the span of the fact
//! the model gives the best start and end: the answer is always whole words taken from the
//! fact, starting at a word and ending where a phrase of the fact ends.
//! No allocation: the caller owns every buffer; float ([`crate::infer::State`]) and integer
//! ([`crate::infer::IntState`]) forward passes both drive it.

use crate::error::{Error, Result};
use crate::infer::{LogitValue, Step};
use crate::model::Model;
use crate::tokenizer::{self, truncate};

/// Starts the fact in a question-answer prompt.
pub const FACT_TAG: &str = "Fact:";
/// Starts the question.
pub const QUESTION_TAG: &str = "Question:";
/// Ends the prompt: the answer follows.
pub const ANSWER_TAG: &str = "Answer:";

/// Bytes of a fact the answer can copy from (longer facts are copied from their start).
pub const MAX_FACT: usize = 256;

/// Writes `Fact: <fact> Question: <question> Answer:` into `buf` and returns its length. When
/// it does not fit, the question is cut first, then the fact (at character boundaries), so the
/// tags always stay whole; a `buf` shorter than the tags gets nothing (length 0).
pub fn write_prompt(buf: &mut [u8], fact: &str, question: &str) -> usize {
    let tags = FACT_TAG.len() + QUESTION_TAG.len() + ANSWER_TAG.len() + 4;
    let Some(room) = buf.len().checked_sub(tags) else {
        return 0;
    };
    let fact = truncate(fact.trim(), room);
    let question = truncate(question.trim(), room - fact.len());
    let mut len = 0;
    for part in [FACT_TAG, " ", fact, " ", QUESTION_TAG, " ", question, " ", ANSWER_TAG] {
        // Fits: the lengths were bounded above.
        if let Some(dst) = buf.get_mut(len..len + part.len()) {
            dst.copy_from_slice(part.as_bytes());
            len += part.len();
        }
    }
    len
}

/// The fact an answer is copied from.
struct Source<'f> {
    fact: &'f [u8],
}

impl Source<'_> {
    fn at(&self, i: usize) -> Option<u8> {
        self.fact.get(i).copied()
    }

    /// Whether an answer may start at byte `i`: the start of a word.
    fn word_starts(&self, i: usize) -> bool {
        self.at(i).is_some_and(|b| b != b' ') && (i == 0 || self.at(i - 1) == Some(b' '))
    }

    /// Whether a phrase of the fact ends before byte `i`: at the end of the fact, before a
    /// stop, comma, semicolon, colon, `!` or `?` that ends a word, or before a joining word
    /// (and, but, or, ...).
    fn phrase_ends(&self, i: usize) -> bool {
        let word_end = |j: usize| !self.at(j).is_some_and(|b| b.is_ascii_alphanumeric() || !b.is_ascii());
        match self.at(i) {
            None => i == self.fact.len() && !matches!(self.at(i.wrapping_sub(1)), Some(b'.' | b'!' | b'?')),
            Some(b'.' | b',' | b';' | b':' | b'!' | b'?') => matches!(self.at(i + 1), None | Some(b' ')),
            Some(b' ') => JOINING.iter().any(|w| {
                let w = w.as_bytes();
                w.iter()
                    .enumerate()
                    .all(|(k, &c)| self.at(i + 1 + k).map(|b| b.to_ascii_lowercase()) == Some(c))
                    && word_end(i + 1 + w.len())
            }),
            _ => false,
        }
    }
}

/// Words that start a new phrase: an answer may end before them.
const JOINING: [&str; 9] = ["and", "but", "or", "so", "because", "while", "which", "who", "if"];

/// Answer starts considered: every word of a [`MAX_FACT`]-byte fact.
const MAX_STARTS: usize = MAX_FACT / 2 + 1;

/// `log softmax(logits)` at `ids` summed in probability (`ln Σ p(id)`), in f64.
fn log_prob<T: LogitValue>(logits: &[T], ids: &[u32]) -> f64 {
    let max = logits.iter().fold(f64::NEG_INFINITY, |m, v| m.max(v.value()));
    let sum: f64 = logits.iter().map(|v| libm::exp(v.value() - max)).sum();
    let hit: f64 =
        ids.iter().filter_map(|&id| logits.get(id as usize)).map(|v| libm::exp(v.value() - max)).sum();
    libm::log(hit) - libm::log(sum)
}

/// The answer to `question` about `fact` from `model`: a span of the fact, chosen the way
/// extractive question answering scores a span, by where it starts and where it ends.
/// `tokens[..prompt]` holds the tokens of [`write_prompt`]'s text after BOS (as
/// [`tokenizer::encode_with`] makes them); after the prompt has run, `tokens` and `work` (sized
/// as for encoding [`MAX_FACT`] bytes) encode the candidate spans. The answer's bytes go to
/// `out` (its length bounds the answer) and their count is returned, with no leading or
/// trailing spaces and no trailing `.`, `,` or `;`.
///
/// A candidate starts at a word of the fact and ends where a phrase of the fact ends (before
/// `.` `,` `;` `:` `!` `?`, a joining word such as "and", or the end), so an answer is always
/// whole words taken from the fact. Its score is `log p(first token | prompt) + log p(end of
/// document | prompt, span)` (BOS or EOS: the training documents end after the answer). The
/// tokens inside the span are not scored: a model this small does not copy, so their
/// probabilities say how predictable the fact's words are, not whether they belong to the
/// answer (scored, they favour one-word answers: docs/BENCHMARKS.md, "Grounded answers").
/// Each start runs its span's tokens once and scores every phrase end on the way; starts go
/// in order of their first token's probability and stop when that cannot beat the best
/// answer, since an end's probability is at most 1. The state must hold the prompt and the
/// answer's tokens ([`Error::ContextFull`] otherwise); spans past its capacity are not scored.
pub fn answer<S: Step, const L: usize>(
    model: &Model<'_, L>,
    state: &mut S,
    (tokens, prompt): (&mut [u32], usize),
    work: &mut [u32],
    fact: &str,
    out: &mut [u8],
) -> Result<usize>
where
    S::Logit: LogitValue,
{
    let vocab = &model.vocab;
    let (Some((&last, head)), true) =
        (tokens.get(..prompt).and_then(<[u32]>::split_last), tokens.first() == Some(&vocab.bos()))
    else {
        return Err(Error::Invalid { what: "answer prompt must start with BOS" });
    };
    if prompt >= state.capacity() {
        return Err(Error::ContextFull { need: prompt + 1, capacity: state.capacity() });
    }
    for (pos, &t) in head.iter().enumerate() {
        state.prefill_token(model, t, pos)?;
    }
    let src = Source { fact: truncate(fact.trim(), MAX_FACT).as_bytes() };
    let (ends, room) = ([vocab.bos(), vocab.eos()], out.len());
    // The tokens of the span starting at `s`, cut where no answer could end (`out` is full):
    // the tokenizer's dummy prefix gives the first word its leading space, as after "Answer:".
    let span = |s: usize, tokens: &mut [u32], work: &mut [u32]| {
        let text = src.fact.get(s..src.fact.len().min(s + room)).unwrap_or_default();
        tokenizer::encode_with(vocab, text, false, false, tokens, work)
    };
    let starts = || (0..src.fact.len()).filter(|&s| src.word_starts(s));

    // The first token of every start, scored from the prompt's logits.
    let mut first = [f64::NEG_INFINITY; MAX_STARTS];
    let logits = state.logits(model, last, prompt - 1)?;
    for (slot, s) in first.iter_mut().zip(starts()) {
        let n = span(s, tokens, work)?;
        if let Some(&t) = tokens.get(..n).and_then(<[u32]>::first) {
            *slot = log_prob(logits, &[t]);
        }
    }

    let mut best: Option<(f64, usize, usize)> = None;
    let mut scratch = [0u8; tokenizer::DECODE_MAX];
    // The unexplored start whose first token is likeliest, while it can still win.
    while let Some((k, &lp)) = first.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1).then(b.0.cmp(&a.0)))
    {
        if lp == f64::NEG_INFINITY || best.is_some_and(|(b, ..)| lp <= b) {
            break;
        }
        first[k] = f64::NEG_INFINITY;
        let Some(s) = starts().nth(k) else { break };
        let n = span(s, tokens, work)?;
        let (mut end, mut prev) = (s, last);
        for (i, &t) in tokens.get(..n).unwrap_or_default().iter().enumerate() {
            let pos = prompt + i;
            if pos >= state.capacity() {
                break;
            }
            // Bytes of the span so far: the first piece's leading space is not in the fact.
            let piece = tokenizer::decode(vocab, prev, t, &mut scratch).len();
            end += if i == 0 { piece.saturating_sub(1) } else { piece };
            prev = t;
            let logits = state.logits(model, t, pos)?;
            if end > s && src.phrase_ends(end) {
                let whole = lp + log_prob(logits, &ends);
                if best.is_none_or(|(b, ..)| whole > b) {
                    best = Some((whole, s, end));
                }
            }
        }
    }
    let Some((_, s, e)) = best else { return Ok(0) };
    let text = src.fact.get(s..e).unwrap_or_default();
    let len = text.len().min(out.len());
    if let (Some(dst), Some(text)) = (out.get_mut(..len), text.get(..len)) {
        dst.copy_from_slice(text);
    }
    Ok(trim(out, len))
}

/// Moves the answer without its surrounding spaces and trailing `.,;` to the front of `out`.
fn trim(out: &mut [u8], len: usize) -> usize {
    let text = out.get(..len).unwrap_or_default();
    let start = text.iter().position(|&b| b != b' ').unwrap_or(len);
    let end = text.iter().rposition(|&b| !matches!(b, b' ' | b'.' | b',' | b';')).map_or(start, |e| e + 1);
    out.copy_within(start..end.max(start), 0);
    end.saturating_sub(start)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prompt_keeps_the_tags_and_cuts_the_question_first() {
        let mut buf = [0u8; 80];
        let n = write_prompt(&mut buf, " The pump runs at 6am. ", "when does the pump run ");
        assert_eq!(&buf[..n], b"Fact: The pump runs at 6am. Question: when does the pump run Answer:");
        let mut small = [0u8; 50];
        let n = write_prompt(&mut small, "The pump runs at 6am.", "when does the pump run");
        assert_eq!(&small[..n], b"Fact: The pump runs at 6am. Question: when Answer:");
        let n = write_prompt(&mut small[..40], "The pump runs at 6am.", "when does the pump run");
        assert_eq!(&small[..n], b"Fact: The pump runs a Question:  Answer:");
        assert_eq!(write_prompt(&mut [0u8; 10], "x", "y"), 0);
        let mut tiny = [0u8; 30];
        let n = write_prompt(&mut tiny, "é", "é");
        assert!(core::str::from_utf8(&tiny[..n]).is_ok());
    }

    #[test]
    fn phrases_end_at_stops_joining_words_and_the_end() {
        let src = Source { fact: b"The cat gets fed at 7am and 6pm, 4:30 daily." };
        let ends: Vec<usize> = (0..=src.fact.len() + 1).filter(|&i| src.phrase_ends(i)).collect();
        // "The cat gets fed at 7am| and 6pm|, 4:30 daily|." (not after the final stop)
        assert_eq!(ends, [23, 31, 43]);
        assert!(Source { fact: b"at 3pm" }.phrase_ends(6));
        let starts: Vec<usize> = (0..src.fact.len()).filter(|&i| src.word_starts(i)).collect();
        assert_eq!(starts, [0, 4, 8, 13, 17, 20, 24, 28, 33, 38]);
    }

    #[test]
    fn trim_drops_spaces_and_final_stops() {
        let mut b = *b" at 3pm on Thursday. ";
        let n = trim(&mut b, 21);
        assert_eq!(&b[..n], b"at 3pm on Thursday");
        let mut e = *b"  ";
        assert_eq!(trim(&mut e, 2), 0);
    }
}
