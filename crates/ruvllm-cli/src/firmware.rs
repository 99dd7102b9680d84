//! The real-board side of the host tool: `build` (the esp-hal firmware in `firmware/esp` for a
//! chip), `flash` (bootloader, partition table, app and a model partition, through the
//! `espflash` library, or the merged flash image with `--dry-run`) and `install` (which
//! toolchains are there, and the exact steps for the missing ones).

use crate::board::{self, ChipCompiler};
use crate::image;
use crate::ModelArgs;
use anyhow::{anyhow, bail, Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use ruvllm_cli::input;
use ruvllm_cli::outln;
use ruvllm_esp32::convert::Quant;
use ruvllm_esp32::model::Precision;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// The chips the firmware supports (one cargo feature each).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Chip {
    Esp32,
    Esp32s2,
    Esp32s3,
    Esp32c3,
    Esp32c6,
}

pub const CHIP_NAMES: &str = "esp32, esp32s2, esp32s3, esp32c3 or esp32c6";

impl Chip {
    pub fn parse(s: &str) -> Result<Chip> {
        Ok(match s.to_ascii_lowercase().as_str() {
            "esp32" => Chip::Esp32,
            "esp32s2" => Chip::Esp32s2,
            "esp32s3" => Chip::Esp32s3,
            "esp32c3" => Chip::Esp32c3,
            "esp32c6" => Chip::Esp32c6,
            _ => bail!("unknown chip '{s}' (use {CHIP_NAMES})"),
        })
    }

    /// The cargo feature of `firmware/esp`, also the chip's lower-case name.
    pub fn feature(self) -> &'static str {
        match self {
            Chip::Esp32 => "esp32",
            Chip::Esp32s2 => "esp32s2",
            Chip::Esp32s3 => "esp32s3",
            Chip::Esp32c3 => "esp32c3",
            Chip::Esp32c6 => "esp32c6",
        }
    }

    pub fn target(self) -> &'static str {
        match self {
            Chip::Esp32 => "xtensa-esp32-none-elf",
            Chip::Esp32s2 => "xtensa-esp32s2-none-elf",
            Chip::Esp32s3 => "xtensa-esp32s3-none-elf",
            Chip::Esp32c3 => "riscv32imc-unknown-none-elf",
            Chip::Esp32c6 => "riscv32imac-unknown-none-elf",
        }
    }

    pub fn xtensa(self) -> bool {
        matches!(self, Chip::Esp32 | Chip::Esp32s2 | Chip::Esp32s3)
    }

    /// Positions of the firmware's arena where the chip's contiguous data RAM is smaller than
    /// the default 512 (firmware/esp/README.md).
    fn context(self) -> Option<&'static str> {
        match self {
            Chip::Esp32 => Some("384"),
            Chip::Esp32s2 => Some("256"),
            _ => None,
        }
    }

    fn espflash(self) -> espflash::target::Chip {
        use espflash::target::Chip as E;
        match self {
            Chip::Esp32 => E::Esp32,
            Chip::Esp32s2 => E::Esp32s2,
            Chip::Esp32s3 => E::Esp32s3,
            Chip::Esp32c3 => E::Esp32c3,
            Chip::Esp32c6 => E::Esp32c6,
        }
    }
}

/// `firmware/esp` of this checkout (or `RUVLLM_FIRMWARE`).
fn firmware_dir() -> Result<PathBuf> {
    let dir = std::env::var_os("RUVLLM_FIRMWARE")
        .map(PathBuf::from)
        .unwrap_or_else(|| board::firmware_dir().join("esp"));
    if !dir.join("Cargo.toml").is_file() {
        bail!(
            "{}: the firmware sources are not there (run the tool from a checkout of ruvllm-esp32, \
             or set RUVLLM_FIRMWARE to its firmware/esp)",
            dir.display()
        );
    }
    Ok(std::fs::canonicalize(&dir).unwrap_or(dir))
}

/// The model image the firmware gets: the file as it is when it is already a q8, ternary or
/// binary image with the integer path's RoPE table (what the firmware accepts), else converted
/// to q8. Default: the built-in model.
pub fn firmware_image(args: &ModelArgs) -> Result<Vec<u8>> {
    let img = image::load(args.model.as_deref(), args.tokenizer.as_deref(), None)?;
    let usable = {
        let m = img.model()?;
        matches!(m.precision, Precision::Q8 | Precision::Ternary | Precision::Binary) && m.rope.is_some()
    };
    if usable {
        return Ok(img.bytes().to_vec());
    }
    let img = image::load_converted(
        args.model.as_deref(),
        args.tokenizer.as_deref(),
        Quant::Q8,
        image::Edits::default(),
    )?;
    Ok(img.bytes().to_vec())
}

/// A spinner with the elapsed time for a step that takes more than a second (hidden when stderr
/// is not a terminal).
pub(crate) fn spinner(msg: String) -> ProgressBar {
    let pb = ProgressBar::new_spinner();
    pb.set_style(ProgressStyle::with_template("{spinner} {msg} [{elapsed}]").expect("valid template"));
    pb.set_message(msg);
    pb.enable_steady_tick(Duration::from_millis(120));
    pb
}

/// How a chip's firmware gets compiled here.
enum Route {
    /// rustup's compiler with the target installed (`rustup target add`): plain cargo.
    Rustup,
    /// Debian's rustc-web with its std source, built with build-std (shared/TOOLCHAIN.md).
    Debian(ChipCompiler),
    /// espup's `esp` toolchain (Xtensa).
    Espup,
}

fn rustup_has_target(target: &str) -> bool {
    let Ok(o) = Command::new("rustc").args(["--print", "sysroot"]).output() else { return false };
    o.status.success()
        && PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()).join("lib/rustlib").join(target).is_dir()
}

fn esp_toolchain_installed() -> bool {
    Command::new("rustup")
        .args(["toolchain", "list"])
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).lines().any(|l| l.starts_with("esp")))
}

fn xtensa_linker_on_path() -> bool {
    ["xtensa-esp32-elf-gcc", "xtensa-esp-elf-gcc"].iter().any(|n| board::which(n).is_some())
}

const ESPUP_STEPS: &str =
    "cargo install espup --locked && espup install && . $HOME/export-esp.sh (then run this again in that shell)";

fn route(chip: Chip) -> Result<Route> {
    if chip.xtensa() {
        if !esp_toolchain_installed() {
            bail!(
                "{} is an Xtensa chip and Espressif's Rust toolchain (`esp`) is not installed: {ESPUP_STEPS}",
                chip.feature()
            );
        }
        if !xtensa_linker_on_path() {
            bail!(
                "the `esp` toolchain is installed but its Xtensa linker is not on PATH: run . $HOME/export-esp.sh \
                 (written by espup install) in this shell first"
            );
        }
        return Ok(Route::Espup);
    }
    if rustup_has_target(chip.target()) {
        return Ok(Route::Rustup);
    }
    match ChipCompiler::find() {
        Ok(cc) => Ok(Route::Debian(cc)),
        Err(e) => bail!(
            "no toolchain for {}: either `rustup target add {}`, or {e:#}",
            chip.feature(),
            chip.target()
        ),
    }
}

/// `build`: compiles `firmware/esp` for `chip` around the model image; returns the ELF.
pub fn build(chip: Chip, release: bool, args: &ModelArgs) -> Result<PathBuf> {
    let dir = firmware_dir()?;
    let route = route(chip)?;
    let image = firmware_image(args)?;
    // The same target directory as CI's `firmware/esp/build.sh` runs (.ci/run), so the
    // dependencies (esp-hal, core) built there are reused here.
    let target_dir = match std::env::var_os("RUVLLM_FIRMWARE_TARGET_DIR") {
        Some(d) => PathBuf::from(d),
        None => dir.join("../../target/chip/firmware-esp"),
    };
    std::fs::create_dir_all(&target_dir)
        .with_context(|| format!("{}: cannot create", target_dir.display()))?;
    let target_dir = std::fs::canonicalize(&target_dir).unwrap_or(target_dir);
    // The image goes where build.rs reads it; rewritten only when it changed, so an unchanged
    // model does not rebuild the firmware.
    let model_path = target_dir.join(format!("model-{}.gguf", chip.feature()));
    if std::fs::read(&model_path).ok().as_deref() != Some(&image[..]) {
        std::fs::write(&model_path, &image)
            .with_context(|| format!("{}: cannot write", model_path.display()))?;
    }

    let mut cmd = match &route {
        Route::Rustup => Command::new("cargo"),
        Route::Debian(cc) => Command::new(&cc.cargo),
        Route::Espup => {
            let mut c = Command::new("cargo");
            c.arg("+esp");
            c
        }
    };
    board::scrub_cargo_env(&mut cmd);
    cmd.current_dir(&dir).args(["build", "--features", chip.feature(), "--target", chip.target()]);
    if release {
        cmd.arg("--release");
    }
    match &route {
        Route::Rustup => {}
        Route::Debian(cc) => {
            let linker = format!("CARGO_TARGET_{}_LINKER", chip.target().to_uppercase().replace('-', "_"));
            cmd.env("RUSTC", &cc.rustc)
                .env("RUSTDOC", cc.rustc.with_file_name("rustdoc"))
                .env("RUSTC_BOOTSTRAP", "1")
                .env(linker, &cc.lld)
                .args(["-Zbuild-std=core,alloc", "-Zbuild-std-features=compiler-builtins-mem"]);
        }
        Route::Espup => {
            cmd.arg("-Zbuild-std=core,alloc");
        }
    }
    cmd.env("CARGO_TARGET_DIR", &target_dir).env("RUVLLM_MODEL", &model_path);
    if std::env::var_os("RUVLLM_CONTEXT").is_none() {
        if let Some(ctx) = chip.context() {
            cmd.env("RUVLLM_CONTEXT", ctx);
        }
    }
    let how = match route {
        Route::Rustup => "rustup",
        Route::Debian(_) => "Debian's rustc + build-std",
        Route::Espup => "espup's esp toolchain",
    };
    let pb = spinner(format!(
        "building firmware/esp for {} ({how}; the first build takes a few minutes)",
        chip.feature()
    ));
    let out = cmd.output();
    pb.finish_and_clear();
    let out = out.context("running cargo")?;
    if !out.status.success() {
        bail!(
            "the firmware build for {} failed:\n{}",
            chip.feature(),
            crate::board::cargo_errors(&out.stderr)
        );
    }
    let elf =
        target_dir.join(chip.target()).join(if release { "release" } else { "debug" }).join("ruvllm-esp");
    if !elf.is_file() {
        bail!("{}: cargo succeeded but the ELF is not there", elf.display());
    }
    Ok(elf)
}

pub fn build_cmd(chip: &str, release: bool, args: &ModelArgs) -> Result<()> {
    let chip = Chip::parse(chip)?;
    let elf = build(chip, release, args)?;
    let len = std::fs::metadata(&elf).map(|m| m.len()).unwrap_or(0);
    eprintln!("built for {} with {} ({len} bytes of ELF)", chip.feature(), args.name());
    outln!("{}", elf.display());
    Ok(())
}

/// Flash size the layout is planned for (every ESP32 dev board has at least 4 MiB).
pub const FLASH_SIZE: u32 = 4 << 20;
/// Where ESP-IDF's second-stage bootloader reads the partition table.
pub const PARTITION_TABLE_OFFSET: u32 = 0x8000;
/// App partitions start on 64 KiB boundaries (the MMU page), data ones on 4 KiB.
const APP_ALIGN: u32 = 0x1_0000;
const APP_OFFSET: u32 = 0x1_0000;
/// The name of the model's data partition.
pub const MODEL_PARTITION: &str = "model";

/// The partition table: NVS and PHY data as espflash's default, the app right after, then a
/// data partition for the model image over the rest of the flash.
fn partition_csv(app_size: u32, model_offset: u32, model_size: u32) -> String {
    format!(
        "# Name,   Type, SubType,   Offset,   Size\n\
         nvs,      data, nvs,       0x9000,   0x6000,\n\
         phy_init, data, phy,       0xf000,   0x1000,\n\
         factory,  app,  factory,   {APP_OFFSET:#x}, {app_size:#x},\n\
         {MODEL_PARTITION},    data, undefined, {model_offset:#x}, {model_size:#x},\n"
    )
}

fn round_up(n: u32, align: u32) -> u32 {
    n.div_ceil(align) * align
}

/// What goes where in flash.
pub struct Layout {
    /// (address, bytes, what) in address order: bootloader, partition table, app, model.
    pub segments: Vec<(u32, Vec<u8>, &'static str)>,
    pub app_size: u32,
    pub model_offset: u32,
    pub model_size: u32,
}

fn flash_data(chip: Chip) -> espflash::flasher::FlashData {
    use espflash::flasher::{FlashData, FlashSettings, FlashSize};
    FlashData::new(
        FlashSettings::new(None, Some(FlashSize::_4Mb), None),
        0,
        None,
        chip.espflash(),
        espflash::target::XtalFrequency::default(),
    )
}

fn idf_segments(chip: Chip, elf: &[u8], csv: &str, scratch: &Path) -> Result<Vec<(u32, Vec<u8>)>> {
    let table = scratch.join("partitions.csv");
    std::fs::write(&table, csv).with_context(|| format!("{}: cannot write", table.display()))?;
    let fmt = espflash::image_format::idf::IdfBootloaderFormat::new(
        elf,
        &flash_data(chip),
        Some(&table),
        None,
        Some(PARTITION_TABLE_OFFSET),
        None,
    );
    let _ = std::fs::remove_file(&table);
    let fmt = fmt.map_err(|e| anyhow!("{e}"))?;
    Ok(fmt.flash_segments().map(|s| (s.addr, s.data.into_owned())).collect())
}

/// Lays out bootloader, partition table, app and model for `chip`.
pub fn layout(chip: Chip, elf: &[u8], elf_name: &str, model: &[u8]) -> Result<Layout> {
    let scratch = std::env::temp_dir().join(format!("ruvllm-flash-{}", std::process::id()));
    std::fs::create_dir_all(&scratch).with_context(|| format!("{}: cannot create", scratch.display()))?;
    // First pass with the largest app partition, to learn the app image's size.
    let provisional = partition_csv(FLASH_SIZE - APP_OFFSET - 0x1000, FLASH_SIZE - 0x1000, 0x1000);
    let first = idf_segments(chip, elf, &provisional, &scratch).with_context(|| elf_name.to_string());
    let first = match first {
        Ok(f) => f,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&scratch);
            return Err(e);
        }
    };
    let app_len = first.iter().find(|s| s.0 == APP_OFFSET).map_or(0, |s| s.1.len() as u32);
    // Room for the app to grow a little without moving the model: at least 1 MiB.
    let app_size = round_up(app_len, APP_ALIGN).max(0x10_0000);
    let model_offset = APP_OFFSET + app_size;
    let model_len = model.len() as u32;
    if model.len() > (FLASH_SIZE - model_offset) as usize {
        let _ = std::fs::remove_dir_all(&scratch);
        bail!(
            "the model image ({model_len} bytes) does not fit the {} bytes of the 4 MiB flash left after the \
             app partition ({app_size} bytes)",
            FLASH_SIZE - model_offset
        );
    }
    let model_size = FLASH_SIZE - model_offset;
    let segs = idf_segments(chip, elf, &partition_csv(app_size, model_offset, model_size), &scratch);
    let _ = std::fs::remove_dir_all(&scratch);
    let segs = segs.with_context(|| elf_name.to_string())?;
    let names = ["bootloader", "partition table", "app"];
    let mut segments: Vec<(u32, Vec<u8>, &'static str)> =
        segs.into_iter().zip(names).map(|((a, d), n)| (a, d, n)).collect();
    segments.push((model_offset, model.to_vec(), "model"));
    segments.sort_by_key(|s| s.0);
    for w in segments.windows(2) {
        if w[0].0 as usize + w[0].1.len() > w[1].0 as usize {
            bail!("internal: {} overlaps {} in the flash layout", w[0].2, w[1].2);
        }
    }
    Ok(Layout { segments, app_size, model_offset, model_size })
}

impl Layout {
    /// The whole flash as one image (erased bytes, 0xFF, between the parts).
    pub fn merged(&self) -> Vec<u8> {
        let mut out = vec![0xFFu8; FLASH_SIZE as usize];
        for (addr, data, _) in &self.segments {
            out[*addr as usize..*addr as usize + data.len()].copy_from_slice(data);
        }
        out
    }

    fn print(&self) {
        for (addr, data, what) in &self.segments {
            eprintln!("  {addr:#08x}  {:>8} bytes  {what}", data.len());
        }
        eprintln!(
            "  partitions: app (factory) {APP_OFFSET:#x} + {:#x}, {MODEL_PARTITION} (data) {:#x} + {:#x}",
            self.app_size, self.model_offset, self.model_size
        );
    }
}

/// `flash`'s arguments.
pub struct FlashArgs {
    pub port: Option<String>,
    pub chip: String,
    pub model: ModelArgs,
    pub elf: Option<PathBuf>,
    pub dry_run: bool,
    pub output: Option<PathBuf>,
    pub baud: u32,
}

/// The progress of espflash's writes as indicatif bars, one per region.
struct Bars {
    bar: Option<ProgressBar>,
}

impl espflash::target::ProgressCallbacks for Bars {
    fn init(&mut self, addr: u32, total: usize) {
        let pb = ProgressBar::new(total as u64);
        pb.set_style(
            ProgressStyle::with_template("{msg} [{bar:30}] {bytes}/{total_bytes} [{elapsed}]")
                .expect("valid template")
                .progress_chars("=> "),
        );
        pb.set_message(format!("{addr:#08x}"));
        self.bar = Some(pb);
    }
    fn update(&mut self, current: usize) {
        if let Some(pb) = &self.bar {
            pb.set_position(current as u64);
        }
    }
    fn verifying(&mut self) {
        if let Some(pb) = &self.bar {
            pb.set_message(format!("{} verifying", pb.message()));
        }
    }
    fn finish(&mut self, skipped: bool) {
        if let Some(pb) = self.bar.take() {
            if skipped {
                pb.finish_with_message(format!("{} unchanged, skipped", pb.message()));
            } else {
                pb.finish();
            }
        }
    }
}

/// The USB ids espflash needs to pick the reset into the bootloader: the chip's own
/// USB-Serial-JTAG (product id 0x1001) or a bridge's DTR/RTS lines (anything else).
fn usb_info(port: &str) -> serialport::UsbPortInfo {
    let found = ruvllm_cli::serial::find(&ruvllm_cli::serial::ports(), port).cloned();
    let (vid, pid) = found.as_ref().and_then(|p| p.usb).unwrap_or((0, 0));
    let product = found.and_then(|p| p.product);
    serialport::UsbPortInfo { vid, pid, serial_number: None, manufacturer: None, product }
}

/// `flash`: firmware and model partition to a board, or the merged image with `--dry-run`.
pub fn flash(a: &FlashArgs) -> Result<()> {
    // Everything that can be refused at once is refused before a build of minutes.
    let chip = Chip::parse(&a.chip)?;
    if a.dry_run {
        if a.output.is_none() {
            bail!("--dry-run writes the flash image: pass -o image.bin");
        }
    } else {
        let Some(port) = &a.port else {
            bail!(
                "no serial port: pass --port (e.g. /dev/ttyUSB0 or /dev/ttyACM0), or --dry-run -o image.bin \
                 to write the flash image instead"
            );
        };
        if !Path::new(port).exists() {
            bail!("{port}: no such serial port (is the board plugged in? ls /dev/ttyUSB* /dev/ttyACM*)");
        }
    }
    // The port is opened (exclusively) before the build, so a missing or busy one is reported
    // at once, and nothing else grabs it meanwhile.
    let serial = match (&a.port, a.dry_run) {
        (Some(port), false) => Some(
            serialport::new(port, 115_200)
                .flow_control(serialport::FlowControl::None)
                .open_native()
                .map_err(|e| anyhow!("{port}: cannot open: {e}"))?,
        ),
        _ => None,
    };
    let model = firmware_image(&a.model)?;
    let elf_path = match &a.elf {
        Some(p) => p.clone(),
        None => build(chip, true, &a.model)?,
    };
    let elf = input::read_input(&elf_path, "firmware ELF", input::MAX_ELF_BYTES)?;
    let layout = layout(chip, &elf, &elf_path.display().to_string(), &model)?;

    if a.dry_run {
        let out = a.output.as_ref().expect("checked above");
        // Atomic, regular files only, through a symlink: as `convert -o`.
        ruvllm_train::run::checkpoint::write_atomic(out, &layout.merged())?;
        eprintln!("flash image for {} ({} bytes):", chip.feature(), FLASH_SIZE);
        layout.print();
        outln!("{}", out.display());
        return Ok(());
    }

    let port = a.port.as_deref().expect("checked above");
    let serial = serial.expect("opened above");
    let usb = usb_info(port);
    let native = (usb.vid, usb.pid) == ruvllm_cli::serial::USB_SERIAL_JTAG;
    let conn = espflash::connection::Connection::new(
        serial,
        usb,
        espflash::connection::ResetAfterOperation::HardReset,
        espflash::connection::ResetBeforeOperation::DefaultReset,
        a.baud,
    );
    let pb = spinner(format!("{port}: connecting to the {} ROM bootloader", chip.feature()));
    let flasher =
        espflash::flasher::Flasher::connect(conn, true, true, false, Some(chip.espflash()), Some(a.baud));
    pb.finish_and_clear();
    let mut flasher = flasher.map_err(|e| anyhow!("{port}: cannot connect to the chip: {e}"))?;
    eprintln!("{port}: {}; writing:", chip.feature());
    layout.print();
    let segments: Vec<espflash::image_format::Segment<'_>> = layout
        .segments
        .iter()
        .map(|(addr, data, _)| {
            let mut s = espflash::image_format::Segment::new(*addr, data);
            // Flash writes go in whole words.
            s.pad_align(4);
            s
        })
        .collect();
    flasher
        .write_bins_to_flash(&segments, &mut Bars { bar: None })
        .map_err(|e| anyhow!("{port}: flashing failed: {e}"))?;
    // The firmware serves its console on UART0 (what a bridge is wired to) and on the chip's own
    // USB-Serial-JTAG alike.
    let via = if native { "the chip's own USB" } else { "UART0 at 115200 baud" };
    eprintln!("{port}: done; the chip was reset (console on {via}: ruvllm-esp32 monitor --port {port})");
    Ok(())
}

/// One check of `install`.
struct Check {
    what: &'static str,
    ok: bool,
    detail: String,
    steps: Vec<String>,
}

/// `install`: which toolchains are there and the exact steps for what is missing; with `yes`,
/// runs `espup install` when espup is present and the Xtensa toolchain is not.
pub fn install(yes: bool) -> Result<()> {
    let mut checks = Vec::new();
    for (chip, target) in
        [("ESP32-C3", "riscv32imc-unknown-none-elf"), ("ESP32-C6", "riscv32imac-unknown-none-elf")]
    {
        let rustup = rustup_has_target(target);
        let debian = ChipCompiler::find();
        let (ok, detail) = match (&debian, rustup) {
            (_, true) => (true, format!("rustup target {target} installed")),
            (Ok(cc), false) => {
                (true, format!("Debian's {} with its std source (build-std)", cc.rustc.display()))
            }
            (Err(e), false) => (false, format!("no rustup target {target}; Debian route: {e:#}")),
        };
        checks.push(Check {
            what: chip,
            ok,
            detail,
            steps: vec![
                format!("rustup target add {target}"),
                "or, on Debian/Ubuntu: apt-get install rustc-web cargo-web rust-web-src lld".to_string(),
            ],
        });
    }
    let espup = board::which("espup");
    let esp = esp_toolchain_installed();
    let linker = xtensa_linker_on_path();
    let mut steps = Vec::new();
    if espup.is_none() {
        steps.push("cargo install espup --locked".to_string());
    }
    if !esp {
        steps.push("espup install".to_string());
    }
    if !linker {
        steps.push(". $HOME/export-esp.sh   (in every new shell)".to_string());
    }
    checks.push(Check {
        what: "ESP32 / ESP32-S2 / ESP32-S3 (Xtensa)",
        ok: esp && linker,
        detail: format!(
            "espup {}, esp toolchain {}, Xtensa linker on PATH {}",
            if espup.is_some() { "found" } else { "missing" },
            if esp { "installed" } else { "missing" },
            if linker { "yes" } else { "no" }
        ),
        steps,
    });
    let qemu = board::which("qemu-system-riscv32");
    checks.push(Check {
        what: "QEMU board (optional: `board`, `bench --chip`)",
        ok: qemu.is_some(),
        detail: qemu.map_or("qemu-system-riscv32 missing".to_string(), |p| p.display().to_string()),
        steps: vec!["apt-get install qemu-system-misc".to_string()],
    });
    outln!("flashing: built in (the espflash library), nothing to install");
    for c in &checks {
        outln!("{} {}: {}", if c.ok { "ok     " } else { "missing" }, c.what, c.detail);
        if !c.ok {
            for s in &c.steps {
                outln!("          {s}");
            }
        }
    }
    let xtensa_missing = !esp;
    if xtensa_missing && yes {
        let Some(espup) = espup else {
            bail!("--yes: espup is not installed, run `cargo install espup --locked` first");
        };
        outln!("running {} install", espup.display());
        let status = Command::new(&espup).arg("install").status().context("running espup")?;
        if !status.success() {
            bail!("espup install failed ({status})");
        }
        outln!("done: run . $HOME/export-esp.sh in each new shell before building for Xtensa");
    } else if xtensa_missing && espup.is_some() {
        outln!("(pass --yes to run espup install now)");
    }
    Ok(())
}
