//! Helpers shared by the CLI's integration tests: running the binary, scratch files, and the
//! skip rule (a test that needs ../shared or the chip tools prints why it skips, except under
//! CI=true, where it fails).
#![allow(dead_code)] // each test binary uses its own subset

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};
use std::time::{Duration, Instant};

pub fn ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// Prints why the test skips, or fails under CI.
pub fn missing(what: &str) -> Option<()> {
    if ci() {
        panic!("CI=true but {what}");
    }
    eprintln!("skipping: {what}");
    None
}

/// A file of ../shared, or a skip.
pub fn shared(rel: &str) -> Option<PathBuf> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared").join(rel);
    if p.exists() {
        return Some(p);
    }
    missing(&format!("{} not found", p.display()))?;
    None
}

pub fn on_path(name: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(name).is_file()))
}

/// Debian's chip toolchain and QEMU, or a skip.
pub fn chip_tools() -> Option<()> {
    if !Path::new("/usr/bin/rustc").is_file() || !Path::new("/usr/lib/rustlib/src/rust/library").is_dir() {
        missing(
            "Debian's chip toolchain is not installed (apt-get install rustc-web cargo-web rust-web-src)",
        )?;
    }
    if !on_path("qemu-system-riscv32") {
        missing("qemu-system-riscv32 is not installed (apt-get install qemu-system-misc)")?;
    }
    Some(())
}

/// The binary with `args`, its output collected.
pub fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ruvllm-esp32")).args(args).output().expect("the binary runs")
}

/// The binary with `args`, which must succeed: its stdout and stderr.
pub fn ok(args: &[&str]) -> (String, String) {
    let out = run(args);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{args:?}: {err}");
    (String::from_utf8_lossy(&out.stdout).into_owned(), err)
}

pub fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A path in a scratch directory of this test binary and process.
pub fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("ruvllm-{}-{}", env!("CARGO_CRATE_NAME"), std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d.join(name)
}

/// Asserts a clean failure: non-zero exit, one line on stderr that contains `needle`.
pub fn fails_with(out: &Output, needle: &str) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "should fail: {err}");
    assert!(!err.contains("panicked"), "panicked: {err}");
    assert_eq!(err.trim_end().lines().count(), 1, "one line expected: {err}");
    assert!(err.starts_with("error: "), "{err}");
    assert!(err.contains(needle), "expected {needle:?} in {err}");
}

/// Waits for `child`, killing it and failing the test once `limit` has passed since `start`
/// (a hang or a quadratic loop fails the test instead of stalling the run).
pub fn wait_within(mut child: Child, start: Instant, limit: Duration, what: &str) -> Output {
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > limit {
            child.kill().unwrap();
            let out = child.wait_with_output().unwrap();
            panic!("{what} still running after {limit:?}: {}", String::from_utf8_lossy(&out.stderr));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

/// `cluster --chips N` with `extra` (a model, `--topology tensor`) into scratch file `name`,
/// then node i on loopback port `first_port + i` and `edit` applied.
pub fn plan_cluster(
    name: &str,
    chips: usize,
    extra: &[&str],
    first_port: u16,
    edit: impl FnOnce(&mut ruvllm_cli::cluster::config::ClusterFile),
) -> PathBuf {
    let path = scratch(name);
    let n = chips.to_string();
    let mut args = vec!["cluster", "--chips", &n, "-o", s(&path), "--force"];
    args.extend_from_slice(extra);
    let out = run(&args);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = std::fs::read_to_string(&path).unwrap();
    let mut file = ruvllm_cli::cluster::config::ClusterFile::parse(&text, name).unwrap();
    for (i, n) in file.chips.nodes.iter_mut().enumerate() {
        n.port = toml::Value::Integer((first_port + i as u16) as i64);
    }
    edit(&mut file);
    std::fs::write(&path, toml::to_string(&file).unwrap()).unwrap();
    path
}

/// `cluster run` of `config`, within two minutes.
pub fn cluster_run(config: &Path, prompt: &str, steps: usize, temp: &str, seed: &str) -> Output {
    let n = steps.to_string();
    let args =
        ["cluster", "run", "--config", s(config), "-p", prompt, "-n", &n, "--temp", temp, "--seed", seed];
    let child = Command::new(env!("CARGO_BIN_EXE_ruvllm-esp32"))
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    wait_within(child, Instant::now(), Duration::from_secs(120), "cluster run")
}

/// `cluster run --qemu` of `config` with `args` (prompt, steps, sampling), within 15 minutes
/// (each board's firmware is built first); it must succeed.
pub fn cluster_run_qemu(config: &Path, args: &[&str]) -> Output {
    let child = Command::new(env!("CARGO_BIN_EXE_ruvllm-esp32"))
        .args([&["cluster", "run", "--qemu", "--config", s(config)][..], args].concat())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let out = wait_within(child, Instant::now(), Duration::from_secs(900), "cluster run --qemu");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    out
}

/// What `gen --int` prints (`model`: extra arguments naming the model).
pub fn gen_int(model: &[&str], prompt: &str, steps: usize, temp: &str, seed: &str) -> Vec<u8> {
    let n = steps.to_string();
    let mut args = vec!["gen", "--int", "-p", prompt, "-n", &n, "--temp", temp, "--seed", seed];
    args.extend_from_slice(model);
    let out = run(&args);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    out.stdout
}
