//! The published entry points over the host tool: the Makefile's targets (`make build`, `make
//! flash`, `make monitor`, `make cluster CHIPS=5`, `make test`) and `install.sh`. Hermetic: the
//! Makefile's command lines are read with `make -n` and parsed by this build's CLI (`--help`
//! appended, so nothing is built or flashed); `make cluster` really runs, into a scratch
//! directory; install.sh runs against stub `cargo`, `rustc`, `rustup` and `sudo` that only
//! log how they were called.

mod common;

use common::*;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_ruvllm-esp32");

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().unwrap()
}

fn make(args: &[&str], dir: &Path) -> Option<Output> {
    if !on_path("make") {
        missing("make is not installed (apt-get install make)")?;
    }
    let mut make = Command::new("make");
    make.arg("-s").arg("-f").arg(root().join("Makefile")).args(args).current_dir(dir);
    // The defaults under test, whatever the caller's environment or an outer make (`make test
    // CHIP=...` passes its variables down) sets.
    for var in ["MAKEFLAGS", "MFLAGS", "MAKELEVEL", "CHIP", "MODEL", "PORT", "CHIPS", "OUT", "RUVLLM"] {
        make.env_remove(var);
    }
    Some(make.output().unwrap())
}

/// The one command `make -n <args>` would run, split into words.
fn recipe(args: &[&str]) -> Option<Vec<String>> {
    let out = make(&[&["-n"], args].concat(), &std::env::temp_dir())?;
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(out.status.success(), "make -n {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 1, "make -n {args:?}: one command expected: {text}");
    Some(lines[0].split_whitespace().map(str::to_string).collect())
}

fn words(s: &str) -> Vec<String> {
    s.split_whitespace().map(str::to_string).collect()
}

#[test]
fn make_targets_run_the_cli_commands_they_publish() {
    let root = root();
    let tool =
        format!("cargo run --release --quiet --manifest-path {}/Cargo.toml -p ruvllm-cli --", root.display());
    let cases: [(&[&str], &str); 8] = [
        (&["build"], "build --target esp32c3 --release"),
        (&["build", "CHIP=esp32c6", "MODEL=my.gguf"], "build --target esp32c6 --release --model my.gguf"),
        (&["flash"], "flash --chip esp32c3 --port /dev/ttyUSB0"),
        (
            &["flash", "CHIP=esp32c6", "PORT=/dev/ttyACM0", "MODEL=m.gguf"],
            "flash --chip esp32c6 --port /dev/ttyACM0 --model m.gguf",
        ),
        (&["monitor"], "monitor --port /dev/ttyUSB0"),
        (&["monitor", "PORT=/dev/ttyACM1"], "monitor --port /dev/ttyACM1"),
        (&["cluster", "CHIPS=5"], "cluster --chips 5 -o cluster.toml"),
        (
            &["cluster", "CHIPS=3", "MODEL=m.gguf", "OUT=three.toml"],
            "cluster --chips 3 --model m.gguf -o three.toml",
        ),
    ];
    for (args, cli) in cases {
        let Some(got) = recipe(args) else { return };
        assert_eq!(got, words(&format!("{tool} {cli}")), "make {args:?}");
        // The installed tool instead, and the CLI accepts exactly these arguments.
        let got = recipe(&[args, &["RUVLLM=ruvllm-esp32"]].concat()).unwrap();
        assert_eq!(got, words(&format!("ruvllm-esp32 {cli}")), "make {args:?} RUVLLM=ruvllm-esp32");
        let out = Command::new(BIN).args(&got[1..]).arg("--help").output().unwrap();
        assert!(
            out.status.success(),
            "make {args:?}: {:?}: {}",
            &got[1..],
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let test = recipe(&["test"]).unwrap();
    assert_eq!(test, words(&format!("cargo test --manifest-path {}/Cargo.toml --workspace", root.display())));
}

#[test]
fn make_cluster_writes_a_five_chip_plan() {
    let dir = scratch("make-cluster");
    std::fs::create_dir_all(&dir).unwrap();
    let _ = std::fs::remove_file(dir.join("cluster.toml"));
    let Some(out) = make(&["cluster", "CHIPS=5", &format!("RUVLLM={BIN}")], &dir) else { return };
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = std::fs::read_to_string(dir.join("cluster.toml")).unwrap();
    let plan: toml::Value = toml::from_str(&text).unwrap();
    let chips = plan["chips"]["nodes"].as_array().unwrap();
    assert_eq!(chips.len(), 5, "{text}");
    // The built-in model's 5 layers, one a chip, in order.
    for (i, c) in chips.iter().enumerate() {
        assert_eq!(
            c["layers"].as_array().unwrap(),
            &[toml::Value::from(i as i64), toml::Value::from(i as i64)],
            "{text}"
        );
    }
    // A second run does not overwrite the plan: the CLI refuses, make fails.
    let again = make(&["cluster", "CHIPS=4", &format!("RUVLLM={BIN}")], &dir).unwrap();
    assert!(!again.status.success());
    assert_eq!(std::fs::read_to_string(dir.join("cluster.toml")).unwrap(), text);
}

/// A directory of stubs that log their arguments to `log` and print `reply`.
fn stubs(name: &str, tools: &[(&str, &str)]) -> (PathBuf, PathBuf) {
    let dir = scratch(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let log = dir.join("calls.log");
    for (tool, reply) in tools {
        let path = dir.join(tool);
        std::fs::write(&path, format!("#!/bin/sh\necho \"{tool} $*\" >> '{}'\n{reply}\n", log.display()))
            .unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    (dir, log)
}

fn install_sh(args: &[&str], path_dir: &Path) -> Output {
    Command::new(root().join("install.sh"))
        .args(args)
        .env("PATH", format!("{}:/usr/bin:/bin", path_dir.display()))
        .env_remove("CARGO")
        .output()
        .unwrap()
}

fn logged(log: &Path) -> String {
    std::fs::read_to_string(log).unwrap_or_default()
}

const RUSTC: (&str, &str) = ("rustc", "[ \"$1\" = --version ] && echo 'rustc 1.95.0 (stub)' || exit 1");
const CARGO: (&str, &str) = ("cargo", "exit 0");
const SUDO: (&str, &str) = ("sudo", "exit 1");
const APT: (&str, &str) = ("apt-get", "exit 1");

#[test]
fn install_sh_check_changes_nothing_and_reports() {
    let (dir, log) = stubs("install-check", &[RUSTC, CARGO, SUDO, APT, ("rustup", "exit 1")]);
    // No tool on PATH: one line naming the step, exit 1.
    let out = install_sh(&["--check"], &dir);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("missing ruvllm-esp32 (the host tool): run ./install.sh"), "{text}");
    // This build's tool: its version is the workspace's, and the tool's own check follows.
    std::os::unix::fs::symlink(BIN, dir.join("ruvllm-esp32")).unwrap();
    let out = install_sh(&["--check"], &dir);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("ok      rustc 1.95.0 (at least 1.89)"), "{text}");
    assert!(text.contains(&format!("ok      ruvllm-esp32 {} (", env!("CARGO_PKG_VERSION"))), "{text}");
    assert!(text.contains("flashing: built in (the espflash library)"), "{text}");
    assert!(
        text.contains(" ESP32-C3: ") && text.contains(" ESP32 / ESP32-S2 / ESP32-S3 (Xtensa): "),
        "{text}"
    );
    // --check only reads: rustc --version and the tool's own probes, never cargo, sudo or apt-get.
    let calls = logged(&log);
    assert!(
        !calls.lines().any(|l| l.starts_with("cargo") || l.starts_with("sudo") || l.starts_with("apt-get")),
        "{calls}"
    );
    // A stale install is named.
    std::fs::remove_file(dir.join("ruvllm-esp32")).unwrap();
    let (old, _) = stubs("install-check-old", &[RUSTC, ("ruvllm-esp32", "echo 'ruvllm-esp32 0.0.1'")]);
    let out = install_sh(&["--check"], &old);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains(&format!(
            "missing ruvllm-esp32 {}: the one on PATH is 0.0.1",
            env!("CARGO_PKG_VERSION")
        )),
        "{text}"
    );
    // Too old a compiler, and bad options.
    let (oldrust, _) = stubs("install-check-rustc", &[CARGO, ("rustc", "echo 'rustc 1.70.0'")]);
    let out = install_sh(&["--check"], &oldrust);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("missing rustc 1.89 or newer (this one is 1.70.0)"));
    for bad in [&["--frobnicate"][..], &["--check", "--yes"]] {
        let out = install_sh(bad, &dir);
        assert_eq!(out.status.code(), Some(2), "{bad:?}");
        assert_eq!(String::from_utf8_lossy(&out.stderr).lines().count(), 1, "{bad:?}");
    }
}

#[test]
fn install_sh_installs_with_cargo_and_rustup_only() {
    let (dir, log) = stubs("install-run", &[RUSTC, CARGO, SUDO, APT, ("rustup", "exit 0")]);
    std::os::unix::fs::symlink(BIN, dir.join("ruvllm-esp32")).unwrap();
    let out = install_sh(&[], &dir);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
    let calls = logged(&log);
    let root = root();
    let expected = [
        format!("cargo install --locked --path {}/crates/ruvllm-cli", root.display()),
        "rustup target add riscv32imc-unknown-none-elf".to_string(),
        "rustup target add riscv32imac-unknown-none-elf".to_string(),
    ];
    for e in &expected {
        assert!(calls.lines().any(|l| l == e), "{e:?} not run: {calls}");
        assert!(text.contains(&format!("running: {}", e)), "{text}");
    }
    assert!(!calls.lines().any(|l| l.starts_with("sudo") || l.starts_with("apt-get")), "{calls}");
    assert!(text.contains("flashing: built in (the espflash library)"), "{text}");
}

#[test]
fn flash_help_says_the_firmware_reads_the_partition_first() {
    let out = run(&["flash", "--help"]);
    let help = String::from_utf8_lossy(&out.stdout).split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(out.status.success());
    assert!(
        help.contains("The firmware reads the model from that partition, and falls back to the copy linked into the app"),
        "{help}"
    );
    assert!(!help.contains("still reads the copy"), "{help}");
}
