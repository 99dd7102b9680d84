//! convert, gen, eval and info.

use crate::image::{self, Image};
use crate::ModelArgs;
use anyhow::{bail, Context, Result};
use ruvllm_cli::input;
use ruvllm_cli::outln;
use ruvllm_esp32::convert::Quant;
use ruvllm_esp32::infer::{self, IntState, State};
use ruvllm_esp32::kernels::Kernels;
use ruvllm_esp32::model::{Matrix, Model, Precision};
use ruvllm_esp32::sample::{ProbIndex, Sampler};
use ruvllm_esp32::tokenizer;
use std::io::{IsTerminal, Write};
use std::path::Path;
use std::time::Instant;

/// `convert`: the engine's GGUF image at `quant`, or with `llama2c` llama2.c's int8
/// checkpoint (for runq.c), after `edits`.
pub fn convert(
    input: &Path,
    tok: Option<&Path>,
    quant: &str,
    edits: image::Edits,
    llama2c: bool,
    output: &Path,
) -> Result<()> {
    let q = image::parse_quant(quant)?;
    if llama2c && q != Quant::Q8 {
        bail!("--llama2c writes llama2.c's int8 checkpoint: use it with --quant q8");
    }
    if llama2c && edits.heads.is_some_and(|n| n > 0) {
        bail!("--llama2c cannot hold a model with heads removed: llama2.c's heads are dim / n_heads wide");
    }
    let spin = crate::firmware::spinner(format!("converting {} to {quant}", input.display()));
    // Always rebuilt, even from an engine image at `q`: the output follows this version's format.
    // llama2.c's checkpoint is quantized in its own groups, from the f32 weights.
    let img = image::load_converted(Some(input), tok, if llama2c { Quant::F32 } else { q }, edits);
    spin.finish_and_clear();
    let img = img?;
    // Check the result loads before anything is written, then write it atomically.
    img.model().context("converted image does not load")?;
    let (bytes, what) = if llama2c {
        let host = ruvllm_esp32::convert::load_gguf(img.bytes()).context("converted image does not load")?;
        let group = ruvllm_esp32::convert::llama2c_group(&host.config).unwrap_or(0);
        let bytes = ruvllm_esp32::convert::to_llama2c_q8(&host)?;
        (std::borrow::Cow::Owned(bytes), format!("llama2.c int8 checkpoint, groups of {group}"))
    } else {
        (std::borrow::Cow::Borrowed(img.bytes()), quant.to_string())
    };
    // One line: the path and the reason (a FIFO, device or directory is refused, untouched).
    ruvllm_train::run::checkpoint::write_atomic(output, &bytes)?;
    eprintln!("wrote {} ({} bytes, {what})", output.display(), bytes.len());
    Ok(())
}

pub fn load(args: &ModelArgs, quant: Option<&str>) -> Result<Image> {
    let q = quant.map(image::parse_quant).transpose()?;
    image::load(args.model.as_deref(), args.tokenizer.as_deref(), q)
}

/// The integer path reads a q8 (or ternary/binary) image with the RoPE table: anything else is
/// converted, to `quant` when given, else to q8 (a ternary or binary image stays what it is).
pub fn load_int(args: &ModelArgs, quant: Option<&str>) -> Result<Image> {
    let q = quant.map(image::parse_quant).transpose()?;
    if q == Some(Quant::F32) {
        bail!("the integer path needs int8 activations: --quant q8, ternary or binary");
    }
    let tok = args.tokenizer.as_deref();
    let img = image::load(args.model.as_deref(), tok, q)?;
    let (precision, rope) = img.model().map(|m| (m.precision, m.rope.is_some()))?;
    let want = match precision {
        Precision::Ternary => Quant::Ternary,
        Precision::Binary => Quant::Binary,
        Precision::F32 | Precision::Q8 => Quant::Q8,
    };
    if precision.int8_activations() && rope {
        return Ok(img);
    }
    if precision == Precision::F32 {
        // Converting the original file once more beats converting the f32 image.
        let img = image::load(args.model.as_deref(), tok, Some(want))?;
        if img.model()?.rope.is_some() {
            return Ok(img);
        }
    }
    image::load_converted(args.model.as_deref(), tok, want, image::Edits::default())
}

/// Sampling settings of `gen`.
pub struct Sampling {
    pub temp: f32,
    pub top_p: f32,
    pub top_k: usize,
    pub seed: u64,
}

/// Encodes a prompt with BOS, as llama2.c does, and checks it fits in `steps` positions.
pub fn encode_prompt(model: &Model<'_>, prompt: &str, steps: usize) -> Result<Vec<u32>> {
    // No token covers more bytes than the longest piece, so the prompt and its dummy-prefix
    // space need at least this many positions: refuse a hopeless one before encoding it.
    let least = (prompt.len() + 1).div_ceil(model.vocab.max_piece_len().max(1));
    if !prompt.is_empty() && least > steps {
        bail!(
            "the prompt ({} bytes) needs at least {least} tokens, more than --steps {steps} (the context used for this run)",
            prompt.len()
        );
    }
    let mut tokens = vec![0u32; prompt.len() + 3];
    let n = tokenizer::encode(&model.vocab, prompt.as_bytes(), true, false, &mut tokens)?;
    tokens.truncate(n);
    if n > steps {
        bail!("the prompt is {n} tokens, more than --steps {steps} (the context used for this run)");
    }
    Ok(tokens)
}

pub fn check_steps(model: &Model<'_>, steps: usize) -> Result<()> {
    let ctx = model.config.seq_len;
    if steps == 0 || steps > ctx {
        bail!("--steps {steps} is outside 1..={ctx}, the model's context length");
    }
    Ok(())
}

/// How `gen` runs the model.
pub struct GenPath<'a> {
    pub quant: Option<&'a str>,
    /// The scalar reference kernels.
    pub scalar: bool,
    /// The integer-only path.
    pub int: bool,
    /// A MicroLoRA adapter (integer path).
    pub lora: Option<&'a Path>,
    /// `--attention`: full (None) or a pattern ([`crate::attention`]).
    pub attention: Option<&'a str>,
}

#[inline(never)]
pub fn gen(
    args: &ModelArgs,
    prompt: &str,
    steps: usize,
    sampling: Sampling,
    path: GenPath<'_>,
) -> Result<()> {
    let GenPath { quant, scalar, int, lora, attention } = path;
    let Sampling { temp, top_p, top_k, seed } = sampling;
    // The integer path samples at a temperature in thousandths, like the console's `set temp`
    // (clap keeps --temp within its 0..=10).
    let temp_milli = (temp * 1000.0).round();
    if int && temp != 0.0 && top_k != 0 {
        bail!("--int samples from the whole distribution (no --top-k)");
    }
    let mut img = if int { load_int(args, quant)? } else { load(args, quant)? };
    let (model, img_bytes, spare) = img.model_and_spare()?;
    let pattern = crate::attention::pattern(attention, &model)?;
    if let (Some(_), Some(p)) = (lora, attention.filter(|_| pattern.is_some())) {
        bail!("--lora runs with full attention: drop --attention {p}");
    }
    crate::attention::check_steps(&model, steps, pattern)?;
    let window = crate::attention::window(pattern);
    if top_k > model.config.vocab_size {
        bail!("--top-k {top_k}: use 0 to {}, the model's vocabulary size", model.config.vocab_size);
    }
    let tokens = encode_prompt(&model, prompt, steps)?;
    let kernels = if scalar { Kernels::REFERENCE } else { Kernels::detect() };
    // A window's cache is a ring of the window's positions, whatever --steps is.
    let cache = window.unwrap_or(steps);
    // A sparse pattern's scratch sits beside the cache (sized for full attention: the most).
    let sparse = pattern.filter(|_| window.is_none());
    let (float_len, int_len) = match sparse {
        Some(p) => (State::sparse_arena_len(&model, cache, p), IntState::sparse_arena_len(&model, cache, p)),
        None => (State::arena_len(&model, cache), IntState::arena_len(&model, cache)),
    };
    // The float arena (activations and the KV cache) is mapped zeroed with every page in place:
    // zeros from `vec!` come as untouched pages, and the cache then took a page fault every few
    // positions as it grew (some 110 in a 346-position run).
    // On a model read onto huge pages, the arena takes the zeroed rest of the last one when it
    // fits.
    let float_bytes = if int { 0 } else { float_len * 4 };
    let in_spare = spare.get_mut(..float_bytes).and_then(|b| bytemuck::try_cast_slice_mut(b).ok());
    let mut arena_map = if in_spare.is_some() { None } else { populated(float_bytes)? };
    let arena: &mut [f32] = match (in_spare, &mut arena_map) {
        (Some(a), _) => a,
        (None, Some(m)) => bytemuck::cast_slice_mut(&mut m[..]),
        (None, None) => &mut [],
    };
    let mut int_arena = vec![0i32; if int { int_len } else { 0 }];
    let mut sampler = Sampler::new(temp, top_p, top_k, seed);
    let mut scratch = vec![ProbIndex::default(); model.config.vocab_size];

    let stdout = std::io::stdout();
    let interactive = stdout.is_terminal();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let start = Instant::now();
    let mut io_err = None;
    let emit = |bytes: &[u8], _| {
        let r = out.write_all(bytes).and_then(|_| if interactive { out.flush() } else { Ok(()) });
        if let Err(e) = r {
            io_err.get_or_insert(e);
        }
    };
    let mut sampling = ruvllm_esp32::sample::Sampling::new(temp_milli as u32, seed);
    // Full attention on the float path: the int8 matrices repacked for the CPU's fastest
    // kernel (the same floats).
    let packed = if int || scalar || pattern.is_some() { None } else { infer::PackedModel::new(&model) };
    let stats = match (int, window, sparse) {
        (true, Some(w), _) => {
            let mut state = IntState::sliding(&model, &mut int_arena, w)?;
            infer::generate_int_sampled(&model, &mut state, &tokens, steps, &mut sampling, emit)?
        }
        (true, None, Some(p)) => {
            let mut state = IntState::sparse(&model, &mut int_arena, steps, p)?;
            infer::generate_int_sampled(&model, &mut state, &tokens, steps, &mut sampling, emit)?
        }
        (true, None, None) => {
            let adapter = lora.map(|p| crate::lora::read_adapter(p, img_bytes, &model)).transpose()?;
            let mut state = IntState::new(&model, &mut int_arena, steps)?;
            let mut state = ruvllm_esp32::lora::WithLora { state: &mut state, lora: adapter.as_ref() };
            infer::generate_int_sampled(&model, &mut state, &tokens, steps, &mut sampling, emit)?
        }
        (false, Some(w), _) => {
            let mut state = State::sliding(&model, arena, w, kernels)?;
            infer::generate(&model, &mut state, &mut sampler, &mut scratch, &tokens, steps, emit)?
        }
        (false, None, Some(p)) => {
            let mut state = State::sparse(&model, arena, steps, kernels, p)?;
            infer::generate(&model, &mut state, &mut sampler, &mut scratch, &tokens, steps, emit)?
        }
        (false, None, None) => {
            let mut state = State::new(&model, arena, steps, kernels)?.with_packed(packed.as_ref());
            infer::generate(&model, &mut state, &mut sampler, &mut scratch, &tokens, steps, emit)?
        }
    };
    let end = Instant::now();
    out.write_all(b"\n").and_then(|_| out.flush()).map_err(ruvllm_cli::out::write_error)?;
    if let Some(e) = io_err {
        return Err(ruvllm_cli::out::write_error(e));
    }
    let total = (end - start).as_secs_f64();
    // One write: stderr is unbuffered and would otherwise get a syscall per fragment.
    let line = format!(
        "achieved tok/s: {:.1} ({} positions in {:.2} ms; prompt {} tokens, generated {}; {} {})\n",
        (stats.prompt_tokens - 1 + stats.generated) as f64 / total.max(1e-9),
        stats.prompt_tokens - 1 + stats.generated,
        total * 1e3,
        stats.prompt_tokens,
        stats.generated,
        if int { "integer" } else { model.precision.name() },
        if int { "fixed-point" } else { kernels.name },
    );
    let _ = std::io::stderr().write_all(line.as_bytes());
    // The process ends now: the kernel takes the buffers and the mapping back at exit in one
    // go, cheaper than freeing and unmapping them one by one first.
    std::mem::forget((arena_map, int_arena, scratch, packed));
    std::mem::forget(model);
    std::mem::forget(img);
    Ok(())
}

/// `bytes` of zeros, page aligned, every page mapped now in one call (`None` for none).
fn populated(bytes: usize) -> Result<Option<memmap2::MmapMut>> {
    if bytes == 0 {
        return Ok(None);
    }
    let map = memmap2::MmapOptions::new().len(bytes).populate().map_anon();
    Ok(Some(map.with_context(|| format!("cannot allocate {bytes} bytes of working memory"))?))
}

pub fn eval(
    args: &ModelArgs,
    text: &Path,
    quant: Option<&str>,
    int: bool,
    documents: bool,
    attention: Option<&str>,
) -> Result<()> {
    let img = if int { load_int(args, quant)? } else { load(args, quant)? };
    let model = img.model()?;
    let data = input::read_input(text, "text file", input::MAX_TEXT_BYTES)?;
    let texts: Vec<Vec<u8>> = if documents {
        let s = std::str::from_utf8(&data).with_context(|| format!("{}: not UTF-8", text.display()))?;
        ruvllm_train::run::data::documents(s).into_iter().map(String::into_bytes).collect()
    } else {
        vec![data]
    };
    let mut seqs = Vec::with_capacity(texts.len());
    for t in &texts {
        seqs.push(encode_long(&model, t).with_context(|| text.display().to_string())?);
    }
    if seqs.iter().all(|t| t.len() < 2) {
        bail!("{}: too short to score (needs at least one token)", text.display());
    }
    let ctx = model.config.seq_len;
    let pattern = crate::attention::pattern(attention, &model)?;
    let window = crate::attention::window(pattern);
    // With a window, a text is scored in one pass, however long; without, in windows of the
    // context.
    let cache = window.unwrap_or(ctx);
    let (mut ints, mut floats) = (vec![0i32; 0], vec![0f32; 0]);
    let s = match (int, window, pattern) {
        (true, None, Some(p)) => {
            ints.resize(IntState::sparse_arena_len(&model, ctx, p), 0);
            score_all(&model, &mut IntState::sparse(&model, &mut ints, ctx, p)?, &seqs)?
        }
        (false, None, Some(p)) => {
            floats.resize(State::sparse_arena_len(&model, ctx, p), 0.0);
            score_all(&model, &mut State::sparse(&model, &mut floats, ctx, Kernels::detect(), p)?, &seqs)?
        }
        (true, Some(w), _) => {
            ints.resize(IntState::arena_len(&model, cache), 0);
            score_all(&model, &mut IntState::sliding(&model, &mut ints, w)?, &seqs)?
        }
        (true, None, None) => {
            ints.resize(IntState::arena_len(&model, cache), 0);
            score_all(&model, &mut IntState::new(&model, &mut ints, ctx)?, &seqs)?
        }
        (false, Some(w), _) => {
            floats.resize(State::arena_len(&model, cache), 0.0);
            score_all(&model, &mut State::sliding(&model, &mut floats, w, Kernels::detect())?, &seqs)?
        }
        (false, None, None) => {
            floats.resize(State::arena_len(&model, cache), 0.0);
            score_all(&model, &mut State::new(&model, &mut floats, ctx, Kernels::detect())?, &seqs)?
        }
    };
    outln!("tokens: {}", s.tokens);
    outln!("nll: {:.6}", s.mean_nll());
    outln!("perplexity: {:.6}", s.perplexity());
    Ok(())
}

/// The scores of every sequence, summed.
fn score_all<S: infer::Step>(model: &Model<'_>, state: &mut S, seqs: &[Vec<u32>]) -> Result<infer::Score>
where
    S::Logit: infer::LogitValue,
{
    let mut s = infer::Score::default();
    for t in seqs {
        let r = infer::score(model, state, t)?;
        s.tokens += r.tokens;
        s.nll += r.nll;
    }
    Ok(s)
}

/// BOS + the engine's encoding of a long text. Texts that are UTF-8 go through the trainer's
/// `bpe::Encoder` (the same tokens, property-tested against the engine), which encodes chunk by
/// chunk with a cache and needs no work area of 20 bytes per input byte as the engine's encoder
/// does. Anything else goes through the engine's encoder, O(n log n) as well.
fn encode_long(model: &Model<'_>, data: &[u8]) -> Result<Vec<u32>> {
    let v = &model.vocab;
    if let Ok(text) = std::str::from_utf8(data) {
        let host = ruvllm_esp32::convert::HostVocab::from_engine(v);
        if let Ok(mut enc) = ruvllm_train::bpe::Encoder::new(&host) {
            let mut tokens = vec![v.bos()];
            enc.encode_into(text, &mut tokens);
            return Ok(tokens);
        }
    }
    let mut tokens = vec![0u32; data.len() + 3];
    let n = tokenizer::encode(v, data, true, false, &mut tokens)?;
    tokens.truncate(n);
    Ok(tokens)
}

fn kib(b: usize) -> String {
    format!("{:.1} KiB", b as f64 / 1024.0)
}

pub fn info(path: Option<&Path>, tok: Option<&Path>, quant: Option<&str>, json: bool) -> Result<()> {
    let q = quant.map(image::parse_quant).transpose()?;
    let img = image::load(path, tok, q)?;
    let model = img.model()?;
    let c = &model.config;
    let (mut f32b, mut i8b, mut scaleb, mut packedb) = (model.output_norm.len() * 4, 0, 0, 0);
    // Matrices stored as sparse rows, and their bytes.
    let mut sparse = (0usize, 0usize);
    let mut mats = vec![model.token_embd];
    if !c.shared_classifier {
        mats.push(model.output);
    }
    for l in &model.layers {
        f32b += (l.attn_norm.len() + l.ffn_norm.len()) * 4;
        mats.extend([l.wq, l.wk, l.wv, l.wo, l.w1, l.w2, l.w3]);
    }
    for m in mats {
        match m {
            Matrix::F32 { w, .. } => f32b += w.len() * 4,
            Matrix::Q8 { q, s, .. } => {
                i8b += q.len();
                scaleb += s.len() * 4;
            }
            // Q8_0 blocks: 32 int8 values and a 2-byte scale each.
            Matrix::Q8Block { b, .. } => {
                let blocks = b.len() / ruvllm_esp32::gguf::Q8_0_BYTES as usize;
                i8b += blocks * ruvllm_esp32::gguf::Q8_0_BLOCK as usize;
                scaleb += blocks * 2;
            }
            Matrix::Sparse { m, s } => {
                sparse.0 += 1;
                sparse.1 += m.len();
                scaleb += s.len() * 4;
            }
            Matrix::Ternary { q, s, .. } | Matrix::Binary { q, s, .. } => {
                packedb += q.len();
                scaleb += s.len() * 4;
            }
        }
    }
    let image_len = img.bytes().len();
    let full = State::ram_bytes(c, model.precision, model.group, c.seq_len);
    // Chips without an FPU run a q8 image on the integer path, which has its own arena.
    let integer = model.precision.int8_activations() && model.rope.is_some();
    let int_full = integer.then(|| IntState::ram_bytes(&model, c.seq_len));
    struct ChipRow {
        name: &'static str,
        data_ram: usize,
        budget: usize,
        image_budget: usize,
        fpu: bool,
        path: &'static str,
        max_ctx: usize,
        verdict: String,
        /// RAM (activations, KV cache, a pattern's scratch) of each of `patterns` at `max_ctx`.
        attention: Vec<usize>,
    }
    let patterns = crate::attention::examples(c.seq_len);
    let rows: Vec<ChipRow> = ruvllm_esp32::model::chips::plan(&model, image_len)
        .iter()
        .map(|fit| {
            let chip = fit.chip;
            let verdict = match (fit.flash_ok, fit.max_context) {
                (false, _) => "does not fit: image larger than flash budget".to_string(),
                (true, 0) => "does not fit: no context fits in RAM".to_string(),
                (true, n) if n == c.seq_len => "fits at full context".to_string(),
                (true, n) => {
                    let alt = if model.precision == Precision::F32 {
                        " (--quant q8 stores the KV cache in int8)"
                    } else {
                        ""
                    };
                    format!("fits at context {n}{alt}")
                }
            };
            ChipRow {
                name: chip.name,
                data_ram: chip.data_ram,
                budget: chip.arena_budget(),
                image_budget: chip.image_budget(),
                fpu: chip.has_fpu,
                path: if fit.integer { "integer" } else { model.precision.name() },
                max_ctx: fit.max_context,
                verdict,
                attention: patterns
                    .iter()
                    .map(|&p| match fit.integer {
                        true => IntState::pattern_ram_bytes(&model, fit.max_context, p),
                        false => {
                            State::pattern_ram_bytes(c, model.precision, model.group, fit.max_context, p)
                        }
                    })
                    .collect(),
            }
        })
        .collect();

    if json {
        let chips: Vec<serde_json::Value> = rows
            .iter()
            .map(|r| {
                serde_json::json!({
                    "chip": r.name,
                    "data_ram_bytes": r.data_ram,
                    "arena_budget_bytes": r.budget,
                    "image_budget_bytes": r.image_budget,
                    "fpu": r.fpu,
                    "path": r.path,
                    "max_context": r.max_ctx,
                    "fits": r.max_ctx > 0 && !r.verdict.starts_with("does not fit"),
                    "verdict": r.verdict,
                    "attention_ram_bytes": patterns.iter().zip(&r.attention)
                        .map(|(p, b)| (p.to_string(), serde_json::json!(b)))
                        .collect::<serde_json::Map<_, _>>(),
                })
            })
            .collect();
        let v = serde_json::json!({
            "model": img.origin,
            "config": {
                "dim": c.dim,
                "hidden_dim": c.hidden_dim,
                "layers": c.n_layers,
                "heads": c.n_heads,
                "kv_heads": c.n_kv_heads,
                "head_size": c.head_size(),
                "vocab": c.vocab_size,
                "context": c.seq_len,
                "shared_classifier": c.shared_classifier,
            },
            "parameters": c.n_params(),
            "precision": model.precision.name(),
            "group": model.group,
            "weights_bytes": {"f32": f32b, "int8": i8b, "packed": packedb, "sparse": sparse.1, "scales": scaleb},
            "image_bytes": image_len,
            "ram_full_context_bytes": full,
            "ram_full_context_integer_bytes": int_full,
            "firmware_reserve_bytes": ruvllm_esp32::model::chips::FIRMWARE_RESERVE,
            "knowledge_reserve_bytes": ruvllm_esp32::model::chips::KNOWLEDGE_RESERVE,
            "knowledge_entries": ruvllm_esp32::console::CHIP_KNOWLEDGE_CAP,
            "app_flash_reserve_bytes": ruvllm_esp32::model::chips::APP_FLASH_RESERVE,
            "chips": chips,
        });
        outln!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }

    outln!("model: {}", img.origin);
    outln!(
        "config: dim {} hidden {} layers {} heads {} kv_heads {} head_size {} vocab {} context {} classifier {}",
        c.dim,
        c.hidden_dim,
        c.n_layers,
        c.n_heads,
        c.n_kv_heads,
        c.head_size(),
        c.vocab_size,
        c.seq_len,
        if c.shared_classifier { "shared" } else { "separate" }
    );
    outln!("parameters: {}", c.n_params());
    outln!("precision: {} (group {})", model.precision.name(), model.group);
    let packed = match model.precision {
        Precision::Ternary => format!(", ternary (2 bits a weight) {packedb} bytes"),
        Precision::Binary => format!(", binary (1 bit a weight) {packedb} bytes"),
        _ => String::new(),
    };
    outln!("weights: f32 {f32b} bytes, int8 {i8b} bytes{packed}, scales {scaleb} bytes");
    if packedb > 0 {
        outln!("layer matrices {}, embeddings q8", model.precision.name());
    }
    if sparse.0 > 0 {
        outln!("sparse rows: {} block matrices, {} bytes (the rest dense)", sparse.0, sparse.1);
    }
    outln!("image: {image_len} bytes (GGUF, read in place from flash)");
    outln!("RAM at full context {}: {} bytes ({}) for activations + KV cache", c.seq_len, full, kib(full));
    if let Some(ram) = int_full {
        outln!(
            "RAM at full context {} on the integer path (chips without an FPU): {ram} bytes ({})",
            c.seq_len,
            kib(ram)
        );
    }
    outln!();
    outln!("RAM by attention pattern (--attention; each chip's path at its max ctx, as in the chip plan below: activations, KV cache and the pattern's scratch; a window's cache is a ring of its positions):");
    let names: Vec<String> = patterns.iter().map(|p| p.to_string()).collect();
    outln!("{:<8}{}", "chip", names.iter().map(|n| format!(" {n:>18}")).collect::<String>());
    for r in &rows {
        let cell = |b: usize| format!(" {:>18}", kib(b) + if b > r.budget { " *" } else { "" });
        outln!("{:<8}{}", r.name, r.attention.iter().map(|b| cell(*b)).collect::<String>());
    }
    if rows.iter().any(|r| r.attention.iter().any(|b| *b > r.budget)) {
        outln!("* more than the chip's arena budget: use a window, or a shorter --steps");
    }
    outln!();
    outln!("chip plan ({} precision; arena budget = data RAM - {} firmware reserve - {} knowledge ({} entries); image budget = flash - {} app):",
        model.precision.name(), kib(ruvllm_esp32::model::chips::FIRMWARE_RESERVE), kib(ruvllm_esp32::model::chips::KNOWLEDGE_RESERVE),
        ruvllm_esp32::console::CHIP_KNOWLEDGE_CAP, kib(ruvllm_esp32::model::chips::APP_FLASH_RESERVE));
    outln!(
        "{:<8} {:>10} {:>12} {:>12} {:>6} {:>8} {:>9}  verdict",
        "chip",
        "data RAM",
        "arena budget",
        "flash budget",
        "fpu",
        "path",
        "max ctx"
    );
    for r in &rows {
        outln!(
            "{:<8} {:>10} {:>12} {:>12} {:>6} {:>8} {:>9}  {}",
            r.name,
            kib(r.data_ram),
            kib(r.budget),
            kib(r.image_budget),
            if r.fpu { "yes" } else { "no" },
            r.path,
            r.max_ctx,
            r.verdict
        );
    }
    Ok(())
}
