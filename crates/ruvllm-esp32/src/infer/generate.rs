//! Text generation the way llama2.c's `run` does it: the prompt's tokens are forced, then the
//! sampler picks, and each token's text is emitted as soon as it is known.

use super::{IntState, Step};
use crate::error::{Error, Result};
use crate::model::Model;
use crate::sample::{ProbIndex, Sampler, Sampling};
use crate::tokenizer::{self, Vocab};
use core::ops::ControlFlow;

/// What a generation did, for reporting speed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GenStats {
    /// Prompt tokens, BOS included.
    pub prompt_tokens: usize,
    /// Tokens produced by the sampler.
    pub generated: usize,
}

/// What a token callback returns: nothing (the generation goes on), or a [`ControlFlow`]
/// whose `Break` stops it after this token (an interrupt).
pub trait TokenFlow {
    fn stops(self) -> bool;
}

impl TokenFlow for () {
    fn stops(self) -> bool {
        false
    }
}

impl TokenFlow for ControlFlow<()> {
    fn stops(self) -> bool {
        self.is_break()
    }
}

/// Runs positions `0..steps` starting from `prompt` (which must start with BOS and be
/// non-empty), emitting the bytes of every token after the first, like llama2.c (it stops
/// early when the model produces BOS). `on_token(bytes, forced)` gets each printable piece;
/// `forced` is true while the prompt is being replayed. A callback returning
/// `ControlFlow::Break` stops the generation there (see [`TokenFlow`]).
#[allow(clippy::too_many_arguments)]
pub fn generate<const L: usize, F: TokenFlow>(
    model: &Model<'_, L>,
    state: &mut impl Step<Logit = f32>,
    sampler: &mut Sampler,
    scratch: &mut [ProbIndex],
    prompt: &[u32],
    steps: usize,
    on_token: impl FnMut(&[u8], bool) -> F,
) -> Result<GenStats> {
    run(model, state, prompt, steps, |logits| sampler.sample(logits, scratch), on_token)
}

/// [`generate`] on the integer path, greedy: the next token is the largest fixed-point logit
/// (the first one on a tie, like the sampler's argmax), so the text is the same on every
/// machine.
pub fn generate_int<const L: usize, F: TokenFlow>(
    model: &Model<'_, L>,
    state: &mut IntState<'_>,
    prompt: &[u32],
    steps: usize,
    on_token: impl FnMut(&[u8], bool) -> F,
) -> Result<GenStats> {
    let mut greedy = Sampling::GREEDY;
    generate_int_sampled(model, state, prompt, steps, &mut greedy, on_token)
}

/// [`generate_int`] with `sampling`'s temperature ([`sample_int`](super::integer::sample_int):
/// a fixed-point softmax and an integer RNG, still no float); `sampling.rng` moves on by one
/// draw per sampled token, so the next generation continues the sequence.
pub fn generate_int_sampled<const L: usize, F: TokenFlow>(
    model: &Model<'_, L>,
    state: &mut impl Step<Logit = i32>,
    prompt: &[u32],
    steps: usize,
    sampling: &mut Sampling,
    on_token: impl FnMut(&[u8], bool) -> F,
) -> Result<GenStats> {
    let temp = sampling.temp_milli;
    let rng = &mut sampling.rng;
    run(model, state, prompt, steps, |logits| super::integer::sample_int(logits, temp, rng), on_token)
}

/// The loop both share: prompt tokens are forced, then `pick` chooses from the logits.
fn run<S: Step, F: TokenFlow, const L: usize>(
    model: &Model<'_, L>,
    state: &mut S,
    prompt: &[u32],
    steps: usize,
    mut pick: impl FnMut(&mut [S::Logit]) -> u32,
    mut on_token: impl FnMut(&[u8], bool) -> F,
) -> Result<GenStats> {
    let vocab = &model.vocab;
    let Some(&first) = prompt.first() else {
        return Err(Error::Invalid { what: "empty prompt (it must hold at least BOS)" });
    };
    if steps > state.capacity() {
        return Err(Error::ContextFull { need: steps, capacity: state.capacity() });
    }
    if prompt.len() > steps {
        return Err(Error::ContextFull { need: prompt.len(), capacity: steps });
    }
    let mut stats = GenStats { prompt_tokens: prompt.len(), generated: 0 };
    let mut token = first;
    for pos in 0..steps {
        let forced = pos + 1 < prompt.len();
        let next = if forced {
            state.prefill_token(model, token, pos)?;
            prompt[pos + 1]
        } else {
            let logits = state.logits(model, token, pos)?;
            stats.generated += 1;
            pick(logits)
        };
        if next == vocab.bos() {
            break;
        }
        if emit(vocab, token, next, forced, &mut on_token) {
            break;
        }
        token = next;
    }
    Ok(stats)
}

/// Emits the piece of `next`; true when the callback stops the generation.
pub(crate) fn emit<F: TokenFlow>(
    vocab: &Vocab<'_>,
    prev: u32,
    next: u32,
    forced: bool,
    on_token: &mut impl FnMut(&[u8], bool) -> F,
) -> bool {
    let mut scratch = [0u8; tokenizer::DECODE_MAX];
    let piece = tokenizer::decode(vocab, prev, next, &mut scratch);
    tokenizer::is_printable(piece) && on_token(piece, forced).stops()
}
