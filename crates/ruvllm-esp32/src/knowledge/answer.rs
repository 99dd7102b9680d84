//! Grounded answers: the answer to a question is a span copied from a retrieved fact.
//!
//! The built-in model is trained on documents of one fixed form (see [`write_prompt`]):
//! `Fact: <fact> Question: <question> Answer: <span>`, the span copied from the fact and the
//! document ended by the next BOS. [`answer`] runs that prompt and decodes greedily under a
//! copy constraint: every generated token must continue a span of the fact (starting at a word),
//! or end the answer where a phrase of the fact ends (before `.`, `,`, `;`, `:`, `!`, `?`, a
//! joining word such as "and", or the end), so whatever the model prefers, the answer is whole
//! words taken from the fact. The model picks where the answer starts and at which phrase end
//! it stops.
//! It stops at BOS/EOS, at a newline, when the span cannot go on, or when `out` is full.
//! No allocation: the caller owns every buffer; float ([`crate::infer::State`]) and integer
//! ([`crate::infer::IntState`]) forward passes both drive it.

use crate::error::{Error, Result};
use crate::infer::Step;
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

/// Positions in the source where the answer so far could continue, as a bit set.
struct Spans {
    bits: [u64; MAX_FACT.div_ceil(64) + 1],
}

impl Spans {
    fn get(&self, i: usize) -> bool {
        self.bits.get(i / 64).is_some_and(|w| w >> (i % 64) & 1 == 1)
    }
    fn set(&mut self, i: usize, on: bool) {
        if let Some(w) = self.bits.get_mut(i / 64) {
            *w = (*w & !(1 << (i % 64))) | (u64::from(on) << (i % 64));
        }
    }
}

/// The source the answer copies from: a space, then the fact, so that a span starting at a
/// word starts with the space that the tokenizer attaches to the word.
struct Source<'f> {
    fact: &'f [u8],
}

impl Source<'_> {
    fn len(&self) -> usize {
        self.fact.len() + 1
    }
    fn at(&self, i: usize) -> Option<u8> {
        if i == 0 {
            Some(b' ')
        } else {
            self.fact.get(i - 1).copied()
        }
    }
    /// Whether `piece` is the source's text at `i`.
    fn matches(&self, i: usize, piece: &[u8]) -> bool {
        piece.iter().enumerate().all(|(k, &b)| self.at(i + k) == Some(b))
    }

    /// Whether a phrase of the fact ends before `i`: at the end of the fact, before a stop,
    /// comma, semicolon, colon, `!` or `?` that ends a word, or before a joining word (and,
    /// but, or, ...).
    fn phrase_ends(&self, i: usize) -> bool {
        let word_end = |j: usize| !self.at(j).is_some_and(|b| b.is_ascii_alphanumeric() || !b.is_ascii());
        match self.at(i) {
            None => true,
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

/// The answer to `question` about `fact` from `model`: `prompt` holds the tokens of
/// [`write_prompt`]'s text after BOS (as [`tokenizer::encode_with`] makes them). The answer's
/// bytes go to `out` (its length bounds the answer) and their count is returned, with no
/// leading or trailing spaces and no trailing `.`, `,` or `;`. The state must hold the prompt
/// and the answer's tokens ([`Error::ContextFull`] otherwise).
pub fn answer<S: Step, const L: usize>(
    model: &Model<'_, L>,
    state: &mut S,
    prompt: &[u32],
    fact: &str,
    out: &mut [u8],
) -> Result<usize>
where
    S::Logit: PartialOrd,
{
    let vocab = &model.vocab;
    let (Some((&last, head)), true) = (prompt.split_last(), prompt.first() == Some(&vocab.bos())) else {
        return Err(Error::Invalid { what: "answer prompt must start with BOS" });
    };
    if prompt.len() >= state.capacity() {
        return Err(Error::ContextFull { need: prompt.len() + 1, capacity: state.capacity() });
    }
    for (pos, &t) in head.iter().enumerate() {
        state.prefill_token(model, t, pos)?;
    }
    let src = Source { fact: truncate(fact.trim(), MAX_FACT).as_bytes() };
    // Where the answer may start: before each word (a space in the source).
    let mut spans = Spans { bits: [0; MAX_FACT.div_ceil(64) + 1] };
    for i in 0..src.len() {
        spans.set(i, src.at(i) == Some(b' ') && src.at(i + 1).is_some_and(|b| b != b' '));
    }
    let (mut len, mut token, mut pos) = (0usize, last, head.len());
    let mut scratch = [0u8; tokenizer::DECODE_MAX];
    while pos < state.capacity() {
        let logits = state.logits(model, token, pos)?;
        pos += 1;
        // Greedy over the tokens that continue a span, and the end: once there is an answer
        // and it ends a phrase of the fact (the model picks where the answer starts and which
        // phrase ends it; it never stops inside a word, a number or a name).
        let can_end = len > 0 && (0..src.len()).any(|i| spans.get(i) && src.phrase_ends(i + len));
        let mut best: Option<(u32, S::Logit)> = None;
        for (id, &logit) in (0u32..).zip(logits.iter()) {
            if best.is_some_and(|(_, b)| logit <= b) {
                continue;
            }
            let allowed = if id == vocab.bos() || id == vocab.eos() {
                can_end
            } else {
                let piece = tokenizer::decode(vocab, token, id, &mut scratch);
                if piece.contains(&b'\n') {
                    can_end
                } else {
                    !piece.is_empty()
                        && len + piece.len() <= out.len()
                        && (0..src.len()).any(|i| spans.get(i) && src.matches(i + len, piece))
                }
            };
            if allowed {
                best = Some((id, logit));
            }
        }
        let Some((next, _)) = best else { break };
        let piece = tokenizer::decode(vocab, token, next, &mut scratch);
        if next == vocab.bos() || next == vocab.eos() || piece.contains(&b'\n') {
            break;
        }
        for i in 0..src.len() {
            spans.set(i, spans.get(i) && src.matches(i + len, piece));
        }
        if let Some(dst) = out.get_mut(len..len + piece.len()) {
            dst.copy_from_slice(piece);
        }
        len += piece.len();
        token = next;
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
        let ends: Vec<usize> = (0..=src.len()).filter(|&i| src.phrase_ends(i)).collect();
        // " The cat gets fed at 7am| and 6pm|, 4:30 daily|.|"
        assert_eq!(ends, [24, 32, 44, 45]);
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
