//! Test support: locating the read-only `../shared` material.
#![allow(dead_code)]

use std::path::PathBuf;

/// `../shared/<rel>` beside the checkout. Absent on a user's machine: the test prints why it
/// skips. In CI (`CI=true`) absence is a failure, never a silent skip.
pub fn shared(rel: &str) -> Option<PathBuf> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared");
    let p = root.join(rel);
    if p.exists() {
        return Some(p);
    }
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("CI=true but {} is missing", p.display());
    }
    eprintln!("skipping: {} not found (the shared test material sits beside the checkout)", p.display());
    None
}

pub fn read_shared(rel: &str) -> Option<Vec<u8>> {
    shared(rel).map(|p| std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display())))
}

/// A model image in an 8-byte aligned buffer so tensors can be read in place.
pub struct Image {
    words: Vec<u64>,
    len: usize,
}

impl Image {
    pub fn new(bytes: &[u8]) -> Image {
        let mut words = vec![0u64; bytes.len().div_ceil(8)];
        bytemuck::cast_slice_mut::<u64, u8>(&mut words)[..bytes.len()].copy_from_slice(bytes);
        Image { words, len: bytes.len() }
    }

    pub fn bytes(&self) -> &[u8] {
        &bytemuck::cast_slice::<u64, u8>(&self.words)[..self.len]
    }

    pub fn bytes_mut(&mut self) -> &mut [u8] {
        &mut bytemuck::cast_slice_mut::<u64, u8>(&mut self.words)[..self.len]
    }
}

/// stories260K with its tokenizer as an engine GGUF image at the given precision.
pub fn stories260k_image(quant: ruvllm_esp32::convert::Quant) -> Option<Image> {
    let model = read_shared("models/stories260K.bin")?;
    let tok = read_shared("models/tok512.bin")?;
    let mut host = ruvllm_esp32::convert::load_llama2c(&model).expect("stories260K loads");
    host.vocab =
        Some(ruvllm_esp32::convert::load_tokenizer_bin(&tok, host.config.vocab_size).expect("tok512 loads"));
    Some(Image::new(&host.to_gguf(quant).expect("converts")))
}
