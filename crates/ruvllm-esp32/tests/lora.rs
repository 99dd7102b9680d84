//! MicroLoRA on the built-in model, integer path: an adapter trained on phrases written for
//! this project (`testdata/lora/train.txt`: a user's family, pets, neighbours and habits that
//! the model has never seen) lowers the perplexity of other sentences about them
//! (`testdata/lora/heldout.txt`) and leaves the model's own kind of text (generated documents
//! of a seed it did not train on) nearly as it was.
//!
//! Figures: `cargo test --release -p ruvllm-esp32 --features std --test lora -- --nocapture`.

mod common;

use ruvllm_esp32::infer::IntState;
use ruvllm_esp32::lora::{LoraConfig, LoraTrainer};
use ruvllm_esp32::model::Model;
use ruvllm_esp32::tokenizer;

const TRAIN: &str = include_str!("../../../testdata/lora/train.txt");
const HELDOUT: &str = include_str!("../../../testdata/lora/heldout.txt");
/// A few sentences of the model's own kind (simple stories and facts in its corpus's style),
/// written for this project, not taken from its training data.
const GENERAL: &str = include_str!("../../../testdata/lora/general.txt");

/// Epochs over the training phrases (one step a phrase).
const EPOCHS: usize = 4;

fn builtin() -> common::Image {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../ruvllm-cli/data/default.gguf");
    common::Image::new(&std::fs::read(path).unwrap())
}

fn encode(model: &Model<'_>, text: &str) -> Vec<u32> {
    let mut out = vec![0u32; text.len() + 3];
    let mut work = vec![0u32; tokenizer::WORK_PER_TOKEN * (text.len() + 3)];
    let n = tokenizer::encode_with(&model.vocab, text.as_bytes(), true, false, &mut out, &mut work).unwrap();
    out.truncate(n);
    out
}

/// Mean loss over `lines` (each its own sequence), weighted by tokens.
fn mean_loss(t: &mut LoraTrainer, model: &Model<'_>, state: &mut IntState<'_>, lines: &[Vec<u32>]) -> f64 {
    let (mut sum, mut n) = (0.0f64, 0usize);
    for l in lines {
        sum += t.loss(model, state, l).unwrap() as f64 * (l.len() - 1) as f64;
        n += l.len() - 1;
    }
    sum / n as f64
}

#[test]
fn an_adapter_learns_a_users_phrases_without_forgetting() {
    let img = builtin();
    let model: Model<'_> = Model::from_gguf(img.bytes()).unwrap();
    let ctx = model.config.seq_len;
    let mut arena = vec![0i32; IntState::arena_len(&model, ctx)];
    let mut state = IntState::new(&model, &mut arena, ctx).unwrap();
    let train: Vec<Vec<u32>> = TRAIN.lines().map(|l| encode(&model, l)).collect();
    let heldout: Vec<Vec<u32>> = HELDOUT.lines().map(|l| encode(&model, l)).collect();
    // General text: sentences of the model's own kind (simple stories), written for this test.
    let general: Vec<Vec<u32>> = GENERAL.lines().map(|l| encode(&model, l)).collect();

    let lr: f32 =
        std::env::var("LORA_LR").ok().and_then(|v| v.parse().ok()).unwrap_or(LoraConfig::default().lr);
    let mut t = <LoraTrainer>::new(&model, LoraConfig { lr, ..LoraConfig::default() }).unwrap();
    let before =
        (mean_loss(&mut t, &model, &mut state, &heldout), mean_loss(&mut t, &model, &mut state, &general));
    let epochs: usize = std::env::var("LORA_EPOCHS").ok().and_then(|v| v.parse().ok()).unwrap_or(EPOCHS);
    for epoch in 0..epochs {
        let mut sum = 0.0;
        for l in &train {
            sum += t.step(&model, &mut state, l).unwrap().loss;
        }
        println!("epoch {epoch}: mean training loss {:.4}", sum / train.len() as f32);
    }
    let after =
        (mean_loss(&mut t, &model, &mut state, &heldout), mean_loss(&mut t, &model, &mut state, &general));
    let ppl = |l: f64| l.exp();
    println!(
        "held-out phrases: perplexity {:.3} -> {:.3} ({:+.1}%); general text {:.3} -> {:.3} ({:+.2}%)",
        ppl(before.0),
        ppl(after.0),
        100.0 * (ppl(after.0) / ppl(before.0) - 1.0),
        ppl(before.1),
        ppl(after.1),
        100.0 * (ppl(after.1) / ppl(before.1) - 1.0)
    );
    println!(
        "adapter: rank {}, {} bytes stored (int8 + scales), trainer RAM {} bytes, {} steps",
        t.config.rank,
        t.adapter().stored_bytes(),
        t.ram_bytes(),
        t.steps()
    );
    assert!(ppl(after.0) <= 0.8 * ppl(before.0), "held-out: {before:?} -> {after:?}");
    assert!(ppl(after.1) <= 1.02 * ppl(before.1), "general: {before:?} -> {after:?}");
}

/// A new adapter (B = 0) changes no logit; bad settings and texts are refused.
#[test]
fn a_new_adapter_changes_nothing_and_bad_input_is_refused() {
    let img = builtin();
    let model: Model<'_> = Model::from_gguf(img.bytes()).unwrap();
    let ctx = 32;
    let mut arena = vec![0i32; IntState::arena_len(&model, ctx)];
    let mut state = IntState::new(&model, &mut arena, ctx).unwrap();
    let t = <LoraTrainer>::new(&model, LoraConfig::default()).unwrap();
    let tokens = encode(&model, "Once upon a time");
    for (pos, &tok) in tokens.iter().enumerate() {
        let plain = state.forward(&model, tok, pos).unwrap().to_vec();
        let adapted = state.forward_lora(&model, tok, pos, Some(t.adapter())).unwrap().to_vec();
        assert_eq!(plain, adapted, "position {pos}");
    }
    for rank in [0, 3] {
        assert!(
            <LoraTrainer>::new(&model, LoraConfig { rank, ..LoraConfig::default() }).is_err(),
            "rank {rank}"
        );
    }
    for lr in [0.0, -1.0, f32::NAN] {
        assert!(<LoraTrainer>::new(&model, LoraConfig { lr, ..LoraConfig::default() }).is_err(), "lr {lr}");
    }
    let mut t = t;
    assert!(t.step(&model, &mut state, &tokens[..1]).is_err(), "one token");
    let long = vec![tokens[1]; ctx + 1];
    assert!(t.step(&model, &mut state, &long).is_err(), "longer than the context");
    assert_eq!(t.steps(), 0);
}

/// The adapter file: written and read back exactly; a flipped byte, a truncated file, another
/// magic, or another base model are refused with an error, never a panic.
#[test]
fn adapter_files_round_trip_and_refuse_damage_and_other_models() {
    use ruvllm_esp32::lora::{model_id, IntLora, MAX_FILE};
    let img = builtin();
    let model: Model<'_> = Model::from_gguf(img.bytes()).unwrap();
    let ctx = 64;
    let mut arena = vec![0i32; IntState::arena_len(&model, ctx)];
    let mut state = IntState::new(&model, &mut arena, ctx).unwrap();
    let mut t = <LoraTrainer>::new(&model, LoraConfig::default()).unwrap();
    for l in TRAIN.lines().take(3) {
        t.step(&model, &mut state, &encode(&model, l)).unwrap();
    }
    let id = model_id(img.bytes());
    let mut buf = [0u8; MAX_FILE];
    let n = t.adapter().write(id, &mut buf).unwrap();
    let file = &buf[..n];
    let back = <IntLora>::read(file, id, &model.config).unwrap();
    assert_eq!(&back, t.adapter());
    // Going on from the file gives the same forward pass.
    let again = <LoraTrainer>::from_adapter(&model, LoraConfig::default(), &back).unwrap();
    assert_eq!(again.adapter(), t.adapter());
    for i in [0, 9, 20, n / 2, n - 1] {
        let mut bad = file.to_vec();
        bad[i] ^= 0x40;
        assert!(<IntLora>::read(&bad, id, &model.config).is_err(), "flipped byte {i}");
    }
    for len in [0, 3, 8, 12, n - 1] {
        assert!(<IntLora>::read(&file[..len], id, &model.config).is_err(), "truncated to {len}");
    }
    let e = <IntLora>::read(file, id ^ 1, &model.config).unwrap_err();
    assert!(format!("{e}").contains("different model"), "{e}");
    assert!(<IntLora>::read(&vec![0u8; MAX_FILE + 1], id, &model.config).is_err());
}
