use super::*;
use crate::corpus;

/// A model small enough to train for a few dozen steps in a test.
const MICRO: Preset = Preset {
    name: "micro",
    dim: 16,
    hidden_dim: 32,
    n_layers: 1,
    n_heads: 2,
    n_kv_heads: 1,
    vocab_size: 300,
    seq_len: 32,
    batch: 4,
    lr: 3e-3,
};

fn text() -> String {
    corpus::generate(7, 300)
}

fn options(steps: u64, dir: &Path) -> TrainOptions {
    let mut o = TrainOptions::new(MICRO, steps, WeightFormat::F32);
    o.threads = 1;
    o.eval_every = 5;
    o.val_windows = 4;
    o.checkpoint = Some(dir.join("run.ckpt"));
    o.checkpoint_every = 10;
    o
}

fn tempdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("ruvllm-train-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn a_resumed_run_ends_exactly_where_an_uninterrupted_one_does() {
    let (d1, d2) = (tempdir("straight"), tempdir("resumed"));
    let text = text();
    let straight = train(&text, &options(20, &d1), None, &mut Quiet).unwrap();
    // The same run interrupted after step 13 (it checkpoints that step), then resumed.
    struct StopAt(u64);
    impl Progress for StopAt {
        fn step(&mut self, step: u64, _: f32, _: f64) -> bool {
            step < self.0
        }
    }
    let e = train(&text, &options(20, &d2), None, &mut StopAt(13)).err().unwrap();
    assert!(matches!(e, TrainError::Interrupted { step: 13, .. }), "{e}");
    assert!(e.to_string().contains("--resume"), "{e}");
    let path = d2.join("run.ckpt");
    let ck = Checkpoint::load(&path).unwrap();
    assert_eq!(ck.step, 13);
    let resumed = train(&text, &options(20, &d2), Some((&path, ck)), &mut Quiet).unwrap();
    assert_eq!(straight.model, resumed.model, "parameters differ after resume");
    assert_eq!(straight.history, resumed.history);
    let _ = std::fs::remove_dir_all(d1);
    let _ = std::fs::remove_dir_all(d2);
}

#[test]
fn mismatched_or_corrupt_checkpoints_are_refused() {
    let d = tempdir("mismatch");
    let text = text();
    train(&text, &options(5, &d), None, &mut Quiet).unwrap();
    let path = d.join("run.ckpt");
    let ck = || Checkpoint::load(&path).unwrap();

    let mut other = options(10, &d);
    other.format = WeightFormat::Ternary;
    let e = train(&text, &other, Some((&path, ck())), &mut Quiet).err().unwrap();
    assert!(matches!(e, TrainError::ResumeMismatch { what: "weight format", .. }), "{e}");

    let mut other = options(10, &d);
    other.preset.dim = 24;
    let e = train(&text, &other, Some((&path, ck())), &mut Quiet).err().unwrap();
    assert!(matches!(e, TrainError::ResumeMismatch { what: "model shape", .. }), "{e}");
    assert!(e.to_string().contains("run.ckpt"), "{e}");

    let e =
        train(&corpus::generate(8, 300), &options(10, &d), Some((&path, ck())), &mut Quiet).err().unwrap();
    assert!(matches!(e, TrainError::ResumeMismatch { what: "corpus (CRC-32)", .. }), "{e}");

    let mut bytes = std::fs::read(&path).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    std::fs::write(&path, &bytes).unwrap();
    let e = Checkpoint::load(&path).err().unwrap();
    assert!(e.to_string().contains("checksum"), "{e}");
    std::fs::write(&path, &bytes[..100]).unwrap();
    assert!(Checkpoint::load(&path).is_err());
    std::fs::write(&path, b"hello").unwrap();
    assert!(Checkpoint::load(&path).err().unwrap().to_string().contains("not a ruvllm-esp32"));
    let _ = std::fs::remove_dir_all(d);
}

#[test]
fn a_corpus_too_small_for_the_preset_is_an_error() {
    let d = tempdir("small");
    let vocab = crate::bpe::train(&text(), MICRO.vocab_size).unwrap();
    let mut o = options(5, &d);
    o.vocab = Some(vocab);
    let e = train("Tom had a red ball.\n\nSam saw a cat.", &o, None, &mut Quiet).err().unwrap();
    assert!(matches!(e, TrainError::CorpusTooSmall { .. }), "{e}");
    assert!(e.to_string().contains("micro"), "{e}");
    let _ = std::fs::remove_dir_all(d);
}

#[test]
fn a_full_disk_leaves_the_previous_file_intact() {
    let d = tempdir("full");
    let path = d.join("model.gguf");
    checkpoint::write_atomic(&path, b"previous model").unwrap();
    let e = checkpoint::write_atomic_with(&path, &[7u8; 4096], |f, b| {
        use std::io::Write;
        f.write_all(&b[..100])?;
        Err(std::io::Error::from_raw_os_error(28))
    })
    .err()
    .unwrap();
    let msg = e.to_string();
    assert!(msg.contains("model.gguf") && msg.contains("No space left"), "{msg}");
    assert_eq!(std::fs::read(&path).unwrap(), b"previous model");
    assert_eq!(std::fs::read_dir(&d).unwrap().count(), 1, "temporary file left behind");
    let _ = std::fs::remove_dir_all(d);
}

/// A symbolic link is written through: the target gets the bytes, the link stays a link (also
/// when the target does not exist yet).
#[test]
fn an_atomic_write_follows_symlinks() {
    let d = tempdir("symlink");
    let (target, link) = (d.join("target.bin"), d.join("link.bin"));
    std::fs::write(&target, b"old").unwrap();
    std::os::unix::fs::symlink("target.bin", &link).unwrap();
    checkpoint::write_atomic(&link, b"new").unwrap();
    assert!(std::fs::symlink_metadata(&link).unwrap().file_type().is_symlink(), "the link was replaced");
    assert_eq!(std::fs::read(&target).unwrap(), b"new");
    let dangling = d.join("dangling.bin");
    std::os::unix::fs::symlink("made.bin", &dangling).unwrap();
    checkpoint::write_atomic(&dangling, b"made").unwrap();
    assert!(std::fs::symlink_metadata(&dangling).unwrap().file_type().is_symlink());
    assert_eq!(std::fs::read(d.join("made.bin")).unwrap(), b"made");
    assert_eq!(std::fs::read_dir(&d).unwrap().count(), 4, "temporary file left behind");
    let _ = std::fs::remove_dir_all(d);
}

/// A FIFO (as a device would be) or a directory at the path is refused in one line, left as it
/// was, and no temporary file stays. Today the FIFO was replaced by a regular file.
#[test]
fn an_atomic_write_refuses_what_is_not_a_regular_file() {
    use std::os::unix::fs::FileTypeExt;
    let d = tempdir("special");
    let fifo = d.join("fifo");
    let made = std::process::Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(made.success());
    let e = checkpoint::write_atomic(&fifo, b"bytes").unwrap_err().to_string();
    assert!(e.contains("not a regular file") && !e.contains('\n'), "{e}");
    assert!(std::fs::symlink_metadata(&fifo).unwrap().file_type().is_fifo(), "the FIFO was replaced");
    let sub = d.join("dir");
    std::fs::create_dir(&sub).unwrap();
    let e = checkpoint::write_atomic(&sub, b"bytes").unwrap_err().to_string();
    assert!(e.contains("not a regular file"), "{e}");
    // A link to the FIFO is refused the same way.
    let link = d.join("link");
    std::os::unix::fs::symlink(&fifo, &link).unwrap();
    assert!(checkpoint::write_atomic(&link, b"bytes").is_err());
    assert_eq!(std::fs::read_dir(&d).unwrap().count(), 3, "temporary file left behind");
    let _ = std::fs::remove_dir_all(d);
}

#[test]
fn the_loss_curve_is_an_svg_with_both_series() {
    let h: Vec<LossPoint> =
        (1..=10).map(|i| LossPoint { step: i * 10, train: 5.0 / i as f32, val: 5.5 / i as f32 }).collect();
    let svg = plot::loss_svg(&h, 4.0, "test").unwrap();
    assert!(svg.starts_with("<svg") && svg.contains("validation") && svg.contains("unigram"));
}

#[test]
fn learning_rate_warms_up_then_decays_to_a_tenth() {
    assert!(learning_rate(1.0, 0, 1000) < 0.1);
    assert!((learning_rate(1.0, 49, 1000) - 1.0).abs() < 1e-6);
    assert!((learning_rate(1.0, 999, 1000) - 0.1).abs() < 1e-3);
}

/// Fine-tuning a pruned model: it starts from the given weights (its validation loss at the
/// start is the model's own, not a random model's), keeps the pruned weights at zero, and
/// lowers the loss that pruning raised.
#[test]
fn fine_tuning_a_pruned_model_keeps_it_sparse_and_recovers_loss() {
    let (d1, d2) = (tempdir("base"), tempdir("tuned"));
    let text = text();
    let mut base = train(&text, &options(60, &d1), None, &mut Quiet).unwrap().model;
    let trained = base.clone();
    ruvllm_esp32::prune::prune(&mut base, 0.5, ruvllm_esp32::prune::Pruning::Unstructured).unwrap();
    let zero = |m: &HostModel| -> Vec<bool> {
        m.layers
            .iter()
            .flat_map(|l| [&l.wq, &l.wk, &l.wv, &l.wo, &l.w1, &l.w2, &l.w3])
            .flatten()
            .map(|&x| x == 0.0)
            .collect()
    };
    let pruned_mask = zero(&base);
    assert!(pruned_mask.iter().filter(|&&z| z).count() * 2 >= pruned_mask.len() - 8);
    let mut opts = options(30, &d2);
    opts.eval_every = 1;
    opts.fine_tune(base).unwrap();
    let tuned = train(&text, &opts, None, &mut Quiet).unwrap();
    // Still zero wherever pruning made it zero.
    let after = zero(&tuned.model);
    assert!(pruned_mask.iter().zip(&after).all(|(&p, &a)| !p || a), "a pruned weight came back");
    let (first, last) = (tuned.history[0].val, tuned.final_val_loss().unwrap());
    assert!(last < first, "fine-tuning did not lower the loss: {first} -> {last}");
    // The same tokenizer and shape as the model it started from.
    assert_eq!(tuned.model.config.hidden_dim, trained.config.hidden_dim);
    assert_eq!(tuned.model.vocab, trained.vocab);
    let _ = std::fs::remove_dir_all(d1);
    let _ = std::fs::remove_dir_all(d2);
}

#[test]
fn the_nano_preset_is_the_published_tables_16k_model() {
    // "model (INT8) ~16 KB flash": about 16 K parameters, one int8 byte each.
    let p = preset("nano").unwrap();
    let n = crate::model::Layout::new(&p.config(p.vocab_size)).len;
    assert!((15_000..=16_384).contains(&n), "{n} parameters");
}
