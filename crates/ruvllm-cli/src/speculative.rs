//! `gen --speculative`: the library's speculative decoder with a draft model or early exit.

use crate::commands::{check_steps, encode_prompt, load, load_int, Sampling};
use crate::ModelArgs;
use anyhow::{bail, Result};
use ruvllm_esp32::infer::{IntState, State};
use ruvllm_esp32::kernels::Kernels;
use ruvllm_esp32::model::Model;
use ruvllm_esp32::speculative::{self, FloatBuffers, IntBuffers, Mode, Refusal};
use std::io::{IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Gamma when `--gamma` is not given: the best measured on the built-in model with its draft
/// (docs/BENCHMARKS.md, "Faster generation").
pub const DEFAULT_GAMMA: usize = 2;

/// What drafts: a smaller model with the target's tokenizer, or the target's first layers.
pub struct Spec {
    pub draft: Option<PathBuf>,
    pub early_exit: Option<usize>,
    pub gamma: usize,
}

/// A refusal with the values a user can act on (the pieces, for another tokenizer).
fn refused(r: Refusal, target: &Model<'_>, draft: &Model<'_>, name: &str) -> anyhow::Error {
    match r {
        Refusal::Tokenizer { id } => anyhow::anyhow!(
            "{name}: {r}; the target's piece is {:?}, the draft's {:?}",
            String::from_utf8_lossy(target.vocab.piece(id)),
            String::from_utf8_lossy(draft.vocab.piece(id))
        ),
        _ => anyhow::anyhow!("{name}: {r}"),
    }
}

/// A regular file that starts with GGUF's magic (a FIFO or device is left for the loader to
/// refuse, unopened).
fn is_gguf(path: &Path) -> bool {
    let mut magic = [0u8; 4];
    std::fs::metadata(path).is_ok_and(|m| m.is_file())
        && std::fs::File::open(path).and_then(|mut f| f.read_exact(&mut magic)).is_ok()
        && &magic == b"GGUF"
}

#[allow(clippy::too_many_arguments)]
#[inline(never)]
pub fn gen(
    args: &ModelArgs,
    prompt: &str,
    steps: usize,
    sampling: Sampling,
    quant: Option<&str>,
    scalar: bool,
    int: bool,
    spec: Spec,
) -> Result<()> {
    let Sampling { temp, top_p, top_k, seed } = sampling;
    if let Err(r) = speculative::check_gamma(spec.gamma) {
        bail!("--gamma: {r}");
    }
    if temp != 0.0 && ((!int && top_p > 0.0 && top_p < 1.0) || top_k != 0) {
        bail!(
            "--speculative samples from the whole distribution: with --temp {temp}, give --top-p 1 (not {top_p}) and --top-k 0 (not {top_k})"
        );
    }
    // The integer path reads q8 (or packed) images with the RoPE table, converted as needed.
    let load_model = |a: &ModelArgs| if int { load_int(a, quant) } else { load(a, quant) };
    let img = load_model(args)?;
    let target = img.model()?;
    check_steps(&target, steps)?;
    let draft_img = match (&spec.draft, spec.early_exit) {
        (Some(_), Some(l)) => bail!("give --draft or --early-exit {l}, not both"),
        (None, None) => {
            bail!("--speculative needs a draft: --draft FILE (models/draft.gguf for the built-in model) or --early-exit L")
        }
        (Some(path), None) => {
            // A llama2.c draft reads the target's tokenizer file (the two must share it
            // anyway); a GGUF draft keeps its own, which check_draft compares.
            let tokenizer = if is_gguf(path) { None } else { args.tokenizer.clone() };
            Some(load_model(&ModelArgs { model: Some(path.clone()), tokenizer })?)
        }
        (None, Some(_)) => None,
    };
    let (draft, name) = if let Some(d) = &draft_img {
        let draft = d.model()?;
        let name = d.origin.clone();
        speculative::check_draft(&target, &draft).map_err(|r| refused(r, &target, &draft, &name))?;
        (draft, name)
    } else {
        let l = spec.early_exit.unwrap_or(0);
        let draft = speculative::early_exit(&target, l).map_err(|r| anyhow::anyhow!("--early-exit: {r}"))?;
        (draft, format!("early exit after layer {l}"))
    };
    if steps > draft.config.seq_len {
        bail!("--steps {steps} is more than the draft's context, {} positions", draft.config.seq_len);
    }
    let tokens = encode_prompt(&target, prompt, steps)?;
    let kernels = if scalar { Kernels::REFERENCE } else { Kernels::detect() };
    let mut rng = ruvllm_esp32::sample::seed_state(seed);

    let stdout = std::io::stdout();
    let interactive = stdout.is_terminal();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let mut io_err = None;
    let emit = |bytes: &[u8], _| {
        let r = out.write_all(bytes).and_then(|_| if interactive { out.flush() } else { Ok(()) });
        if let Err(e) = r {
            io_err.get_or_insert(e);
        }
    };
    let start = Instant::now();
    let g = spec.gamma;
    let stats = if int {
        let mut ta = vec![0i32; IntState::arena_len(&target, steps)];
        let mut da = vec![0i32; IntState::arena_len(&draft, steps)];
        let mut ba = vec![0i32; IntBuffers::arena_len(&target, g)];
        let (mut ts, mut ds) =
            (IntState::new(&target, &mut ta, steps)?, IntState::new(&draft, &mut da, steps)?);
        let mut buf = IntBuffers::new(&target, &mut ba, g)?;
        // Thousandths, like `gen --int --temp` (clap keeps --temp within 0..=10).
        let temp = (temp * 1000.0).round() as u32;
        let mode = if temp == 0 { Mode::Greedy } else { Mode::Sample { temp, rng: &mut rng } };
        speculative::generate(&target, &mut ts, &draft, &mut ds, &mut buf, mode, &tokens, steps, emit)?
    } else {
        let mut ta = vec![0f32; State::arena_len(&target, steps)];
        let mut da = vec![0f32; State::arena_len(&draft, steps)];
        let mut ba = vec![0f32; FloatBuffers::arena_len(&target, g)];
        let mut ts = State::new(&target, &mut ta, steps, kernels)?;
        let mut ds = State::new(&draft, &mut da, steps, kernels)?;
        let mut buf = FloatBuffers::new(&target, &mut ba, g)?;
        let mode = if temp == 0.0 { Mode::Greedy } else { Mode::Sample { temp, rng: &mut rng } };
        speculative::generate(&target, &mut ts, &draft, &mut ds, &mut buf, mode, &tokens, steps, emit)?
    };
    let total = start.elapsed().as_secs_f64();
    out.write_all(b"\n").and_then(|_| out.flush()).map_err(ruvllm_cli::out::write_error)?;
    if let Some(e) = io_err {
        return Err(ruvllm_cli::out::write_error(e));
    }
    let positions = stats.gen.prompt_tokens - 1 + stats.gen.generated;
    let line = format!(
        "speculative ({name}, gamma {}): acceptance {:.1}% ({} of {} drafts), {:.2} tokens per target pass ({} tokens, {} passes)\n\
         achieved tok/s: {:.1} ({positions} positions in {:.2} ms; prompt {} tokens, generated {}; {} {})\n",
        spec.gamma,
        100.0 * stats.acceptance_rate(),
        stats.accepted,
        stats.drafted,
        stats.tokens_per_pass(),
        stats.gen.generated,
        stats.target_passes,
        positions as f64 / total.max(1e-9),
        total * 1e3,
        stats.gen.prompt_tokens,
        stats.gen.generated,
        if int { "integer" } else { target.precision.name() },
        if int { "fixed-point" } else { kernels.name },
    );
    let _ = std::io::stderr().write_all(line.as_bytes());
    Ok(())
}
