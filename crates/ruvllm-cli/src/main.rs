//! `ruvllm-esp32`: the host tool. Convert, generate, evaluate, inspect and benchmark models
//! for the ESP32 engine.
// Tests may print; the tool writes stdout through outln!, which reports a failed write.
#![cfg_attr(not(test), warn(clippy::print_stdout))]

mod attention;
mod bench;
mod board;
mod cluster_boards;
mod commands;
mod console;
mod firmware;
mod image;
mod index;
mod lora;
mod speculative;
mod tools;
mod train;

use clap::{CommandFactory, Parser, Subcommand};
use ruvllm_cli::serial;
use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "ruvllm-esp32",
    version,
    about = "Tiny language models for ESP32 microcontrollers: convert, run, measure"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
    /// Run a model image written by `convert` even though its checksum key is gone (its
    /// header and weights are then not verified)
    #[arg(long, global = true)]
    allow_unverified: bool,
}

/// Where the model comes from; shared by every command that runs one.
#[derive(clap::Args, Clone)]
pub struct ModelArgs {
    /// Model: a llama2.c checkpoint (.bin, fp32 or int8 "ak42") or a GGUF file. Default: the
    /// built-in model (trained by this tool on its generated stories)
    #[arg(short = 'm', long)]
    pub model: Option<PathBuf>,
    /// llama2.c tokenizer.bin (required with a llama2.c checkpoint)
    #[arg(short = 'z', long)]
    pub tokenizer: Option<PathBuf>,
}

impl ModelArgs {
    /// The model's name for messages.
    pub fn name(&self) -> String {
        self.model.as_ref().map_or("built-in model".to_string(), |p| p.display().to_string())
    }
}

#[derive(Subcommand)]
enum Cmd {
    /// Convert a model to the engine's self-contained GGUF image
    #[command(
        after_help = "Example:\n  ruvllm-esp32 convert stories260K.bin --tokenizer tok512.bin --quant q8 -o stories260K-q8.gguf"
    )]
    Convert {
        /// Input: llama2.c checkpoint or GGUF
        input: PathBuf,
        #[arg(short = 'z', long)]
        tokenizer: Option<PathBuf>,
        /// f32, q8 (int8 groups of 32 with one scale each), ternary (2-bit codes {-1,0,1}) or
        /// binary (sign bits), the last two with one scale per row and q8 embeddings
        #[arg(short = 'q', long, default_value = "f32")]
        quant: String,
        /// Widen the feed-forward layer to a multiple of N units with zero weights (the same
        /// model): with --pad-ffn 32, a q8 image of a model whose width is a multiple of 32 uses
        /// GGUF's standard Q8_0, which llama.cpp reads
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=4096))]
        pad_ffn: Option<u32>,
        /// Magnitude pruning of the transformer blocks to this sparsity, 0 to 0.95 (0.5 = half):
        /// the smallest weights of each matrix become zero, or with --structured the weakest
        /// feed-forward units are removed (a smaller model that every path runs faster)
        #[arg(long, value_name = "S", value_parser = real_in(0.0, ruvllm_esp32::prune::MAX_SPARSITY))]
        prune: Option<f32>,
        /// With --prune: remove whole feed-forward units instead of single weights
        #[arg(long, requires = "prune")]
        structured: bool,
        /// With --prune (unstructured, q8): keep every matrix dense. Without it, a matrix whose
        /// codes are at least 75% zero (the board's measured break-even) is stored as sparse
        /// rows, which this engine reads on every path but llama.cpp does not
        #[arg(long, requires = "prune", conflicts_with = "structured")]
        dense: bool,
        /// Remove N key/value attention heads from every layer, with the query heads that read
        /// them (the weakest by the norms of their rows of wq/wk/wv and columns of wo); the head
        /// size stays (GGUF's llama.attention.key_length). Alone or with --prune
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(0..=4096))]
        prune_heads: Option<u32>,
        /// Write llama2.c's int8 checkpoint (ak42 version 2, what its export.py writes and
        /// runq.c runs, with the model's tokenizer.bin) instead of a GGUF image; with --quant q8.
        /// Groups as export.py picks them and dividing the FFN width (runq.c skips a partial
        /// group): --pad-ffn 64 gives stories260K groups of 64 instead of 4
        #[arg(long)]
        llama2c: bool,
        #[arg(short = 'o', long)]
        output: PathBuf,
    },
    /// Generate text from a prompt (stdout: prompt + continuation; stderr: speed)
    #[command(
        after_help = "Example:\n  ruvllm-esp32 gen -m stories260K.bin -z tok512.bin -p \"Once upon a time\" -n 256"
    )]
    Gen {
        #[command(flatten)]
        model: ModelArgs,
        #[command(flatten)]
        text: TextArgs,
        /// 0 to 1
        #[arg(long, default_value_t = 0.9, value_parser = real_in(0.0, 1.0))]
        top_p: f32,
        /// 0 = off; at most the vocabulary size
        #[arg(long, default_value_t = 0)]
        top_k: usize,
        #[arg(short = 's', long, default_value_t = 42)]
        seed: u64,
        /// Convert at load: f32, q8, ternary or binary
        #[arg(short = 'q', long)]
        quant: Option<String>,
        /// Use the scalar reference kernels instead of the CPU's fast path
        #[arg(long)]
        scalar: bool,
        /// Run the integer-only path (no float in the forward pass, as on an ESP32-C3/C6): greedy,
        /// or with --temp the integer sampler of the console's `set temp` (whole distribution,
        /// no top-p/top-k); the model is converted to q8 as needed (or to --quant ternary|binary)
        #[arg(long = "int", conflicts_with = "scalar")]
        int: bool,
        /// Apply a MicroLoRA adapter (`lora train`) made for this model; implies --int
        #[arg(long, value_name = "ADAPTER", conflicts_with = "scalar")]
        lora: Option<PathBuf>,
        /// Speculative decoding: a draft proposes --gamma tokens, the model checks them all in
        /// one pass over its weights (greedy: the same text; --temp: the same distribution).
        /// Prints the acceptance rate and tokens per target pass on stderr
        #[arg(long, conflicts_with = "lora")]
        speculative: bool,
        /// With --speculative: the draft model, with the same tokenizer (models/draft.gguf for
        /// the built-in model)
        #[arg(long, value_name = "FILE", requires = "speculative")]
        draft: Option<PathBuf>,
        /// With --speculative: draft with the model's own first L layers and its classifier
        #[arg(long, value_name = "L", requires = "speculative")]
        early_exit: Option<usize>,
        /// With --speculative: draft tokens per target pass, 1 to 16
        #[arg(long, value_name = "G", requires = "speculative")]
        gamma: Option<usize>,
        /// Attention pattern: full (default); window:N, the last N positions through a cache of
        /// N positions (--steps may then exceed the model's context); strided:S,
        /// dilated:GAP[:COUNT] or bigbird:GLOBAL:LOCAL:RANDOM[:SEED], only the positions they
        /// list read from the cache
        #[arg(long, value_name = "PATTERN", conflicts_with = "speculative")]
        attention: Option<String>,
    },
    /// Score a text file: tokens, mean negative log-likelihood, perplexity
    #[command(
        after_help = "Example:\n  ruvllm-esp32 eval -m stories260K.bin -z tok512.bin --text story.txt --quant q8"
    )]
    Eval {
        #[command(flatten)]
        model: ModelArgs,
        #[arg(long)]
        text: PathBuf,
        /// Convert at load: f32, q8, ternary or binary
        #[arg(short = 'q', long)]
        quant: Option<String>,
        /// Score with the integer-only path (the model is converted to q8 as needed, or to
        /// --quant ternary|binary)
        #[arg(long = "int")]
        int: bool,
        /// Score each blank-line-separated document on its own after a BOS, as `train` sees
        /// them (default: the whole file as one text)
        #[arg(long)]
        documents: bool,
        /// Attention pattern: full (default: the text in windows of the model's context),
        /// window:N (the text in one pass, each token seeing the last N positions), strided:S,
        /// dilated:GAP[:COUNT] or bigbird:GLOBAL:LOCAL:RANDOM[:SEED] (windows of the context)
        #[arg(long, value_name = "PATTERN")]
        attention: Option<String>,
    },
    /// Show a model's shape, sizes and where it fits on each ESP32
    #[command(after_help = "Examples:\n  ruvllm-esp32 info\n  ruvllm-esp32 info stories260K-q8.gguf --json")]
    Info {
        /// Default: the built-in model
        model: Option<PathBuf>,
        #[arg(short = 'z', long)]
        tokenizer: Option<PathBuf>,
        #[arg(short = 'q', long)]
        quant: Option<String>,
        /// Machine-readable output (the same figures as JSON)
        #[arg(long)]
        json: bool,
    },
    /// Measure prompt and generation tokens/s for each precision, against the scalar kernels
    Bench {
        #[command(flatten)]
        model: ModelArgs,
        #[arg(short = 'p', long, default_value = "Once upon a time")]
        prompt: String,
        #[arg(short = 'n', long, default_value_t = 256)]
        steps: usize,
        /// Runs per configuration (1 to 1000); the fastest counts
        #[arg(long, default_value_t = 5, value_parser = count(1, 1000))]
        repeat: usize,
        /// Machine-readable output (the same figures as JSON)
        #[arg(long)]
        json: bool,
        /// Measure on a chip instead: esp32c3 builds the QEMU board (ESP32-C3 resources) around
        /// the model as q8 (or --quant) and reports exact instructions per token and peak RAM
        #[arg(long)]
        chip: Option<String>,
        /// With --chip: the image's precision, q8, ternary or binary
        #[arg(short = 'q', long, default_value = "q8")]
        quant: String,
        /// With --chip: the board's engine, int (integer-only path) or float (q8 with the
        /// scalar f32 kernels, soft-float on the chip)
        #[arg(long, default_value = "int")]
        engine: String,
        /// With --chip and the int engine: also the instructions of each kernel per token
        /// (a board built with a counter read around each kernel)
        #[arg(long)]
        kernels: bool,
        /// With --chip: the published resource table's board, the model, the console's
        /// knowledge and the stack only (no MicroLoRA adapter, speculation draft or
        /// attention-pattern scratch); also prints RAM by part
        #[arg(long)]
        lean: bool,
    },
    /// Build the QEMU ESP32-C3 board around a model (as q8) and run its console here
    #[command(
        after_help = "Examples:\n  ruvllm-esp32 board -m stories260K.bin -z tok512.bin\n  ruvllm-esp32 flash --dry-run --chip esp32c3 -m other.gguf -o chip.bin\n  ruvllm-esp32 board --flash-image chip.bin      # the model comes from chip.bin's model partition\n\nNeeds Debian's rustc-web, cargo-web, rust-web-src and qemu-system-misc (see docs/ARCHITECTURE.md)."
    )]
    Board {
        #[command(flatten)]
        model: ModelArgs,
        /// Image precision: q8, ternary or binary (f32 does not fit the chip's RAM at
        /// stories260K's context)
        #[arg(short = 'q', long, default_value = "q8")]
        quant: String,
        /// Only build, and copy the ELF here
        #[arg(long)]
        elf: Option<PathBuf>,
        /// Embed the image with one byte flipped (shows the boot-time checksum refusal)
        #[arg(long, hide = true)]
        corrupt_image: bool,
        /// The board's engine: int (integer-only path) or float (scalar f32 kernels)
        #[arg(long, default_value = "int")]
        engine: String,
        /// An ESP32-C3 flash image (`flash --dry-run` output) to put in the board's flash: the
        /// board then reads its model from the image's model partition, as a chip does
        #[arg(long, value_name = "IMAGE")]
        flash_image: Option<PathBuf>,
        /// No console: count the instructions of the dense and the sparse-row q8 kernels on the
        /// model's first-layer matrices pruned to 0-95% (the break-even sparsity), then exit
        #[arg(long, conflicts_with_all = ["flash_image", "corrupt_image"])]
        sparse_bench: bool,
        /// The published resource table's board: the model, the console's knowledge and the
        /// stack only (no MicroLoRA adapter, speculation draft or attention-pattern scratch)
        #[arg(long)]
        lean: bool,
    },
    /// Train a model on a text corpus (or the built-in generated one): BPE tokenizer, model,
    /// quantization-aware training; writes OUT.gguf, OUT.ckpt and OUT.loss.svg
    #[command(after_help = "Examples:
  ruvllm-esp32 train --text corpus.txt --preset 260k --steps 2000 -o model.gguf
  ruvllm-esp32 train --preset tiny --quant ternary --steps 500 -o tiny-ternary.gguf
  ruvllm-esp32 train --text corpus.txt --steps 4000 --resume model.ckpt -o model.gguf")]
    Train {
        /// UTF-8 text; documents separated by blank lines. Default: the built-in generated corpus
        #[arg(long)]
        text: Option<PathBuf>,
        /// nano (~16K parameters, the published resource table's model), tiny (~100K parameters), 260k (stories260K's shape), default (the built-in model's) or 1m
        #[arg(long, default_value = "260k")]
        preset: String,
        /// Total optimizer steps, at least 1 (a resumed run continues up to this)
        #[arg(long, default_value_t = 2000, value_parser = clap::value_parser!(u64).range(1..))]
        steps: u64,
        /// Weights trained for: f32, q8, ternary or binary (quantization-aware training)
        #[arg(short = 'q', long, default_value = "f32")]
        quant: String,
        /// Continue from a checkpoint written by an earlier run
        #[arg(long)]
        resume: Option<PathBuf>,
        /// Reuse the tokenizer of this GGUF model instead of training one (a draft model must
        /// share its target's vocabulary)
        #[arg(long, conflicts_with = "init")]
        tokenizer_from: Option<PathBuf>,
        /// Fine-tune this GGUF model (e.g. one pruned by `convert --prune`) instead of training
        /// from random weights: its shape, context and tokenizer, the preset's batch and a
        /// quarter of its learning rate; zero weights of its blocks stay zero
        #[arg(long, value_name = "MODEL", conflicts_with = "resume")]
        init: Option<PathBuf>,
        #[arg(short = 's', long, default_value_t = 1)]
        seed: u64,
        /// Worker threads (default: all cores; at most 1024)
        #[arg(long, value_parser = count(1, 1024))]
        threads: Option<usize>,
        #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..))]
        eval_every: u64,
        #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u64).range(1..))]
        checkpoint_every: u64,
        #[arg(short = 'o', long)]
        output: PathBuf,
    },
    /// The serial console of the board, here on stdin/stdout with the board's integer engine
    /// (or, with --port, the console of a real board)
    #[command(after_help = "Examples:
  ruvllm-esp32 console                              # the built-in model, here
  echo 'gen Once upon a time' | ruvllm-esp32 console -m model.gguf
  printf 'set temp 0.8\\nset seed 7\\ngen Once\\nstats json\\n' | ruvllm-esp32 console
  ruvllm-esp32 console --knowledge facts.rvk        # knowledge kept across runs
  ruvllm-esp32 console --port /dev/ttyUSB0          # a board (Ctrl-] quits)")]
    Console {
        #[command(flatten)]
        model: ModelArgs,
        /// Keep the knowledge (add/forget) in this snapshot file: loaded at start if it
        /// exists, rewritten atomically after each add or forget before the reply
        #[arg(long, value_name = "FILE", conflicts_with = "port")]
        knowledge: Option<PathBuf>,
        /// Talk to the console of a real board on this serial port instead (`ports` lists them;
        /// the board keeps its own knowledge in flash)
        #[arg(short, long, conflicts_with_all = ["model", "tokenizer"])]
        port: Option<String>,
        #[arg(short, long, default_value_t = 115_200, requires = "port", value_parser = baud())]
        baud: u32,
    },
    /// List the serial ports that look like ESP32 boards (by USB id: the chip's own USB or a bridge)
    #[command(after_help = "Examples:\n  ruvllm-esp32 ports\n  ruvllm-esp32 ports --all")]
    Ports {
        /// Every serial port, not only the ESP32-looking ones
        #[arg(long)]
        all: bool,
    },
    /// Open a serial terminal on a board: its output here, keys to it (Ctrl-] quits)
    #[command(after_help = "Example:\n  ruvllm-esp32 monitor --port /dev/ttyUSB0")]
    Monitor {
        /// The board's serial port (`ruvllm-esp32 ports` lists them)
        #[arg(short, long)]
        port: String,
        #[arg(short, long, default_value_t = 115_200, value_parser = baud())]
        baud: u32,
    },
    /// MicroLoRA adapters: learn a user's phrases on top of a model (`gen --lora` applies one)
    Lora {
        #[command(subcommand)]
        cmd: lora::LoraCmd,
    },
    /// Vector indexes: build one over a dataset and measure recall, queries/s and memory
    Index {
        #[command(subcommand)]
        cmd: index::IndexCmd,
    },
    /// Learn the knowledge commands' text embedder (an int8 n-gram table) from the fact
    /// documents of the built-in corpus, the built-in lexicon of everyday topics (or --lexicon)
    /// and, with --wordnet, WordNet's synonym sets
    #[command(after_help = "Example (the committed table; needs Debian's wordnet-base):
  ruvllm-esp32 train-embedder --wordnet /usr/share/wordnet -o crates/ruvllm-esp32/data/ngram-table.bin")]
    TrainEmbedder {
        #[arg(short = 'o', long)]
        output: PathBuf,
        /// Table rows, 1 to 1048576 (feature hashes fold onto them); the file holds rows x 64 bytes
        #[arg(long, default_value_t = ruvllm_train::embedder::Config::default().rows, value_parser = count(1, 1 << 20))]
        rows: usize,
        #[arg(long, default_value_t = ruvllm_train::embedder::Config::default().steps,
              value_parser = count(1, usize::MAX))]
        steps: usize,
        /// Corpus documents read for their fact documents (at most 2 million)
        #[arg(long, default_value_t = ruvllm_train::embedder::BUILTIN_DOCS,
              value_parser = clap::value_parser!(u64).range(1..=MAX_DOCS as u64))]
        docs: u64,
        #[arg(short = 's', long, default_value_t = 1)]
        seed: u64,
        /// A WordNet database folder (Debian's wordnet-base: /usr/share/wordnet) whose synonym
        /// sets join the training topics
        #[arg(long)]
        wordnet: Option<PathBuf>,
        /// A lexicon of your own topics instead of the built-in one: one a line,
        /// `topic: phrase, phrase, ...` (phrases people use for the same thing)
        #[arg(long)]
        lexicon: Option<PathBuf>,
    },
    /// Count the anomaly check's character trigram table from the built-in corpus and, with
    /// --wordnet, WordNet's glosses
    #[command(after_help = "Example (the committed table; needs Debian's wordnet-base):
  ruvllm-esp32 train-chars --wordnet /usr/share/wordnet -o crates/ruvllm-esp32/data/char-trigrams.bin")]
    TrainChars {
        #[arg(short = 'o', long)]
        output: PathBuf,
        /// Corpus documents counted (at most 2 million)
        #[arg(long, default_value_t = ruvllm_train::chars::BUILTIN_DOCS,
              value_parser = clap::value_parser!(u64).range(1..=MAX_DOCS as u64))]
        docs: u64,
        /// A WordNet database folder (Debian's wordnet-base: /usr/share/wordnet) whose words and
        /// glosses are counted too
        #[arg(long)]
        wordnet: Option<PathBuf>,
    },
    /// Write the built-in generated corpus of simple stories and facts
    Corpus {
        #[arg(short = 'o', long)]
        output: PathBuf,
        /// Documents (1 to 2 million)
        #[arg(long, default_value_t = ruvllm_train::corpus::DEFAULT_DOCS, value_parser = count(1, MAX_DOCS))]
        docs: usize,
        #[arg(short = 's', long, default_value_t = ruvllm_train::corpus::DEFAULT_SEED)]
        seed: u64,
    },
    /// Build the esp-hal firmware (firmware/esp) for a chip around a model image
    #[command(after_help = "Examples:
  ruvllm-esp32 build --target esp32c3 --release
  ruvllm-esp32 build --target esp32c6 --release --model stories260K-q8.gguf
  ruvllm-esp32 build --target esp32s3 --release      # Xtensa: needs espup (see `install`)

Prints the ELF's path. The model (default: the built-in one) is used as it is when it is a q8,
ternary or binary image with the RoPE table, else converted to q8. ESP32-C3/C6 build with rustup's
target when installed, else with Debian's rustc-web + build-std; ESP32/S2/S3 need espup's toolchain.")]
    Build {
        /// esp32, esp32s2, esp32s3, esp32c3 or esp32c6
        #[arg(long)]
        target: String,
        #[arg(long)]
        release: bool,
        #[command(flatten)]
        model: ModelArgs,
    },
    /// Flash the firmware and a model partition to a board, or write the merged flash image
    #[command(after_help = "Examples:
  ruvllm-esp32 flash --port /dev/ttyUSB0
  ruvllm-esp32 flash --port /dev/ttyACM0 --chip esp32c6 --model stories260K-q8.gguf
  ruvllm-esp32 flash --dry-run -o image.bin      # bootloader, partition table, app, model

Builds the firmware (release) unless --elf is given. Layout (4 MiB flash): bootloader, partition
table at 0x8000, app at 0x10000, then a data partition named `model` holding the model image. The
firmware reads the model from that partition, and falls back to the copy linked into the app
when the flash has no partition table or the partition is refused (a damaged image, a model
whose arena does not fit, or an Xtensa chip: ESP32/S2/S3 do not map the partition yet).")]
    Flash {
        /// Serial port of the board, e.g. /dev/ttyUSB0
        #[arg(short = 'p', long)]
        port: Option<String>,
        #[command(flatten)]
        firmware: FirmwareArgs,
        #[command(flatten)]
        model: ModelArgs,
        /// Write the merged flash image to -o instead of flashing
        #[arg(long)]
        dry_run: bool,
        /// Where --dry-run writes the merged image (4 MiB)
        #[arg(short = 'o', long)]
        output: Option<PathBuf>,
    },
    /// Check the chip toolchains and print the steps for what is missing
    #[command(after_help = "Examples:
  ruvllm-esp32 install
  ruvllm-esp32 install --yes      # also runs `espup install` when espup is there")]
    Install {
        /// Run `espup install` when espup is installed and the Xtensa toolchain is not
        #[arg(long)]
        yes: bool,
    },
    /// Plan a cluster of chips, pipeline-parallel over the model's layers or tensor-parallel
    /// over its heads and FFN rows (writes cluster.toml), or run one (`cluster run`)
    #[command(
        args_conflicts_with_subcommands = true,
        after_help = "Examples:
  ruvllm-esp32 cluster --chips 2
  ruvllm-esp32 cluster --chips 3 -m stories260K-q8.gguf -o three.toml --force
  ruvllm-esp32 cluster --chips 3 --topology tensor -o tensor.toml
  ruvllm-esp32 cluster run --config three.toml --prompt \"Once upon a time\" --steps 64"
    )]
    Cluster {
        #[command(subcommand)]
        cmd: Option<ClusterCmd>,
        /// Number of chips, 1 to the model's layer count
        #[arg(long)]
        chips: Option<usize>,
        #[command(flatten)]
        model: ModelArgs,
        #[arg(short = 'o', long, default_value = "cluster.toml")]
        output: PathBuf,
        /// Link speed between the chips
        #[arg(long, default_value_t = 115_200, value_parser = baud())]
        baud: u32,
        /// pipeline (contiguous layer ranges) or tensor (heads and FFN rows of every layer)
        #[arg(long, default_value = "pipeline", value_parser = ["pipeline", "tensor"])]
        topology: String,
        /// Overwrite the output file
        #[arg(long)]
        force: bool,
    },
    /// Print a shell completion script
    #[command(after_help = "Examples:
  ruvllm-esp32 completions bash > ~/.local/share/bash-completion/completions/ruvllm-esp32
  ruvllm-esp32 completions zsh > ~/.zfunc/_ruvllm-esp32
  ruvllm-esp32 completions fish > ~/.config/fish/completions/ruvllm-esp32.fish")]
    Completions { shell: clap_complete::Shell },
}

/// What a board is flashed with, and how fast (`flash`, `cluster flash`).
#[derive(clap::Args, Clone)]
struct FirmwareArgs {
    /// esp32, esp32s2, esp32s3, esp32c3 or esp32c6
    #[arg(long, default_value = "esp32c3")]
    chip: String,
    /// Flash this firmware ELF instead of building one
    #[arg(long)]
    elf: Option<PathBuf>,
    /// Serial speed while flashing
    #[arg(long, default_value_t = 460_800, value_parser = baud())]
    baud: u32,
}

/// The prompt, positions and temperature of `gen` and `cluster run`.
#[derive(clap::Args, Clone)]
struct TextArgs {
    #[arg(short = 'p', long, default_value = "")]
    prompt: String,
    /// Positions to run, prompt included (like llama2.c's -n)
    #[arg(short = 'n', long, default_value_t = 256)]
    steps: usize,
    /// 0 to 10; 0 = greedy
    #[arg(short = 't', long, default_value_t = 0.0, value_parser = real_in(0.0, MAX_TEMP))]
    temp: f32,
}

#[derive(Subcommand)]
enum ClusterCmd {
    /// Run cluster.toml's nodes, each a process on its loopback port, this process the
    /// coordinator: stdout gets what `gen --int` prints; stderr each node's time, the bytes on
    /// the wire per token and the retransmits
    #[command(after_help = "Example:
  ruvllm-esp32 cluster run --config cluster.toml --prompt \"Once upon a time\" --steps 64 --temp 0.8 --seed 7")]
    Run {
        #[arg(long)]
        config: PathBuf,
        #[command(flatten)]
        text: TextArgs,
        #[arg(short = 's', long, default_value_t = 42)]
        seed: u64,
        /// Run each node as a QEMU ESP32-C3 board running its part (layers, or a tensor shard),
        /// its UART a TCP socket on the node's port (needs the chip toolchain and
        /// qemu-system-riscv32, as `board`)
        #[arg(long)]
        qemu: bool,
        /// Stop when a node stops answering, naming it. By default the run re-plans the layers
        /// (tensor: the shards) over the nodes that still answer, replays the positions so far
        /// through the new plan and goes on (node processes only; QEMU boards always stop)
        #[arg(long)]
        no_replan: bool,
    },
    /// Flash every board of cluster.toml (its port: the board's serial device) with the
    /// firmware and its node's model, as `flash` does; or, with --dry-run, write one flash
    /// image per node
    #[command(after_help = "Examples:
  ruvllm-esp32 cluster flash --config boards.toml
  ruvllm-esp32 cluster flash --config boards.toml --dry-run -o images/")]
    Flash {
        #[arg(long)]
        config: PathBuf,
        #[command(flatten)]
        firmware: FirmwareArgs,
        /// Write the flash images (DIR/node-ID.bin) instead of flashing
        #[arg(long)]
        dry_run: bool,
        /// Where --dry-run writes the images
        #[arg(short = 'o', long)]
        output: Option<PathBuf>,
    },
    /// Show every board of cluster.toml at once: each line of each serial port, prefixed by
    /// its node id (Ctrl-C ends)
    #[command(after_help = "Example:
  ruvllm-esp32 cluster monitor --config boards.toml")]
    Monitor {
        #[arg(long)]
        config: PathBuf,
        #[arg(short = 'b', long, default_value_t = 115_200, value_parser = baud())]
        baud: u32,
    },
    /// One node of a cluster (what `cluster run` starts)
    #[command(hide = true)]
    Node {
        #[arg(long)]
        config: PathBuf,
        #[arg(long)]
        id: u8,
        /// The coordinator's port, where the tail connects back
        #[arg(long)]
        next: u16,
        /// When a neighbour goes away, wait to be re-planned instead of stopping
        #[arg(long)]
        rejoin: bool,
    },
}

/// Highest sampling temperature: the console's `set temp` range.
const MAX_TEMP: f32 = ruvllm_esp32::console::MAX_TEMP_MILLI as f32 / 1000.0;
/// Most generated documents (`corpus`, `train-embedder`): under a GiB of text (`corpus --docs
/// 10000` writes 4,540,657 bytes).
const MAX_DOCS: usize = 2_000_000;

/// Counts accepted in `lo..=hi`: clap refuses anything else, with the range, before any work.
pub fn count(lo: usize, hi: usize) -> clap::builder::RangedU64ValueParser<usize> {
    clap::builder::RangedU64ValueParser::new().range(lo as u64..=hi as u64)
}

/// A serial speed in bits per second: from 300 to 10 Mbaud.
fn baud() -> clap::builder::RangedU64ValueParser<u32> {
    clap::builder::RangedU64ValueParser::new().range(300..=10_000_000)
}

/// A finite number in `lo..=hi`, for clap.
fn real_in(lo: f32, hi: f32) -> impl Fn(&str) -> Result<f32, String> + Clone + Send + Sync + 'static {
    move |s| match s.parse::<f32>() {
        Ok(x) if (lo..=hi).contains(&x) => Ok(x),
        _ => Err(format!("use a number from {lo} to {hi}")),
    }
}

fn main() -> ExitCode {
    // Like other Unix tools, end quietly when the reader of stdout goes away (`... | head`)
    // instead of panicking on the failed write.
    #[cfg(unix)]
    // SAFETY: set once, before any thread starts.
    unsafe {
        let _ = nix::sys::signal::signal(nix::sys::signal::SIGPIPE, nix::sys::signal::SigHandler::SigDfl);
    }
    let cli = Cli::parse();
    image::ALLOW_UNVERIFIED.store(cli.allow_unverified, std::sync::atomic::Ordering::Relaxed);
    let result = match cli.cmd {
        cmd @ Cmd::Gen { .. } => run_gen(cmd),
        cmd => run(cmd),
    };
    // What is still buffered must reach stdout too, or the run failed.
    let result = result
        .and_then(|()| std::io::Write::flush(&mut std::io::stdout()).map_err(ruvllm_cli::out::write_error));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // A closed stderr leaves only the exit status to tell.
            let _ = writeln!(std::io::stderr(), "error: {}", error_line(&e));
            ExitCode::FAILURE
        }
    }
}

/// `gen`, kept apart from the other commands: inlined together, their locals (fixed buffers)
/// made one stack frame of about 200 KB that every start touched page by page (the stack
/// probe; some 50 page faults), `gen` included.
#[inline(never)]
fn run_gen(cmd: Cmd) -> anyhow::Result<()> {
    match cmd {
        Cmd::Gen {
            model,
            text: TextArgs { prompt, steps, temp },
            top_p,
            top_k,
            seed,
            quant,
            scalar,
            int,
            lora,
            speculative,
            draft,
            early_exit,
            gamma,
            attention,
        } => {
            let sampling = commands::Sampling { temp, top_p, top_k, seed };
            if speculative {
                let spec = speculative::Spec {
                    draft,
                    early_exit,
                    gamma: gamma.unwrap_or(speculative::DEFAULT_GAMMA),
                };
                speculative::gen(&model, &prompt, steps, sampling, quant.as_deref(), scalar, int, spec)
            } else {
                let int = int || lora.is_some();
                let path = commands::GenPath {
                    quant: quant.as_deref(),
                    scalar,
                    int,
                    lora: lora.as_deref(),
                    attention: attention.as_deref(),
                };
                commands::gen(&model, &prompt, steps, sampling, path)
            }
        }
        other => run(other),
    }
}

/// Every command but `gen` (see [`run_gen`]).
#[inline(never)]
fn run(cmd: Cmd) -> anyhow::Result<()> {
    match cmd {
        cmd @ Cmd::Gen { .. } => run_gen(cmd),
        Cmd::Convert {
            input,
            tokenizer,
            quant,
            pad_ffn,
            prune,
            structured,
            dense,
            prune_heads,
            llama2c,
            output,
        } => {
            use ruvllm_esp32::prune::Pruning;
            let how = if structured { Pruning::Structured } else { Pruning::Unstructured };
            let edits = image::Edits {
                pad_ffn: pad_ffn.map(|n| n as usize),
                prune: prune.map(|s| (s, how)),
                sparse: prune.is_some() && !structured && !dense,
                heads: prune_heads.map(|n| n as usize),
            };
            commands::convert(&input, tokenizer.as_deref(), &quant, edits, llama2c, &output)
        }
        Cmd::Eval { model, text, quant, int, documents, attention } => {
            commands::eval(&model, &text, quant.as_deref(), int, documents, attention.as_deref())
        }
        Cmd::Info { model, tokenizer, quant, json } => {
            commands::info(model.as_deref(), tokenizer.as_deref(), quant.as_deref(), json)
        }
        Cmd::Bench { model, chip: Some(chip), engine, quant, json, kernels, lean, .. } => {
            board::bench(&model, &chip, &engine, &quant, json, kernels, lean)
        }
        Cmd::Bench { model, prompt, steps, repeat, json, chip: None, .. } => {
            bench::run(&model, &prompt, steps, repeat, json)
        }
        Cmd::Board { model, quant, elf, corrupt_image, engine, flash_image, sparse_bench, lean } => {
            let how = board::BoardBuild { corrupt: corrupt_image, sparse_bench, lean, ..Default::default() };
            board::run_board(&model, &quant, elf.as_deref(), how, &engine, flash_image.as_deref())
        }
        Cmd::Train {
            text,
            preset,
            steps,
            quant,
            resume,
            tokenizer_from,
            init,
            seed,
            threads,
            eval_every,
            checkpoint_every,
            output,
        } => train::train(train::TrainArgs {
            text,
            preset,
            steps,
            quant,
            resume,
            tokenizer_from,
            init,
            seed,
            threads,
            eval_every,
            checkpoint_every,
            output,
        }),
        Cmd::Console { port: Some(port), baud, .. } => serial::open(&port, baud).and_then(serial::terminal),
        Cmd::Console { model, knowledge, .. } => {
            commands::load_int(&model, None).and_then(|img| console::run(&img, knowledge.as_deref()))
        }
        Cmd::Corpus { output, docs, seed } => train::corpus_cmd(&output, docs, seed),
        Cmd::TrainEmbedder { output, rows, steps, docs, seed, wordnet, lexicon } => {
            train::embedder_cmd(&output, rows, steps, docs, seed, wordnet.as_deref(), lexicon.as_deref())
        }
        Cmd::TrainChars { output, docs, wordnet } => train::chars_cmd(&output, docs, wordnet.as_deref()),
        Cmd::Index { cmd } => index::run(cmd),
        Cmd::Lora { cmd } => lora::run(cmd),
        Cmd::Ports { all } => serial::ports_cmd(all),
        Cmd::Monitor { port, baud } => serial::open(&port, baud).and_then(serial::terminal),
        Cmd::Build { target, release, model } => firmware::build_cmd(&target, release, &model),
        Cmd::Flash { port, firmware: FirmwareArgs { chip, elf, baud }, model, dry_run, output } => {
            firmware::flash(&firmware::FlashArgs { port, chip, model, elf, dry_run, output, baud })
        }
        Cmd::Install { yes } => firmware::install(yes),
        Cmd::Cluster {
            cmd:
                Some(ClusterCmd::Run { config, text: TextArgs { prompt, steps, temp }, seed, qemu, no_replan }),
            ..
        } => tools::run(tools::RunArgs { config, prompt, steps, temp, seed, qemu, replan: !no_replan }),
        Cmd::Cluster { cmd: Some(ClusterCmd::Monitor { config, baud }), .. } => {
            cluster_boards::monitor(&config, baud)
        }
        Cmd::Cluster {
            cmd:
                Some(ClusterCmd::Flash { config, firmware: FirmwareArgs { chip, elf, baud }, dry_run, output }),
            ..
        } => {
            cluster_boards::flash(&cluster_boards::ClusterFlash { config, chip, elf, dry_run, output, baud })
        }
        Cmd::Cluster { cmd: Some(ClusterCmd::Node { config, id, next, rejoin }), .. } => {
            tools::node(&config, id, next, rejoin)
        }
        Cmd::Cluster { cmd: None, chips: Some(chips), model, output, baud, topology, force } => {
            tools::plan(&model, chips, &output, baud, topology == "tensor", force)
        }
        Cmd::Cluster { cmd: None, chips: None, .. } => Err(anyhow::anyhow!(
            "cluster: pass --chips N to plan N chips, or `cluster run --config FILE` to run a plan"
        )),
        Cmd::Completions { shell } => {
            // clap_complete panics on a failed write: generate in memory, then write.
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "ruvllm-esp32", &mut script);
            ruvllm_cli::out::bytes(&script)
        }
    }
}

/// The error and its causes on one line, outermost first. A cause whose text its parent
/// already ends with is left out: error types that both print their source and return it
/// from `source()` would otherwise show it twice.
fn error_line(e: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if line.is_empty() {
            line = text;
        } else if !line.ends_with(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
    }
    line
}

#[cfg(test)]
mod tests {
    /// An error that prints its source and also returns it from `source()`.
    #[derive(Debug)]
    struct Both(std::io::Error);

    impl std::fmt::Display for Both {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "f.bin: {}", self.0)
        }
    }

    impl std::error::Error for Both {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }

    #[test]
    fn error_line_prints_each_cause_once() {
        let io = || std::io::Error::from(std::io::ErrorKind::NotFound);
        let e = anyhow::Error::new(Both(io())).context("loading");
        assert_eq!(super::error_line(&e), format!("loading: f.bin: {}", io()));
        let e = anyhow::Error::new(io()).context("f.bin: cannot read");
        assert_eq!(super::error_line(&e), format!("f.bin: cannot read: {}", io()));
    }
}
