//! `cluster run --qemu`: every node a QEMU ESP32-C3-sized board (rv32imc, 400 KiB RAM, the
//! integer engine) built around the model with only its layers to run, its UART a TCP socket;
//! the host relays between the boards. The text is exactly `gen --int`'s with 2 and 3 boards,
//! greedy and seeded, and each board reports the instructions of its layers; the same for the
//! tensor topology (each board a shard of every layer).
//!
//! Needs Debian's chip toolchain and qemu-system-riscv32: without them the test prints why it
//! skips, except under CI=true, where it fails.

mod common;

use common::*;

/// `cluster run --qemu` of a plan of `chips` boards (`extra`: plan arguments) over `steps`
/// positions: its text must be `gen --int`'s, and every board must report its instructions.
fn boards_match_gen(extra: &[&str], chips: usize, base: u16, steps: usize, temp: &str, seed: &str) {
    let label = format!("{chips} boards {extra:?}");
    let path = plan_cluster(&format!("qemu-{chips}-{}.toml", extra.len()), chips, extra, base, |_| {});
    let n = steps.to_string();
    let args = ["-p", "Once upon a time", "-n", &n, "--temp", temp, "--seed", seed];
    let want = run(&[&["gen", "--int"][..], &args].concat());
    assert!(want.status.success());
    let out = cluster_run_qemu(&path, &args);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&want.stdout), "{label}");
    eprintln!("{label}, temp {temp}:\n{err}");
    for i in 0..chips {
        let line = err.lines().find(|l| l.starts_with(&format!("node {i} ("))).expect("a line per board");
        assert!(line.contains(" instructions in its layers ("), "{line}");
        // Each board of several links only its part of the image (its layers or its shard).
        let start = format!("node {i}: QEMU board");
        let board = err.lines().find(|l| l.starts_with(&start)).expect("a board line");
        let image: usize =
            board.split("model image ").nth(1).and_then(|r| r.split(' ').next()?.parse().ok()).unwrap();
        let whole =
            std::fs::metadata(concat!(env!("CARGO_MANIFEST_DIR"), "/data/default.gguf")).unwrap().len();
        assert!(chips == 1 || (image as u64) < whole, "{board}: not smaller than the whole {whole}");
    }
}

/// Ports of this test process, apart from other test binaries (and apart per test).
fn base_port(slot: u16) -> u16 {
    24_000 + (std::process::id() % 400) as u16 * 16 + slot * 8
}

#[test]
fn qemu_boards_print_what_gen_prints() {
    let Some(()) = chip_tools() else { return };
    for (chips, temp, seed) in [(2, "0", "42"), (3, "0.8", "7")] {
        boards_match_gen(&[], chips, base_port(0), 24, temp, seed);
    }
}

/// The tensor topology on QEMU boards: each board a shard of every layer (its heads and FFN
/// rows, only its KV cache in its 400 KiB), the host reducing their partial sums: exactly `gen
/// --int`'s text with 2 boards (greedy) and 3 (seeded), and each board's instructions.
#[test]
fn qemu_shards_print_what_gen_prints() {
    let Some(()) = chip_tools() else { return };
    for (chips, temp, seed) in [(2, "0", "42"), (3, "0.8", "7")] {
        boards_match_gen(&["--topology", "tensor"], chips, base_port(1), 16, temp, seed);
    }
}
