//! `cluster run`: every node a separate process on loopback TCP. Its stdout is exactly `gen
//! --int`'s with 2, 3 and 5 nodes, greedy and seeded, also with 1% of the bytes corrupted on
//! every link; a node killed mid-run is named and the run stops within its timeout; a bad
//! cluster.toml or a node with another model image is one clear error.

mod common;

use common::*;
use ruvllm_cli::cluster::config::ClusterFile;
use std::io::Read;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Loopback ports for this test process: apart from other test binaries running at once.
fn base_port(slot: u16) -> u16 {
    20_000 + (std::process::id() % 2000) as u16 * 16 + slot * 6
}

/// `cluster --chips N` (extra args: the model), then the file with this test's ports and
/// `edit` applied.
fn plan(name: &str, chips: usize, slot: u16, model: &[&str], edit: impl FnOnce(&mut ClusterFile)) -> PathBuf {
    plan_cluster(name, chips, model, base_port(slot), edit)
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The figure after `key` in the cluster's summary line.
fn figure(err: &str, key: &str) -> f64 {
    let line = err.lines().find(|l| l.starts_with("cluster ")).unwrap_or_else(|| panic!("no summary: {err}"));
    let at = line.find(key).unwrap_or_else(|| panic!("no {key}: {line}"));
    let before: String =
        line[..at].trim_end().rsplit(' ').next().unwrap().chars().filter(|c| *c != '(').collect();
    before.parse().unwrap_or_else(|_| panic!("{key} in {line}"))
}

#[test]
fn processes_on_loopback_print_what_gen_prints() {
    for (slot, nodes) in [(0, 2), (1, 3), (2, 5)] {
        let config = plan(&format!("run-{nodes}.toml"), nodes, slot, &[], |_| {});
        for (temp, seed) in [("0", "42"), ("0.8", "7")] {
            let want = gen_int(&[], "Once upon a time", 64, temp, seed);
            let out = cluster_run(&config, "Once upon a time", 64, temp, seed);
            let err = stderr(&out);
            assert!(out.status.success(), "{nodes} nodes: {err}");
            assert_eq!(
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&want),
                "{nodes} nodes, temp {temp}"
            );
            for i in 0..nodes {
                assert!(err.contains(&format!("node {i} (")), "{err}");
            }
            assert_eq!(figure(&err, "retransmits"), 0.0, "{err}");
            let per_token = figure(&err, "bytes per token");
            eprintln!("{nodes} nodes, temp {temp}: {per_token} wire bytes per token");
            assert!(per_token > 0.0);
        }
    }
    // stories260K from ../shared, a llama2.c checkpoint with its tokenizer, over 3 processes.
    let (Some(m), Some(z)) = (shared("models/stories260K.bin"), shared("models/tok512.bin")) else { return };
    let model = ["-m", s(&m), "-z", s(&z)];
    let config = plan("run-260k.toml", 3, 3, &model, |_| {});
    for (temp, seed) in [("0", "42"), ("1", "3")] {
        let want = gen_int(&model, "Lily", 96, temp, seed);
        let out = cluster_run(&config, "Lily", 96, temp, seed);
        assert!(out.status.success(), "{}", stderr(&out));
        assert_eq!(out.stdout, want, "stories260K, temp {temp}");
    }
}

/// 1% of the bytes each link end writes are corrupted (acknowledgements too): not one token
/// differs; the stderr report counts the resends.
#[test]
fn a_noisy_line_between_processes_costs_resends_not_tokens() {
    let config = plan("noisy.toml", 3, 4, &[], |f| {
        f.link.corrupt = 0.01;
        f.link.ack_ms = 5;
        f.link.retries = 400;
    });
    let want = gen_int(&[], "The dog", 32, "0.9", "11");
    let out = cluster_run(&config, "The dog", 32, "0.9", "11");
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    assert_eq!(out.stdout, want);
    let resends = figure(&err, "retransmits");
    eprintln!("{err}");
    assert!(resends > 0.0, "{err}");
}

/// A node killed in the middle of a run: the coordinator names it and stops at once (well
/// within the link's timeout), leaving no process behind. The run is slowed by a noisy line
/// so that it is still going when the node dies.
#[test]
fn a_killed_node_is_named_and_the_run_stops() {
    let config = plan("killed.toml", 3, 5, &[], |f| {
        f.link.corrupt = 0.01;
        f.link.ack_ms = 5;
        f.link.retries = 400;
    });
    let mut child = Command::new(env!("CARGO_BIN_EXE_ruvllm-esp32"))
        .args(["cluster", "run", "--config", s(&config), "-p", "Once upon a time", "-n", "200"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (mut stdout, stderr) = (child.stdout.take().unwrap(), child.stderr.take().unwrap());
    let (tx, lines) = std::sync::mpsc::channel();
    let err_reader = std::thread::spawn(move || {
        let mut all = String::new();
        for line in std::io::BufRead::lines(std::io::BufReader::new(stderr)) {
            let line = line.unwrap();
            let _ = tx.send(line.clone());
            all += &line;
            all.push('\n');
        }
        all
    });
    // "node 1: pid N, ..." on stderr.
    let pid = loop {
        let line = lines.recv_timeout(Duration::from_secs(60)).expect("node 1's pid line");
        if let Some(rest) = line.strip_prefix("node 1: pid ") {
            break rest.split(',').next().unwrap().parse::<i32>().unwrap();
        }
    };
    // The first generated bytes: the run is under way.
    let mut first = [0u8; 32];
    let mut got = 0;
    while got < first.len() {
        let n = stdout.read(&mut first[got..]).unwrap();
        assert!(n > 0, "the run ended before the kill");
        got += n;
    }
    let node1 = [pid];
    let killed = Instant::now();
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(node1[0]), nix::sys::signal::Signal::SIGKILL).unwrap();
    let mut rest = Vec::new();
    stdout.read_to_end(&mut rest).unwrap();
    let status = child.wait().unwrap();
    let took = killed.elapsed();
    let err = err_reader.join().unwrap();
    assert!(!status.success());
    let last = err.trim_end().lines().last().unwrap();
    assert_eq!(last, "error: node 1 stopped (killed by signal 9) before the run ended", "{err}");
    assert!(took < Duration::from_secs(3), "stopped {took:?} after the kill");
    // No node outlives the run.
    std::thread::sleep(Duration::from_millis(200));
    let left = std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|p| {
            std::fs::read(format!("/proc/{p}/cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains(s(&config)))
        })
        .count();
    assert_eq!(left, 0, "node processes left behind");
}

/// Each bad cluster.toml is refused before any node starts, in one line that says what to fix.
#[test]
fn bad_cluster_files_are_one_clear_error() {
    type Edit = Box<dyn FnOnce(&mut ClusterFile)>;
    let cases: Vec<(&str, Edit, &str)> = vec![
        (
            "dup",
            Box::new(|f| f.chips.nodes[1].id = 0),
            "duplicate node id 0: each [[chips.nodes]] needs its own id",
        ),
        ("gap", Box::new(|f| f.chips.nodes[1].layers = [3, 3]), "layers 2 to 2 are held by no node"),
        ("overlap", Box::new(|f| f.chips.nodes[1].layers = [1, 3]), "nodes 0 and 1 both hold layer 1"),
        ("short", Box::new(|f| f.chips.nodes[2].layers = [4, 3]), "node 2: layers = [4, 3] is not a range"),
        ("beyond", Box::new(|f| f.chips.nodes[2].layers = [4, 5]), "the model has 5 layers (0 to 4)"),
        (
            "port0",
            Box::new(|f| f.chips.nodes[0].port = toml::Value::Integer(0)),
            "node 0: port 0 is not a TCP port (1 to 65535)",
        ),
        (
            "port-big",
            Box::new(|f| f.chips.nodes[0].port = toml::Value::Integer(70_000)),
            "port 70000 is not a TCP port",
        ),
        (
            "port-dev",
            Box::new(|f| f.chips.nodes[1].port = toml::Value::String("/dev/ttyNOPE9".into())),
            "node 1: port \"/dev/ttyNOPE9\" does not exist",
        ),
        (
            "port-dup",
            Box::new(|f| f.chips.nodes[2].port = f.chips.nodes[0].port.clone()),
            "nodes 0 and 2 both use port",
        ),
        (
            "checksum",
            Box::new(|f| f.model.checksum = "00000000".into()),
            "the model's checksum f0fecf4f differs from cluster.toml's 00000000",
        ),
        (
            "role",
            Box::new(|f| f.chips.nodes[1].role = "tail".into()),
            "node 1: role \"tail\", but holding layers 2 to 3 it is the middle",
        ),
        ("count", Box::new(|f| f.cluster.chips = 4), "[cluster] chips = 4 but 3 [[chips.nodes]] are listed"),
        (
            "tensor",
            Box::new(|f| f.cluster.topology = "tensor".into()),
            "node 0: in the tensor topology every node holds a part of every layer",
        ),
    ];
    for (name, edit, want) in cases {
        let config = plan(&format!("bad-{name}.toml"), 3, 6, &[], edit);
        fails_with(&cluster_run(&config, "Once", 8, "0", "1"), want);
    }
    let junk = scratch("junk.toml");
    std::fs::write(&junk, "[cluster]\nname = 1\n").unwrap();
    fails_with(&cluster_run(&junk, "Once", 8, "0", "1"), "junk.toml: invalid type");
    fails_with(&run(&["cluster"]), "pass --chips N to plan N chips");
}

/// A node given another model image than the coordinator's refuses its link in the handshake;
/// the run stops with a line naming that node and both checksums.
#[test]
fn a_node_with_another_model_is_refused() {
    let other = scratch("other-ternary.gguf");
    let builtin = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("data/default.gguf");
    let out = run(&["convert", s(&builtin), "--quant", "ternary", "-o", s(&other)]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let config =
        plan("other-model.toml", 3, 7, &[], |f| f.chips.nodes[2].model = Some(s(&other).to_string()));
    let out = cluster_run(&config, "Once", 8, "0", "1");
    let err = stderr(&out);
    assert!(!out.status.success());
    let last = err.trim_end().lines().last().unwrap();
    assert!(last.starts_with("error: node "), "{err}");
    assert!(last.contains("node 2 holds a different model image (checksum "), "{err}");
    assert!(last.contains("the coordinator's f0fecf4f): give every node the same model"), "{err}");
}
