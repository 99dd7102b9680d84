#!/usr/bin/env bash
# Reproduces the project's trained models and the quantization-aware training comparison
# (docs/MODELS.md "The built-in model", docs/BENCHMARKS.md "Training"). Everything trains on the
# generated corpus (`ruvllm-esp32 corpus`); nothing is downloaded.
#
#   scripts/train-models.sh [default|draft|nano|qat|3m|eval|all|restamp]
#
# Runs are deterministic for a given thread count and CPU kernel set (AVX-512 here); other
# machines reproduce the losses to a few parts in a thousand, not bit for bit.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q -p ruvllm-cli
bin=target/release/ruvllm-esp32
what=${1:-all}
mkdir -p target/train

if [[ $what == default || $what == all ]]; then
    # The built-in model (compiled into the CLI and the firmware). It keeps its own tokenizer
    # (first trained on the stories and facts alone), so the draft model stays valid.
    $bin train --preset default --quant q8 --steps 3000 --threads 2 \
        --tokenizer-from crates/ruvllm-cli/data/default.gguf -o crates/ruvllm-cli/data/default.gguf
fi
if [[ $what == draft || $what == all ]]; then
    # The draft model for speculative decoding: the tiny preset with the built-in model's
    # tokenizer (a draft must share its target's vocabulary).
    $bin train --preset tiny --quant q8 --steps 1000 --threads 2 \
        --tokenizer-from crates/ruvllm-cli/data/default.gguf -o target/train/tiny-q8.gguf
    cp target/train/tiny-q8.gguf models/draft.gguf
fi
if [[ $what == nano || $what == all ]]; then
    # The published resource table's model (docs/BENCHMARKS.md, "The published resource
    # table"): the nano preset (~16K parameters) with the built-in model's tokenizer.
    $bin train --preset nano --quant q8 --steps 6000 --threads 2 \
        --tokenizer-from crates/ruvllm-cli/data/default.gguf -o target/train/nano-q8.gguf
    cp target/train/nano-q8.gguf models/nano.gguf
    cp target/train/nano-q8.loss.svg docs/img/nano-q8-loss.svg
fi
if [[ $what == 3m || $what == all ]]; then
    # A model too big for one ESP32-C3 (its q8 image is over the chip's 3 MiB flash budget),
    # for the pipeline split across QEMU boards (docs/BENCHMARKS.md "Multi-chip federation").
    $bin train --preset 3m --quant q8 --steps 2000 --threads 2 --checkpoint-every 100 \
        --tokenizer-from crates/ruvllm-cli/data/default.gguf -o target/train/3m-q8.gguf
    cp target/train/3m-q8.gguf models/3m.gguf
    cp target/train/3m-q8.loss.svg models/3m.loss.svg
fi
if [[ $what == qat || $what == all ]]; then
    # Equal parameter count (the 260k preset, stories260K's shape), four weight formats. The
    # f32 run is also the 260k-preset run whose loss curve docs/BENCHMARKS.md shows.
    for q in f32 q8 ternary binary; do
        $bin train --preset 260k --quant $q --steps 1000 --threads 2 -o target/train/260k-$q.gguf
    done
    cp target/train/260k-f32.loss.svg docs/img/260k-f32-loss.svg
fi
if [[ $what == restamp ]]; then
    # After a change of the image format or its checksum rule: rebuild the shipped images from their own
    # weights (q8 codes and scales convert to themselves, so only the checksum changes).
    for m in crates/ruvllm-cli/data/default.gguf models/draft.gguf models/nano.gguf; do
        $bin convert --allow-unverified "$m" --quant q8 -o "$m"
    done
fi
if [[ $what == eval || $what == qat || $what == all ]]; then
    # The engine's perplexity on documents the trainer never saw (another corpus seed), each
    # document after a BOS as in training.
    $bin corpus --seed 99 --docs 300 -o target/train/heldout.txt
    for m in crates/ruvllm-cli/data/default.gguf models/draft.gguf models/nano.gguf target/train/260k-{f32,q8,ternary,binary}.gguf; do
        [[ -f $m ]] || continue
        printf '%s (%s bytes): ' "$m" "$(stat -c %s "$m")"
        $bin eval -m "$m" --text target/train/heldout.txt --documents | tr '\n' ' '
        echo
    done
fi
