//! `--attention PATTERN` of `gen` and `eval`: which positions attention sees, decided before
//! computing. `full` (every earlier position) or `window:N` (the last N, through a ring-buffer
//! cache of N positions, so a generation runs past the model's context in that RAM).

use anyhow::{bail, Result};
use ruvllm_esp32::model::Model;

/// Positions `gen --attention window:N` may run: time, not memory, is what grows.
pub const MAX_WINDOW_STEPS: usize = 1_000_000;

/// The window of `pattern` (`None` for full attention), checked against the model's context
/// (the most a cache holds).
pub fn window(pattern: Option<&str>, model: &Model<'_>) -> Result<Option<usize>> {
    let Some(p) = pattern else { return Ok(None) };
    let ctx = model.config.seq_len;
    let (name, arg) = p.split_once(':').unwrap_or((p, ""));
    match name {
        "full" if arg.is_empty() => Ok(None),
        "window" => match arg.parse::<usize>() {
            Ok(n) if (1..=ctx).contains(&n) => Ok(Some(n)),
            Ok(n) => bail!(
                "--attention {p}: a window of {n} positions is outside 1..={ctx}, the model's context (the largest cache)"
            ),
            Err(_) => bail!("--attention {p}: the window is a number of positions, 1 to {ctx} (window:128)"),
        },
        "strided" | "dilated" | "bigbird" => bail!(
            "--attention {p}: the {name} pattern is not implemented in this version; use full or window:N (N from 1 to {ctx})"
        ),
        _ => bail!("--attention {p}: unknown pattern; use full or window:N (N from 1 to {ctx})"),
    }
}

/// `--steps` for a run with `window`: at most the context without one, at most
/// [`MAX_WINDOW_STEPS`] with one.
pub fn check_steps(model: &Model<'_>, steps: usize, window: Option<usize>) -> Result<()> {
    match window {
        None => crate::commands::check_steps(model, steps),
        Some(w) if steps == 0 || steps > MAX_WINDOW_STEPS => {
            bail!("--steps {steps} is outside 1..={MAX_WINDOW_STEPS} (with --attention window:{w})")
        }
        Some(_) => Ok(()),
    }
}
