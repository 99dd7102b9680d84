//! Tensor parallelism over real links: in one process (each node on its own thread and tokio
//! runtime, joined to the coordinator by in-memory byte pipes, also with 1% of the bytes
//! corrupted) and as `cluster run` with every node a process on loopback. The text equals `gen
//! --int`'s with 2, 3 and 5 nodes, greedy and seeded, on the built-in model (its attention
//! stays whole, its FFN splits in 5) and on a model whose 5 heads split across 5 nodes.

mod common;
#[path = "../../ruvllm-esp32/tests/common/generation.rs"]
mod generation;
#[path = "../../ruvllm-esp32/tests/common/tensor_models.rs"]
mod tensor_models;

use common::*;
use generation::{encode, single};
use ruvllm_cli::cluster::config::ClusterFile;
use ruvllm_cli::cluster::{self, host_link, Job, Line, NodeSpec, RunReport};
use ruvllm_esp32::federation::link::LinkConfig;
use ruvllm_esp32::model::Model;
use std::path::PathBuf;

fn aligned(bytes: &[u8]) -> Vec<u64> {
    let mut words = vec![0u64; bytes.len().div_ceil(8)];
    bytemuck::cast_slice_mut::<u64, u8>(&mut words)[..bytes.len()].copy_from_slice(bytes);
    words
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap()
}

/// The split in one process: text printed, report, node errors.
fn star(model: &Model<'_>, nodes: usize, corrupt: f64, job: &Job<'_>) -> (Vec<u8>, RunReport) {
    let shards = cluster::tensor_shards(model, nodes).unwrap();
    let cfg = LinkConfig { ack_ms: if corrupt > 0.0 { 2 } else { 100 }, retries: 2000 };
    let (ours, theirs): (Vec<_>, Vec<_>) = (0..nodes).map(|_| tokio::io::duplex(4096)).unzip();
    let mut text = Vec::new();
    let report = std::thread::scope(|s| {
        for (i, (end, shard)) in theirs.into_iter().zip(shards.iter().cloned()).enumerate() {
            let spec = NodeSpec {
                id: i as u8,
                layers: 0..model.config.n_layers,
                streams: 1,
                seq_len: model.config.seq_len,
                checksum: 1,
                accept_ms: 10_000,
            };
            s.spawn(move || {
                let up = host_link(end, cfg, Line { corrupt, baud: 0, seed: 7 + i as u64 });
                rt().block_on(cluster::run_tensor_node(model, &spec, shard, up)).unwrap();
            });
        }
        let mut links: Vec<_> = ours
            .into_iter()
            .enumerate()
            .map(|(i, e)| host_link(e, cfg, Line { corrupt, baud: 0, seed: 100 + i as u64 }))
            .collect();
        let emit = |p: &[u8]| {
            text.extend_from_slice(p);
            Ok(())
        };
        let r = rt().block_on(cluster::coordinate_tensor(
            model,
            &vec![1; links.len()],
            &mut links,
            &shards,
            job,
            10_000,
            emit,
        ));
        drop(links);
        r.unwrap()
    });
    (text, report)
}

#[test]
fn shards_in_one_process_give_the_single_node_text() {
    let builtin = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/data/default.gguf")).unwrap();
    let five = tensor_models::five_heads();
    for (name, bytes, text) in [("built-in", &builtin, "Once upon a time"), ("five heads", &five, "")] {
        let words = aligned(bytes);
        let model = <Model<'_>>::from_gguf(&bytemuck::cast_slice(&words)[..bytes.len()]).unwrap();
        let prompt = encode(&model, text);
        for (temp_milli, seed) in [(0, 0), (800, 7)] {
            let want = single(&model, &prompt, 48, temp_milli, seed);
            let job = Job { prompt: &prompt, steps: 48, temp_milli, seed };
            for nodes in [2, 3, 5] {
                let (got, report) = star(&model, nodes, 0.0, &job);
                assert_eq!(got, want, "{name}, {nodes} nodes, temp {temp_milli}");
                assert_eq!(report.nodes.len(), nodes);
                assert_eq!(report.retransmits(), 0);
            }
        }
        // 1% of the bytes corrupted on every link end: resends, the same text. (A partial of
        // the five-head model, 160 values of about 6 bytes, almost never crosses such a line
        // whole: stop-and-wait resends whole frames.)
        if name != "built-in" {
            continue;
        }
        let job = Job { prompt: &prompt, steps: 12, temp_milli: 900, seed: 3 };
        let (got, report) = star(&model, 3, 0.01, &job);
        assert_eq!(got, single(&model, &prompt, 12, 900, 3), "{name}, noisy");
        assert!(report.retransmits() > 0, "{name}: no resends at 1% corrupted bytes");
        eprintln!("{name}, 3 nodes, 1% corrupted: {} retransmits, 0 wrong tokens", report.retransmits());
    }
}

fn base_port(slot: u16) -> u16 {
    17_000 + (std::process::id() % 400) as u16 * 16 + slot * 6
}

/// `cluster --chips N --topology tensor` for `model` (extra args), then this test's ports.
fn plan(name: &str, chips: usize, slot: u16, model: &[&str], edit: impl FnOnce(&mut ClusterFile)) -> PathBuf {
    let extra = [&["--topology", "tensor"][..], model].concat();
    plan_cluster(name, chips, &extra, base_port(slot), edit)
}

#[test]
fn shard_processes_on_loopback_print_what_gen_prints() {
    let five = scratch("five-heads.gguf");
    std::fs::write(&five, tensor_models::five_heads()).unwrap();
    let models: [(&str, Vec<&str>, &str); 2] =
        [("builtin", vec![], "Once upon a time"), ("five", vec!["-m", s(&five)], "")];
    let mut slot = 0;
    for (name, model, prompt) in &models {
        for nodes in [2, 3, 5] {
            let config = plan(&format!("tensor-{name}-{nodes}.toml"), nodes, slot, model, |_| {});
            slot += 1;
            for (temp, seed) in [("0", "42"), ("0.8", "7")] {
                let want = gen_int(model, prompt, 48, temp, seed);
                let out = cluster_run(&config, prompt, 48, temp, seed);
                let err = String::from_utf8_lossy(&out.stderr);
                assert!(out.status.success(), "{name}, {nodes} nodes: {err}");
                assert_eq!(out.stdout, want, "{name}, {nodes} nodes, temp {temp}");
                for i in 0..nodes {
                    assert!(err.contains(&format!("node {i} (shard")), "{err}");
                }
            }
        }
    }
    // The five-head model really splits its heads: one a node.
    let out = run(&[
        "cluster",
        "--chips",
        "5",
        "--topology",
        "tensor",
        "-m",
        s(&five),
        "-o",
        s(&scratch("t5.toml")),
        "--force",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("chip 4: heads 4..=4, FFN rows 192..=199"), "{err}");
}

/// Splits the model's shape does not allow, and tensor files that are not, are one clear error.
#[test]
fn bad_tensor_clusters_are_one_clear_error() {
    let out =
        run(&["cluster", "--chips", "6", "--topology", "tensor", "-o", s(&scratch("t6.toml")), "--force"]);
    fails_with(&out, "6 tensor-parallel nodes: this model splits into at most 5 (its 4 KV heads of 8 values make 1 attention part(s) of whole quantization groups of 32, its 144 FFN rows 5 part(s) of 32); use 1 to 5 nodes, or topology \"pipeline\"");
    let config = plan("tensor-bad-layers.toml", 2, 20, &[], |f| f.chips.nodes[1].layers = [0, 2]);
    fails_with(
        &cluster_run(&config, "Once", 8, "0", "1"),
        "node 1: in the tensor topology every node holds a part of every layer: role = \"shard\", layers = [0, 4]",
    );
    let config = plan("tensor-dup.toml", 2, 21, &[], |f| f.chips.nodes[1].id = 0);
    fails_with(&cluster_run(&config, "Once", 8, "0", "1"), "duplicate node id 0");
    let config = plan("tensor-too-many.toml", 5, 22, &[], |f| {
        let mut extra = f.chips.nodes[4].clone();
        extra.id = 5;
        extra.port = toml::Value::Integer(base_port(22) as i64 + 5);
        f.chips.nodes.push(extra);
        f.cluster.chips = 6;
    });
    fails_with(&cluster_run(&config, "Once", 8, "0", "1"), "this model splits into at most 5");
}

/// A shard given another model image than the coordinator's refuses its link in the
/// handshake; the run stops with a line naming that node and both checksums.
#[test]
fn a_shard_with_another_model_is_refused() {
    let other = scratch("other-padded.gguf");
    let builtin = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("data/default.gguf");
    let out = run(&["convert", s(&builtin), "--quant", "q8", "--pad-ffn", "32", "-o", s(&other)]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let config =
        plan("tensor-other.toml", 2, 23, &[], |f| f.chips.nodes[1].model = Some(s(&other).to_string()));
    let out = cluster_run(&config, "Once", 8, "0", "1");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    let last = err.trim_end().lines().last().unwrap();
    assert!(last.contains("node 1 holds a different model image (checksum "), "{err}");
    assert!(last.contains("the coordinator's f0fecf4f): give every node the same model"), "{err}");
}
