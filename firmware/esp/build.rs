//! Reads the model image named by RUVLLM_MODEL once on the host, checks that the integer path
//! accepts it, and turns its shape into constants (layers, context, arena length), so the
//! firmware's static arena is exactly what the engine needs and the link fails when it does not
//! fit the chip's RAM. Also passes esp-hal's linker script, and sets `cfg(usb_serial_jtag)` on the chips
//! that have that USB controller.

use ruvllm_esp32::infer::IntState;
use ruvllm_esp32::model::Model;
use std::path::PathBuf;

/// Positions the firmware's arena holds (clamped to the model's own context), unless
/// RUVLLM_CONTEXT says otherwise (the ESP32 and ESP32-S2 have less contiguous data RAM).
const DEFAULT_CONTEXT: usize = 512;

fn main() {
    println!("cargo:rustc-link-arg=-Tlinkall.x");
    println!("cargo:rerun-if-env-changed=RUVLLM_MODEL");
    println!("cargo:rerun-if-env-changed=RUVLLM_CONTEXT");
    let context = match std::env::var("RUVLLM_CONTEXT") {
        Ok(v) => v.parse::<usize>().ok().filter(|&n| n > 0).unwrap_or_else(|| {
            fail(&format!("RUVLLM_CONTEXT={v}: expected a number of positions, at least 1"))
        }),
        Err(_) => DEFAULT_CONTEXT,
    };

    let chips = ["ESP32C3", "ESP32C6", "ESP32", "ESP32S2", "ESP32S3"];
    let chosen: Vec<_> =
        chips.iter().filter(|c| std::env::var_os(format!("CARGO_FEATURE_{c}")).is_some()).collect();
    if chosen.len() != 1 {
        fail("enable exactly one chip feature: --features esp32c3 | esp32c6 | esp32 | esp32s2 | esp32s3");
    }
    // The chips with a USB-Serial-JTAG controller (the console serves it beside UART0); the
    // ESP32 has no USB, the S2 only USB OTG.
    println!("cargo:rustc-check-cfg=cfg(usb_serial_jtag)");
    if ["ESP32C3", "ESP32C6", "ESP32S3"].contains(chosen[0]) {
        println!("cargo:rustc-cfg=usb_serial_jtag");
    }

    // Without RUVLLM_MODEL the firmware carries the project's built-in model (crates/ruvllm-cli/data/).
    let path = std::env::var("RUVLLM_MODEL").unwrap_or_else(|_| {
        let dir = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
        format!("{dir}/../../crates/ruvllm-cli/data/default.gguf")
    });
    println!("cargo:rerun-if-changed={path}");
    let bytes = std::fs::read(&path).unwrap_or_else(|e| fail(&format!("RUVLLM_MODEL={path}: {e}")));
    // Tensors are read in place: give the host copy the chip's alignment (room for the padding
    // is reserved first so filling the buffer never moves it).
    let mut buf: Vec<u8> = Vec::with_capacity(bytes.len() + 16);
    let pad = buf.as_ptr().align_offset(16);
    buf.resize(pad, 0);
    buf.extend_from_slice(&bytes);
    let model: Model<'_> =
        Model::from_gguf(&buf[pad..]).unwrap_or_else(|e| fail(&format!("RUVLLM_MODEL={path}: {e}")));
    let seq = context.min(model.config.seq_len);
    let arena = IntState::arena_len(&model, seq);
    // The same checks the chip makes at boot (q8, ternary or binary weights, RoPE table), here
    // at build time.
    let mut words = vec![0i32; arena];
    if let Err(e) = IntState::new(&model, &mut words, seq) {
        fail(&format!("RUVLLM_MODEL={path}: the integer path refuses it: {e}"));
    }
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    let plan = format!(
        "/// Layers of the embedded model (the `Model` bound).\n\
         pub const LAYERS: usize = {layers};\n\
         /// Positions the arena holds: min(RUVLLM_CONTEXT or {DEFAULT_CONTEXT}, the model's context).\n\
         pub const SEQ_LEN: usize = {seq};\n\
         /// `IntState::arena_len(model, SEQ_LEN)` in i32 words ({bytes} bytes).\n\
         pub const ARENA_LEN: usize = {arena};\n\
         /// Size of the image, checked against the embedded bytes at compile time.\n\
         pub const IMAGE_LEN: usize = {image};\n",
        layers = model.config.n_layers,
        bytes = arena * 4,
        image = bytes.len(),
    );
    std::fs::write(out.join("plan.rs"), plan).expect("write plan.rs");
}

fn fail(msg: &str) -> ! {
    eprintln!("error: {msg}");
    std::process::exit(1)
}
