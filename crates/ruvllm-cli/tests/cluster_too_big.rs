//! A model too big for one chip split across boards: models/3m.gguf (trained by
//! `scripts/train-models.sh 3m`) is a q8 image larger than an ESP32-C3's flash budget, so
//! `info` says it does not fit one; `cluster run --qemu` runs it over 2 and 3 QEMU ESP32-C3
//! boards, each linking only its layers' cut of the image, each within the chip's 400 KiB of
//! RAM and 4 MiB of flash, and prints exactly what `gen --int` of the whole model prints on the
//! host. One board with every layer fails to build: too little RAM is left for its stack.
//!
//! The board runs need Debian's chip toolchain and qemu-system-riscv32: without them that test
//! prints why it skips, except under CI=true, where it fails.

mod common;

use common::*;

const MODEL: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../models/3m.gguf");

/// The ESP32-C3's RAM, and its flash less the application's reserve (what `info` allows a
/// model image).
const C3_RAM: u64 = 400 * 1024;
const C3_FLASH: u64 = 4 * 1024 * 1024;
const C3_IMAGE: u64 = 3 * 1024 * 1024;

#[test]
fn info_says_the_3m_model_does_not_fit_one_esp32c3() {
    let (out, _) = ok(&["info", MODEL, "--json"]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let c3 = v["chips"].as_array().unwrap().iter().find(|c| c["chip"] == "esp32c3").unwrap();
    assert_eq!(c3["fits"], false, "{c3}");
    assert!(c3["verdict"].as_str().unwrap().contains("image larger than flash budget"), "{c3}");
    assert!(std::fs::metadata(MODEL).unwrap().len() > C3_IMAGE);
}

/// A board's cut of the image (some layers only) is refused by the commands that would run it
/// alone, with one line saying so.
#[test]
fn a_cut_image_does_not_run_alone() {
    let bytes = std::fs::read(MODEL).unwrap();
    let part = scratch("3m-cut.gguf");
    std::fs::write(&part, ruvllm_esp32::federation::cut::cut(&bytes, 4..8).unwrap()).unwrap();
    for cmd in [&["gen", "--int", "-p", "Once", "-n", "4", "-m"][..], &["info"]] {
        let out = run(&[cmd, &[s(&part)]].concat());
        fails_with(&out, "holds only some layers of a model");
    }
    // A tensor board's shard cut neither (the built-in model's second FFN half).
    let builtin = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/data/default.gguf")).unwrap();
    let model = <ruvllm_esp32::model::Model<'_>>::from_gguf(&builtin).unwrap();
    let shard = ruvllm_esp32::infer::shard(&model, 2, 1).unwrap();
    let part = scratch("builtin-shard.gguf");
    std::fs::write(&part, ruvllm_esp32::federation::cut::shard(&builtin, &shard).unwrap()).unwrap();
    for cmd in [&["gen", "--int", "-p", "Once", "-n", "4", "-m"][..], &["info"]] {
        let out = run(&[cmd, &[s(&part)]].concat());
        fails_with(&out, "holds only one shard of a model's layers");
    }
}

/// A number after `key` in `line`.
fn figure(line: &str, key: &str) -> u64 {
    let rest = &line[line.find(key).unwrap_or_else(|| panic!("{key:?} in {line}")) + key.len()..];
    rest.split(|c: char| !c.is_ascii_digit()).next().unwrap().parse().unwrap()
}

#[test]
fn too_big_for_one_chip_runs_split_over_qemu_boards() {
    let Some(()) = chip_tools() else { return };
    let base = 31_000 + (std::process::id() % 200) as u16 * 8;
    for (chips, temp, seed) in [(2, "0", "42"), (3, "0.8", "7")] {
        let label = format!("{chips} boards, temp {temp}");
        let path = plan_cluster(&format!("too-big-{chips}.toml"), chips, &["-m", MODEL], base, |_| {});
        let args = ["-p", "Once upon a time", "-n", "16", "--temp", temp, "--seed", seed];
        let want = run(&[&["gen", "--int", "-m", MODEL][..], &args].concat());
        assert!(want.status.success(), "{}", String::from_utf8_lossy(&want.stderr));
        let out = cluster_run_qemu(&path, &args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&want.stdout), "{label}");
        eprintln!("{label}:\n{err}");
        for i in 0..chips {
            let board =
                err.lines().find(|l| l.starts_with(&format!("node {i}: QEMU board"))).expect("a board line");
            let (image, flash) = (figure(board, "model image "), figure(board, "flash "));
            assert!(image <= C3_IMAGE && flash <= C3_FLASH, "{label}: {board}");
            let report = err.lines().find(|l| l.starts_with(&format!("node {i} ("))).expect("a report line");
            let ram = figure(report, "peak RAM ");
            // A stack that ran into the static data reports all of the RAM.
            assert!(ram > 0 && ram < C3_RAM, "{label}: {report}");
            assert!(report.contains(" instructions in its layers ("), "{report}");
        }
    }
    // One board with every layer: its static data leave too little RAM for the node's stack,
    // and the build says so (the emulated board's 4 MiB of flash would hold the image).
    let path = plan_cluster("too-big-1.toml", 1, &["-m", MODEL], base, |_| {});
    let out = run(&["cluster", "run", "--qemu", "--config", s(&path), "-p", "Once", "-n", "4"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("split the model over more boards"), "{err}");
}
