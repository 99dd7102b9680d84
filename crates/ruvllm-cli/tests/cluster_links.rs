//! Federation over real links in one process: the coordinator and each node on its own thread
//! and tokio runtime, joined by in-memory byte pipes (tokio's duplex streams) carrying the
//! same frames as TCP or a UART. The tokens equal single-node generation with 1, 2, 3 and 5
//! nodes, greedy and seeded, also with 1% of the bytes corrupted on every link; a wrong
//! protocol version and another model image are refused with a clear error.

#[path = "../../ruvllm-esp32/tests/common/generation.rs"]
mod generation;

use generation::{encode, single};
use ruvllm_cli::cluster::{self, host_link, Job, Line, NodeSpec, RunReport};
use ruvllm_esp32::federation::link::{LinkConfig, LinkError};
use ruvllm_esp32::federation::plan;
use ruvllm_esp32::federation::wire::{Hello, Refusal, VERSION};
use ruvllm_esp32::model::Model;
use tokio::io::DuplexStream;

/// The built-in model in an 8-byte aligned buffer.
fn builtin() -> Vec<u64> {
    let bytes = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/data/default.gguf")).unwrap();
    let mut words = vec![0u64; bytes.len().div_ceil(8)];
    bytemuck::cast_slice_mut::<u64, u8>(&mut words)[..bytes.len()].copy_from_slice(&bytes);
    words
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap()
}

const PIPE: usize = 4096;

struct Ring {
    nodes: usize,
    cfg: LinkConfig,
    corrupt: f64,
    /// UART speed the links imitate (0: as fast as the pipes go).
    baud: u32,
    /// Checksum each node holds (the coordinator's is 1).
    checksums: Vec<u32>,
}

/// What a ring run gave: the coordinator's result, each job's text, each node's error.
struct Run {
    report: anyhow::Result<RunReport>,
    texts: Vec<Vec<u8>>,
    errors: Vec<String>,
}

/// Runs `jobs` on a ring of `r.nodes` nodes.
fn ring(model: &Model<'_>, r: &Ring, jobs: &[Job<'_>]) -> Run {
    let stages: Vec<_> = plan(model.config.n_layers, r.nodes).unwrap().collect();
    // Link i runs into node i (link `nodes` back into the coordinator): its writing end is
    // the upstream side's, its reading end the downstream side's.
    let (mut writing, mut reading): (Vec<DuplexStream>, Vec<DuplexStream>) =
        (0..=r.nodes).map(|_| tokio::io::duplex(PIPE)).unzip();
    let head_end = writing.remove(0);
    let coord_end = reading.pop().unwrap();
    let mut texts = vec![Vec::new(); jobs.len()];
    let seed = |i: usize, side: u64| (i as u64) << 8 | side;
    let errors = std::sync::Mutex::new(Vec::new());
    let report = std::thread::scope(|s| {
        for (i, ((st, up), down)) in stages.iter().zip(reading).zip(writing).enumerate() {
            let spec = NodeSpec {
                id: st.chip as u8,
                layers: st.layers.clone(),
                streams: jobs.len(),
                seq_len: model.config.seq_len,
                checksum: r.checksums[i],
                accept_ms: 10_000,
            };
            let (cfg, corrupt, baud, errors) = (r.cfg, r.corrupt, r.baud, &errors);
            s.spawn(move || {
                let up = host_link(up, cfg, Line { corrupt, baud, seed: seed(i, 1) });
                let down = async move { Ok(host_link(down, cfg, Line { corrupt, baud, seed: seed(i, 2) })) };
                if let Err(e) = rt().block_on(cluster::run_node(model, &spec, up, down)) {
                    errors.lock().unwrap().push(format!("node {i}: {e:#}"));
                }
            });
        }
        let head = host_link(head_end, r.cfg, Line { corrupt: r.corrupt, baud: r.baud, seed: seed(99, 1) });
        let tail = async {
            Ok(host_link(coord_end, r.cfg, Line { corrupt: r.corrupt, baud: r.baud, seed: seed(99, 2) }))
        };
        rt().block_on(cluster::coordinate(model, 1, head, tail, jobs, 10_000, |i, piece| {
            texts[i].extend_from_slice(piece);
            Ok(())
        }))
    });
    Run { report, texts, errors: errors.into_inner().unwrap() }
}

#[test]
fn rings_of_nodes_give_the_single_node_tokens() {
    let words = builtin();
    let model = <Model<'_>>::from_gguf(bytemuck::cast_slice(&words)).unwrap();
    let prompt = encode(&model, "Once upon a time");
    for (temp, seed) in [(0, 0), (800, 7)] {
        let want = single(&model, &prompt, 48, temp, seed);
        for nodes in [1, 2, 3, 5] {
            let r =
                Ring { nodes, cfg: LinkConfig::default(), corrupt: 0.0, baud: 0, checksums: vec![1; nodes] };
            let Run { report, texts, errors } =
                ring(&model, &r, &[Job { prompt: &prompt, steps: 48, temp_milli: temp, seed }]);
            let report = report.unwrap();
            assert!(errors.is_empty(), "{errors:?}");
            assert_eq!(texts[0], want, "{nodes} nodes, temp {temp}");
            assert_eq!(report.nodes.len(), nodes);
            assert_eq!(report.retransmits(), 0);
            assert_eq!(report.positions, 48);
        }
    }
}

/// 1% of the bytes on every link (both directions, acknowledgements too) corrupted at random:
/// frames fail their CRC and are sent again; not one token differs.
#[test]
fn a_noisy_line_costs_resends_not_tokens() {
    let words = builtin();
    let model = <Model<'_>>::from_gguf(bytemuck::cast_slice(&words)).unwrap();
    let prompt = encode(&model, "The dog");
    let cfg = LinkConfig { ack_ms: 5, retries: 400 };
    for (nodes, temp, seed) in [(2, 0, 0), (3, 900, 5), (5, 0, 0)] {
        let want = single(&model, &prompt, 32, temp, seed);
        let r = Ring { nodes, cfg, corrupt: 0.01, baud: 0, checksums: vec![1; nodes] };
        let Run { report, texts, errors } =
            ring(&model, &r, &[Job { prompt: &prompt, steps: 32, temp_milli: temp, seed }]);
        let report = report.unwrap();
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(texts[0], want, "{nodes} nodes");
        let bad: u32 = report.nodes.iter().map(|n| n.bad_frames).sum();
        eprintln!(
            "{nodes} nodes, 1% of bytes corrupted: {} retransmits, {bad} frames dropped by the nodes, {} positions, {:.0} wire bytes per position",
            report.retransmits(),
            report.positions,
            report.wire_bytes() as f64 / report.positions as f64
        );
        assert!(report.retransmits() > 0 && bad > 0, "the noise never hit a frame");
    }
}

/// Several sequences at once share the ring; each gets exactly its single-node text.
#[test]
fn concurrent_sequences_each_get_their_own_tokens() {
    let words = builtin();
    let model = <Model<'_>>::from_gguf(bytemuck::cast_slice(&words)).unwrap();
    let prompts: Vec<Vec<u32>> =
        ["Once upon a time", "The cat", "Tom had a", "One day"].iter().map(|p| encode(&model, p)).collect();
    let jobs: Vec<Job<'_>> = prompts
        .iter()
        .enumerate()
        .map(|(i, p)| Job {
            prompt: p,
            steps: 40,
            temp_milli: if i % 2 == 0 { 0 } else { 700 },
            seed: i as u64,
        })
        .collect();
    let r = Ring { nodes: 3, cfg: LinkConfig::default(), corrupt: 0.0, baud: 0, checksums: vec![1; 3] };
    let Run { report, texts, errors } = ring(&model, &r, &jobs);
    report.unwrap();
    assert!(errors.is_empty(), "{errors:?}");
    for (j, t) in jobs.iter().zip(&texts) {
        assert_eq!(t, &single(&model, j.prompt, 40, j.temp_milli, j.seed));
    }
}

/// A node holding another model image refuses the link and the run fails naming it; a peer
/// speaking another protocol version is refused with both versions named.
#[test]
fn another_model_or_version_is_refused() {
    let words = builtin();
    let model = <Model<'_>>::from_gguf(bytemuck::cast_slice(&words)).unwrap();
    let prompt = encode(&model, "The dog");
    let r = Ring {
        nodes: 3,
        cfg: LinkConfig { ack_ms: 20, retries: 5 },
        corrupt: 0.0,
        baud: 0,
        checksums: vec![1, 1, 7],
    };
    let run = ring(&model, &r, &[Job { prompt: &prompt, steps: 8, temp_milli: 0, seed: 0 }]);
    assert!(run.report.is_err());
    // Node 2 refuses node 1's link; both say why, naming node 2.
    let why = "node 2 holds a different model image (checksum 00000007, the coordinator's 00000001): give every node the same model";
    for who in [
        "node 1: link to its downstream neighbour refused: ",
        "node 2: link to its upstream neighbour refused: ",
    ] {
        assert!(run.errors.contains(&format!("{who}{why}")), "{:?}", run.errors);
    }

    let (a, b) = tokio::io::duplex(PIPE);
    let cfg = LinkConfig { ack_ms: 20, retries: 5 };
    let me = Hello { version: VERSION, model: 1, node: 0 };
    let (theirs, ours) = rt().block_on(async {
        let mut old = host_link(a, cfg, Line::default());
        let mut node = host_link(b, cfg, Line::default());
        let old_hello = Hello { version: VERSION + 1, ..me };
        tokio::join!(old.hello(old_hello), node.accept(me, 1000))
    });
    let refusal = Refusal::Version { theirs: VERSION + 1, ours: VERSION };
    assert!(matches!(theirs, Err(LinkError::Refused(r)) if r == refusal));
    assert!(matches!(ours, Err(LinkError::Refusing(r)) if r == refusal));
    let text = LinkError::<std::io::Error>::Refused(refusal).to_string();
    assert_eq!(
        text,
        format!("protocol version {} where version {VERSION} is spoken (update both ends)", VERSION + 1)
    );
}

/// Pipeline throughput: on links as slow as a 115,200-baud UART, one sequence keeps one link
/// busy at a time; four sequences in flight keep every link and node busy. Figures (printed
/// with --nocapture) are in docs/BENCHMARKS.md.
#[test]
fn four_sequences_in_flight_outrun_one() {
    let words = builtin();
    let model = <Model<'_>>::from_gguf(bytemuck::cast_slice(&words)).unwrap();
    let prompts: Vec<Vec<u32>> =
        ["Once upon a time", "The cat", "Tom had a", "One day"].iter().map(|p| encode(&model, p)).collect();
    let steps = 24;
    let jobs: Vec<Job<'_>> =
        prompts.iter().map(|p| Job { prompt: p, steps, temp_milli: 0, seed: 0 }).collect();
    let r = Ring {
        nodes: 3,
        cfg: LinkConfig { ack_ms: 200, retries: 20 },
        corrupt: 0.0,
        baud: 115_200,
        checksums: vec![1; 3],
    };
    let rate = |jobs: &[Job<'_>]| {
        let run = ring(&model, &r, jobs);
        assert!(run.errors.is_empty(), "{:?}", run.errors);
        for (j, t) in jobs.iter().zip(&run.texts) {
            assert_eq!(t, &single(&model, j.prompt, steps, 0, 0));
        }
        let report = run.report.unwrap();
        let tps = report.positions as f64 / report.elapsed.as_secs_f64();
        (tps, report)
    };
    let (one, r1) = rate(&jobs[..1]);
    let (four, r4) = rate(&jobs);
    eprintln!(
        "3 nodes, links at 115200 baud: 1 sequence {one:.1} positions/s ({} positions, {:.0} wire bytes each); 4 sequences {four:.1} positions/s ({} positions) = {:.2}x",
        r1.positions,
        r1.wire_bytes() as f64 / r1.positions as f64,
        r4.positions,
        four / one
    );
    assert!(four > 1.6 * one, "4 sequences {four:.1}/s against 1 sequence {one:.1}/s");
}

/// While one end waits for its acknowledgement it keeps one new frame from the other end
/// (acknowledged, delivered next) and leaves a second one unacknowledged, never dropped
/// after acknowledging it: the other end sends that one again.
#[test]
fn a_waiting_sender_keeps_one_frame_and_leaves_the_next_unacknowledged() {
    use ruvllm_esp32::federation::wire::{self, Body, Decoder, Frame, MAX_FRAME};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (a, mut raw) = tokio::io::duplex(PIPE);
    let cfg = LinkConfig { ack_ms: 50, retries: 3 };
    rt().block_on(async {
        let mut link = host_link(a, cfg, Line::default());
        let mut buf = vec![0u8; MAX_FRAME];
        let mut frames = Vec::new();
        for f in [
            Frame { seq: 0, body: Body::Finish },
            Frame { seq: 1, body: Body::Start { stream: 1, temp_milli: 0, seed: 0 } },
            Frame { seq: 0, body: Body::Ack },
        ] {
            frames.extend_from_slice(wire::encode(&f, &mut buf).unwrap());
        }
        raw.write_all(&frames).await.unwrap();
        link.send(Body::Start { stream: 0, temp_milli: 0, seed: 0 }).await.unwrap();
        assert_eq!(link.recv(Some(10)).await.unwrap(), Body::Finish);
        // What the link wrote: its own frame, then the acknowledgement of the first one only.
        let mut out = vec![0u8; 256];
        let n = raw.read(&mut out).await.unwrap();
        let mut dec = Box::new(Decoder::<MAX_FRAME>::default());
        let (mut at, mut got) = (0, Vec::new());
        while at < n {
            let (used, f) = dec.feed(&out[at..n]);
            at += used;
            got.extend(f.map(Result::unwrap));
        }
        assert_eq!(got.len(), 2, "{got:?}");
        assert_eq!(got[1], Frame { seq: 0, body: Body::Ack });
    });
}

/// The last frame of a run, whose acknowledgement is lost: the receiving end lingers and
/// acknowledges it again, so the sender does not end the run with an error (TCP's TIME_WAIT).
#[test]
fn a_lost_last_acknowledgement_is_given_again() {
    use ruvllm_esp32::federation::wire::{self, Body, Frame};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    rt().block_on(async {
        let (ours, mut peer) = tokio::io::duplex(PIPE);
        let mut link = host_link(ours, LinkConfig::default(), Line { corrupt: 0.0, baud: 0, seed: 0 });
        let mut buf = [0u8; 64];
        let finish = wire::encode(&Frame { seq: 0, body: Body::Finish }, &mut buf).unwrap().to_vec();
        let ack = wire::encode(&Frame { seq: 0, body: Body::Ack }, &mut buf).unwrap().to_vec();
        peer.write_all(&finish).await.unwrap();
        assert_eq!(link.recv(None).await.unwrap(), Body::Finish);
        let mut got = vec![0u8; ack.len()];
        peer.read_exact(&mut got).await.unwrap();
        assert_eq!(got, ack);
        // That acknowledgement is "lost": the peer sends its Finish again.
        peer.write_all(&finish).await.unwrap();
        let lingering = async {
            link.linger(300).await;
            drop(link);
        };
        let peer_side = async {
            peer.read_exact(&mut got).await.unwrap();
            assert_eq!(got, ack, "the resent Finish was not acknowledged again");
            // After the linger the link is closed: the peer reads the end of the stream.
            assert_eq!(peer.read(&mut got).await.unwrap(), 0);
        };
        tokio::join!(lingering, peer_side);
    });
}

/// A ring given a plan (what `cluster run` does, and again after a re-plan): the same tokens as
/// one node. A node whose image is a cut that does not hold the layers the plan gives it (a
/// board linked with only its own layers) refuses them: the coordinator stops at once with one
/// line naming it, and the node says which layers it holds; nobody waits for a timeout.
#[test]
fn a_planned_ring_runs_and_a_node_that_cannot_take_its_layers_refuses() {
    use ruvllm_esp32::federation::wire::RingPlan;
    let words = builtin();
    let bytes: &[u8] = bytemuck::cast_slice(&words);
    let model = <Model<'_>>::from_gguf(bytes).unwrap();
    let prompt = encode(&model, "Once upon a time");
    // Node 1 holds the cut of layers 3..=4; a plan of 3 nodes gives it layers 2..=3.
    let part = ruvllm_esp32::federation::cut::cut(bytes, 3..5).unwrap();
    let mut part_words = vec![0u64; part.len().div_ceil(8)];
    bytemuck::cast_slice_mut::<u64, u8>(&mut part_words)[..part.len()].copy_from_slice(&part);
    let cut = <Model<'_>>::from_gguf(&bytemuck::cast_slice(&part_words)[..part.len()]).unwrap();
    let plan = RingPlan::over(5, &[(0, 0), (1, 0), (2, 0)]).unwrap();
    for (models, want_ok) in [([&model, &model, &model], true), ([&model, &cut, &model], false)] {
        let (mut writing, mut reading): (Vec<DuplexStream>, Vec<DuplexStream>) =
            (0..=3).map(|_| tokio::io::duplex(PIPE)).unzip();
        let head_end = writing.remove(0);
        let coord_end = reading.pop().unwrap();
        let cfg = LinkConfig { ack_ms: 50, retries: 20 };
        let line = Line::default();
        let jobs = [Job { prompt: &prompt, steps: 32, temp_milli: 800, seed: 7 }];
        let errors = std::sync::Mutex::new(Vec::new());
        let mut text = Vec::new();
        let report = std::thread::scope(|s| {
            for (i, ((m, up), down)) in models.iter().zip(reading).zip(writing).enumerate() {
                let spec = NodeSpec {
                    id: i as u8,
                    layers: 0..0,
                    streams: 1,
                    seq_len: model.config.seq_len,
                    checksum: 1,
                    accept_ms: 10_000,
                };
                let errors = &errors;
                s.spawn(move || {
                    let up = host_link(up, cfg, line);
                    let connect = move |_port: Option<u16>| async move { Ok(host_link(down, cfg, line)) };
                    if let Err(e) = rt().block_on(cluster::run_planned_node(m, &spec, up, connect)) {
                        errors.lock().unwrap().push(format!("node {i}: {e:#}"));
                    }
                });
            }
            let head = host_link(head_end, cfg, line);
            let tail = async { Ok(host_link(coord_end, cfg, line)) };
            let mut progress = cluster::Progress::new(&jobs).unwrap();
            rt().block_on(cluster::coordinate_ring(
                &model,
                1,
                head,
                tail,
                Some(&plan),
                &mut progress,
                10_000,
                |_, piece| {
                    text.extend_from_slice(piece);
                    Ok(())
                },
            ))
        });
        let errors = errors.into_inner().unwrap();
        if want_ok {
            report.unwrap();
            assert_eq!(text, single(&model, &prompt, 32, 800, 7));
            assert!(errors.is_empty(), "{errors:?}");
        } else {
            let e = format!("{:#}", report.unwrap_err());
            assert_eq!(
                e,
                "node 1 failed: its model image does not hold the layers the plan gives it (a board linked with only its own layers' cut cannot take more)"
            );
            assert!(
                errors.iter().any(|e| e == "node 1: cannot take layers 2..=3: its model image holds only layers 3..=4"),
                "{errors:?}"
            );
        }
    }
}
