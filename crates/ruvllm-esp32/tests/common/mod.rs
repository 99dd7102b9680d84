//! Test support: locating the read-only `../shared` material.
#![allow(dead_code)]

use embedded_io::{ErrorType, Read, ReadReady, Write};
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

/// A console's byte stream for tests: the input is all there from the start, the output collected.
pub struct Stream {
    input: std::collections::VecDeque<u8>,
    pub out: Vec<u8>,
}

impl Stream {
    pub fn new(input: &[u8]) -> Stream {
        Stream { input: input.iter().copied().collect(), out: Vec::new() }
    }
}

impl ErrorType for Stream {
    type Error = core::convert::Infallible;
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, Self::Error> {
        let mut n = 0;
        while let (Some(slot), Some(b)) = (buf.get_mut(n), self.input.front()) {
            *slot = *b;
            self.input.pop_front();
            n += 1;
        }
        Ok(n)
    }
}

impl ReadReady for Stream {
    /// Nothing is typed while the engine works: the next line waits for the prompt.
    fn read_ready(&mut self) -> Result<bool, Self::Error> {
        Ok(false)
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> Result<usize, Self::Error> {
        self.out.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> Result<(), Self::Error> {
        Ok(())
    }
}
