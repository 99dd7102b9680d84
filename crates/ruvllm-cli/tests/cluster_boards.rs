//! `cluster monitor` and `cluster flash` over cluster.toml's serial ports: boards on
//! pseudo-terminals speak at once and every line comes out whole, prefixed by its node id; a
//! board that goes away is reported and the others go on; missing, duplicate or TCP ports are
//! one clear error before anything opens, and `cluster flash --dry-run` writes one flash
//! image per node holding that node's model (needs the chip toolchain, as `flash`).

mod common;
#[allow(dead_code)]
mod pty;

use common::*;
use ruvllm_cli::cluster::config::ClusterFile;
use std::io::Write as _;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

/// A cluster.toml of `ports.len()` nodes, node i on `ports[i]`.
fn config(name: &str, ports: &[toml::Value]) -> PathBuf {
    let path = scratch(name);
    let n = ports.len().to_string();
    let out = run(&["cluster", "--chips", &n, "-o", s(&path), "--force"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let mut file = ClusterFile::parse(&std::fs::read_to_string(&path).unwrap(), name).unwrap();
    for (n, p) in file.chips.nodes.iter_mut().zip(ports) {
        n.port = p.clone();
    }
    std::fs::write(&path, toml::to_string(&file).unwrap()).unwrap();
    path
}

#[test]
fn every_boards_lines_come_out_prefixed_by_its_node() {
    let boards: Vec<_> = (0..3).map(|_| pty::open(true)).collect();
    let ports: Vec<toml::Value> = boards.iter().map(|(_, p, _)| toml::Value::String(p.clone())).collect();
    let path = config("monitor.toml", &ports);
    let child = Command::new(env!("CARGO_BIN_EXE_ruvllm-esp32"))
        .args(["cluster", "monitor", "--config", s(&path)])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let mut masters: Vec<_> = boards.into_iter().map(|(m, _, slave)| (m, slave)).collect();
    // Interleaved pieces of lines: each line must come out whole, after its own node's id.
    for round in 0..3 {
        for (i, (m, _)) in masters.iter_mut().enumerate() {
            m.write_all(format!("board {i} says {round}").as_bytes()).unwrap();
        }
        std::thread::sleep(Duration::from_millis(50));
        for (m, _) in masters.iter_mut() {
            m.write_all(b" done\r\n").unwrap();
        }
    }
    masters[2].0.write_all(b"> ").unwrap();
    std::thread::sleep(Duration::from_millis(800));
    // Board 1 goes away; the others go on.
    drop(masters.remove(1));
    std::thread::sleep(Duration::from_millis(300));
    masters[0].0.write_all(b"still here\n").unwrap();
    std::thread::sleep(Duration::from_millis(300));
    masters.clear();
    let out = wait_within(child, std::time::Instant::now(), Duration::from_secs(30), "cluster monitor");
    let text = String::from_utf8_lossy(&out.stdout);
    let err = String::from_utf8_lossy(&out.stderr);
    for i in 0..3 {
        for round in 0..3 {
            let want = format!("node {i}: board {i} says {round} done\n");
            assert!(text.contains(&want), "{want:?} missing from {text}");
        }
    }
    assert!(text.contains("node 2: > \n"), "the prompt after silence: {text}");
    assert!(text.contains("node 0: still here\n"), "{text}");
    assert!(err.contains("node 1: ") && err.contains("disconnected"), "{err}");
    assert!(!out.status.success(), "every board gone is an error: {err}");
    assert!(err.trim_end().lines().last().unwrap().contains("every board is gone"), "{err}");
}

#[test]
fn bad_ports_are_one_clear_error() {
    let (_m, live, _slave) = pty::open(true);
    let missing = toml::Value::String("/dev/ttyNOPE7".into());
    let live = toml::Value::String(live);
    let cases = [
        ("missing", vec![live.clone(), missing], "node 1: port \"/dev/ttyNOPE7\" does not exist"),
        ("tcp", vec![live.clone(), toml::Value::Integer(47001)], "node 1: port 47001 is not a serial port"),
        ("dup", vec![live.clone(), live.clone()], "nodes 0 and 1 both use port"),
    ];
    for (name, ports, want) in cases {
        let path = config(&format!("bad-{name}.toml"), &ports);
        fails_with(&run(&["cluster", "monitor", "--config", s(&path)]), want);
        fails_with(&run(&["cluster", "flash", "--config", s(&path)]), want);
    }
    let path = config("flash-o.toml", &[live]);
    fails_with(&run(&["cluster", "flash", "--config", s(&path), "--dry-run"]), "pass -o DIR");
}

/// `cluster flash --dry-run`: a flash image per node, each with its node's model in the
/// model partition (node 1 given a model of its own).
#[test]
fn flash_dry_run_writes_an_image_per_node_with_its_model() {
    let Some(()) = chip_tools() else { return };
    let other = scratch("other.gguf");
    let builtin = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("data/default.gguf");
    let out = run(&["convert", s(&builtin), "--quant", "q8", "--pad-ffn", "32", "-o", s(&other)]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let ports = ["/dev/board-a", "/dev/board-b"].map(|p| toml::Value::String(p.into()));
    let path = config("flash.toml", &ports);
    let mut file = ClusterFile::parse(&std::fs::read_to_string(&path).unwrap(), "flash").unwrap();
    file.chips.nodes[1].model = Some(s(&other).to_string());
    std::fs::write(&path, toml::to_string(&file).unwrap()).unwrap();
    let dir = scratch("images");
    let out = run(&["cluster", "flash", "--config", s(&path), "--dry-run", "-o", s(&dir)]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_ne!(std::fs::read(&builtin).unwrap(), std::fs::read(&other).unwrap());
    for (i, model) in [(0, builtin), (1, other)] {
        let img = std::fs::read(dir.join(format!("node-{i}.bin"))).unwrap();
        assert_eq!(img.len(), 4 << 20, "node {i}: a whole 4 MiB flash image");
        let src = std::fs::read(&model).unwrap();
        assert!(contains(&img, &src), "node {i}: its model is not in its image");
    }
}

/// `needle` at a 4 KiB boundary of `hay` (partitions start on sectors).
fn contains(hay: &[u8], needle: &[u8]) -> bool {
    (0..hay.len()).step_by(0x1000).any(|at| hay[at..].starts_with(needle))
}
