//! Reads the model image named by RUVLLM_MODEL once on the host and turns its shape into
//! constants (layers, context, arena length), so the firmware's static arena is exactly what
//! the engine needs and the link fails when it does not fit the chip's RAM.
//!
//! With the `vector-bench` feature it reads the vector blob named by RUVLLM_VECTORS instead
//! (written by `ruvllm-esp32 index bench --chip esp32c3`) and turns its header into the
//! index's type parameters, so the `MicroHNSW` in .bss is exactly the benchmark's.

use std::path::PathBuf;

fn main() {
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    let mut memory = std::fs::read_to_string("memory.x").expect("read memory.x");
    if std::env::var_os("CARGO_FEATURE_FEDERATION_NODE").is_some() {
        // A federation node's loop keeps the link's frames and messages on its stack: about
        // 127 KiB measured (the peak RAM it reports), so a board whose part of the model leaves
        // less fails to link instead of running its stack into the arena.
        let (from, to) = ("_hart_stack_size = 48K;", format!("_hart_stack_size = {}K;", NODE_STACK / 1024));
        let (why, node_why) = (
            "under 48 KiB of the ESP32-C3's 400 KiB RAM for the stack: use a q8 image or a smaller model",
            format!("under {} KiB of the ESP32-C3's 400 KiB RAM for a federation node's stack: split the model over more boards", NODE_STACK / 1024),
        );
        assert!(memory.contains(from) && memory.contains(why), "memory.x changed: update build.rs");
        memory = memory.replace(from, &to).replace(why, &node_why);
    }
    std::fs::write(out.join("memory.x"), memory).expect("write memory.x");
    println!("cargo:rustc-link-search={}", out.display());
    // memory.x (the chip's FLASH and RAM) must come before riscv-rt's link.x.
    println!("cargo:rustc-link-arg-bins=-Tmemory.x");
    println!("cargo:rustc-link-arg-bins=-Tlink.x");
    println!("cargo:rerun-if-changed=memory.x");
    println!("cargo:rerun-if-env-changed=RUVLLM_MODEL");
    println!("cargo:rerun-if-env-changed=RUVLLM_VECTORS");
    if std::env::var_os("CARGO_FEATURE_VECTOR_BENCH").is_some() {
        vector_plan(&out);
        return;
    }

    // Without RUVLLM_MODEL the firmware carries the project's built-in model (crates/ruvllm-cli/data/).
    let path = std::env::var("RUVLLM_MODEL").unwrap_or_else(|_| {
        let dir = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
        format!("{dir}/../../crates/ruvllm-cli/data/default.gguf")
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
    // The console's arena has room for every attention pattern (`set attention`) when the RAM
    // left after the knowledge and the stack holds it (else the console refuses patterns, and
    // a model that fits without them still links); a federation node's holds its forward pass.
    let node = std::env::var_os("CARGO_FEATURE_FEDERATION_NODE").is_some();
    // `lean`: nothing in RAM beyond the model's own arena, the knowledge and the stack.
    let lean = std::env::var_os("CARGO_FEATURE_LEAN").is_some();
    let full = ruvllm_esp32::infer::Pattern::Full;
    let (plain, with_patterns) = if float_engine {
        use ruvllm_esp32::infer::State;
        (State::arena_len(&model, seq), State::sparse_arena_len(&model, seq, full))
    } else {
        if model.rope.is_none() || !model.precision.int8_activations() {
            fail(&format!("RUVLLM_MODEL={path}: the integer path needs a q8, ternary or binary image with its RoPE table (`ruvllm-esp32 convert --quant q8`)"));
        }
        use ruvllm_esp32::infer::IntState;
        (IntState::arena_len(&model, seq), IntState::sparse_arena_len(&model, seq, full))
    };
    let room = (RAM - STACK - MARGIN).saturating_sub(std::mem::size_of::<ruvllm_esp32::console::Knowledge>());
    let arena = if node || lean || with_patterns * 4 > room { plain } else { with_patterns };
    // `set speculative on` (integer engine): an early-exit draft of all layers but the last,
    // gamma 2, when its state and buffers fit the RAM left after the arena, the knowledge and
    // the stack (else the console refuses the setting).
    let (spec_layers, spec_gamma) = (model.config.n_layers.saturating_sub(1), 2);
    let draft = ruvllm_esp32::speculative::early_exit(&model, spec_layers);
    let spec =
        draft.map_or(0, |d| ruvllm_esp32::console::Speculation::arena_len(&model, &d, seq, spec_gamma));
    let spec = if float_engine || node || lean || (arena + spec) * 4 > room { 0 } else { spec };
    // A tensor-parallel node (RUVLLM_TENSOR=i:n: shard i of n) holds only its shard's cache.
    println!("cargo:rerun-if-env-changed=RUVLLM_TENSOR");
    let tensor = std::env::var("RUVLLM_TENSOR").ok().filter(|s| !s.is_empty()).map(|spec| {
        let v: Vec<usize> = spec.split(':').filter_map(|x| x.parse().ok()).collect();
        let [i, n] = v[..] else { fail(&format!("RUVLLM_TENSOR={spec}: use index:nodes")) };
        ruvllm_esp32::infer::shard(&model, n, i)
            .unwrap_or_else(|e| fail(&format!("RUVLLM_TENSOR={spec}: {e}")))
    });
    let arena = match &tensor {
        Some(s) => ruvllm_esp32::infer::TensorState::arena_len(&model, s, seq),
        None => arena,
    };
    let plan = format!(
        "/// Layers of the embedded model (the `Model` bound).\npub const LAYERS: usize = {};\n\
         /// Context the arena holds: the model's full context.\npub const SEQ_LEN: usize = {seq};\n\
         /// `IntState::sparse_arena_len` (or `State::..` with `float-engine`) for SEQ_LEN and\n\
         /// full attention when it fits, else `arena_len`, in elements.\npub const ARENA_LEN: usize = {arena};\n\
         /// `Speculation::arena_len` of the early-exit draft (0: no room).\npub const SPEC_LEN: usize = {spec};\n\
         /// The draft's layers and gamma.\npub const SPEC_LAYERS: usize = {spec_layers};\npub const SPEC_GAMMA: usize = {spec_gamma};\n",
        model.config.n_layers
    );
    let mut plan = plan;
    println!("cargo:rerun-if-env-changed=RUVLLM_NODE");
    if std::env::var_os("CARGO_FEATURE_FEDERATION_NODE").is_some() {
        // id:first:last (inclusive), as cluster.toml gives a node's layers.
        let spec =
            std::env::var("RUVLLM_NODE").unwrap_or_else(|_| fail("RUVLLM_NODE=id:first:last is not set"));
        let v: Vec<usize> = spec.split(':').filter_map(|x| x.parse().ok()).collect();
        let [id, first, last] = v[..] else { fail(&format!("RUVLLM_NODE={spec}: use id:first:last")) };
        // An image cut to this node's layers (`federation::cut`) holds the model's
        // first..first + n_layers.
        let n = model.config.n_layers;
        let (offset, total) = model.cut.map_or((0, n), |c| (c.first, c.total));
        if first > last || first < offset || last >= offset + n || id >= 255 {
            fail(&format!(
                "RUVLLM_NODE={spec}: layers outside the image's {offset}..={} of {total}",
                offset + n - 1
            ));
        }
        plan += &format!(
            "/// This node's id and layers.\npub const NODE_ID: u8 = {id};\npub const NODE_LAYERS: core::ops::Range<usize> = {first}..{};\n",
            last + 1
        );
        let r = |r: &core::ops::Range<usize>| format!("{}..{}", r.start, r.end);
        plan += &match &tensor {
            Some(s) => format!(
                "/// A tensor-parallel node's shard.\npub const SHARD: Option<ruvllm_esp32::infer::Shard> = Some(ruvllm_esp32::infer::Shard {{ heads: {}, kv_heads: {}, hidden: {} }});\n",
                r(&s.heads),
                r(&s.kv_heads),
                r(&s.hidden)
            ),
            None => "/// A pipeline node.\npub const SHARD: Option<ruvllm_esp32::infer::Shard> = None;\n".into(),
        };
        plan += &format!("/// The model's width.\npub const DIM: usize = {};\n", model.config.dim);
    }
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

/// The board's RAM and stack (memory.x), and room kept for the other statics.
const RAM: usize = 400 * 1024;
const STACK: usize = 48 * 1024;
const MARGIN: usize = 16 * 1024;
/// A federation node's stack (see `main`).
const NODE_STACK: usize = 144 * 1024;

/// The blob's header: magic, then little-endian u32 fields, the seed (u64) and the ef_search
/// values; f32 data follows (base vectors, then queries). Keep in step with
/// `crates/ruvllm-cli/src/board.rs` (`vector_blob`) and `src/vector_bench.rs`.
const MAGIC: &[u8; 4] = b"RVVB";
/// Most ef_search values one run measures.
const MAX_EFS: usize = 8;
/// Header bytes: magic, 9 u32 fields, the u64 seed, MAX_EFS u32 ef values.
const HEADER: usize = 4 + 9 * 4 + 8 + MAX_EFS * 4;
/// `ruvllm_esp32::vector::hnsw::EF_MAX`: the longest candidate list and result list.
const EF_MAX: usize = ruvllm_esp32::vector::hnsw::EF_MAX;

fn vector_plan(out: &std::path::Path) {
    let Ok(path) = std::env::var("RUVLLM_VECTORS") else {
        fail("the vector-bench feature needs RUVLLM_VECTORS (a blob written by `ruvllm-esp32 index bench --chip esp32c3`)")
    };
    println!("cargo:rerun-if-changed={path}");
    let b = std::fs::read(&path).unwrap_or_else(|e| fail(&format!("RUVLLM_VECTORS={path}: {e}")));
    let bad = |what: &str| -> ! { fail(&format!("RUVLLM_VECTORS={path}: {what}")) };
    if b.len() < HEADER || &b[..4] != MAGIC {
        bad("not a vector blob (magic RVVB)");
    }
    let u = |i: usize| u32::from_le_bytes(b[4 + 4 * i..8 + 4 * i].try_into().unwrap()) as usize;
    let (n, nq, dim, k, storage, m, efc, metric, n_efs) =
        (u(0), u(1), u(2), u(3), u(4), u(5), u(6), u(7), u(8));
    let seed = u64::from_le_bytes(b[40..48].try_into().unwrap());
    let efs: Vec<usize> = (0..n_efs.min(MAX_EFS)).map(|i| u(11 + i)).collect();
    if n == 0 || n >= 65535 {
        bad("the base count must be 1..65534 (u16 ids)");
    }
    if nq == 0 || dim == 0 || k == 0 || k > EF_MAX {
        bad("no queries, no dimensions, or k outside 1..=256");
    }
    if !(2..=EF_MAX / 4).contains(&m) || efc == 0 || efc > EF_MAX {
        bad("m must be 2..=64 and ef_construction 1..=256");
    }
    if efs.is_empty() || n_efs > MAX_EFS || efs.iter().any(|&e| e == 0 || e > EF_MAX) {
        bad("1 to 8 ef_search values of 1..=256");
    }
    if b.len() != HEADER + 4 * dim * (n + nq) {
        bad("the length does not match the header's counts");
    }
    let metric = match metric {
        0 => "Euclidean",
        1 => "Cosine",
        2 => "Dot",
        _ => bad("unknown metric"),
    };
    let (store, name) = match storage {
        0 => ("F32".to_string(), "f32"),
        1 => ("I8".to_string(), "i8"),
        2 => (format!("Binary<{}>", dim.div_ceil(8)), "binary"),
        _ => bad("unknown storage kind"),
    };
    // The upper-level link pool: a node reaches level >= l with probability m^-l, so the pool
    // holds n m / (m - 1) links on average; twice that plus one full tower of margin means the
    // pool never caps a node's level (the graph is the one an unbounded index would build).
    let up = ((2 * n * m).div_ceil(m - 1) + 16 * m).min(65535);
    let efs_list: Vec<String> = efs.iter().map(|e| e.to_string()).collect();
    let plan = format!(
        "/// Base vectors: the index's capacity.\npub const N: usize = {n};\n\
         /// Queries.\npub const NQ: usize = {nq};\n\
         pub const DIM: usize = {dim};\n\
         /// Neighbours per query.\npub const K: usize = {k};\n\
         /// Upper-level links per node; level 0 gets M0 = 2 m.\npub const M: usize = {m};\n\
         pub const M0: usize = {m0};\n\
         /// The upper-level link pool (u16 ids).\npub const UP: usize = {up};\n\
         pub const EF_CONSTRUCTION: usize = {efc};\n\
         /// The ef_search values measured, one pass over the queries each.\npub const EFS: [usize; {ne}] = [{efl}];\n\
         pub const SEED: u64 = {seed};\n\
         pub const METRIC: ruvllm_esp32::vector::Metric = ruvllm_esp32::vector::Metric::{metric};\n\
         pub type Store = ruvllm_esp32::vector::{store};\n\
         pub const STORAGE: &str = \"{name}\";\n\
         /// Where the f32 data starts in the blob.\npub const DATA: usize = {HEADER};\n",
        m0 = 2 * m,
        ne = efs.len(),
        efl = efs_list.join(", "),
    );
    std::fs::write(out.join("vectors.rs"), plan).expect("write vectors.rs");
    println!("cargo:rustc-env=RUVLLM_VECTORS_BLOB={path}");
}

fn fail(msg: &str) -> ! {
    eprintln!("error: {msg}");
    std::process::exit(1)
}
