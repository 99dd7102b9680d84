//! `cluster` (a pipeline-parallel plan over several chips, as cluster.toml) and `completions`.

use crate::image;
use crate::ModelArgs;
use anyhow::{bail, Context, Result};
use ruvllm_cli::outln;
use std::fmt::Write as _;
use std::path::Path;

/// Layer ranges `[start, end)` of `chips` pipeline stages over `layers` layers: contiguous,
/// in order, as even as possible (the first `layers % chips` stages get one more).
pub fn split_layers(layers: usize, chips: usize) -> Vec<(usize, usize)> {
    let (base, extra) = (layers / chips, layers % chips);
    let mut start = 0;
    (0..chips)
        .map(|i| {
            let n = base + usize::from(i < extra);
            let r = (start, start + n);
            start += n;
            r
        })
        .collect()
}

/// The commented cluster.toml for `chips` chips over the model.
pub fn cluster_toml(model_name: &str, layers: usize, dim: usize, chips: usize, baud: u32) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "# ruvllm-esp32 cluster: pipeline parallel over {chips} chip(s).");
    let _ = writeln!(s, "# Written by `ruvllm-esp32 cluster --chips {chips}`.");
    let _ = writeln!(s, "# Each chip holds a contiguous range of the model's transformer layers");
    let _ = writeln!(s, "# (layers = [first, last], inclusive). The head chip also holds the token");
    let _ = writeln!(s, "# embeddings and reads the prompt; the tail chip holds the final norm and");
    let _ = writeln!(s, "# the classifier and samples the next token, which goes back to the head.");
    let _ = writeln!(s, "# Between stages one activation vector of dim values crosses the link per token.");
    let _ = writeln!(s, "# Ports are placeholders: set each chip's serial port.\n");
    let _ = writeln!(s, "[model]");
    let _ = writeln!(s, "name = {:?}", model_name);
    let _ = writeln!(s, "layers = {layers}");
    let _ = writeln!(s, "dim = {dim}\n");
    let _ = writeln!(s, "[link]");
    let _ = writeln!(s, "# UART speed between neighbouring chips (and to the host)");
    let _ = writeln!(s, "baud = {baud}\n");
    for (i, (a, b)) in split_layers(layers, chips).into_iter().enumerate() {
        let role = match (i, chips) {
            (_, 1) => "single",
            (0, _) => "head",
            (i, n) if i == n - 1 => "tail",
            _ => "middle",
        };
        let what = match role {
            "single" => "embeddings, every layer, classifier",
            "head" => "embeddings and the first layers",
            "tail" => "the last layers, final norm, classifier, sampling",
            _ => "layers only",
        };
        let _ = writeln!(s, "[[chip]]");
        let _ = writeln!(s, "id = {i}");
        let _ = writeln!(s, "role = \"{role}\"   # {what}");
        let _ = writeln!(s, "layers = [{a}, {}]   # {} layer(s)", b - 1, b - a);
        let _ = writeln!(s, "port = \"/dev/ttyUSB{i}\"   # placeholder\n");
    }
    s
}

/// `cluster`: plan `chips` chips over the model's layers and write cluster.toml.
pub fn cluster(args: &ModelArgs, chips: usize, output: &Path, baud: u32, force: bool) -> Result<()> {
    let img = image::load(args.model.as_deref(), args.tokenizer.as_deref(), None)?;
    let model = img.model()?;
    let layers = model.config.n_layers;
    if chips < 1 || chips > layers {
        bail!(
            "--chips {chips}: use 1 to {layers} (the {} has {layers} layers, at least one a chip)",
            args.name()
        );
    }
    if baud == 0 {
        bail!("--baud 0: give the link's speed in bits per second, e.g. 115200");
    }
    if output.exists() && !force {
        bail!("{}: already exists (pass --force to overwrite)", output.display());
    }
    let text = cluster_toml(&args.name(), layers, model.config.dim, chips, baud);
    std::fs::write(output, text).with_context(|| format!("{}: cannot write", output.display()))?;
    for (i, (a, b)) in split_layers(layers, chips).into_iter().enumerate() {
        eprintln!("chip {i}: layers {a}..={}", b - 1);
    }
    outln!("{}", output.display());
    Ok(())
}
