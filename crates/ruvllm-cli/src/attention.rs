//! `--attention PATTERN` of `gen` and `eval`: which positions attention sees, decided before
//! computing (the library's `Pattern`). `full` (every earlier position), `window:N` (the last
//! N, through a ring-buffer cache of N positions, so a generation runs past the model's context
//! in that RAM), and `strided:S`, `dilated:GAP[:COUNT]`, `bigbird:GLOBAL:LOCAL:RANDOM[:SEED]`,
//! whose cache holds the whole context and whose work is the positions they list.

use anyhow::{anyhow, bail, Result};
use ruvllm_esp32::infer::Pattern;
use ruvllm_esp32::model::Model;

/// Positions `gen --attention window:N` may run: time, not memory, is what grows.
pub const MAX_WINDOW_STEPS: usize = 1_000_000;

/// The pattern of `--attention` (`None` for full attention), checked against the model's
/// context (the most a cache holds).
pub fn pattern(spec: Option<&str>, model: &Model<'_>) -> Result<Option<Pattern>> {
    let Some(p) = spec else { return Ok(None) };
    match Pattern::parse(p, model.config.seq_len) {
        Ok(Pattern::Full) => Ok(None),
        Ok(pattern) => Ok(Some(pattern)),
        Err(e) => Err(anyhow!("--attention {p}: {e}")),
    }
}

/// The window of a pattern, if it is one: the run then goes through a ring of its positions.
pub fn window(pattern: Option<Pattern>) -> Option<usize> {
    match pattern {
        Some(Pattern::Window(w)) => Some(w),
        _ => None,
    }
}

/// `--steps` for a run with `pattern`: at most the context without a window, at most
/// [`MAX_WINDOW_STEPS`] with one.
pub fn check_steps(model: &Model<'_>, steps: usize, pattern: Option<Pattern>) -> Result<()> {
    match window(pattern) {
        None => crate::commands::check_steps(model, steps),
        Some(w) if steps == 0 || steps > MAX_WINDOW_STEPS => {
            bail!("--steps {steps} is outside 1..={MAX_WINDOW_STEPS} (with --attention window:{w})")
        }
        Some(_) => Ok(()),
    }
}

/// One example of each pattern for a context of `ctx` positions, as `info` shows their RAM:
/// full, a quarter-context window, a stride of about the square root of the context, every
/// second position of a quarter of it, and BigBird with one global, an eighth of the context
/// local and 8 random positions.
pub fn examples(ctx: usize) -> [Pattern; 5] {
    let quarter = (ctx / 4).max(1);
    [
        Pattern::Full,
        Pattern::Window(quarter),
        Pattern::Strided(ctx.isqrt().max(1)),
        Pattern::Dilated { gap: 2, count: quarter },
        Pattern::BigBird { global: 1, local: (ctx / 8).max(1), random: 8.min(ctx), seed: 0 },
    ]
}
