//! `ruvllm-esp32`: the host tool. Convert, generate, evaluate, inspect and benchmark models
//! for the ESP32 engine.

mod bench;
mod board;
mod commands;
mod image;

use clap::{Parser, Subcommand};
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
}

/// Where the model comes from; shared by every command that runs one.
#[derive(clap::Args, Clone)]
pub struct ModelArgs {
    /// Model: a llama2.c checkpoint (.bin, fp32 or int8 "ak42") or a GGUF file
    #[arg(short = 'm', long)]
    pub model: PathBuf,
    /// llama2.c tokenizer.bin (required with a llama2.c checkpoint)
    #[arg(short = 'z', long)]
    pub tokenizer: Option<PathBuf>,
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
        #[arg(short = 'p', long, default_value = "")]
        prompt: String,
        /// Positions to run, prompt included (like llama2.c's -n)
        #[arg(short = 'n', long, default_value_t = 256)]
        steps: usize,
        /// 0 = greedy
        #[arg(short = 't', long, default_value_t = 0.0)]
        temp: f32,
        #[arg(long, default_value_t = 0.9)]
        top_p: f32,
        /// 0 = off
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
        /// Run the integer-only path (no float in the forward pass, as on an ESP32-C3/C6),
        /// greedy; the model is converted to q8 as needed (or to --quant ternary|binary)
        #[arg(long = "int", conflicts_with = "scalar")]
        int: bool,
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
    },
    /// Show a model's shape, sizes and where it fits on each ESP32
    Info {
        model: PathBuf,
        #[arg(short = 'z', long)]
        tokenizer: Option<PathBuf>,
        #[arg(short = 'q', long)]
        quant: Option<String>,
    },
    /// Measure prompt and generation tokens/s for each precision, against the scalar kernels
    Bench {
        #[command(flatten)]
        model: ModelArgs,
        #[arg(short = 'p', long, default_value = "Once upon a time")]
        prompt: String,
        #[arg(short = 'n', long, default_value_t = 256)]
        steps: usize,
        /// Runs per configuration; the fastest counts
        #[arg(long, default_value_t = 5)]
        repeat: usize,
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
    },
    /// Build the QEMU ESP32-C3 board around a model (as q8) and run its console here
    #[command(
        after_help = "Example:\n  ruvllm-esp32 board -m stories260K.bin -z tok512.bin\n\nNeeds Debian's rustc-web, cargo-web, rust-web-src and qemu-system-misc (see docs/ARCHITECTURE.md)."
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
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.cmd {
        Cmd::Convert { input, tokenizer, quant, output } => {
            commands::convert(&input, tokenizer.as_deref(), &quant, &output)
        }
        Cmd::Gen { model, prompt, steps, temp, top_p, top_k, seed, quant, scalar, int } => {
            let sampling = commands::Sampling { temp, top_p, top_k, seed };
            commands::gen(&model, &prompt, steps, sampling, quant.as_deref(), scalar, int)
        }
        Cmd::Eval { model, text, quant, int } => commands::eval(&model, &text, quant.as_deref(), int),
        Cmd::Info { model, tokenizer, quant } => {
            commands::info(&model, tokenizer.as_deref(), quant.as_deref())
        }
        Cmd::Bench { model, chip: Some(chip), engine, quant, .. } => {
            board::bench(&model, &chip, &engine, &quant)
        }
        Cmd::Bench { model, prompt, steps, repeat, json, chip: None, .. } => {
            bench::run(&model, &prompt, steps, repeat, json)
        }
        Cmd::Board { model, quant, elf, corrupt_image, engine } => {
            board::run_board(&model, &quant, elf.as_deref(), corrupt_image, &engine)
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
