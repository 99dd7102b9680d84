//! `train` and `corpus`: micro-models trained here, on text the project generates or the
//! user's own.

use anyhow::{bail, Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use ruvllm_cli::input;
use ruvllm_esp32::quant::WeightFormat;
use ruvllm_train::run::{self, Checkpoint, LossPoint, Progress, TrainOptions};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// `train` arguments.
pub struct TrainArgs {
    pub text: Option<PathBuf>,
    pub preset: String,
    pub steps: u64,
    pub quant: String,
    pub resume: Option<PathBuf>,
    pub tokenizer_from: Option<PathBuf>,
    pub init: Option<PathBuf>,
    pub seed: u64,
    pub threads: Option<usize>,
    pub eval_every: u64,
    pub checkpoint_every: u64,
    pub output: PathBuf,
}

pub fn parse_format(s: &str) -> Result<WeightFormat> {
    Ok(match s {
        "f32" => WeightFormat::F32,
        "q8" => WeightFormat::Q8,
        "ternary" => WeightFormat::Ternary,
        "binary" => WeightFormat::Binary,
        _ => bail!("unknown quantization '{s}' (use f32, q8, ternary or binary)"),
    })
}

/// The corpus: the user's file (checked to be text) or the built-in generated one.
fn corpus(text: Option<&Path>) -> Result<String> {
    match text {
        Some(path) => {
            let bytes = input::read_input(path, "text file", input::MAX_TEXT_BYTES)?;
            let text = ruvllm_train::bpe::check_text(&bytes).with_context(|| path.display().to_string())?;
            Ok(text.to_string())
        }
        None => {
            eprintln!(
                "no --text: training on the built-in generated corpus ({} documents, seed {})",
                ruvllm_train::corpus::DEFAULT_DOCS,
                ruvllm_train::corpus::DEFAULT_SEED
            );
            Ok(ruvllm_train::corpus::generate(
                ruvllm_train::corpus::DEFAULT_SEED,
                ruvllm_train::corpus::DEFAULT_DOCS,
            ))
        }
    }
}

pub fn train(a: TrainArgs) -> Result<()> {
    let format = parse_format(&a.quant)?;
    let quant = crate::image::quant_of(format);
    let preset = run::preset(&a.preset)?;
    // The checkpoint first: a wrong one is refused before the corpus is read or generated.
    let resume = match &a.resume {
        Some(p) => {
            let bytes = input::read_input(p, "training checkpoint", input::MAX_CHECKPOINT_BYTES)?;
            Some((p.as_path(), Checkpoint::from_bytes(p, &bytes)?))
        }
        None => None,
    };
    let text = corpus(a.text.as_deref())?;
    let mut opts = TrainOptions::new(preset, a.steps, format);
    opts.seed = a.seed;
    if let Some(t) = a.threads {
        opts.threads = t;
    }
    opts.eval_every = a.eval_every;
    opts.checkpoint_every = a.checkpoint_every;
    let ckpt = a.output.with_extension("ckpt");
    opts.checkpoint = Some(ckpt.clone());
    if let Some(from) = &a.tokenizer_from {
        let img = crate::image::load(Some(from), None, None)?;
        let host =
            ruvllm_esp32::convert::load_gguf(img.bytes()).with_context(|| from.display().to_string())?;
        opts.vocab = host.vocab;
    }
    if let Some(from) = &a.init {
        let img = crate::image::load(Some(from), None, None)?;
        let host =
            ruvllm_esp32::convert::load_gguf(img.bytes()).with_context(|| from.display().to_string())?;
        opts.fine_tune(host).with_context(|| from.display().to_string())?;
    }
    // Ctrl-C ends the run after the current step and its checkpoint: nothing is lost.
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    ctrlc::set_handler(move || flag.store(true, Ordering::SeqCst))
        .context("installing the Ctrl-C handler")?;
    let mut bar = Bar::new(stop);
    let out = run::train(&text, &opts, resume, &mut bar)?;

    let gguf = out.model.to_gguf(quant).context("exporting the trained model")?;
    ruvllm_train::run::checkpoint::write_atomic(&a.output, &gguf)?;
    let svg = a.output.with_extension("loss.svg");
    let title = format!("{} preset, {} format", opts.preset.name, format.name());
    run::plot::write_loss_svg(&svg, &out.history, out.unigram_loss, &title)?;
    let val = out.final_val_loss().unwrap_or(f32::NAN);
    eprintln!(
        "{} documents, {} training / {} validation tokens; unigram baseline {:.4} nats",
        out.docs, out.train_tokens, out.val_tokens, out.unigram_loss
    );
    eprintln!("validation loss {val:.4} nats/token, perplexity {:.3}", (val as f64).exp());
    eprintln!("training throughput {:.0} tokens/s ({} threads)", out.tokens_per_s, opts.threads);
    eprintln!(
        "wrote {} ({} bytes, {}), {}, checkpoint {}",
        a.output.display(),
        gguf.len(),
        format.name(),
        svg.display(),
        ckpt.display()
    );
    Ok(())
}

/// Progress bar with loss and tokens/s on a terminal; a log line per validation otherwise.
struct Bar {
    bar: ProgressBar,
    last_val: Option<f32>,
    stop: Arc<AtomicBool>,
}

impl Bar {
    fn new(stop: Arc<AtomicBool>) -> Bar {
        Bar { bar: ProgressBar::hidden(), last_val: None, stop }
    }
}

impl Progress for Bar {
    fn begin(&mut self, total: u64, done: u64, info: &str) {
        eprintln!("{info}");
        self.bar = ProgressBar::new(total);
        self.bar.set_style(
            ProgressStyle::with_template("{bar:30} {pos}/{len} steps {msg} [{elapsed_precise}, eta {eta}]")
                .expect("valid template"),
        );
        self.bar.set_position(done);
    }

    fn step(&mut self, step: u64, loss: f32, tokens_per_s: f64) -> bool {
        self.bar.set_position(step);
        let val = self.last_val.map_or(String::new(), |v| format!(" val {v:.3}"));
        self.bar.set_message(format!("loss {loss:.3}{val} {tokens_per_s:.0} tok/s"));
        !self.stop.load(Ordering::SeqCst)
    }

    fn eval(&mut self, p: &LossPoint) {
        self.last_val = Some(p.val);
        if self.bar.is_hidden() {
            eprintln!("step {}: train {:.4} val {:.4}", p.step, p.train, p.val);
        }
    }

    fn end(&mut self) {
        self.bar.finish();
    }
}

pub fn corpus_cmd(output: &Path, docs: usize, seed: u64) -> Result<()> {
    let text = ruvllm_train::corpus::generate(seed, docs);
    ruvllm_train::run::checkpoint::write_atomic(output, text.as_bytes())?;
    eprintln!("wrote {} ({docs} documents, {} bytes, seed {seed})", output.display(), text.len());
    Ok(())
}

/// WordNet's synonym sets and glosses as sentences, each file read through the bounded reader
/// (a FIFO, a device or an endless file is refused before it is read).
fn wordnet_sentences(dir: &Path) -> Result<ruvllm_train::embedder::Topics> {
    use ruvllm_train::embedder;
    let read = |path: &Path| -> std::result::Result<String, String> {
        let bytes =
            input::read_input(path, "WordNet file", embedder::MAX_WORDNET_FILE).map_err(|e| e.to_string())?;
        String::from_utf8(bytes).map_err(|_| format!("{}: not UTF-8 text", path.display()))
    };
    embedder::wordnet_topics(dir, &read).map_err(|e| anyhow::anyhow!(e))
}

/// `train-chars`: the character trigram table of the anomaly check.
pub fn chars_cmd(output: &Path, docs: u64, wordnet: Option<&Path>) -> Result<()> {
    let mut counts = ruvllm_train::chars::Counts::default();
    for i in 0..docs {
        counts.add(&ruvllm_train::corpus::document(ruvllm_train::corpus::DEFAULT_SEED, i));
    }
    let mut glosses = 0;
    if let Some(dir) = wordnet {
        for s in wordnet_sentences(dir)?.sentences.iter().flatten() {
            counts.add(s);
            glosses += 1;
        }
    }
    let file = counts.file();
    ruvllm_train::run::checkpoint::write_atomic(output, &file)?;
    eprintln!(
        "wrote {} ({docs} corpus documents, {glosses} WordNet sentences, {} bytes)",
        output.display(),
        file.len()
    );
    Ok(())
}

/// `train-embedder`: the learned n-gram table of the knowledge commands.
pub fn embedder_cmd(
    output: &Path,
    rows: usize,
    steps: usize,
    docs: u64,
    seed: u64,
    wordnet: Option<&Path>,
    lexicon: Option<&Path>,
) -> Result<()> {
    use ruvllm_train::embedder;
    let topics = embedder::corpus_topics(ruvllm_train::corpus::DEFAULT_SEED, docs);
    if topics.names.len() < 2 {
        bail!("the first {docs} corpus documents hold fewer than two fact topics: use more --docs");
    }
    let extra = match wordnet {
        Some(dir) => wordnet_sentences(dir)?,
        None => embedder::Topics { names: Vec::new(), sentences: Vec::new() },
    };
    let lexicon = match lexicon {
        Some(path) => {
            let bytes = input::read_input(path, "lexicon", embedder::MAX_LEXICON_FILE)?;
            let text = String::from_utf8(bytes)
                .map_err(|_| anyhow::anyhow!("{}: not UTF-8 text", path.display()))?;
            embedder::lexicon_topics(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?
        }
        None => embedder::lexicon_topics(embedder::BUILTIN_LEXICON).map_err(|e| anyhow::anyhow!(e))?,
    };
    let cfg = embedder::Config { rows, steps, seed, ..embedder::Config::default() };
    let (table, loss) = embedder::train_builtin(&topics, &extra, &lexicon, &cfg);
    let file = table.to_file();
    ruvllm_train::run::checkpoint::write_atomic(output, &file)?;
    eprintln!(
        "wrote {} ({} corpus topics and facts, {} WordNet synonym sets, {} lexicon topics, {} sentences, {rows} x {} table, {} bytes; final InfoNCE loss {loss:.3})",
        output.display(),
        topics.names.len(),
        extra.names.len(),
        lexicon.names.len(),
        topics.sentences.iter().chain(&extra.sentences).chain(&lexicon.sentences).map(Vec::len).sum::<usize>(),
        cfg.dim,
        file.len()
    );
    Ok(())
}
