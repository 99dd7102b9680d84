//! The trainer end to end on generated stories: a tiny model learns far more than word
//! frequencies, and its exported GGUF runs in the engine with the same greedy tokens.

use ruvllm_esp32::convert::Quant;
use ruvllm_esp32::infer::State;
use ruvllm_esp32::kernels::Kernels;
use ruvllm_esp32::model::Model;
use ruvllm_esp32::quant::WeightFormat;
use ruvllm_esp32::tokenizer;
use ruvllm_train::model::{Params, Trainer};
use ruvllm_train::run::{self, Preset, Quiet, TrainOptions};

const TINY: Preset = Preset {
    name: "test",
    dim: 32,
    hidden_dim: 64,
    n_layers: 2,
    n_heads: 4,
    n_kv_heads: 2,
    vocab_size: 320,
    seq_len: 64,
    batch: 16,
    lr: 3e-3,
};

fn argmax(x: &[f32]) -> u32 {
    let mut best = 0;
    for (i, v) in x.iter().enumerate() {
        if *v > x[best] {
            best = i;
        }
    }
    best as u32
}

/// 8-byte aligned copy, as the engine reads tensors in place.
fn aligned(bytes: &[u8]) -> Vec<u64> {
    let mut words = vec![0u64; bytes.len().div_ceil(8)];
    bytemuck::cast_slice_mut::<u64, u8>(&mut words)[..bytes.len()].copy_from_slice(bytes);
    words
}

#[test]
fn a_tiny_model_learns_the_stories_and_the_engine_runs_it_unchanged() {
    // Stories and facts, without the question-answer documents.
    let text: Vec<String> = (0..3000).map(|i| ruvllm_train::corpus::document(3, i)).collect();
    let text = text.join("\n\n");
    let mut opts = TrainOptions::new(TINY, 900, WeightFormat::F32);
    opts.eval_every = 100;
    opts.val_windows = 32;
    let out = run::train(&text, &opts, None, &mut Quiet).unwrap();
    let val = out.final_val_loss().unwrap() as f64;
    eprintln!("validation loss {val:.3} nats/token, unigram baseline {:.3}", out.unigram_loss);
    // Well below the unigram baseline: the model uses context.
    assert!(val < 0.6 * out.unigram_loss, "validation loss {val:.3} vs unigram {:.3}", out.unigram_loss);
    let first = out.history.first().unwrap().val as f64;
    assert!(val < first, "validation loss did not fall: {first:.3} -> {val:.3}");

    // Greedy continuation of a prompt in the trainer's own forward pass...
    let gguf = out.model.to_gguf(Quant::F32).unwrap();
    let words = aligned(&gguf);
    let bytes = &bytemuck::cast_slice::<u64, u8>(&words)[..gguf.len()];
    let model = <Model<'_>>::from_gguf(bytes).unwrap();
    let mut prompt = vec![0u32; 64];
    let n = tokenizer::encode(&model.vocab, b"Once upon a time", true, false, &mut prompt).unwrap();
    prompt.truncate(n);
    let steps = 48;
    let params = Params::from_host(&out.model).unwrap();
    let mut trainer = Trainer::new(&model.config, 1, TINY.seq_len, 1, WeightFormat::F32);
    let mut ours = prompt.clone();
    while ours.len() < steps {
        let logits = trainer.logits(&params, &ours);
        let v = model.config.vocab_size;
        ours.push(argmax(&logits[(ours.len() - 1) * v..ours.len() * v]));
    }
    // ...and in the engine, from the exported image.
    let mut arena = vec![0f32; State::arena_len(&model, steps)];
    let mut state = State::new(&model, &mut arena, steps, Kernels::REFERENCE).unwrap();
    let mut theirs = prompt.clone();
    for pos in 0..steps - 1 {
        let logits = state.forward(&model, theirs[pos], pos).unwrap();
        if pos + 1 >= theirs.len() {
            theirs.push(argmax(logits));
        }
    }
    assert_eq!(ours, theirs, "trainer and engine disagree on greedy tokens");
    // It writes words of its corpus, not noise.
    let mut text_out = Vec::new();
    for w in theirs.windows(2) {
        let mut b = [0u8; tokenizer::DECODE_MAX];
        text_out.extend_from_slice(tokenizer::decode(&model.vocab, w[0], w[1], &mut b));
    }
    let s = String::from_utf8_lossy(&text_out).to_string();
    let known = s.split_whitespace().filter(|w| text.contains(w)).count();
    assert!(known * 10 >= s.split_whitespace().count() * 9, "unfamiliar words in {s:?}");
}
