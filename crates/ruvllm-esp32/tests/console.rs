//! The console driving the real engine (stories260K, q8, scalar kernels) over an in-memory
//! stream: the text `gen` prints is exactly `infer::generate`'s, as the QEMU board's is.

mod common;

use common::Stream;
use ruvllm_esp32::console::{Board, Console, ReferenceEngine};
use ruvllm_esp32::convert::Quant;
use ruvllm_esp32::infer::{self, State};
use ruvllm_esp32::kernels::Kernels;
use ruvllm_esp32::model::Model;
use ruvllm_esp32::sample::Sampler;
use ruvllm_esp32::tokenizer;

fn direct(model: &Model<'_, 8>, prompt: &str, steps: usize) -> Vec<u8> {
    let mut tokens = vec![0u32; prompt.len() + 3];
    let n = tokenizer::encode(&model.vocab, prompt.as_bytes(), true, false, &mut tokens).unwrap();
    let mut arena = vec![0f32; State::arena_len(model, steps)];
    let mut state = State::new(model, &mut arena, steps, Kernels::REFERENCE).unwrap();
    let mut out = Vec::new();
    let mut sampler = Sampler::new(0.0, 0.9, 0, 1);
    infer::generate(model, &mut state, &mut sampler, &mut [], &tokens[..n], steps, |b, _| {
        out.extend_from_slice(b)
    })
    .unwrap();
    out
}

#[test]
fn console_gen_prints_what_the_engine_generates() {
    let Some(img) = common::stories260k_image(Quant::Q8) else { return };
    let model: Model<'_, 8> = Model::from_gguf(img.bytes()).unwrap();
    let ctx = model.config.seq_len;
    let mut arena = vec![0f32; State::arena_len(&model, ctx)];
    let engine = ReferenceEngine::new(&model, &mut arena, ctx).unwrap();
    let input = b"set echo off\nset steps 100\ngen Once upon a time\ngen\nquit\n";
    let stream = Stream::new(input);
    let mut console = Console::new(stream, engine, Board::PLAIN);
    console.run().unwrap();
    let (stream, _, _) = console.into_parts();
    let out = String::from_utf8(stream.out).unwrap();
    let want = String::from_utf8(direct(&model, "Once upon a time", 100)).unwrap();
    assert!(out.contains(&format!("> {want}\r\n> ")), "{out}");
    let from_bos = String::from_utf8(direct(&model, "", 100)).unwrap();
    assert!(out.contains(&format!("> {from_bos}\r\n> ")), "{out}");
    assert!(!out.contains("error"), "{out}");
}
