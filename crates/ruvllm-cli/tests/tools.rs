//! The everyday host commands: `build`, `flash` (its merged `--dry-run` image read back byte by
//! byte), `install`, `cluster`, `completions`, and `--json` on `info` and `bench`.
//!
//! `flash --dry-run` builds the esp-hal firmware for the ESP32-C3, so it needs Debian's chip
//! toolchain (rustc-web, cargo-web, rust-web-src) and a rust-lld: without them that test prints
//! why it skips, except under CI=true, where it fails.

mod common;

use common::*;
use ruvllm_esp32::model::Model;
use ruvllm_esp32::partition;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn stdout(out: &Output) -> String {
    assert!(out.status.success(), "failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn builtin_model() -> Vec<u8> {
    std::fs::read(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("data/default.gguf")).unwrap()
}

#[test]
fn cluster_toml_parses_back_and_covers_every_layer_once() {
    let layers = 5; // the built-in model's (checked against the file below)
    for chips in 1..=layers {
        let path = scratch(&format!("cluster-{chips}.toml"));
        let out = run(&["cluster", "--chips", &chips.to_string(), "-o", s(&path), "--force"]);
        stdout(&out);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.starts_with("# ruvllm-esp32 cluster"), "{text}");
        let v: toml::Value = toml::from_str(&text).expect("cluster.toml parses");
        assert_eq!(v["model"]["layers"].as_integer(), Some(layers as i64));
        assert_eq!(v["link"]["baud"].as_integer(), Some(115_200));
        assert_eq!(v["cluster"]["chips"].as_integer(), Some(chips as i64));
        assert_eq!(v["cluster"]["topology"].as_str(), Some("pipeline"));
        let list = v["chips"]["nodes"].as_array().unwrap();
        assert_eq!(list.len(), chips);
        let mut seen = vec![0; layers];
        for (i, c) in list.iter().enumerate() {
            assert_eq!(c["id"].as_integer(), Some(i as i64));
            assert_eq!(c["port"].as_integer(), Some(47_000 + i as i64));
            let role = c["role"].as_str().unwrap();
            let want = match (i, chips) {
                (_, 1) => "single",
                (0, _) => "head",
                (i, n) if i == n - 1 => "tail",
                _ => "middle",
            };
            assert_eq!(role, want);
            let r = c["layers"].as_array().unwrap();
            let (a, b) = (r[0].as_integer().unwrap() as usize, r[1].as_integer().unwrap() as usize);
            assert!(a <= b && b < layers, "{a}..={b}");
            seen[a..=b].iter_mut().for_each(|n| *n += 1);
        }
        assert!(seen.iter().all(|&n| n == 1), "each layer exactly once: {seen:?}");
    }
    // Refusals: one line each.
    let path = scratch("refused.toml");
    fails_with(&run(&["cluster", "--chips", "0", "-o", s(&path)]), "--chips 0: use 1 to 5");
    fails_with(&run(&["cluster", "--chips", "6", "-o", s(&path)]), "--chips 6: use 1 to 5");
    assert!(!path.exists());
    let existing = scratch("cluster-1.toml");
    fails_with(&run(&["cluster", "--chips", "1", "-o", s(&existing)]), "already exists");
}

#[test]
fn completions_name_the_subcommands() {
    let bash = stdout(&run(&["completions", "bash"]));
    for sub in ["build", "flash", "install", "cluster", "completions", "info", "bench", "gen", "convert"] {
        assert!(bash.contains(sub), "bash completions lack {sub}");
    }
    assert!(bash.contains("--dry-run") && bash.contains("--chips"));
    for shell in ["zsh", "fish"] {
        let out = stdout(&run(&["completions", shell]));
        assert!(out.contains("flash") && out.contains("cluster"), "{shell}");
    }
    let out = run(&["completions", "tcsh"]);
    assert!(!out.status.success());
}

#[test]
fn info_json_has_the_figures_of_the_text_output() {
    let text = stdout(&run(&["info"]));
    let v: serde_json::Value = serde_json::from_str(&stdout(&run(&["info", "--json"]))).expect("JSON");
    let image = builtin_model().len() as u64;
    assert_eq!(v["image_bytes"].as_u64(), Some(image));
    assert!(text.contains(&format!("image: {image} bytes")));
    assert_eq!(v["config"]["layers"].as_u64(), Some(5));
    assert_eq!(v["precision"].as_str(), Some("q8"));
    let params = v["parameters"].as_u64().unwrap();
    assert!(text.contains(&format!("parameters: {params}\n")), "{text}");
    let full = v["ram_full_context_bytes"].as_u64().unwrap();
    assert!(text.contains(&format!(": {full} bytes (")), "{text}");
    let chips = v["chips"].as_array().unwrap();
    // The verdict table's rows (`info` prints other per-chip tables too: the patterns' RAM).
    let table: Vec<&str> = text
        .lines()
        .skip_while(|l| !(l.starts_with("chip ") && l.ends_with("verdict")))
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
        .collect();
    assert_eq!(chips.len(), table.len(), "{text}");
    for c in chips {
        let name = c["chip"].as_str().unwrap();
        let line = table.iter().find(|l| l.starts_with(&format!("{name} "))).unwrap();
        let ctx = c["max_context"].as_u64().unwrap();
        assert!(line.contains(&format!(" {ctx}  ")), "{line}");
        assert!(line.ends_with(c["verdict"].as_str().unwrap()), "{line}");
    }
}

#[test]
fn bench_json_parses() {
    let out = run(&["bench", "--json", "-n", "24", "--repeat", "1"]);
    let v: serde_json::Value = serde_json::from_str(&stdout(&out)).expect("JSON");
    assert_eq!(v["steps"].as_u64(), Some(24));
    let rows = v["rows"].as_array().unwrap();
    assert!(rows.len() >= 4, "{v}");
    for r in rows {
        assert!(r["gen_tok_s"].as_f64().unwrap() > 0.0);
        assert!(r["prompt_tok_s"].as_f64().unwrap() > 0.0);
        assert!(["f32", "q8", "ternary", "binary"].contains(&r["precision"].as_str().unwrap()));
    }
    assert!((rows[0]["speedup_vs_f32_scalar"].as_f64().unwrap() - 1.0).abs() < 1e-9);
}

#[test]
fn flash_and_build_refuse_bad_arguments_in_one_line() {
    fails_with(&run(&["flash"]), "no serial port: pass --port");
    fails_with(&run(&["flash", "--port", "/dev/ttyRUVLLM-NOPE"]), "/dev/ttyRUVLLM-NOPE: no such serial port");
    fails_with(&run(&["flash", "--dry-run"]), "pass -o image.bin");
    // A path that exists but is no serial port: refused before any build, naming it.
    fails_with(&run(&["flash", "--port", "/dev/null"]), "/dev/null: cannot open");
    fails_with(&run(&["flash", "--chip", "esp8266", "--dry-run", "-o", "x.bin"]), "unknown chip 'esp8266'");
    fails_with(&run(&["build", "--target", "esp32c9"]), "unknown chip 'esp32c9'");
    let missing = scratch("no-such-model.gguf");
    fails_with(
        &run(&["flash", "--dry-run", "-o", s(&scratch("x.bin")), "-m", s(&missing)]),
        "no-such-model.gguf: cannot read",
    );
    // A file that is not an ELF, given as the firmware.
    let bogus = scratch("bogus.elf");
    std::fs::write(&bogus, b"not an elf").unwrap();
    let out = run(&["flash", "--dry-run", "-o", s(&scratch("x.bin")), "--elf", s(&bogus)]);
    fails_with(&out, "bogus.elf");
    // Xtensa without espup: the one error says what to install.
    let esp = Command::new("rustup")
        .args(["toolchain", "list"])
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).lines().any(|l| l.starts_with("esp")));
    if !esp {
        for chip in ["esp32", "esp32s2", "esp32s3"] {
            let out = run(&["build", "--target", chip]);
            fails_with(&out, "espup install");
            fails_with(&out, "cargo install espup --locked");
        }
    }
}

#[test]
fn install_reports_each_toolchain() {
    let out = stdout(&run(&["install"]));
    for what in ["ESP32-C3", "ESP32-C6", "ESP32-S3", "QEMU board"] {
        assert!(out.contains(what), "{out}");
    }
    // Each missing part comes with its steps.
    if out.contains("missing ESP32 / ESP32-S2 / ESP32-S3") {
        assert!(out.contains("espup install"), "{out}");
    }
}

fn chip_tools() -> Option<()> {
    if !Path::new("/usr/bin/rustc").is_file() || !Path::new("/usr/lib/rustlib/src/rust/library").is_dir() {
        missing(
            "Debian's chip toolchain is not installed (apt-get install rustc-web cargo-web rust-web-src)",
        )?;
    }
    Some(())
}

#[test]
fn flash_dry_run_writes_a_bootable_layout_with_the_model_partition() {
    let Some(()) = chip_tools() else { return };
    let img_path = scratch("flash.bin");
    let out = run(&["flash", "--dry-run", "--chip", "esp32c3", "-o", s(&img_path)]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "flash --dry-run failed: {err}");
    let img = std::fs::read(&img_path).unwrap();
    assert_eq!(img.len(), 4 << 20, "a whole 4 MiB flash image");

    // The ESP32-C3's ROM loads the second-stage bootloader from offset 0: an ESP image (0xE9).
    assert_eq!(img[0], 0xE9, "bootloader image magic at 0x0");

    // The table espflash wrote, read by the library as the chip reads it (MD5 entry checked).
    let table = partition::Table::parse(&img[partition::TABLE_OFFSET..]).expect("a valid partition table");
    assert!(table.md5_checked(), "the table carries its MD5");
    let parts: Vec<_> = table.iter().collect();
    let names: Vec<&str> = parts.iter().map(|p| p.label).collect();
    assert_eq!(names, ["nvs", "phy_init", "factory", "model"], "{parts:?}");
    let mut spans: Vec<(u32, u32)> = vec![(0x8000, 0x9000)]; // the table itself
    for p in &parts {
        let align = if p.kind == partition::TYPE_APP { 0x1_0000 } else { 0x1000 };
        assert_eq!(p.offset % align, 0, "{p:?} misaligned");
        assert_eq!(p.size % 0x1000, 0, "{p:?} size not a whole sector");
        assert!(p.offset >= 0x9000, "{p:?} overlaps the table or the bootloader");
        assert!((p.offset as usize + p.size as usize) <= img.len(), "{p:?} beyond the flash");
        spans.push((p.offset, p.offset + p.size));
    }
    spans.sort();
    for w in spans.windows(2) {
        assert!(w[0].1 <= w[1].0, "overlap: {w:?}");
    }

    let app = table.find("factory").unwrap();
    assert_eq!((app.kind, app.subtype), (partition::TYPE_APP, 0x00), "factory app");
    assert_eq!(app.offset, 0x1_0000);
    assert_eq!(img[app.offset as usize], 0xE9, "app image magic");
    // Both ESP images name the ESP32-C3 (image header chip id 5, bytes 12..14).
    for at in [0usize, app.offset as usize] {
        assert_eq!(u16::from_le_bytes([img[at + 12], img[at + 13]]), 5, "chip id of the image at {at:#x}");
    }
    // The app image (header, segments, checksum, SHA-256) fits its partition.
    let model = table.find("model").unwrap();
    assert_eq!(model.kind, partition::TYPE_DATA, "a data partition");

    // The model partition holds exactly the source image, the rest of it erased.
    let src = builtin_model();
    let part = &img[model.offset as usize..(model.offset + model.size) as usize];
    assert_eq!(
        &part[..src.len()],
        &src[..],
        "the model partition differs from crates/ruvllm-cli/data/default.gguf"
    );
    assert!(part[src.len()..].iter().all(|&b| b == 0xFF), "bytes after the image are not erased flash");
    // And the engine finds and loads it the way the board does: the whole flash mapped
    // (a 16-byte aligned copy here), the table read, the image cut from the partition,
    // checksum verified.
    let mut words = vec![0u128; img.len() / 16];
    let flash: &mut [u8] = bytemuck::cast_slice_mut(&mut words);
    flash.copy_from_slice(&img);
    let (found, image) = partition::model_image(flash).expect("the model partition is found");
    assert_eq!((found.offset, image.len()), (model.offset, src.len()));
    let m: Model<'_> = Model::from_gguf(image).expect("the model partition loads, checksum verified");
    assert_eq!(m.config.n_layers, 5);
    // The app partition is large enough for the app image that was laid out.
    let app_end =
        img[app.offset as usize..model.offset as usize].iter().rposition(|&b| b != 0xFF).map_or(0, |i| i + 1);
    assert!(app_end > 0 && app_end <= app.size as usize);
}

/// `bench --chip esp32c3 --json`: the QEMU board's figures as JSON, the same numbers as the text.
#[test]
fn bench_on_the_chip_gives_json_with_the_text_figures() {
    let Some(()) = chip_tools() else { return };
    let on_path = |n: &str| {
        std::env::var_os("PATH").is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(n).is_file()))
    };
    if !on_path("qemu-system-riscv32") {
        missing("qemu-system-riscv32 is not installed (apt-get install qemu-system-misc)");
        return;
    }
    let text = stdout(&run(&["bench", "--chip", "esp32c3"]));
    let v: serde_json::Value =
        serde_json::from_str(&stdout(&run(&["bench", "--chip", "esp32c3", "--json"]))).expect("JSON");
    assert_eq!(v["chip"].as_str(), Some("esp32c3"));
    assert_eq!(v["model_image_bytes"].as_u64(), Some(builtin_model().len() as u64));
    let per = v["instructions_per_token"].as_array().unwrap();
    assert!(!per.is_empty(), "{v}");
    for p in per {
        let line = format!(
            "instructions/token at position {}: {}",
            p["position"].as_u64().unwrap(),
            p["instructions"].as_u64().unwrap()
        );
        assert!(text.contains(&line), "{line} not in {text}");
    }
    let avg = &v["instructions_per_token_average"];
    let line = format!(
        "average over positions {}-{}: {}",
        avg["from"].as_u64().unwrap(),
        avg["to"].as_u64().unwrap(),
        avg["instructions"].as_u64().unwrap()
    );
    assert!(text.contains(&line), "{line} not in {text}");
    let ram = format!(
        "peak RAM: {} bytes (static {} + stack high-water {})",
        v["peak_ram_bytes"].as_u64().unwrap(),
        v["static_ram_bytes"].as_u64().unwrap(),
        v["stack_high_water_bytes"].as_u64().unwrap()
    );
    assert!(text.contains(&ram), "{ram} not in {text}");
    assert!(text.contains(&format!("flash image: {} bytes", v["flash_image_bytes"].as_u64().unwrap())));
}
