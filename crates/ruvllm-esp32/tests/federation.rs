//! Federation without the network: pipeline stages chained in memory give exactly the tokens
//! of single-node generation (2, 3 and 5 nodes, greedy and seeded), and the frame parser
//! (fuzzed, cases from env FUZZ_CASES) never takes a damaged or oversized frame for a message.
#![cfg(all(feature = "federation", feature = "std"))]

mod common;
#[path = "common/fuzz.rs"]
mod fuzz;

#[path = "common/generation.rs"]
mod generation;

use generation::{encode, single};
use proptest::prelude::*;
use ruvllm_esp32::federation::pipeline::{self, Sequence, Slot, Stage};
use ruvllm_esp32::federation::wire::{
    self, Body, Decoder, Forward, Frame, FrameError, Hello, Partial, Partials, PlanEntry, Residual, RingPlan,
    Round, MAX_FRAME,
};
use ruvllm_esp32::federation::{plan, Role};
use ruvllm_esp32::infer::IntState;
use ruvllm_esp32::model::Model;
use ruvllm_esp32::sample::Sampling;
use ruvllm_esp32::tokenizer;
use std::ops::Range;

fn builtin() -> common::Image {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../ruvllm-cli/data/default.gguf");
    common::Image::new(&std::fs::read(path).unwrap())
}

/// The ring in memory: each message goes through every stage in turn, as the links carry it.
fn chained(
    model: &Model<'_>,
    nodes: usize,
    prompt: &[u32],
    steps: usize,
    temp_milli: u32,
    seed: u64,
) -> Vec<u8> {
    let layers: Vec<_> = plan(model.config.n_layers, nodes).unwrap().map(|s| s.layers).collect();
    ring(model, &vec![model; layers.len()], &layers, prompt, steps, temp_milli, seed)
}

/// [`chained`] with stage `i` running `layers[i]` of `parts[i]` (the whole model, or its cut).
fn ring(
    model: &Model<'_>,
    parts: &[&Model<'_>],
    layers: &[Range<usize>],
    prompt: &[u32],
    steps: usize,
    temp_milli: u32,
    seed: u64,
) -> Vec<u8> {
    let mut arenas: Vec<Vec<i32>> = parts.iter().map(|m| vec![0i32; IntState::arena_len(m, steps)]).collect();
    let mut slots: Vec<Vec<Slot<'_>>> = arenas
        .iter_mut()
        .zip(parts)
        .map(|(a, m)| vec![Slot { state: IntState::new(m, a, steps).unwrap(), sampling: Sampling::GREEDY }])
        .collect();
    let mut nodes: Vec<Stage<'_, '_, '_>> = layers
        .iter()
        .zip(slots.iter_mut())
        .zip(parts)
        .enumerate()
        .map(|(i, ((l, slot), m))| Stage::new(i as u8, m, l.clone(), slot).unwrap())
        .collect();
    let through = |nodes: &mut [Stage<'_, '_, '_>], mut body: Body| {
        for n in nodes.iter_mut() {
            body = n.handle(body);
        }
        body
    };
    assert_eq!(
        through(&mut nodes, Body::Start { stream: 0, temp_milli, seed }),
        Body::Start { stream: 0, temp_milli, seed }
    );
    let mut seq = Sequence::new(prompt, steps).unwrap();
    let (mut out, mut scratch) = (Vec::new(), [0u8; tokenizer::DECODE_MAX]);
    while let Some((pos, token, sample)) = seq.next_step() {
        let f = Forward { stream: 0, pos, token, sample, residual: Residual::new() };
        let Body::Next { stream: 0, pos: p, token: got } = through(&mut nodes, Body::Forward(f)) else {
            panic!("no answer")
        };
        assert_eq!(p, pos);
        if let Some(piece) = seq.advance(&model.vocab, got, &mut scratch).unwrap() {
            out.extend_from_slice(piece);
        }
    }
    out
}

#[test]
fn chained_stages_give_the_single_node_tokens() {
    let img = builtin();
    let model = <Model<'_>>::from_gguf(img.bytes()).unwrap();
    assert_eq!(model.config.n_layers, 5);
    let prompt = encode(&model, "Once upon a time");
    for (temp, seed) in [(0, 0), (800, 7), (1000, 42)] {
        let want = single(&model, &prompt, 64, temp, seed);
        assert!(want.len() > 40, "{}", String::from_utf8_lossy(&want));
        for nodes in [1, 2, 3, 5] {
            assert_eq!(chained(&model, nodes, &prompt, 64, temp, seed), want, "{nodes} nodes, temp {temp}");
        }
    }
    // stories260K (../shared) as well.
    let Some(img) = common::stories260k_image(ruvllm_esp32::convert::Quant::Q8) else { return };
    let model = <Model<'_>>::from_gguf(img.bytes()).unwrap();
    let prompt = encode(&model, "Lily");
    for nodes in [2, 3, 5] {
        for (temp, seed) in [(0, 0), (900, 3)] {
            let want = single(&model, &prompt, 48, temp, seed);
            assert_eq!(chained(&model, nodes, &prompt, 48, temp, seed), want, "stories260K, {nodes} nodes");
        }
    }
    let roles: Vec<Role> = plan(5, 3).unwrap().map(|s| s.role).collect();
    assert_eq!(roles, [Role::Head, Role::Middle, Role::Tail]);
}

/// Each stage holding only its layers' cut of the image (what a board links) gives exactly
/// the whole model's tokens: the built-in model over 2, 3 and 5 cuts, and models/3m.gguf, a
/// trained model too big for one ESP32-C3's flash, over 2 and 3.
#[test]
fn stages_on_cut_images_give_the_single_node_tokens() {
    use ruvllm_esp32::federation::cut::cut;
    let check = |img: &common::Image, prompt: &str, counts: &[usize], steps: usize| {
        let model = <Model<'_>>::from_gguf(img.bytes()).unwrap();
        let n = model.config.n_layers;
        let prompt = encode(&model, prompt);
        for &nodes in counts {
            let layers: Vec<_> = plan(n, nodes).unwrap().map(|s| s.layers).collect();
            let cuts: Vec<common::Image> =
                layers.iter().map(|l| common::Image::new(&cut(img.bytes(), l.clone()).unwrap())).collect();
            let parts: Vec<Model<'_>> = cuts.iter().map(|c| Model::from_gguf(c.bytes()).unwrap()).collect();
            for (p, l) in parts.iter().zip(&layers) {
                assert!(p.checksum_verified);
                assert_eq!(p.config.n_layers, l.len());
                assert_eq!(p.cut, Some(ruvllm_esp32::model::Cut { first: l.start, total: n }));
            }
            let bytes: usize = cuts.iter().map(|c| c.bytes().len()).sum();
            assert!(cuts.iter().all(|c| c.bytes().len() < img.bytes().len() * 3 / 4), "{nodes} cuts");
            assert!(bytes < img.bytes().len() * 2, "{nodes} cuts: {bytes} bytes");
            let refs: Vec<&Model<'_>> = parts.iter().collect();
            for (temp, seed) in [(0, 0), (800, 7)] {
                let want = single(&model, &prompt, steps, temp, seed);
                assert!(want.len() > steps / 2, "{}", String::from_utf8_lossy(&want));
                let got = ring(&model, &refs, &layers, &prompt, steps, temp, seed);
                assert_eq!(
                    String::from_utf8_lossy(&got),
                    String::from_utf8_lossy(&want),
                    "{nodes} cuts, temp {temp}"
                );
            }
        }
    };
    check(&builtin(), "Once upon a time", &[2, 3, 5], 48);
    let big = concat!(env!("CARGO_MANIFEST_DIR"), "/../../models/3m.gguf");
    check(&common::Image::new(&std::fs::read(big).unwrap()), "Once upon a time", &[2, 3], 24);

    // What a cut refuses: layers outside the model, cutting a cut, and a stage of other layers.
    let img = builtin();
    assert!(cut(img.bytes(), 3..6).is_err());
    assert!(cut(img.bytes(), 2..2).is_err());
    let part = common::Image::new(&cut(img.bytes(), 1..3).unwrap());
    assert!(cut(part.bytes(), 0..1).is_err());
    let model = <Model<'_>>::from_gguf(part.bytes()).unwrap();
    for bad in [0..2, 2..4, 0..1] {
        assert!(Stage::new(0, &model, bad.clone(), &mut []).is_err(), "{bad:?}");
    }
    assert!(Stage::new(0, &model, 1..3, &mut []).is_ok());
    // A cut whose keys lie (checksum re-stamped, so only the keys are wrong) is refused by
    // the loader: a first layer of u32::MAX, past the model's count, or a model of fewer
    // layers than the cut holds.
    let value_at =
        |bytes: &[u8], key: &[u8]| bytes.windows(key.len()).position(|w| w == key).unwrap() + key.len() + 4;
    for (key, value) in
        [(&b"ruvllm.cut.first"[..], u32::MAX), (b"ruvllm.cut.first", 4), (b"ruvllm.cut.layers", 1)]
    {
        let mut bad = part.bytes().to_vec();
        let at = value_at(&bad, key);
        bad[at..at + 4].copy_from_slice(&value.to_le_bytes());
        let crc_at = value_at(&bad, b"ruvllm.checksum");
        let crc = ruvllm_esp32::gguf::image_crc(&bad, crc_at);
        bad[crc_at..crc_at + 4].copy_from_slice(&crc.to_le_bytes());
        let bad = common::Image::new(&bad);
        let err = <Model<'_>>::from_gguf(bad.bytes()).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(err.contains("outside its model"), "{}={value}: {err:?}", String::from_utf8_lossy(key));
    }
    // The whole range is the image itself.
    assert_eq!(cut(img.bytes(), 0..5).unwrap(), img.bytes());
}

/// A stage refuses what it cannot run with a failure naming itself, and keeps its state.
#[test]
fn a_stage_answers_bad_steps_with_a_failure() {
    let img = builtin();
    let model = <Model<'_>>::from_gguf(img.bytes()).unwrap();
    let mut arena = vec![0i32; IntState::arena_len(&model, 8)];
    let mut slots =
        vec![Slot { state: IntState::new(&model, &mut arena, 8).unwrap(), sampling: Sampling::GREEDY }];
    let mut stage = Stage::new(3, &model, 2..4, &mut slots).unwrap();
    let fwd = |stream, pos, residual: &[i32]| {
        Body::Forward(Forward {
            stream,
            pos,
            token: 1,
            sample: false,
            residual: Residual::from_slice(residual).unwrap(),
        })
    };
    let fail = |reason| Body::Fail { node: 3, reason };
    use wire::FailReason::*;
    assert_eq!(stage.handle(fwd(0, 0, &[1, 2])), fail(BadResidual));
    let dim = vec![0; model.config.dim];
    assert_eq!(stage.handle(fwd(1, 0, &dim)), fail(BadStream));
    assert_eq!(stage.handle(fwd(0, 8, &dim)), fail(BadStep));
    assert!(matches!(stage.handle(fwd(0, 0, &dim)), Body::Forward(_)));
    assert_eq!(stage.handle(Body::Ack), fail(Unexpected));
    assert!(Stage::new(0, &model, 4..6, &mut []).is_err());
}

fn frame() -> impl Strategy<Value = Frame> {
    let body = prop_oneof![
        Just(Body::Ack),
        Just(Body::Finish),
        (any::<u16>(), any::<u32>(), any::<u8>()).prop_map(|(version, model, node)| Body::Hello(Hello {
            version,
            model,
            node
        })),
        (any::<u8>(), any::<u32>(), any::<u64>()).prop_map(|(stream, temp_milli, seed)| Body::Start {
            stream,
            temp_milli,
            seed
        }),
        (
            any::<u8>(),
            any::<u32>(),
            any::<u32>(),
            any::<bool>(),
            proptest::collection::vec(any::<i32>(), 0..300)
        )
            .prop_map(|(stream, pos, token, sample, r)| Body::Forward(Forward {
                stream,
                pos,
                token,
                sample,
                residual: Residual::from_slice(&r).unwrap()
            })),
        (any::<u8>(), any::<u32>(), any::<Option<u32>>()).prop_map(|(stream, pos, token)| Body::Next {
            stream,
            pos,
            token
        }),
        (
            any::<u8>(),
            any::<u32>(),
            any::<u16>(),
            any::<bool>(),
            proptest::collection::vec(any::<i32>(), 0..300)
        )
            .prop_map(|(stream, pos, layer, ffn, r)| Body::Round(Round {
                stream,
                pos,
                layer,
                ffn,
                residual: Residual::from_slice(&r).unwrap()
            })),
        (
            any::<u8>(),
            any::<u32>(),
            any::<u16>(),
            any::<bool>(),
            proptest::collection::vec(any::<i64>(), 0..300)
        )
            .prop_map(|(stream, pos, layer, ffn, a)| Body::Partial(Partial {
                stream,
                pos,
                layer,
                ffn,
                acc: Partials::from_slice(&a).unwrap()
            })),
        (any::<u16>(), any::<u8>(), any::<u8>(), (any::<u8>(), any::<u16>(), any::<u16>(), any::<u16>()))
            .prop_map(|(layers, index, count, (node, port, first, end))| Body::Plan {
                layers,
                index,
                count,
                entry: PlanEntry { node, port, first, end }
            }),
    ];
    (any::<u16>(), body).prop_map(|(seq, body)| Frame { seq, body })
}

fn decode_all(bytes: &[u8]) -> Vec<Result<Frame, FrameError>> {
    let mut dec = Box::new(Decoder::<MAX_FRAME>::default());
    let (mut at, mut out) = (0, Vec::new());
    while at < bytes.len() {
        let (used, got) = dec.feed(&bytes[at..]);
        at += used;
        out.extend(got);
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(fuzz::cases()))]

    /// Every frame comes back as itself, alone or amid others, however the bytes are split.
    #[test]
    fn frames_round_trip(frames in proptest::collection::vec(frame(), 1..4), cut in any::<usize>()) {
        let mut stream = Vec::new();
        let mut buf = vec![0u8; MAX_FRAME];
        for f in &frames {
            let bytes = wire::encode(f, &mut buf).unwrap();
            prop_assert_eq!(bytes.iter().filter(|b| **b == 0).count(), 1);
            prop_assert_eq!(*bytes.last().unwrap(), 0);
            stream.extend_from_slice(bytes);
        }
        let mut dec = Box::new(Decoder::<MAX_FRAME>::default());
        let cut = cut % stream.len();
        let (mut got, mut at) = (Vec::new(), 0);
        for part in [&stream[..cut], &stream[cut..]] {
            at = 0;
            while at < part.len() {
                let (used, f) = dec.feed(&part[at..]);
                at += used;
                got.extend(f);
            }
        }
        prop_assert_eq!(at, stream.len() - cut);
        let want: Vec<_> = frames.into_iter().map(Ok).collect();
        prop_assert_eq!(got, want);
    }

    /// A corrupted frame (any bytes changed, none added) is dropped, never read as a
    /// different message; the frame after it still decodes.
    #[test]
    fn corrupted_frames_are_dropped(f in frame(), flips in proptest::collection::vec((any::<usize>(), 1..=255u8), 1..4)) {
        let mut buf = vec![0u8; MAX_FRAME];
        let good = wire::encode(&f, &mut buf).unwrap().to_vec();
        let mut bad = good.clone();
        for (i, x) in &flips {
            let i = i % (bad.len() - 1);
            bad[i] ^= x;
        }
        bad.extend_from_slice(&good);
        let got = decode_all(&bad);
        prop_assert_eq!(got.last(), Some(&Ok(f.clone())));
        // A damaged frame that still decodes can only be the very same frame (the flips
        // cancelled out): the CRC-32C stands between any other change and the message.
        for other in got[..got.len() - 1].iter().flatten() {
            prop_assert_eq!(other, &f);
        }
    }

    /// Any run of plan frames (hostile or damaged) is taken or refused, never trusted: a plan
    /// that completes places each node it names on a non-empty range of the model's layers,
    /// or refuses it.
    #[test]
    fn plan_frames_never_panic(
        parts in proptest::collection::vec(
            (0..8u16, 0..6u8, 0..6u8, (0..6u8, any::<u16>(), 0..9u16, 0..9u16)), 1..8),
        layers in 1..9usize,
    ) {
        let mut plan = RingPlan::default();
        for (l, index, count, (node, port, first, end)) in parts {
            let body = Body::Plan { layers: l, index, count, entry: PlanEntry { node, port, first, end } };
            match plan.take(&body) {
                Ok(true) => break,
                Ok(false) => {}
                Err(_) => return Ok(()),
            }
        }
        for node in 0..6u8 {
            if let Ok((r, _)) = plan.place(node, layers) {
                prop_assert!(!r.is_empty() && r.end <= layers);
            }
        }
    }

    /// Arbitrary bytes never panic, never allocate, and an overlong run is refused as such.
    #[test]
    fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..4096)) {
        let _ = decode_all(&bytes);
    }
}

#[test]
fn an_oversized_frame_is_refused_and_the_next_one_decodes() {
    let mut stream = vec![7u8; MAX_FRAME + 10];
    stream.push(0);
    let mut buf = vec![0u8; MAX_FRAME];
    let f = Frame { seq: 9, body: Body::Finish };
    stream.extend_from_slice(wire::encode(&f, &mut buf).unwrap());
    assert_eq!(decode_all(&stream), [Err(FrameError::Oversized), Ok(f)]);
    // The widest residual fits MAX_FRAME, one value more does not exist as a message.
    let wide = Residual::from_slice(&[i32::MIN; wire::MAX_DIM]).unwrap();
    let body =
        Body::Forward(Forward { stream: 255, pos: u32::MAX, token: u32::MAX, sample: true, residual: wide });
    assert!(wire::encode(&Frame { seq: u16::MAX, body }, &mut buf).is_some());
    let wide = Partials::from_slice(&[i64::MIN; wire::MAX_PARTIAL]).unwrap();
    let body = Body::Partial(Partial { stream: 255, pos: u32::MAX, layer: u16::MAX, ffn: true, acc: wide });
    assert!(wire::encode(&Frame { seq: u16::MAX, body }, &mut buf).is_some());
    assert_eq!(decode_all(&[1, 0]), [Err(FrameError::Malformed)]);
}

/// A plan names each node's layers and the port of the node after it; a plan that does not
/// cover the model once, or names a node not exactly once, is refused; a stage holds only
/// the layers of its image (a cut cannot take more).
#[test]
fn ring_plans_cover_the_model_once() {
    use wire::FailReason::BadPlan;
    let p = RingPlan::over(5, &[(4, 100), (7, 200), (9, 300)]).unwrap();
    assert_eq!(p.place(4, 5), Ok((0..2, Some(200))));
    assert_eq!(p.place(7, 5), Ok((2..4, Some(300))));
    assert_eq!(p.place(9, 5), Ok((4..5, None)));
    assert_eq!(p.place(5, 5), Err(BadPlan));
    assert_eq!(p.place(4, 6), Err(BadPlan));
    let bad = |edit: &dyn Fn(&mut RingPlan)| {
        let mut q = p.clone();
        edit(&mut q);
        (0..=255u8).all(|n| q.place(n, 5) == Err(BadPlan))
    };
    assert!(bad(&|q| q.nodes[1].first = 3));
    assert!(bad(&|q| q.nodes[2].end = 4));
    assert!(bad(&|q| q.nodes[0].first = 1));
    assert!(bad(&|q| (q.nodes[1].first, q.nodes[1].end) = (2, 2)));
    assert!(bad(&|q| q.nodes.clear()));
    let mut twice = p.clone();
    twice.nodes[2].node = 4;
    assert_eq!(twice.place(4, 5), Err(BadPlan));
    assert_eq!(twice.place(7, 5), Ok((2..4, Some(300))));
    assert!(RingPlan::over(5, &[]).is_err());
    // On the wire: one frame a node, taken back in order into the same plan.
    let mut back = RingPlan::default();
    let parts: Vec<Body> = p.parts().collect();
    assert_eq!(parts.len(), 3);
    assert_eq!(parts.iter().map(|b| back.take(b).unwrap()).collect::<Vec<_>>(), [false, false, true]);
    assert_eq!(back, p);
    let part = |layers, index, count| Body::Plan { layers, index, count, entry: p.nodes[0] };
    let take_all = |bodies: &[Body]| {
        let mut q = RingPlan::default();
        bodies.iter().map(|b| q.take(b)).collect::<Vec<_>>()
    };
    use wire::FailReason::Unexpected;
    assert_eq!(take_all(&[part(5, 1, 3)]), [Err(BadPlan)]);
    assert_eq!(take_all(&[part(5, 0, 0)]), [Err(BadPlan)]);
    assert_eq!(take_all(&[part(5, 0, 255)]), [Err(BadPlan)]);
    assert_eq!(take_all(&[part(5, 0, 3), part(6, 1, 3)]), [Ok(false), Err(BadPlan)]);
    assert_eq!(take_all(&[part(5, 0, 3), part(5, 1, 2)]), [Ok(false), Err(BadPlan)]);
    assert_eq!(take_all(&[part(5, 0, 3), part(5, 0, 3)]), [Ok(false), Err(BadPlan)]);
    assert_eq!(take_all(&[Body::Finish]), [Err(Unexpected)]);
    // A plan cut short does not place anyone.
    let mut short = RingPlan::default();
    short.take(&parts[0]).unwrap();
    assert_eq!(short.place(4, 5), Err(BadPlan));
    assert!(RingPlan::over(2, &[(0, 1), (1, 2), (2, 3)]).is_err());
    let img = builtin();
    let model = <Model<'_>>::from_gguf(img.bytes()).unwrap();
    assert!(pipeline::holds(&model, &(0..5)) && !pipeline::holds(&model, &(3..6)));
    let part = ruvllm_esp32::federation::cut::cut(img.bytes(), 2..4).unwrap();
    let part = common::Image::new(&part);
    let cut = <Model<'_>>::from_gguf(part.bytes()).unwrap();
    assert!(pipeline::holds(&cut, &(2..4)) && pipeline::holds(&cut, &(3..4)));
    assert!(!pipeline::holds(&cut, &(1..4)) && !pipeline::holds(&cut, &(2..5)));
    assert_eq!(pipeline::total_layers(&cut), 5);
}

/// The bytes docs/FEDERATION.md shows: a change to the wire format fails here first.
#[test]
fn the_wire_format_is_as_documented() {
    let mut buf = vec![0u8; MAX_FRAME];
    let hello = Hello { version: 1, model: 0xf0fe_cf4f, node: 255 };
    let residual = Residual::from_slice(&[65536, -1, 0]).unwrap();
    let forward = Forward { stream: 0, pos: 5, token: 300, sample: false, residual };
    let cases: [(Frame, &[u8]); 3] = [
        (Frame { seq: 3, body: Body::Ack }, &[0x02, 0x03, 0x05, 0x4b, 0xdf, 0x86, 0xc5, 0x00]),
        (
            Frame { seq: 0, body: Body::Hello(hello) },
            &[0x01, 0x0d, 0x01, 0x01, 0xcf, 0x9e, 0xfb, 0x87, 0x0f, 0xff, 0x02, 0x7c, 0xeb, 0x3c, 0x00],
        ),
        (
            Frame { seq: 7, body: Body::Forward(forward) },
            &[
                0x03, 0x07, 0x05, 0x04, 0x05, 0xac, 0x02, 0x06, 0x03, 0x80, 0x80, 0x08, 0x01, 0x05, 0xb9,
                0x1f, 0x1e, 0xa9, 0x00,
            ],
        ),
    ];
    for (frame, bytes) in cases {
        assert_eq!(wire::encode(&frame, &mut buf).unwrap(), bytes, "{frame:?}");
    }
}
