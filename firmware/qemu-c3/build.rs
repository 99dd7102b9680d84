//! Reads the model image named by RUVLLM_MODEL once on the host and turns its shape into
//! constants (layers, context, arena length), so the firmware's static arena is exactly what
//! the engine needs and the link fails when it does not fit the chip's RAM.

use std::path::PathBuf;

fn main() {
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    std::fs::copy("memory.x", out.join("memory.x")).expect("copy memory.x");
    println!("cargo:rustc-link-search={}", out.display());
    // memory.x (the chip's FLASH and RAM) must come before riscv-rt's link.x.
    println!("cargo:rustc-link-arg-bins=-Tmemory.x");
    println!("cargo:rustc-link-arg-bins=-Tlink.x");
    println!("cargo:rerun-if-changed=memory.x");
    println!("cargo:rerun-if-env-changed=RUVLLM_MODEL");

    // Without RUVLLM_MODEL the firmware carries the project's built-in model (models/).
    let path = std::env::var("RUVLLM_MODEL").unwrap_or_else(|_| {
        let dir = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
        format!("{dir}/../../models/default.gguf")
    });
    println!("cargo:rerun-if-changed={path}");
    let bytes = std::fs::read(&path).unwrap_or_else(|e| fail(&format!("RUVLLM_MODEL={path}: {e}")));
    // Tensors are read in place, so the host copy gets the chip's alignment: reserve room
    // for the padding first so filling the buffer never moves it.
    let mut buf: Vec<u8> = Vec::with_capacity(bytes.len() + 32);
    let pad = buf.as_ptr().align_offset(32);
    buf.resize(pad, 0);
    buf.extend_from_slice(&bytes);
    let model: ruvllm_esp32::model::Model<'_> = ruvllm_esp32::model::Model::from_gguf(&buf[pad..])
        .unwrap_or_else(|e| fail(&format!("RUVLLM_MODEL={path}: {e}")));
    let seq = model.config.seq_len;
    let float_engine = std::env::var_os("CARGO_FEATURE_FLOAT_ENGINE").is_some();
    let arena = if float_engine {
        ruvllm_esp32::infer::State::arena_len(&model, seq)
    } else {
        if model.rope.is_none() || !model.precision.int8_activations() {
            fail(&format!("RUVLLM_MODEL={path}: the integer path needs a q8, ternary or binary image with its RoPE table (`ruvllm-esp32 convert --quant q8`)"));
        }
        ruvllm_esp32::infer::IntState::arena_len(&model, seq)
    };
    let plan = format!(
        "/// Layers of the embedded model (the `Model` bound).\npub const LAYERS: usize = {};\n\
         /// Context the arena holds: the model's full context.\npub const SEQ_LEN: usize = {seq};\n\
         /// `IntState::arena_len` (or `State::arena_len` with `float-engine`) for SEQ_LEN, in elements.\npub const ARENA_LEN: usize = {arena};\n",
        model.config.n_layers
    );
    std::fs::write(out.join("plan.rs"), plan).expect("write plan.rs");

    // The board's `corrupt-image` feature embeds a copy with one data byte flipped, to show
    // the boot-time checksum refusal.
    let image = if std::env::var_os("CARGO_FEATURE_CORRUPT_IMAGE").is_some() {
        let mut bad = bytes.clone();
        if let Some(last) = bad.last_mut() {
            *last ^= 0x55;
        }
        let p = out.join("corrupt.gguf");
        std::fs::write(&p, bad).expect("write corrupt.gguf");
        p.display().to_string()
    } else {
        path
    };
    println!("cargo:rustc-env=RUVLLM_IMAGE={image}");
}

fn fail(msg: &str) -> ! {
    eprintln!("error: {msg}");
    std::process::exit(1)
}
