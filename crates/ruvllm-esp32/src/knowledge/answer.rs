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
use crate::knowledge::lexical::{self, Terms};
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

/// The fact an answer is copied from, and the question's content terms.
struct Source<'f> {
    fact: &'f [u8],
    question: Terms,
    /// The question asks for a time ("when", "what time", "which day").
    asks_time: bool,
}

impl<'f> Source<'f> {
    fn new(fact: &'f str, question: &str) -> Self {
        let asks_time = question.split(|c: char| !c.is_ascii_alphabetic()).any(|w| {
            ["when", "time", "times", "day", "days", "date"].iter().any(|t| w.eq_ignore_ascii_case(t))
        });
        Source { fact: truncate(fact.trim(), MAX_FACT).as_bytes(), question: Terms::of(question), asks_time }
    }

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

    /// The word (run of non-spaces) starting at byte `s`.
    fn word(&self, s: usize) -> &'f [u8] {
        let rest = self.fact.get(s..).unwrap_or_default();
        rest.get(..rest.iter().position(|&b| b == b' ').unwrap_or(rest.len())).unwrap_or_default()
    }

    /// Whether the word at byte `s` is one of `list` (compared lower-case, letters only).
    fn word_in(&self, s: usize, list: &[&str]) -> bool {
        let mut buf = [0u8; 12];
        let mut n = 0;
        for &b in self.word(s).iter().filter(|b| b.is_ascii_alphabetic() || !b.is_ascii()) {
            if n == buf.len() {
                return false;
            }
            buf[n] = b.to_ascii_lowercase();
            n += 1;
        }
        list.iter().any(|w| w.as_bytes() == &buf[..n])
    }

    /// Whether the word at byte `s` is a content word of the question.
    fn in_question(&self, s: usize) -> bool {
        let mut hit = false;
        if let Ok(w) = core::str::from_utf8(self.word(s)) {
            lexical::for_each_term(w, |t| hit |= self.question.count(t) > 0);
        }
        hit
    }

    /// The lexical features of the span `s..e` (see [`WEIGHTS`]).
    fn lexical(&self, s: usize, e: usize) -> [f64; LEXICAL] {
        let starts = || (0..self.fact.len()).filter(|&i| self.word_starts(i));
        let prev = starts().take_while(|&i| i < s).last();
        let digit = |i: usize| self.word(i).iter().any(u8::is_ascii_digit);
        let (mut words, mut overlap, mut verb, mut number) = (0.0, 0.0, 0.0, false);
        for i in starts().skip_while(|&i| i < s).take_while(|&i| i < e) {
            words += 1.0;
            number |= digit(i);
            overlap += f64::from(u8::from(self.in_question(i)));
            verb += f64::from(u8::from(self.word_in(i, VERBS)));
        }
        let flag = |b: bool| f64::from(u8::from(b));
        let rest = self.fact.get(e..).unwrap_or_default();
        let (prev_function, prev_verb) =
            (prev.is_some_and(|p| self.word_in(p, FUNCTION)), prev.is_some_and(|p| self.word_in(p, VERBS)));
        [
            words,
            overlap,
            flag(prev.is_some_and(|p| self.in_question(p))),
            flag(prev.is_none()),
            flag(prev_function),
            flag(self.word_in(s, FUNCTION)),
            flag(prev_verb),
            verb.min(1.0),
            flag(!rest.iter().any(|b| b.is_ascii_alphanumeric())),
            flag(prev.is_some_and(digit)),
            flag(self.word(s).first().is_some_and(u8::is_ascii_digit)),
            flag(prev.is_some() && !prev_function && !prev_verb),
            flag(self.asks_time && number),
        ]
    }

    /// The lexical part of a span's score.
    fn lexical_score(&self, s: usize, e: usize) -> f64 {
        self.lexical(s, e).iter().zip(&WEIGHTS[2..]).map(|(x, w)| x * w).sum()
    }

    /// The best lexical part of any span starting at `s`: with the end's log-probability at
    /// most 0, a bound on every score of that start.
    fn best_lexical(&self, s: usize) -> f64 {
        (s + 1..=self.fact.len())
            .filter(|&e| self.phrase_ends(e))
            .map(|e| self.lexical_score(s, e))
            .fold(f64::NEG_INFINITY, f64::max)
    }
}

/// Words that start a new phrase: an answer may end before them.
const JOINING: [&str; 9] = ["and", "but", "or", "so", "because", "while", "which", "who", "if"];

/// Prepositions, determiners and quantifiers: words that open a phrase.
const FUNCTION: &[&str] = &[
    "a", "above", "after", "an", "around", "at", "before", "behind", "below", "beside", "between", "by",
    "during", "every", "for", "from", "in", "inside", "into", "my", "near", "next", "on", "onto", "our",
    "outside", "over", "since", "the", "their", "through", "to", "twice", "under", "until", "with", "your",
];

/// Linking and common verbs: an answer usually follows one and rarely holds one.
const VERBS: &[&str] = &[
    "am", "are", "be", "been", "called", "costs", "gets", "goes", "has", "have", "is", "leaves", "needs",
    "runs", "takes", "was", "were",
];

/// Lexical features of a span, after the model's two scores.
pub const LEXICAL: usize = 13;

/// A span's score is the dot product of these weights with its features: the model's
/// `log p(first token | prompt)` and `log p(end of document | prompt, span)`, then (lexical)
/// the span's words, its words that are content words of the question, whether the word before
/// it is one, whether it starts the fact, whether the word before it opens a phrase (a
/// preposition or determiner the span would leave out), whether its first word does, whether
/// the word before it is a verb, whether it holds one, whether it ends the fact, whether the
/// word before it holds a digit, whether its first word starts with one, whether the word
/// before it is neither a phrase opener nor a verb (the span would cut a noun phrase: "17" of
/// "number 17"), and whether the question asks for a time and the span holds a digit.
/// Fitted on generated question-answer documents, never on the held-out facts
/// (`cargo test --release -p ruvllm-train answer_weights`, which checks these values).
pub const WEIGHTS: [f64; 2 + LEXICAL] = [
    0.6882, 0.9329, 0.1276, -2.0417, 0.7131, -1.1891, 0.1890, 1.2116, 0.5524, -2.6828, -1.0233, 0.0375,
    -1.2961, 0.4477, 2.8346,
];

/// Answer starts considered: every word of a [`MAX_FACT`]-byte fact.
const MAX_STARTS: usize = MAX_FACT / 2 + 1;

/// A candidate answer: the fact's bytes `start..end` and the model's two scores of it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Candidate {
    /// First byte of the span in the (trimmed) fact.
    pub start: usize,
    /// Byte after the span: where a phrase of the fact ends.
    pub end: usize,
    /// `log p(first token | prompt)`.
    pub first: f64,
    /// `log p(end of document | prompt, span)` (BOS or EOS).
    pub last: f64,
}

/// `log softmax(logits)` at `ids` summed in probability (`ln Σ p(id)`), in f64.
fn log_prob<T: LogitValue>(logits: &[T], ids: &[u32]) -> f64 {
    let max = logits.iter().fold(f64::NEG_INFINITY, |m, v| m.max(v.value()));
    let sum: f64 = logits.iter().map(|v| libm::exp(v.value() - max)).sum();
    let hit: f64 =
        ids.iter().filter_map(|&id| logits.get(id as usize)).map(|v| libm::exp(v.value() - max)).sum();
    libm::log(hit) - libm::log(sum)
}

/// Runs the prompt and the candidate spans of `fact` through the model, best first.
/// `bound(start, first)` is an upper bound of the score of every span at byte `start` whose
/// first token scored `first`; starts go in order of it, and the search stops when no start
/// can beat the best score that `score` gave a candidate, so the best candidate found is the
/// best of all. Returns that candidate and its score.
/// `tokens[..prompt]` holds the tokens of [`write_prompt`]'s text after BOS (as
/// [`tokenizer::encode_with`] makes them); after the prompt has run, `tokens` and `work` (sized
/// as for encoding [`MAX_FACT`] bytes) encode the spans, cut after `room` bytes. Each start runs
/// its span's tokens once and scores every phrase end on the way. The state must hold the
/// prompt and the answer's tokens ([`Error::ContextFull`] otherwise); spans past its capacity
/// are not scored.
#[allow(clippy::too_many_arguments)]
pub fn spans<S: Step, const L: usize>(
    model: &Model<'_, L>,
    state: &mut S,
    (tokens, prompt): (&mut [u32], usize),
    work: &mut [u32],
    (fact, room): (&str, usize),
    bound: impl Fn(usize, f64) -> f64,
    mut score: impl FnMut(&Candidate) -> f64,
) -> Result<Option<(Candidate, f64)>>
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
    let src = Source::new(fact, "");
    let ends = [vocab.bos(), vocab.eos()];
    // The tokens of the span starting at `s`, cut where no answer could end (`out` is full):
    // the tokenizer's dummy prefix gives the first word its leading space, as after "Answer:".
    let span = |s: usize, tokens: &mut [u32], work: &mut [u32]| {
        let text = src.fact.get(s..src.fact.len().min(s + room)).unwrap_or_default();
        tokenizer::encode_with(vocab, text, false, false, tokens, work)
    };
    let starts = || (0..src.fact.len()).filter(|&s| src.word_starts(s));

    // The first token of every start, scored from the prompt's logits, and the start's bound.
    let mut first = [(f64::NEG_INFINITY, f64::NEG_INFINITY); MAX_STARTS];
    let logits = state.logits(model, last, prompt - 1)?;
    for (slot, s) in first.iter_mut().zip(starts()) {
        let n = span(s, tokens, work)?;
        if let Some(&t) = tokens.get(..n).and_then(<[u32]>::first) {
            let lp = log_prob(logits, &[t]);
            *slot = (bound(s, lp), lp);
        }
    }

    let mut best: Option<(Candidate, f64)> = None;
    let mut scratch = [0u8; tokenizer::DECODE_MAX];
    // The unexplored start with the highest bound, while it can still win.
    while let Some((k, &(b, lp))) =
        first.iter().enumerate().max_by(|a, b| a.1 .0.total_cmp(&b.1 .0).then(b.0.cmp(&a.0)))
    {
        if b == f64::NEG_INFINITY || best.is_some_and(|(_, v)| b <= v) {
            break;
        }
        first[k].0 = f64::NEG_INFINITY;
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
                let c = Candidate { start: s, end, first: lp, last: log_prob(logits, &ends) };
                let v = score(&c);
                if best.is_none_or(|(_, b)| v > b) {
                    best = Some((c, v));
                }
            }
        }
    }
    Ok(best)
}

/// The features of a candidate for `question` ([`WEIGHTS`] says which): the model's two
/// scores, then the span's lexical features.
pub fn features(c: &Candidate, fact: &str, question: &str) -> [f64; 2 + LEXICAL] {
    let mut f = [0.0; 2 + LEXICAL];
    f[0] = c.first;
    f[1] = c.last;
    f[2..].copy_from_slice(&Source::new(fact, question).lexical(c.start, c.end));
    f
}

/// The answer to `question` about `fact` from `model`: a span of the fact, chosen the way
/// extractive question answering scores a span, by where it starts and where it ends.
/// The prompt and buffers are as for [`spans`]. The answer's bytes go to `out` (its length
/// bounds the answer) and their count is returned, with no leading or trailing spaces and no
/// trailing `.`, `,` or `;`.
///
/// A candidate starts at a word of the fact and ends where a phrase of the fact ends (before
/// `.` `,` `;` `:` `!` `?`, a joining word such as "and", or the end), so an answer is always
/// whole words taken from the fact. Its score weighs ([`WEIGHTS`]) the model's probability of
/// its first token after `Answer:`, that of the document ending (BOS/EOS) after it, and where
/// it lies among the fact's and question's words. The tokens inside the span are not scored:
/// a model this small does not copy, so their probabilities say how predictable the fact's
/// words are, not whether they belong to the answer (scored, they favour one-word answers:
/// docs/BENCHMARKS.md, "Grounded answers").
pub fn answer<S: Step, const L: usize>(
    model: &Model<'_, L>,
    state: &mut S,
    prompt: (&mut [u32], usize),
    work: &mut [u32],
    (fact, question): (&str, &str),
    out: &mut [u8],
) -> Result<usize>
where
    S::Logit: LogitValue,
{
    let src = Source::new(fact, question);
    // The end's log-probability is at most 0, so a start's best lexical part bounds it.
    let bound = |s: usize, lp: f64| WEIGHTS[0] * lp + src.best_lexical(s);
    let score =
        |c: &Candidate| WEIGHTS[0] * c.first + WEIGHTS[1] * c.last + src.lexical_score(c.start, c.end);
    let best = spans(model, state, prompt, work, (fact, out.len()), bound, score)?;
    let Some((c, _)) = best else { return Ok(0) };
    let text = src.fact.get(c.start..c.end).unwrap_or_default();
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
        let src = Source::new("The cat gets fed at 7am and 6pm, 4:30 daily.", "");
        let ends: Vec<usize> = (0..=src.fact.len() + 1).filter(|&i| src.phrase_ends(i)).collect();
        // "The cat gets fed at 7am| and 6pm|, 4:30 daily|." (not after the final stop)
        assert_eq!(ends, [23, 31, 43]);
        assert!(Source::new("at 3pm", "").phrase_ends(6));
        let starts: Vec<usize> = (0..src.fact.len()).filter(|&i| src.word_starts(i)).collect();
        assert_eq!(starts, [0, 4, 8, 13, 17, 20, 24, 28, 33, 38]);
    }

    #[test]
    fn lexical_features_of_a_span() {
        let src = Source::new("The team meeting is at 3pm on Thursday.", "when is the team meeting");
        // "at 3pm on Thursday": 4 words, none of the question's, after the verb "is", starts
        // with a phrase opener, ends the fact, holds a digit for a time question.
        let f = src.lexical(20, 38);
        assert_eq!(f, [4.0, 0.0, 0.0, 0.0, 0.0, 1.0, 1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]);
        // "meeting is at 3pm on Thursday": after "team" (a question word), holds "meeting" and "is".
        let g = src.lexical(9, 38);
        assert_eq!(&g[..4], &[6.0, 1.0, 1.0, 0.0]);
        assert_eq!(&g[7..], &[1.0, 1.0, 0.0, 0.0, 1.0, 1.0]);
        // A start's bound is at least the lexical score of each of its spans.
        for s in (0..src.fact.len()).filter(|&s| src.word_starts(s)) {
            for e in (s + 1..=src.fact.len()).filter(|&e| src.phrase_ends(e)) {
                assert!(src.best_lexical(s) >= src.lexical_score(s, e));
            }
        }
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
