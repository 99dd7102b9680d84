//! MicroLoRA on the built-in model, integer path: an adapter trained on phrases written for
//! this project (`testdata/lora/train.txt`: a user's family, pets, neighbours and habits that
//! the model has never seen) lowers the perplexity of other sentences about them
//! (`testdata/lora/heldout.txt`) and leaves the model's own kind of text (generated documents
//! of a seed it did not train on) nearly as it was.
//!
//! Figures: `cargo test --release -p ruvllm-esp32 --features std --test lora -- --nocapture`.

mod common;

use ruvllm_esp32::infer::IntState;
use ruvllm_esp32::lora::{LoraConfig, LoraTrainer, Sites, Target, HOST_PARAMS};
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
fn mean_loss<const P: usize>(
    t: &mut LoraTrainer<P>,
    model: &Model<'_>,
    state: &mut IntState<'_>,
    lines: &[Vec<u32>],
) -> f64 {
    let (mut sum, mut n) = (0.0f64, 0usize);
    for l in lines {
        sum += t.loss(model, state, l).unwrap() as f64 * (l.len() - 1) as f64;
        n += l.len() - 1;
    }
    sum / n as f64
}

/// What [`adapt`] measured: perplexities before and after, and the set's sizes.
struct Adapted {
    heldout: (f64, f64),
    general: (f64, f64),
    stored_bytes: usize,
    file_bytes: usize,
    ram_bytes: usize,
    work_bytes: usize,
    steps: u32,
}

impl Adapted {
    fn heldout_change(&self) -> f64 {
        100.0 * (self.heldout.1 / self.heldout.0 - 1.0)
    }

    fn general_change(&self) -> f64 {
        100.0 * (self.general.1 / self.general.0 - 1.0)
    }
}

/// Trains the adapter set `targets` of `layers` (`None`: every layer) on the training phrases
/// (`epochs` passes, one step a phrase) and measures held-out and general perplexity.
fn adapt(layers: Option<&[usize]>, targets: &[Target], rank: usize, lr: f32, epochs: usize) -> Adapted {
    let img = builtin();
    let model: Model<'_> = Model::from_gguf(img.bytes()).unwrap();
    let ctx = model.config.seq_len;
    let mut arena = vec![0i32; IntState::arena_len(&model, ctx)];
    let mut state = IntState::new(&model, &mut arena, ctx).unwrap();
    let train: Vec<Vec<u32>> = TRAIN.lines().map(|l| encode(&model, l)).collect();
    let heldout: Vec<Vec<u32>> = HELDOUT.lines().map(|l| encode(&model, l)).collect();
    // General text: sentences of the model's own kind (simple stories), written for this test.
    let general: Vec<Vec<u32>> = GENERAL.lines().map(|l| encode(&model, l)).collect();
    let all: Vec<usize> = (0..model.config.n_layers).collect();
    let sites = Sites::new(&model.config, layers.unwrap_or(&all), targets).unwrap();
    let mut t: Box<LoraTrainer<HOST_PARAMS>> = Box::new(LoraTrainer::EMPTY);
    t.reset(&model.config, LoraConfig { rank, lr, ..LoraConfig::default() }, sites).unwrap();
    let longest = train.iter().map(Vec::len).max().unwrap();
    let mut work = vec![0f32; t.work_len(&model, longest)];
    let before =
        (mean_loss(&mut t, &model, &mut state, &heldout), mean_loss(&mut t, &model, &mut state, &general));
    for epoch in 0..epochs {
        let mut sum = 0.0;
        for l in &train {
            sum += t.step_with(&model, &mut state, l, &mut work).unwrap().loss;
        }
        println!("epoch {epoch}: mean training loss {:.4}", sum / train.len() as f32);
    }
    let after =
        (mean_loss(&mut t, &model, &mut state, &heldout), mean_loss(&mut t, &model, &mut state, &general));
    Adapted {
        heldout: (before.0.exp(), after.0.exp()),
        general: (before.1.exp(), after.1.exp()),
        stored_bytes: t.adapter().stored_bytes(),
        file_bytes: t.adapter().file_len(),
        ram_bytes: t.ram_bytes(),
        work_bytes: 4 * work.len(),
        steps: t.steps(),
    }
}

fn report(name: &str, a: &Adapted) {
    println!(
        "{name}: held-out perplexity {:.3} -> {:.3} ({:+.1}%); general text {:.3} -> {:.3} ({:+.2}%); {} bytes stored (int8 + scales), file {} bytes, trainer RAM {} + work {} bytes, {} steps",
        a.heldout.0,
        a.heldout.1,
        a.heldout_change(),
        a.general.0,
        a.general.1,
        a.general_change(),
        a.stored_bytes,
        a.file_bytes,
        a.ram_bytes,
        a.work_bytes,
        a.steps
    );
}

fn env<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

#[test]
fn an_adapter_learns_a_users_phrases_without_forgetting() {
    let last = [4usize];
    let a = adapt(
        Some(&last),
        &[Target::W2],
        2,
        env("LORA_LR", LoraConfig::default().lr),
        env("LORA_EPOCHS", EPOCHS),
    );
    report("4.w2", &a);
    assert!(a.heldout_change() <= -20.0, "held-out: {:?}", a.heldout);
    assert!(a.general_change() <= 2.0, "general: {:?}", a.general);
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

/// The sweep behind docs/BENCHMARKS.md's table of adapter sets: `LORA_SETS` lists sets as
/// `layers/targets` (`all/wq,wv,w2;4/w2`), each trained with `LORA_LR` and `LORA_EPOCHS`.
#[test]
#[ignore = "a measurement: LORA_SETS=... cargo test --release ... -- --ignored"]
fn sweep_adapter_sets() {
    let sets = std::env::var("LORA_SETS").unwrap_or_else(|_| "4/w2;all/wq,wv;all/wq,wv,w2".into());
    let (lr, epochs, rank) =
        (env("LORA_LR", LoraConfig::default().lr), env("LORA_EPOCHS", EPOCHS), env("LORA_RANK", 2));
    for set in sets.split(';') {
        let (layers, targets) = set.split_once('/').unwrap();
        let layers: Option<Vec<usize>> =
            (layers != "all").then(|| layers.split(',').map(|l| l.parse().unwrap()).collect());
        let targets: Vec<Target> = targets.split(',').map(|t| Target::parse(t).unwrap()).collect();
        let a = adapt(layers.as_deref(), &targets, rank, lr, epochs);
        report(&format!("{set} rank {rank} lr {lr} epochs {epochs}"), &a);
    }
}
