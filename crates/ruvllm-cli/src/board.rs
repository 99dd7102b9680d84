//! The QEMU board (`firmware/qemu-c3`): build it around a model, run it, drive its console.
//! The board is an ESP32-C3 in resources (rv32imc without FPU, 4 MiB flash, 400 KiB RAM), and
//! QEMU's `-icount shift=0` makes its instruction counts exact, so `bench --chip esp32c3`
//! reports instructions per token rather than a host-dependent time.

use crate::image;
use crate::ModelArgs;
use anyhow::{bail, Context, Result};
use ruvllm_esp32::convert::Quant;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

const TARGET: &str = "riscv32imc-unknown-none-elf";
const INSTALL: &str = "on Debian/Ubuntu: apt-get install rustc-web cargo-web rust-web-src qemu-system-misc \
     (and lld, or rustup's rust-lld); elsewhere point RUVLLM_CHIP_RUSTC/RUVLLM_CHIP_CARGO at a \
     rustc/cargo with the rust-src component and RUVLLM_LLD at rust-lld or ld.lld";

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

impl Toolchain {
    /// Finds everything or says what to install.
    pub fn find() -> Result<Toolchain> {
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

pub fn build(tc: &Toolchain, image: &Path, corrupt: bool, float_engine: bool) -> Result<PathBuf> {
    let dir = firmware_dir();
    let image = std::fs::canonicalize(image).with_context(|| format!("{}: cannot read", image.display()))?;
    let mut cmd = Command::new(&tc.cargo);
    cmd.current_dir(&dir).args(["build", "--release", "-p", "qemu-c3"]);
    let features: Vec<&str> = [(corrupt, "corrupt-image"), (float_engine, "float-engine")]
        .iter()
        .filter(|(on, _)| *on)
        .map(|(_, f)| *f)
        .collect();
    if !features.is_empty() {
        cmd.args(["--features", &features.join(",")]);
    }
    // Whatever cargo invoked us (tests) must not steer the chip build.
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
    cmd.env("RUSTC", &tc.rustc)
        .env("RUSTC_BOOTSTRAP", "1")
        .env("RUVLLM_MODEL", &image)
        .env("CARGO_TARGET_RISCV32IMC_UNKNOWN_NONE_ELF_LINKER", &tc.lld);
    eprintln!(
        "building the board in {} (the first build compiles core for {TARGET}, about a minute)",
        dir.display()
    );
    let out = cmd.output().with_context(|| format!("running {}", tc.cargo.display()))?;
    if !out.status.success() {
        // The error lines, without the linker's command line (thousands of characters).
        let err = String::from_utf8_lossy(&out.stderr);
        let lines: Vec<&str> = err
            .lines()
            .filter(|l| l.len() < 400 && l.to_ascii_lowercase().contains("error"))
            .take(20)
            .map(str::trim)
            .collect();
        bail!("the board build failed:\n{}", lines.join("\n"));
    }
    Ok(dir.join("target").join(TARGET).join("release/qemu-c3"))
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

/// The QEMU command line of the board.
pub fn qemu(tc: &Toolchain, elf: &Path) -> Command {
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
        "-serial",
        "stdio",
        "-icount",
        "shift=0",
        "-kernel",
    ])
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
        let mut child = qemu(tc, elf)
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
fn board_image(args: &ModelArgs, dir: &Path, quant: Quant) -> Result<(PathBuf, usize)> {
    let img = image::load(args.model.as_deref(), args.tokenizer.as_deref(), Some(quant))?;
    img.model().with_context(|| format!("the {} image does not load", quant.name()))?;
    std::fs::create_dir_all(dir).with_context(|| format!("{}: cannot create", dir.display()))?;
    let path = dir.join(format!("model-{}.gguf", image::quant_name(quant)));
    std::fs::write(&path, img.bytes()).with_context(|| format!("{}: cannot write", path.display()))?;
    Ok((path, img.bytes().len()))
}

fn scratch_dir() -> PathBuf {
    std::env::temp_dir().join(format!("ruvllm-board-{}", std::process::id()))
}

/// `board`: build the board around a model; run it on this terminal, or only write the ELF.
pub fn run_board(
    args: &ModelArgs,
    quant: &str,
    elf_out: Option<&Path>,
    corrupt: bool,
    engine: &str,
) -> Result<()> {
    let float_engine = parse_engine(engine)?;
    let quant = image::parse_quant(quant)?;
    let tc = Toolchain::find()?;
    let dir = scratch_dir();
    let (image, _) = board_image(args, &dir, quant)?;
    let elf = build(&tc, &image, corrupt, float_engine);
    let _ = std::fs::remove_dir_all(&dir);
    let elf = elf?;
    if let Some(out) = elf_out {
        std::fs::copy(&elf, out).with_context(|| format!("{}: cannot write", out.display()))?;
        println!("{}", out.display());
        return Ok(());
    }
    eprintln!("running {} (type quit to leave)", elf.display());
    let status = qemu(&tc, &elf).status().context("starting qemu")?;
    if !status.success() {
        bail!("the board exited with {status}");
    }
    Ok(())
}

/// `bench --chip esp32c3`: instructions per token by position and peak RAM on the board.
pub fn bench(args: &ModelArgs, chip: &str, engine: &str, quant: &str) -> Result<()> {
    let float_engine = parse_engine(engine)?;
    let quant = image::parse_quant(quant)?;
    if quant == Quant::F32 {
        bail!("--quant f32: an f32 image does not fit the ESP32-C3's RAM (use q8, ternary or binary)");
    }
    if chip != "esp32c3" {
        bail!("--chip {chip}: only esp32c3 has a QEMU board so far");
    }
    let tc = Toolchain::find()?;
    let dir = scratch_dir();
    let (image, image_len) = board_image(args, &dir, quant)?;
    let elf = build(&tc, &image, false, float_engine);
    let _ = std::fs::remove_dir_all(&dir);
    let elf = elf?;
    let flash = std::fs::read(&elf).ok().and_then(|b| flash_bytes(&b));

    let mut s = Session::start(&tc, &elf)?;
    let boot = s.expect(PROMPT.trim_start_matches("\r\n"), Duration::from_secs(120))?;
    if boot.contains("error:") {
        bail!("the board refused to start: {}", boot.trim());
    }
    s.send(b"bench\n")?;
    let report = s.expect("peak RAM:", Duration::from_secs(3600))?;
    let ram_line = s.expect(PROMPT, Duration::from_secs(60))?;
    s.send(b"quit\n")?;
    let _ = s.expect("bye", Duration::from_secs(10));
    let _ = s.wait(Duration::from_secs(10));

    println!(
        "chip: esp32c3 (QEMU virt, rv32imc without FPU, 4 MiB flash, 400 KiB RAM; exact instruction counts)"
    );
    let engine =
        if float_engine { "float engine (scalar f32 kernels, soft-float)" } else { "integer-only engine" };
    println!("model: {} as {}, {engine}", args.name(), quant.name());
    let mut found = false;
    for line in report.lines() {
        if let Some(rest) = line.strip_prefix("instructions/token ") {
            println!("instructions/token {}", rest.trim_end());
            found = true;
        } else if line.starts_with("error:") {
            bail!("the board reported: {line}");
        }
    }
    if !found {
        bail!("the board printed no figures: {report}");
    }
    println!("peak RAM:{}", ram_line.trim_end_matches(PROMPT).trim_end());
    match flash {
        Some(f) => println!("flash image: {f} bytes (ELF in flash; the model image is {image_len} of them)"),
        None => println!("flash image: model image {image_len} bytes"),
    }
    Ok(())
}
