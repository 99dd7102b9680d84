//! The QEMU board (`firmware/qemu-c3`): build it around a model, run it, drive its console.
//! The board is an ESP32-C3 in resources (rv32imc without FPU, 4 MiB flash, 400 KiB RAM), and
//! QEMU's `-icount shift=0` makes its instruction counts exact, so `bench --chip esp32c3`
//! reports instructions per token rather than a host-dependent time.

use crate::image;
use crate::index::Dataset;
use crate::ModelArgs;
use anyhow::{bail, Context, Result};
use ruvllm_cli::ann::{self, Mode};
use ruvllm_cli::board_flash::new_flash_file;
use ruvllm_cli::datasets::{recall_at_k, Metric, Vectors};
use ruvllm_cli::outln;
use ruvllm_esp32::convert::Quant;
use std::io::{IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

const TARGET: &str = "riscv32imc-unknown-none-elf";
const INSTALL: &str = "on Debian/Ubuntu: apt-get install rustc-web cargo-web rust-web-src qemu-system-misc \
     (and lld, or rustup's rust-lld); elsewhere point RUVLLM_CHIP_RUSTC/RUVLLM_CHIP_CARGO at a \
     rustc/cargo with the rust-src component and RUVLLM_LLD at rust-lld or ld.lld";

/// The compiler, cargo and linker that build the RISC-V chips here (Debian's rustc with its own
/// standard library source, built with build-std; see shared/TOOLCHAIN.md). The QEMU board and
/// `ruvllm-esp32 build` for the ESP32-C3/C6 both use it.
pub struct ChipCompiler {
    pub rustc: PathBuf,
    pub cargo: PathBuf,
    pub lld: PathBuf,
}

/// The programs a board build and run need.
pub struct Toolchain {
    rustc: PathBuf,
    cargo: PathBuf,
    lld: PathBuf,
    pub qemu: PathBuf,
}

fn on_path(name: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?).map(|d| d.join(name)).find(|p| p.is_file())
}

/// `name` on PATH, if it is there.
pub fn which(name: &str) -> Option<PathBuf> {
    on_path(name)
}

fn env_path(var: &str) -> Option<PathBuf> {
    std::env::var_os(var).map(PathBuf::from)
}

/// rustup's rust-lld (every rustup toolchain ships one), else an `ld.lld` on PATH.
fn find_lld() -> Option<PathBuf> {
    if let Some(p) = env_path("RUVLLM_LLD") {
        return Some(p);
    }
    let sysroot = Command::new("rustc").args(["+stable", "--print", "sysroot"]).output().ok();
    let sysroot = sysroot.filter(|o| o.status.success()).or_else(|| {
        Command::new("rustc").args(["--print", "sysroot"]).output().ok().filter(|o| o.status.success())
    });
    if let Some(o) = sysroot {
        let root = PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()).join("lib/rustlib");
        if let Ok(dirs) = std::fs::read_dir(&root) {
            for d in dirs.flatten() {
                let p = d.path().join("bin/rust-lld");
                if p.is_file() {
                    return Some(p);
                }
            }
        }
    }
    on_path("ld.lld")
}

impl ChipCompiler {
    /// Finds Debian's rustc + std source and a linker, or says what to install.
    pub fn find() -> Result<ChipCompiler> {
        let rustc = env_path("RUVLLM_CHIP_RUSTC").unwrap_or_else(|| PathBuf::from("/usr/bin/rustc"));
        let cargo = env_path("RUVLLM_CHIP_CARGO").unwrap_or_else(|| PathBuf::from("/usr/bin/cargo"));
        if !rustc.is_file() || !cargo.is_file() {
            bail!("no chip toolchain ({} / {} missing): {INSTALL}", rustc.display(), cargo.display());
        }
        let sysroot = Command::new(&rustc).args(["--print", "sysroot"]).output().context("running rustc")?;
        let src = PathBuf::from(String::from_utf8_lossy(&sysroot.stdout).trim())
            .join("lib/rustlib/src/rust/library");
        if !src.is_dir() {
            bail!(
                "{} has no standard library source ({} missing): {INSTALL}",
                rustc.display(),
                src.display()
            );
        }
        let Some(lld) = find_lld() else { bail!("no rust-lld or ld.lld found: {INSTALL}") };
        Ok(ChipCompiler { rustc, cargo, lld })
    }
}

impl Toolchain {
    /// Finds everything or says what to install.
    pub fn find() -> Result<Toolchain> {
        let ChipCompiler { rustc, cargo, lld } = ChipCompiler::find()?;
        let qemu = env_path("RUVLLM_QEMU").or_else(|| on_path("qemu-system-riscv32"));
        let Some(qemu) = qemu else { bail!("qemu-system-riscv32 not found: {INSTALL}") };
        Ok(Toolchain { rustc, cargo, lld, qemu })
    }
}

/// `firmware/` of this checkout.
pub fn firmware_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../firmware");
    std::fs::canonicalize(&dir).unwrap_or(dir)
}

/// Builds the board around `image` (an engine GGUF) and returns the ELF's path.
/// The board's engine: the integer-only path (default) or the float one with `float-engine`.
pub fn parse_engine(s: &str) -> Result<bool> {
    match s {
        "int" => Ok(false),
        "float" => Ok(true),
        _ => anyhow::bail!("unknown engine '{s}' (use int or float)"),
    }
}

pub fn build(tc: &Toolchain, image: &Path, how: BoardBuild) -> Result<PathBuf> {
    let image = std::fs::canonicalize(image).with_context(|| format!("{}: cannot read", image.display()))?;
    let features: Vec<&str> = [
        (how.corrupt, "corrupt-image"),
        (how.float_engine, "float-engine"),
        (how.kernels, "kernel-profile"),
        (how.lean, "lean"),
    ]
    .iter()
    .filter(|(on, _)| *on)
    .map(|(_, f)| *f)
    .collect();
    cargo_build(tc, &features, &[("RUVLLM_MODEL", &image)])
}

/// The board's RAM by part, from its `stats json` after `bench` (bytes).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RamParts {
    /// The engine's arena: activations and KV cache.
    pub arena: u64,
    pub rag_store: u64,
    pub memory: u64,
    pub anomaly_detector: u64,
    /// The rest of the console's knowledge value: its embedders.
    pub embedders: u64,
    /// Static RAM besides the arena and the knowledge: a MicroLoRA adapter, a draft's state,
    /// attention-pattern scratch (the UART is memory-mapped: no RAM).
    pub other_static: u64,
    /// The stack's high-water mark; the console value lives on it.
    pub stack: u64,
    pub console: u64,
}

impl RamParts {
    /// The figures of one `stats json` line, when the board measured its RAM.
    fn parse(text: &str) -> Option<RamParts> {
        let line = text.lines().find(|l| l.trim_start().starts_with('{'))?;
        let v: serde_json::Value = serde_json::from_str(line.trim()).ok()?;
        let ram = v.get("ram")?;
        let n = |k: &str| ram.get(k).and_then(serde_json::Value::as_u64);
        let (arena, knowledge) = (n("arena")?, n("knowledge")?);
        let (rag_store, memory, anomaly_detector) = (n("rag_store")?, n("memory")?, n("anomaly_detector")?);
        Some(RamParts {
            arena,
            rag_store,
            memory,
            anomaly_detector,
            embedders: knowledge.checked_sub(rag_store + memory + anomaly_detector)?,
            other_static: n("static")?.checked_sub(arena + knowledge)?,
            stack: n("stack_high_water")?,
            console: n("console")?,
        })
    }

    fn rows(&self) -> [(&'static str, u64); 7] {
        [
            ("model: activations + KV cache", self.arena),
            ("RAG store", self.rag_store),
            ("semantic memory", self.memory),
            ("anomaly detector", self.anomaly_detector),
            ("embedders", self.embedders),
            ("other static (adapter, draft, patterns)", self.other_static),
            ("stack high-water (console included)", self.stack),
        ]
    }

    fn print(&self) -> Result<()> {
        outln!("RAM by part (the board's `stats json` after the bench):");
        for (what, n) in self.rows() {
            outln!("  {what:<38} {n:>7} bytes");
        }
        outln!("  (the console value on the stack: {} bytes)", self.console);
        Ok(())
    }

    fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "arena": self.arena,
            "rag_store": self.rag_store,
            "memory": self.memory,
            "anomaly_detector": self.anomaly_detector,
            "embedders": self.embedders,
            "other_static": self.other_static,
            "stack_high_water": self.stack,
            "console": self.console,
        })
    }
}

/// Builds the board as one node of a federated pipeline around `image`: `node` is
/// `id:first:last` (its layers, inclusive); the ELF's path.
pub fn build_node(tc: &Toolchain, image: &Path, node: &str, tensor: Option<&str>) -> Result<PathBuf> {
    let image = std::fs::canonicalize(image).with_context(|| format!("{}: cannot read", image.display()))?;
    let mut env = vec![("RUVLLM_MODEL", image.as_path()), ("RUVLLM_NODE", Path::new(node))];
    // index:nodes of a tensor-parallel split; a pipeline node has none (an empty value).
    env.push(("RUVLLM_TENSOR", Path::new(tensor.unwrap_or(""))));
    cargo_build(tc, &["federation-node"], &env)
}

/// Builds `firmware/qemu-c3` for the chip with `features` and the build script's inputs in
/// `env`; returns the ELF's path. Failures come back as the compiler's error lines.
fn cargo_build(tc: &Toolchain, features: &[&str], env: &[(&str, &Path)]) -> Result<PathBuf> {
    let dir = firmware_dir();
    let mut cmd = Command::new(&tc.cargo);
    cmd.current_dir(&dir).args(["build", "--release", "-p", "qemu-c3"]);
    if !features.is_empty() {
        cmd.args(["--features", &features.join(",")]);
    }
    scrub_cargo_env(&mut cmd);
    cmd.env("RUSTC", &tc.rustc)
        .env("RUSTC_BOOTSTRAP", "1")
        .env("CARGO_TARGET_RISCV32IMC_UNKNOWN_NONE_ELF_LINKER", &tc.lld);
    for (k, v) in env {
        cmd.env(k, v);
    }
    eprintln!(
        "building the board in {} (the first build compiles core for {TARGET}, about a minute)",
        dir.display()
    );
    let out = cmd.output().with_context(|| format!("running {}", tc.cargo.display()))?;
    if !out.status.success() {
        bail!("the board build failed:\n{}", cargo_errors(&out.stderr));
    }
    Ok(dir.join("target").join(TARGET).join("release/qemu-c3"))
}

/// Whatever cargo invoked us (tests) must not steer a chip build.
pub fn scrub_cargo_env(cmd: &mut Command) {
    for (k, _) in std::env::vars_os() {
        let k = k.to_string_lossy();
        let keep =
            ["CARGO_HOME", "CARGO_NET_", "CARGO_HTTP_", "CARGO_REGISTR"].iter().any(|p| k.starts_with(p));
        if (k.starts_with("CARGO_") && !keep)
            || k.starts_with("RUSTC_")
            || k.contains("RUSTFLAGS")
            || k == "RUSTDOC"
        {
            cmd.env_remove(k.as_ref());
        }
    }
}

/// Bytes the ELF puts in flash (loadable segments whose load address is in the 4 MiB flash).
pub fn flash_bytes(elf: &[u8]) -> Option<u64> {
    let u16_at = |o: usize| elf.get(o..o + 2).map(|b| u16::from_le_bytes([b[0], b[1]]));
    let u32_at = |o: usize| elf.get(o..o + 4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]));
    if elf.get(..5)? != b"\x7fELF\x01" {
        return None;
    }
    let (phoff, phentsize, phnum) = (u32_at(0x1C)? as usize, u16_at(0x2A)? as usize, u16_at(0x2C)? as usize);
    let flash = 0x8000_0000u32..0x8040_0000;
    let mut total = 0u64;
    for i in 0..phnum {
        let ph = phoff.checked_add(i.checked_mul(phentsize)?)?;
        let (kind, paddr, filesz) = (u32_at(ph)?, u32_at(ph + 12)?, u32_at(ph + 16)?);
        if kind == 1 && flash.contains(&paddr) {
            total += u64::from(filesz);
        }
    }
    Some(total)
}

/// The environment variable naming the board's flash file (kept across runs; created when
/// missing). Without it each run gets a fresh scratch file.
pub const FLASH_ENV: &str = "RUVLLM_BOARD_FLASH";

/// Removes a scratch directory when dropped.
struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The board's flash file: `$RUVLLM_BOARD_FLASH` (created when missing) or a new one in
/// `scratch` (the caller removes it).
pub fn flash_file(scratch: &Path) -> Result<PathBuf> {
    if let Some(p) = env_path(FLASH_ENV) {
        if !p.exists() {
            new_flash_file(&p)?;
        }
        return Ok(p);
    }
    std::fs::create_dir_all(scratch).with_context(|| format!("{}: cannot create", scratch.display()))?;
    let p = scratch.join("flash.bin");
    new_flash_file(&p)?;
    Ok(p)
}

/// The QEMU command line of the board with `flash` as its flash bank.
pub fn qemu_with_flash(tc: &Toolchain, elf: &Path, flash: &Path) -> Command {
    with_flash(qemu(tc, elf), flash)
}

fn with_flash(mut cmd: Command, flash: &Path) -> Command {
    let mut drive = std::ffi::OsString::from("if=pflash,unit=0,format=raw,file=");
    drive.push(flash);
    cmd.arg("-drive").arg(drive);
    cmd
}

/// The QEMU command line of the board, its UART on QEMU's stdin/stdout.
pub fn qemu(tc: &Toolchain, elf: &Path) -> Command {
    qemu_serial(tc, elf, &["-serial", "stdio"])
}

/// The UART on this terminal: Ctrl-C reaches the board's console (where it stops a
/// generation) instead of ending QEMU; Ctrl-A x ends QEMU.
const TERMINAL_SERIAL: [&str; 4] = ["-chardev", "stdio,id=con,mux=on,signal=off", "-serial", "chardev:con"];

pub fn qemu_serial(tc: &Toolchain, elf: &Path, serial: &[&str]) -> Command {
    let mut cmd = Command::new(&tc.qemu);
    cmd.args([
        "-machine",
        "virt",
        "-cpu",
        "rv32,a=false,f=false,d=false",
        "-bios",
        "none",
        "-nographic",
        "-monitor",
        "none",
    ])
    .args(serial)
    .args(["-icount", "shift=0", "-kernel"])
    .arg(elf);
    cmd
}

/// A running board whose console is driven over its serial port.
pub struct Session {
    child: Child,
    stdin: ChildStdin,
    rx: Receiver<Vec<u8>>,
    /// Output received and not yet consumed by [`Session::expect`].
    buf: Vec<u8>,
}

impl Session {
    pub fn start(tc: &Toolchain, elf: &Path) -> Result<Session> {
        Self::spawn(qemu(tc, elf), tc)
    }

    /// [`Session::start`] with `flash` as the board's flash bank.
    pub fn start_with_flash(tc: &Toolchain, elf: &Path, flash: &Path) -> Result<Session> {
        Self::spawn(qemu_with_flash(tc, elf, flash), tc)
    }

    fn spawn(mut cmd: Command, tc: &Toolchain) -> Result<Session> {
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("starting {}", tc.qemu.display()))?;
        let stdin = child.stdin.take().context("qemu stdin")?;
        let mut stdout = child.stdout.take().context("qemu stdout")?;
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut chunk = [0u8; 4096];
            while let Ok(n @ 1..) = stdout.read(&mut chunk) {
                if tx.send(chunk[..n].to_vec()).is_err() {
                    break;
                }
            }
        });
        Ok(Session { child, stdin, rx, buf: Vec::new() })
    }

    pub fn send(&mut self, bytes: &[u8]) -> Result<()> {
        self.stdin.write_all(bytes).and_then(|_| self.stdin.flush()).context("writing to the board")
    }

    /// Everything up to and including `needle`, waiting at most `timeout`.
    pub fn expect(&mut self, needle: &str, timeout: Duration) -> Result<String> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(i) = find(&self.buf, needle.as_bytes()) {
                let rest = self.buf.split_off(i + needle.len());
                let got = std::mem::replace(&mut self.buf, rest);
                return Ok(String::from_utf8_lossy(&got).into_owned());
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(chunk) => self.buf.extend_from_slice(&chunk),
                Err(_) => bail!(
                    "the board did not print {needle:?} within {timeout:?}; it printed: {}",
                    String::from_utf8_lossy(&self.buf)
                ),
            }
        }
    }

    /// Waits for QEMU to exit and returns its status code.
    pub fn wait(mut self, timeout: Duration) -> Result<i32> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = self.child.try_wait()? {
                return Ok(s.code().unwrap_or(-1));
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                bail!("the board did not exit within {timeout:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// The console prompt after a command's output.
const PROMPT: &str = "\r\n> ";

/// Converts the model into a scratch file the build can embed.
/// The board's model image written to `dir`: its path, its length, and the bytes of it one
/// token reads (all from flash on a chip).
fn board_image(args: &ModelArgs, dir: &Path, quant: Quant) -> Result<(PathBuf, usize, Option<usize>)> {
    let img = image::load(args.model.as_deref(), args.tokenizer.as_deref(), Some(quant))?;
    let model = img.model().with_context(|| format!("the {} image does not load", quant.name()))?;
    let per_token = ruvllm_esp32::infer::IntState::flash_bytes_per_token(&model).ok();
    std::fs::create_dir_all(dir).with_context(|| format!("{}: cannot create", dir.display()))?;
    let path = dir.join(format!("model-{}.gguf", image::quant_name(quant)));
    std::fs::write(&path, img.bytes()).with_context(|| format!("{}: cannot write", path.display()))?;
    Ok((path, img.bytes().len(), per_token))
}

fn scratch_dir() -> PathBuf {
    std::env::temp_dir().join(format!("ruvllm-board-{}", std::process::id()))
}

/// `board`: build the board around a model; run it on this terminal, or only write the ELF.
/// What `board` builds besides the console board.
#[derive(Clone, Copy, Debug, Default)]
pub struct BoardBuild {
    /// The image with one byte flipped.
    pub corrupt: bool,
    /// The sparse-kernel benchmark instead of the console.
    pub sparse_bench: bool,
    /// The float engine instead of the integer-only one.
    pub float_engine: bool,
    /// A counter read around each kernel (`--kernels`).
    pub kernels: bool,
    /// No adapter, draft or pattern scratch in RAM (`--lean`).
    pub lean: bool,
}

pub fn run_board(
    args: &ModelArgs,
    quant: &str,
    elf_out: Option<&Path>,
    how: BoardBuild,
    engine: &str,
    flash_image: Option<&Path>,
) -> Result<()> {
    let float_engine = parse_engine(engine)?;
    let chip_image = flash_image.map(ruvllm_cli::board_flash::read_chip_image).transpose()?;
    let quant = image::parse_quant(quant)?;
    let tc = Toolchain::find()?;
    let dir = scratch_dir();
    let (image, _, _) = board_image(args, &dir, quant)?;
    let elf = match how.sparse_bench {
        true => std::fs::canonicalize(&image)
            .map_err(anyhow::Error::from)
            .and_then(|image| cargo_build(&tc, &["sparse-bench"], &[("RUVLLM_MODEL", &image)])),
        false => build(&tc, &image, BoardBuild { float_engine, ..how }),
    };
    let _ = std::fs::remove_dir_all(&dir);
    let elf = elf?;
    if let Some(out) = elf_out {
        std::fs::copy(&elf, out).with_context(|| format!("{}: cannot write", out.display()))?;
        outln!("{}", out.display());
        return Ok(());
    }
    if how.sparse_bench {
        // It prints its records and exits: nothing to type.
        let status = qemu(&tc, &elf).stdin(std::process::Stdio::null()).status().context("starting qemu")?;
        return match status.code() {
            Some(0) => Ok(()),
            _ => bail!("the sparse-kernel benchmark failed ({status})"),
        };
    }
    let flash = flash_file(&dir)?;
    if let Some(bytes) = &chip_image {
        ruvllm_cli::board_flash::put_chip_image(&flash, bytes)?;
    }
    let status = if std::io::stdin().is_terminal() {
        eprintln!(
            "running {} with flash {} (type quit to leave; Ctrl-C stops a generation, Ctrl-A x stops QEMU)",
            elf.display(),
            flash.display()
        );
        let mut cmd = with_flash(qemu_serial(&tc, &elf, &TERMINAL_SERIAL), &flash);
        cmd.status().context("starting qemu").map(|s| s.code())
    } else {
        eprintln!("running {} with flash {}", elf.display(), flash.display());
        Session::start_with_flash(&tc, &elf, &flash).and_then(piped)
    };
    let _ = std::fs::remove_dir_all(&dir);
    match status? {
        Some(0) => Ok(()),
        Some(code) => bail!("the board exited with status {code}"),
        None => bail!("the board was stopped by a signal"),
    }
}

/// Drives the board with piped stdin, paced as `console --port` paces it (a line after each
/// prompt), its output to stdout. Ends when the board exits (`quit`: its status), or once the
/// input has ended and the board has answered the last line (QEMU is stopped: status 0).
fn piped(mut s: Session) -> Result<Option<i32>> {
    let input = ruvllm_cli::serial::stdin_chunks();
    let mut pacer = ruvllm_cli::serial::Pacer::default();
    let mut input_done = false;
    let mut stdout = std::io::stdout();
    loop {
        while !input_done {
            match input.try_recv() {
                Ok(Some(bytes)) => pacer.input(&bytes),
                Ok(None) | Err(mpsc::TryRecvError::Disconnected) => input_done = true,
                Err(mpsc::TryRecvError::Empty) => break,
            }
        }
        if let Some(line) = pacer.next_line() {
            // A board that has just quit no longer reads; its exit status tells the rest.
            let _ = s.send(&line);
        }
        match s.rx.recv_timeout(Duration::from_millis(20)) {
            Ok(bytes) => {
                pacer.output(&bytes);
                stdout.write_all(&bytes).and_then(|_| stdout.flush()).context("writing to stdout")?;
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            // QEMU closed its output: the board exited.
            Err(mpsc::RecvTimeoutError::Disconnected) => return Ok(s.child.wait()?.code()),
        }
        if input_done && pacer.answered() {
            return Ok(Some(0));
        }
    }
}

/// `bench --chip esp32c3`: instructions per token by position and peak RAM on the board.
pub fn bench(
    args: &ModelArgs,
    chip: &str,
    engine: &str,
    quant: &str,
    json: bool,
    kernels: bool,
    lean: bool,
) -> Result<()> {
    let float_engine = parse_engine(engine)?;
    if kernels && float_engine {
        bail!("--kernels measures the integer engine's kernels: drop --engine float");
    }
    let quant = image::parse_quant(quant)?;
    if quant == Quant::F32 {
        bail!("--quant f32: an f32 image does not fit the ESP32-C3's RAM (use q8, ternary or binary)");
    }
    check_chip(chip)?;
    let tc = Toolchain::find()?;
    let dir = scratch_dir();
    let (image, image_len, flash_per_token) = board_image(args, &dir, quant)?;
    let elf = build(&tc, &image, BoardBuild { float_engine, kernels, lean, ..BoardBuild::default() });
    let _ = std::fs::remove_dir_all(&dir);
    let elf = elf?;
    let flash = std::fs::read(&elf).ok().and_then(|b| flash_bytes(&b));

    let _scratch = RemoveOnDrop(dir.clone());
    let flash_file = flash_file(&dir)?;
    let mut s = Session::start_with_flash(&tc, &elf, &flash_file)?;
    let boot = s.expect(PROMPT.trim_start_matches("\r\n"), Duration::from_secs(120))?;
    if boot.contains("error:") {
        bail!("the board refused to start: {}", boot.trim());
    }
    s.send(b"bench\n")?;
    let report = s.expect("peak RAM:", Duration::from_secs(3600))?;
    let ram_line = s.expect(PROMPT, Duration::from_secs(60))?;
    s.send(b"stats json\n")?;
    let parts = RamParts::parse(&s.expect(PROMPT, Duration::from_secs(60))?);
    s.send(b"quit\n")?;
    let _ = s.expect("bye", Duration::from_secs(10));
    let _ = s.wait(Duration::from_secs(10));

    let engine_name =
        if float_engine { "float engine (scalar f32 kernels, soft-float)" } else { "integer-only engine" };
    let mut lines = Vec::new();
    let mut positions = Vec::new();
    let mut average = None;
    let mut kernel_rows: Vec<(String, u64)> = Vec::new();
    for line in report.lines() {
        if let Some(rest) = line.strip_prefix("instructions/token ") {
            let rest = rest.trim_end();
            lines.push(format!("instructions/token {rest}"));
            // "at position N: COUNT"
            let pair = rest.strip_prefix("at position ").and_then(|r| r.split_once(": "));
            if let Some((Ok(p), Ok(n))) = pair.map(|(p, n)| (p.parse::<u64>(), n.trim().parse::<u64>())) {
                positions.push(serde_json::json!({"position": p, "instructions": n}));
            }
            // "average over positions A-B: COUNT"
            let avg = rest.strip_prefix("average over positions ").and_then(|r| r.split_once(": "));
            if let Some((range, n)) = avg {
                let (a, b) = range.split_once('-').unwrap_or((range, range));
                if let (Ok(a), Ok(b), Ok(n)) = (a.parse::<u64>(), b.parse::<u64>(), n.trim().parse::<u64>()) {
                    average = Some(serde_json::json!({"from": a, "to": b, "instructions": n}));
                }
            }
        } else if let Some((name, n)) = line.strip_prefix("kernel ").and_then(|r| r.split_once(": ")) {
            if let Ok(n) = n.trim().trim_end_matches("/token").parse::<u64>() {
                kernel_rows.push((name.to_string(), n));
            }
        } else if line.starts_with("error:") {
            bail!("the board reported: {line}");
        }
    }
    if lines.is_empty() {
        bail!("the board printed no figures: {report}");
    }
    let ram = ram_line.trim_end_matches(PROMPT).trim().to_string();
    if json {
        // "peak RAM: N bytes (static S + stack high-water H)"
        let nums: Vec<u64> =
            ram.split(|c: char| !c.is_ascii_digit()).filter_map(|t| t.parse().ok()).collect();
        let v = serde_json::json!({
            "chip": "esp32c3",
            "board": "QEMU virt, rv32imc without FPU, 4 MiB flash, 400 KiB RAM; exact instruction counts",
            "model": args.name(),
            "precision": quant.name(),
            "engine": if float_engine { "float" } else { "int" },
            "instructions_per_token": positions,
            "instructions_per_token_average": average,
            "peak_ram_bytes": nums.first(),
            "static_ram_bytes": nums.get(1),
            "stack_high_water_bytes": nums.get(2),
            "flash_image_bytes": flash,
            "model_image_bytes": image_len,
            "flash_bytes_per_token": flash_per_token,
            "lean": lean,
            "ram_by_part_bytes": parts.as_ref().map(RamParts::json),
            "kernels_per_token_average_0_127": kernel_rows
                .iter()
                .map(|(k, n)| serde_json::json!({"kernel": k, "instructions": n}))
                .collect::<Vec<_>>(),
        });
        outln!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    outln!(
        "chip: esp32c3 (QEMU virt, rv32imc without FPU, 4 MiB flash, 400 KiB RAM; exact instruction counts)"
    );
    outln!("model: {} as {}, {engine_name}", args.name(), quant.name());
    for l in &lines {
        outln!("{l}");
    }
    if !kernel_rows.is_empty() {
        let total: u64 = kernel_rows.iter().map(|(_, n)| n).sum::<u64>().max(1);
        outln!("per kernel, instructions/token averaged over positions 0-127 (board built with a counter read around each kernel):");
        for (k, n) in &kernel_rows {
            outln!("  {k:<17} {n:>10}  {:>5.1}%", 100.0 * *n as f64 / total as f64);
        }
    }
    if let Some(n) = average.as_ref().and_then(|a| a["instructions"].as_u64()) {
        // What the published "~4 ms/token at 240 MHz" compares with; a real C3 also waits on
        // its flash cache, which QEMU does not model.
        let ms = |mhz: f64| n as f64 / (mhz * 1e3);
        outln!(
            "time/token at one instruction a cycle (average 0-127): {:.2} ms at 160 MHz, {:.2} ms at 240 MHz",
            ms(160.0),
            ms(240.0)
        );
    }
    outln!("peak RAM: {ram}");
    if let Some(p) = &parts {
        p.print()?;
    }
    match flash {
        Some(f) => outln!("flash image: {f} bytes (ELF in flash; the model image is {image_len} of them)"),
        None => outln!("flash image: model image {image_len} bytes"),
    }
    // A real chip streams these through its 16 KiB flash cache every token.
    if let Some(bytes) = flash_per_token {
        let ceiling = |mb_s: f64| mb_s * 1e6 / bytes.max(1) as f64;
        outln!(
            "flash read per token: {bytes} bytes (at most {:.0} tokens/s at 40 MB/s, {:.0} at 80 MB/s)",
            ceiling(40.0),
            ceiling(80.0)
        );
    }
    Ok(())
}

/// `index bench --chip esp32c3`: what the board measures and against what.
pub struct VectorBench<'a> {
    pub data: &'a Dataset,
    pub mode: Mode,
    pub metric: Metric,
    pub k: usize,
    pub m: usize,
    pub ef_construction: usize,
    /// One pass over the queries each (at most [`MAX_EFS`]).
    pub ef_search: &'a [usize],
    pub seed: u64,
}

/// The vector blob's magic and header size (see `firmware/qemu-c3/build.rs`).
const VB_MAGIC: &[u8; 4] = b"RVVB";
/// Most ef_search values one board run measures.
pub const MAX_EFS: usize = 8;

/// Refuses what the board cannot run, with one clear line each.
fn check_vector_bench(chip: &str, b: &VectorBench) -> Result<()> {
    check_chip(chip)?;
    let ef_max = ruvllm_esp32::vector::hnsw::EF_MAX;
    let (n, dim) = (b.data.base.len(), b.data.base.dim);
    if b.mode == Mode::Pq {
        bail!("--mode pq: the board runs HNSW only (use f32, i8 or binary with --chip)");
    }
    if n >= 65535 {
        bail!("{n} base vectors: the board's index holds at most 65534 (u16 ids); use --max-base");
    }
    if b.k == 0 || b.k > ef_max {
        bail!("-k {}: the board returns 1 to {ef_max} neighbours", b.k);
    }
    if !(2..=ef_max / 4).contains(&b.m) {
        bail!("--m {}: the board's index takes 2 to {} (level 0 gets 2 m links)", b.m, ef_max / 4);
    }
    if b.ef_construction == 0 || b.ef_construction > ef_max {
        bail!("--ef-construction {}: use 1 to {ef_max}", b.ef_construction);
    }
    if b.ef_search.is_empty() || b.ef_search.len() > MAX_EFS {
        bail!("--ef-search: give 1 to {MAX_EFS} values for one board run");
    }
    if let Some(ef) = b.ef_search.iter().find(|&&e| e == 0 || e > ef_max) {
        bail!("--ef-search {ef}: use 1 to {ef_max}");
    }
    if dim == 0 {
        bail!("the vectors have no dimensions");
    }
    Ok(())
}

/// The board has one chip so far.
pub fn check_chip(chip: &str) -> Result<()> {
    if chip != "esp32c3" {
        bail!("--chip {chip}: only esp32c3 has a QEMU board so far");
    }
    Ok(())
}

/// The blob the `vector-bench` firmware links into flash: header, base vectors, queries.
fn vector_blob(b: &VectorBench) -> Vec<u8> {
    let d = b.data;
    let storage = match b.mode {
        Mode::F32 => 0u32,
        Mode::I8 => 1,
        _ => 2,
    };
    let mut out = VB_MAGIC.to_vec();
    let fields = [
        d.base.len() as u32,
        d.queries.len() as u32,
        d.base.dim as u32,
        b.k as u32,
        storage,
        b.m as u32,
        b.ef_construction as u32,
        b.metric as u32,
        b.ef_search.len() as u32,
    ];
    for f in fields {
        out.extend_from_slice(&f.to_le_bytes());
    }
    out.extend_from_slice(&b.seed.to_le_bytes());
    for i in 0..MAX_EFS {
        out.extend_from_slice(&(b.ef_search.get(i).copied().unwrap_or(0) as u32).to_le_bytes());
    }
    // Binary storage keeps signs, so the vectors are centred on the base mean first, as the
    // host's index does (`ann`).
    let center = (b.mode == Mode::Binary).then(|| ann::mean(&d.base));
    for row in d.base.data.chunks_exact(d.base.dim).chain(d.queries.data.chunks_exact(d.base.dim)) {
        for (i, x) in row.iter().enumerate() {
            let x = center.as_ref().map_or(*x, |c| x - c[i]);
            out.extend_from_slice(&x.to_le_bytes());
        }
    }
    out
}

/// One pass of the board over the queries.
struct Pass {
    /// 0: the brute-force scan (`search_exact`).
    ef: usize,
    /// Instructions of each search.
    instructions: Vec<u64>,
    /// Result ids, `k` a query (`u32::MAX` where fewer came back).
    found: Vectors<u32>,
}

/// What the board printed.
struct BoardReport {
    insert_total: u64,
    insert_min: u64,
    insert_max: u64,
    passes: Vec<Pass>,
    index_bytes: u64,
    static_bytes: u64,
    /// Stack high-water marks while inserting and while searching.
    insert_stack: u64,
    search_stack: u64,
}

fn parse_vector_report(text: &str, nq: usize, k: usize) -> Result<BoardReport> {
    let num = |s: Option<&str>| -> Result<u64> {
        s.and_then(|s| s.parse().ok())
            .with_context(|| format!("the board printed an unreadable line: {text}"))
    };
    let mut insert = None;
    let mut ram = None;
    let mut passes: Vec<Pass> = Vec::new();
    for line in text.lines().map(str::trim) {
        if line.starts_with("error:") || line.starts_with("panic:") {
            bail!("the board reported: {line}");
        }
        let mut f = line.split(' ');
        if f.next() != Some("vb") {
            continue;
        }
        match f.next() {
            Some("insert") => insert = Some((num(f.next())?, num(f.next())?, num(f.next())?)),
            Some(tag @ ("ef" | "exact")) => passes.push(Pass {
                ef: if tag == "ef" { num(f.next())? as usize } else { 0 },
                instructions: Vec::with_capacity(nq),
                found: Vectors { dim: k, data: Vec::with_capacity(nq * k) },
            }),
            Some("q") => {
                let Some(p) = passes.last_mut() else { bail!("the board printed a query before its pass") };
                let _query = num(f.next())?;
                p.instructions.push(num(f.next())?);
                let mut ids: Vec<u32> = f.map(|s| num(Some(s)).map(|v| v as u32)).collect::<Result<_>>()?;
                ids.resize(k, u32::MAX);
                p.found.data.extend_from_slice(&ids);
            }
            Some("ram") => ram = Some((num(f.next())?, num(f.next())?, num(f.next())?, num(f.next())?)),
            _ => {}
        }
    }
    let (
        Some((insert_total, insert_min, insert_max)),
        Some((index_bytes, static_bytes, insert_stack, search_stack)),
    ) = (insert, ram)
    else {
        bail!("the board's report is incomplete: {text}");
    };
    if passes.len() < 2 || passes.iter().any(|p| p.instructions.len() != nq) {
        bail!("the board did not answer every query: {text}");
    }
    Ok(BoardReport {
        insert_total,
        insert_min,
        insert_max,
        passes,
        index_bytes,
        static_bytes,
        insert_stack,
        search_stack,
    })
}

/// The host's index (`index bench` without --chip) over the same data, for the comparison of
/// result ids; `None` when the host has no instance for these parameters.
fn host_ids(b: &VectorBench) -> Option<Vec<Vectors<u32>>> {
    let params = ann::Params {
        metric: b.metric,
        m: b.m,
        ef_construction: b.ef_construction,
        ef_search: b.ef_search[0],
        seed: b.seed,
        ..ann::Params::default()
    };
    let mut index = ann::build(b.mode, &params, &b.data.base, &mut |_| {}).ok()?;
    let q = &b.data.queries;
    let mut out = Vec::with_capacity(b.k);
    let mut all = Vec::new();
    for &ef in b.ef_search {
        index.set_ef(ef);
        let mut found = Vectors { dim: b.k, data: Vec::with_capacity(q.len() * b.k) };
        for i in 0..q.len() {
            index.search(q.row(i), b.k, &mut out);
            out.resize(b.k, u32::MAX);
            found.data.extend_from_slice(&out);
        }
        all.push(found);
    }
    Some(all)
}

/// `index bench --chip esp32c3`: builds the board around the vectors, runs it, and prints
/// instructions per insert and per search, recall against the host's exact ground truth, and
/// the index's RAM.
pub fn vector_bench(chip: &str, b: &VectorBench) -> Result<()> {
    check_vector_bench(chip, b)?;
    let tc = Toolchain::find()?;
    let dir = scratch_dir();
    std::fs::create_dir_all(&dir).with_context(|| format!("{}: cannot create", dir.display()))?;
    let blob = dir.join("vectors.bin");
    let elf = dir.join("vector-bench.elf");
    let built = std::fs::write(&blob, vector_blob(b))
        .with_context(|| format!("{}: cannot write", blob.display()))
        .and_then(|()| cargo_build(&tc, &["vector-bench"], &[("RUVLLM_VECTORS", &blob)]))
        // Another build may reuse the target's ELF path as soon as cargo's lock is released.
        .and_then(|built| std::fs::copy(&built, &elf).context("copying the board's ELF"));
    let report = built.and_then(|_| {
        let (n, dim) = (b.data.base.len(), b.data.base.dim);
        let mut s = Session::start(&tc, &elf)?;
        // The board runs about 100 million instructions a second.
        let text = s.expect("vb end", Duration::from_secs(600))?;
        let _ = s.wait(Duration::from_secs(10));
        let r = parse_vector_report(&text, b.data.queries.len(), b.k);
        r.with_context(|| format!("the board's run over {n} vectors of {dim} dims"))
    });
    let _ = std::fs::remove_dir_all(&dir);
    let r = report.map_err(|e| {
        let msg = format!("{e:#}");
        if msg.contains("will not fit in region 'RAM'") || msg.contains("ERROR(qemu-c3)") {
            anyhow::anyhow!(
                "the index over {} vectors of {} dims ({}, m {}) does not fit the ESP32-C3's 400 KiB RAM: \
                 use fewer vectors (--max-base), --mode i8 or binary, or a smaller --m",
                b.data.base.len(),
                b.data.base.dim,
                format!("{:?}", b.mode).to_lowercase(),
                b.m
            )
        } else if msg.contains("will not fit in region 'FLASH'") {
            anyhow::anyhow!("the vectors do not fit the board's 4 MiB flash: use --max-base / --max-queries")
        } else {
            e
        }
    })?;

    let (d, nq) = (b.data, b.data.queries.len());
    let mode = format!("{:?}", b.mode).to_lowercase();
    outln!("chip: esp32c3 (QEMU virt, rv32imc without FPU, 400 KiB RAM; exact instruction counts)");
    outln!("dataset: {} base vectors of {} dims; {nq} queries ({})", d.base.len(), d.base.dim, d.source);
    outln!(
        "index: HNSW {mode}, {} vectors of {} dims, m {} (level 0: {}), ef_construction {}",
        d.base.len(),
        d.base.dim,
        b.m,
        2 * b.m,
        b.ef_construction
    );
    outln!(
        "instructions/insert: {} (mean; min {}, max {})",
        r.insert_total / d.base.len() as u64,
        r.insert_min,
        r.insert_max
    );
    let host = host_ids(b);
    for (i, p) in r.passes.iter().enumerate() {
        let mean = p.instructions.iter().sum::<u64>() / nq as u64;
        if p.ef == 0 {
            // The storage's own exact answer: what the graph search can reach at best.
            outln!(
                "instructions/exact search: {mean} (mean over {nq} queries, k {}, a scan of all {} vectors)",
                b.k,
                d.base.len()
            );
            outln!("exact-scan recall@{}: {:.4}", b.k, recall_at_k(&p.found, &d.truth, b.k));
            continue;
        }
        // The library searches with max(ef_search, k) candidates.
        let raised = if p.ef < b.k { ", raised to k" } else { "" };
        outln!("instructions/search: {mean} (mean over {nq} queries, k {}, ef_search {}{raised})", b.k, p.ef);
        outln!("recall@1: {:.4}", recall_at_k(&p.found, &d.truth, 1));
        outln!("recall@{}: {:.4}", b.k, recall_at_k(&p.found, &d.truth, b.k));
        if let Some(h) = host.as_ref().and_then(|h| h.get(i)) {
            let same = (0..nq).filter(|&q| h.row(q) == p.found.row(q)).count();
            outln!("same result ids as the host's index: {same} of {nq} queries");
        }
    }
    outln!(
        "index RAM: {} bytes (size_of the index value, in .bss); static RAM: {} bytes; stack peak: {} bytes \
         (inserting; searching: {} bytes)",
        r.index_bytes,
        r.static_bytes,
        r.insert_stack,
        r.search_stack
    );
    Ok(())
}

/// The error lines of a failed cargo build's stderr, without the linker's command line
/// (thousands of characters): at most 20.
pub(crate) fn cargo_errors(stderr: &[u8]) -> String {
    let err = String::from_utf8_lossy(stderr);
    let lines: Vec<&str> = err
        .lines()
        .filter(|l| l.len() < 400 && l.to_ascii_lowercase().contains("error"))
        .take(20)
        .map(str::trim)
        .collect();
    lines.join("\n")
}
