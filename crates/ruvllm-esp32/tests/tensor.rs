//! Tensor parallelism without the network: nodes holding heads and FFN rows of every layer,
//! their partial sums reduced by the coordinator, give exactly the tokens of single-node
//! integer generation (2, 3 and 5 nodes where the shape has that many parts, greedy and
//! seeded); splits the shape does not allow are refused; a node refuses bad rounds.
#![cfg(all(feature = "federation", feature = "std"))]

mod common;
#[path = "common/generation.rs"]
mod generation;
#[path = "common/tensor_models.rs"]
mod tensor_models;

use generation::{encode, single};
use ruvllm_esp32::federation::cut;
use ruvllm_esp32::federation::pipeline::Sequence;
use ruvllm_esp32::federation::tensor::{TensorLead, TensorNode};
use ruvllm_esp32::federation::wire::{Body, FailReason, Residual, Round};
use ruvllm_esp32::infer::integer::sample_int;
use ruvllm_esp32::infer::{parts, shard, IntState, TensorState};
use ruvllm_esp32::model::Model;
use ruvllm_esp32::sample::Sampling;
use ruvllm_esp32::tokenizer;

/// The split in memory: each round goes to its takers in node order, their answers summed.
/// Returns the printed text and the sampled tokens.
fn split(
    model: &Model<'_>,
    nodes: usize,
    prompt: &[u32],
    steps: usize,
    temp: u32,
    seed: u64,
) -> (Vec<u8>, Vec<u32>) {
    split_over(model, &vec![model; nodes], prompt, steps, temp, seed)
}

/// [`split`] with node `i` holding `parts[i]` (the whole model, or its shard's cut).
fn split_over(
    model: &Model<'_>,
    parts: &[&Model<'_>],
    prompt: &[u32],
    steps: usize,
    temp: u32,
    seed: u64,
) -> (Vec<u8>, Vec<u32>) {
    let nodes = parts.len();
    let shards: Vec<_> = (0..nodes).map(|i| shard(model, nodes, i).unwrap()).collect();
    let mut arenas: Vec<Vec<i32>> =
        shards.iter().map(|s| vec![0; TensorState::arena_len(model, s, steps)]).collect();
    let mut slots: Vec<Vec<TensorState<'_>>> = arenas
        .iter_mut()
        .zip(&shards)
        .zip(parts)
        .map(|((a, s), m)| vec![TensorState::new(*m, s.clone(), a, steps).unwrap()])
        .collect();
    let dim = model.config.dim;
    let mut accs = vec![vec![0i64; dim]; nodes];
    let mut nodes: Vec<TensorNode<'_, '_, '_>> = slots
        .iter_mut()
        .zip(accs.iter_mut())
        .zip(parts)
        .enumerate()
        .map(|(i, ((s, a), m))| TensorNode::new(i as u8, m, s, a).unwrap())
        .collect();
    let mut arena = vec![0; TensorLead::arena_len(model)];
    let mut total = vec![0i64; dim];
    let mut lead = TensorLead::new(model, &mut arena, &shards, &mut total).unwrap();
    let mut sampling = Sampling::new(temp, seed);
    let mut seq = Sequence::new(prompt, steps).unwrap();
    let (mut out, mut tokens, mut scratch) = (Vec::new(), Vec::new(), [0u8; tokenizer::DECODE_MAX]);
    while let Some((pos, token, sample)) = seq.next_step() {
        lead.embed(token).unwrap();
        let rounds: Vec<_> = lead.rounds().collect();
        for (layer, ffn) in rounds {
            let msg = lead.round(0, pos, layer, ffn);
            let takers: Vec<usize> = lead.takers(ffn).collect();
            for t in takers {
                let answer = nodes[t].handle(msg.clone());
                lead.absorb(&msg, &answer).unwrap();
            }
            lead.reduce();
        }
        let next = sample.then(|| lead.sample(&mut sampling).unwrap());
        tokens.extend(next);
        if let Some(piece) = seq.advance(&model.vocab, next, &mut scratch).unwrap() {
            out.extend_from_slice(piece);
        }
    }
    (out, tokens)
}

/// Single-node integer generation's sampled tokens (not stopping at BOS), the reference.
fn reference(model: &Model<'_>, prompt: &[u32], steps: usize, temp: u32, seed: u64) -> Vec<u32> {
    let mut arena = vec![0i32; IntState::arena_len(model, steps)];
    let mut state = IntState::new(model, &mut arena, steps).unwrap();
    let mut rng = Sampling::new(temp, seed).rng;
    let (mut token, mut out) = (prompt[0], Vec::new());
    for pos in 0..steps {
        let logits = state.forward(model, token, pos).unwrap();
        token = match prompt.get(pos + 1) {
            Some(t) => *t,
            None => {
                let t = sample_int(logits, temp, &mut rng);
                out.push(t);
                if t == model.vocab.bos() {
                    break;
                }
                t
            }
        };
    }
    out
}

fn check(name: &str, bytes: &[u8], text: &str, counts: &[usize], steps: usize) {
    let img = common::Image::new(bytes);
    let model = <Model<'_>>::from_gguf(img.bytes()).unwrap();
    let prompt = match name {
        // The synthetic byte vocabularies: BOS, then each byte's token.
        "five heads" | "grouped" => [1].into_iter().chain(text.bytes().map(|b| 3 + b as u32)).collect(),
        _ => encode(&model, text),
    };
    for (temp, seed) in [(0, 0), (800, 7), (1000, 42)] {
        let want = single(&model, &prompt, steps, temp, seed);
        let want_tokens = reference(&model, &prompt, steps, temp, seed);
        assert!(want_tokens.len() > 8, "{name}: only {} tokens", want_tokens.len());
        for &n in counts {
            let (got, tokens) = split(&model, n, &prompt, steps, temp, seed);
            assert_eq!(tokens, want_tokens, "{name}, {n} nodes, temp {temp}");
            assert_eq!(got, want, "{name}, {n} nodes, temp {temp}");
        }
    }
    // Each node holding only its shard's cut of the image (what a board links): the same.
    for &n in counts {
        let cuts: Vec<_> = (0..n)
            .map(|i| common::Image::new(&cut::shard(img.bytes(), &shard(&model, n, i).unwrap()).unwrap()))
            .collect();
        let parts: Vec<Model<'_>> = cuts.iter().map(|c| <Model<'_>>::from_gguf(c.bytes()).unwrap()).collect();
        for (c, m) in cuts.iter().zip(&parts) {
            assert!(c.bytes().len() < img.bytes().len() || n == 1, "{name}: a cut of {n} no smaller");
            assert!(m.shard.is_some());
        }
        let refs: Vec<&Model<'_>> = parts.iter().collect();
        for (temp, seed) in [(0, 0), (800, 7)] {
            let want = single(&model, &prompt, steps, temp, seed);
            let (got, _) = split_over(&model, &refs, &prompt, steps, temp, seed);
            assert_eq!(got, want, "{name}, {n} cut nodes, temp {temp}");
        }
    }
}

/// A shard's cut is refused where it cannot be: cut again, off the groups, another shard's
/// state on it; its metadata is checked when read.
#[test]
fn shard_cuts_refuse_what_they_cannot_hold() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../ruvllm-cli/data/default.gguf");
    let img = common::Image::new(&std::fs::read(path).unwrap());
    let model = <Model<'_>>::from_gguf(img.bytes()).unwrap();
    let (s0, s1) = (shard(&model, 2, 0).unwrap(), shard(&model, 2, 1).unwrap());
    let part = common::Image::new(&cut::shard(img.bytes(), &s1).unwrap());
    assert!(cut::shard(part.bytes(), &s1).is_err());
    assert!(cut::cut(part.bytes(), 0..2).is_err());
    let mut off = s1.clone();
    off.hidden.start += 1;
    assert!(cut::shard(img.bytes(), &off).is_err());
    let mut past = s1.clone();
    past.hidden.end = 10_000;
    assert!(cut::shard(img.bytes(), &past).is_err());
    let m1 = <Model<'_>>::from_gguf(part.bytes()).unwrap();
    let mut arena = vec![0; TensorState::arena_len(&model, &s0, 8)];
    assert!(TensorState::new(&m1, s0.clone(), &mut arena, 8).is_err());
    assert!(TensorState::new(&m1, s1.clone(), &mut arena, 8).is_ok());
    // Metadata that does not describe a shard inside the model: refused on reading (the six
    // values patched in place: after the key, its type, element type and count).
    let key = ruvllm_esp32::model::SHARD_KEY.as_bytes();
    let at = part.bytes().windows(key.len()).position(|w| w == key).unwrap() + key.len() + 16;
    for bad in [[0u32, 0, 0, 0, 0, 0], [0, 4, 0, 4, 0, 100_000], [0, 3, 0, 4, 0, 32], [4, 0, 4, 0, 0, 32]] {
        let mut bytes = part.bytes().to_vec();
        for (i, v) in bad.iter().enumerate() {
            bytes[at + 4 * i..at + 4 * i + 4].copy_from_slice(&v.to_le_bytes());
        }
        let bytes = common::Image::new(&bytes);
        let e = <Model<'_>>::from_gguf_unverified(bytes.bytes()).unwrap_err();
        assert!(format!("{e}").contains("ruvllm.shard"), "{bad:?}: {e}");
    }
}

#[test]
fn split_heads_and_rows_give_the_single_node_tokens() {
    // Heads of 32 values: every head its own part.
    let five = tensor_models::five_heads();
    let img = common::Image::new(&five);
    let model = <Model<'_>>::from_gguf(img.bytes()).unwrap();
    let p = parts(&model).unwrap();
    assert_eq!((p.attention, p.ffn), (5, 7));
    assert_eq!(shard(&model, 5, 4).unwrap().heads, 4..5);
    check("five heads", &five, "Once", &[1, 2, 3, 5, 7], 40);
    // GQA: pairs of query heads on one KV head.
    check("grouped", &tensor_models::grouped(), "Hi", &[2, 3], 40);
    // Heads removed (`convert --prune-heads 1`): 4 heads of 32 in a model 160 wide.
    let mut host = ruvllm_esp32::convert::load_gguf(&five).unwrap();
    ruvllm_esp32::prune::prune_heads(&mut host, 1).unwrap();
    let four = host.to_gguf(ruvllm_esp32::convert::Quant::Q8).unwrap();
    let img = common::Image::new(&four);
    let model = <Model<'_>>::from_gguf(img.bytes()).unwrap();
    assert_eq!((model.config.n_heads, model.config.q_dim(), parts(&model).unwrap().attention), (4, 128, 4));
    check("five heads", &four, "Once", &[1, 2, 3, 4], 40);
    // The built-in model: heads of 8 values, so a group of 32 spans all 4 KV heads and the
    // attention stays whole; the FFN (144 rows) splits into 5.
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../ruvllm-cli/data/default.gguf");
    let builtin = std::fs::read(path).unwrap();
    let img = common::Image::new(&builtin);
    let model = <Model<'_>>::from_gguf(img.bytes()).unwrap();
    assert_eq!(parts(&model).unwrap().max_nodes(), 5);
    check("built-in", &builtin, "Once upon a time", &[2, 3, 5], 64);
    // stories260K (../shared): FFN of 172 rows, 6 parts.
    let Some(img) = common::stories260k_image(ruvllm_esp32::convert::Quant::Q8) else { return };
    check("stories260K", img.bytes(), "Lily", &[2, 3, 5, 6], 48);
}

/// More nodes than parts, and packed layers, are refused with the reason.
#[test]
fn splits_the_shape_does_not_allow_are_refused() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../ruvllm-cli/data/default.gguf");
    let img = common::Image::new(&std::fs::read(path).unwrap());
    let model = <Model<'_>>::from_gguf(img.bytes()).unwrap();
    let e = shard(&model, 6, 0).unwrap_err().to_string();
    assert!(e.contains("more tensor-parallel nodes than the model's shape has parts"), "{e}");
    assert!(shard(&model, 0, 0).is_err());
    let Some(ternary) = common::stories260k_image(ruvllm_esp32::convert::Quant::Ternary) else { return };
    let model = <Model<'_>>::from_gguf(ternary.bytes()).unwrap();
    let e = parts(&model).unwrap_err().to_string();
    assert!(e.contains("--quant q8"), "{e}");
}

/// A node answers what it cannot run with a failure naming itself, and keeps its state.
#[test]
fn a_node_answers_bad_rounds_with_a_failure() {
    let five = tensor_models::five_heads();
    let img = common::Image::new(&five);
    let model = <Model<'_>>::from_gguf(img.bytes()).unwrap();
    let s = shard(&model, 2, 1).unwrap();
    let mut arena = vec![0; TensorState::arena_len(&model, &s, 8)];
    let mut slots = vec![TensorState::new(&model, s, &mut arena, 8).unwrap()];
    let mut acc = vec![0i64; model.config.dim];
    let mut node = TensorNode::new(4, &model, &mut slots, &mut acc).unwrap();
    let round = |stream, pos, layer, residual: &[i32]| {
        Body::Round(Round {
            stream,
            pos,
            layer,
            ffn: false,
            residual: Residual::from_slice(residual).unwrap(),
        })
    };
    let fail = |reason| Body::Fail { node: 4, reason };
    let dim = vec![0; model.config.dim];
    assert_eq!(node.handle(round(0, 0, 0, &[1, 2])), fail(FailReason::BadResidual));
    assert_eq!(node.handle(round(1, 0, 0, &dim)), fail(FailReason::BadStream));
    assert_eq!(node.handle(round(0, 8, 0, &dim)), fail(FailReason::BadStep));
    assert_eq!(node.handle(round(0, 0, 9, &dim)), fail(FailReason::BadStep));
    assert_eq!(node.handle(Body::Ack), fail(FailReason::Unexpected));
    let Body::Partial(p) = node.handle(round(0, 0, 1, &dim)) else { panic!("no partial") };
    assert_eq!(p.acc.len(), model.config.dim);
    // A shard that cuts a quantization group is refused.
    let bad = ruvllm_esp32::infer::Shard { heads: 0..1, kv_heads: 0..1, hidden: 0..20 };
    let mut arena = vec![0; TensorState::arena_len(&model, &bad, 8)];
    assert!(TensorState::new(&model, bad, &mut arena, 8).is_err());
}

/// The coordinator takes only the answer to the round it sent: another round's, a short one
/// or a message of another kind is refused, and the sum so far is kept.
#[test]
fn the_coordinator_refuses_answers_out_of_turn() {
    let five = tensor_models::five_heads();
    let img = common::Image::new(&five);
    let model = <Model<'_>>::from_gguf(img.bytes()).unwrap();
    let shards: Vec<_> = (0..2).map(|i| shard(&model, 2, i).unwrap()).collect();
    let mut arena = vec![0; TensorLead::arena_len(&model)];
    let mut total = vec![0i64; model.config.dim];
    let mut lead = TensorLead::new(&model, &mut arena, &shards, &mut total).unwrap();
    lead.embed(1).unwrap();
    let sent = lead.round(0, 0, 1, true);
    let partial = |layer, n: usize| {
        let acc = ruvllm_esp32::federation::wire::Partials::from_slice(&vec![7; n]).unwrap();
        Body::Partial(ruvllm_esp32::federation::wire::Partial { stream: 0, pos: 0, layer, ffn: true, acc })
    };
    let dim = model.config.dim;
    assert!(lead.absorb(&sent, &partial(0, dim)).is_err(), "another layer");
    assert!(lead.absorb(&sent, &partial(1, dim - 1)).is_err(), "too short");
    assert!(lead.absorb(&sent, &Body::Finish).is_err(), "not a partial");
    assert!(lead.absorb(&sent, &partial(1, dim)).is_ok());
}

/// A pruned image whose matrices went sparse is not cut into tensor shards (their rows are
/// not sliced): one error naming the way out, at cut time rather than on the node.
#[test]
fn a_shard_of_sparse_rows_is_refused() {
    use ruvllm_esp32::convert::{load_gguf, Quant};
    use ruvllm_esp32::prune::{prune, Pruning};
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../ruvllm-cli/data/default.gguf");
    let dense = common::Image::new(&std::fs::read(path).unwrap());
    let mut host = load_gguf(dense.bytes()).unwrap();
    prune(&mut host, 0.9, Pruning::Unstructured).unwrap();
    let (sparse, n) = host.to_gguf_sparse(Quant::Q8, true).unwrap();
    assert!(n > 0);
    let img = common::Image::new(&sparse);
    let model = <Model<'_>>::from_gguf(img.bytes()).unwrap();
    // The plan refuses it, and so does the cut given a plan of the same shape.
    let err = shard(&model, 2, 0).unwrap_err();
    assert!(err.to_string().contains("--dense"), "{err}");
    let same_shape = shard(&<Model<'_>>::from_gguf(dense.bytes()).unwrap(), 2, 0).unwrap();
    let err = cut::shard(img.bytes(), &same_shape).unwrap_err();
    assert!(err.to_string().contains("--dense"), "{err}");
}
