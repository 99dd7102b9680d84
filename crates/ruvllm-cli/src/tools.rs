//! `cluster` (a pipeline-parallel plan over several chips, as cluster.toml) and `completions`.

use crate::image;
use crate::ModelArgs;
use anyhow::{bail, Context, Result};
use ruvllm_cli::outln;
use ruvllm_esp32::federation;
use std::path::Path;

#[derive(serde::Serialize)]
struct ClusterFile {
    model: ClusterModel,
    link: ClusterLink,
    chip: Vec<ClusterChip>,
}

#[derive(serde::Serialize)]
struct ClusterModel {
    name: String,
    layers: usize,
    dim: usize,
}

#[derive(serde::Serialize)]
struct ClusterLink {
    baud: u32,
}

#[derive(serde::Serialize)]
struct ClusterChip {
    id: usize,
    role: &'static str,
    layers: [usize; 2],
    port: String,
}

/// The commented cluster.toml for `chips` chips over the model. The values are serialized by
/// the toml crate (a model path may hold quotes, backslashes or control characters); the
/// comments are fixed text.
pub fn cluster_toml(model_name: &str, layers: usize, dim: usize, chips: usize, baud: u32) -> Result<String> {
    let chip = federation::plan(layers, chips)?
        .map(|s| ClusterChip {
            id: s.chip,
            role: s.role.as_str(),
            layers: [s.layers.start, s.layers.end - 1],
            port: format!("/dev/ttyUSB{}", s.chip),
        })
        .collect();
    let file = ClusterFile {
        model: ClusterModel { name: model_name.to_string(), layers, dim },
        link: ClusterLink { baud },
        chip,
    };
    let body = toml::to_string(&file).context("writing cluster.toml")?;
    Ok(format!(
        "# ruvllm-esp32 cluster: pipeline parallel over {chips} chip(s).
# Written by `ruvllm-esp32 cluster --chips {chips}`.
# Each chip holds a contiguous range of the model's transformer layers
# (layers = [first, last], inclusive). The head chip also holds the token
# embeddings and reads the prompt; the tail chip holds the final norm and
# the classifier and samples the next token, which goes back to the head
# (a single chip holds everything; middle chips hold layers only).
# Between stages one activation vector of dim values crosses the link per token.
# link.baud: the UART speed between neighbouring chips (and to the host).
# Ports are placeholders: set each chip's serial port.

{body}"
    ))
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
    if output.exists() && !force {
        bail!("{}: already exists (pass --force to overwrite)", output.display());
    }
    let text = cluster_toml(&args.name(), layers, model.config.dim, chips, baud)?;
    // Atomic, regular files only, through a symlink: as `convert -o`.
    ruvllm_train::run::checkpoint::write_atomic(output, text.as_bytes())?;
    for s in federation::plan(layers, chips)? {
        eprintln!("chip {}: layers {}..={}", s.chip, s.layers.start, s.layers.end - 1);
    }
    outln!("{}", output.display());
    Ok(())
}
