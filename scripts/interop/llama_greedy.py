#!/usr/bin/env python3
"""Greedy generation by a real llama.cpp (llama-cpp-python), as the reference for the interop
tests (crates/ruvllm-cli/tests/llama_cpp.rs).

The prompt is tokenized the way llama.cpp does it (BOS added, SentencePiece's leading space),
then positions 0..steps run like `ruvllm-esp32 gen -n STEPS`: the prompt's tokens are forced, and
each next token is the argmax of llama.cpp's logits (the first on a tie), computed here from the
raw logits so that no sampler takes part. Like `gen` (and llama2.c) it stops when the model
produces BOS. Prints JSON on stdout:

    {"prompt_ids": [...], "generated_ids": [...], "text": "...", "text_lengths": [...],
     "margins": [...], "llama_cpp_python": "0.3.36"}

`text` is llama.cpp's detokenization of the prompt and continuation (a final BOS left out);
`text_lengths[i]` the length in bytes of that text through generated token i, and `margins[i]`
how far token i's logit led the runner-up's.

usage: llama_greedy.py MODEL.gguf --prompt TEXT --steps N [--threads 1]
"""
import argparse
import json
import sys

import llama_cpp
import numpy as np


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model")
    ap.add_argument("--prompt", required=True)
    ap.add_argument("--steps", type=int, required=True,
                    help="positions to run, prompt included (like `gen -n`)")
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()

    llm = llama_cpp.Llama(
        model_path=a.model,
        n_ctx=a.steps,
        n_batch=a.steps,
        n_threads=a.threads,
        n_threads_batch=a.threads,
        n_gpu_layers=0,
        seed=0,
        verbose=True,  # llama.cpp's log on stderr: why a file is refused
    )
    bos = llm.token_bos()
    prompt = llm.tokenize(a.prompt.encode("utf-8"), add_bos=True, special=False)
    if len(prompt) > a.steps:
        sys.exit(f"the prompt is {len(prompt)} tokens, more than --steps {a.steps}")
    n_vocab = llm.n_vocab()

    def argmax_after(tokens):
        llm.eval(tokens)
        logits = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(llm.ctx, -1), shape=(n_vocab,))
        best = int(np.argmax(logits))  # the first index on a tie, as the engine's argmax
        top2 = np.partition(logits, -2)[-2:]
        return best, float(top2[1] - top2[0])

    generated, margins = [], []
    feed = prompt
    for _pos in range(len(prompt) - 1, a.steps):
        nxt, margin = argmax_after(feed)
        generated.append(nxt)
        margins.append(margin)
        if nxt == bos:
            break
        feed = [nxt]

    shown = prompt + [t for t in generated if t != bos]

    def text_of(ids):
        return llm.detokenize(ids, special=False).decode("utf-8", errors="replace")

    json.dump({
        "prompt_ids": prompt,
        "generated_ids": generated,
        "text": text_of(shown),
        # per generated token: the text up to and including it, and how far its logit
        # led the runner-up's (a near tie is where 8-bit rounding may pick the other)
        "text_lengths": [len(text_of(shown[:len(prompt) + i + 1]).encode())
                         for i in range(len(shown) - len(prompt))],
        "margins": margins,
        "llama_cpp_python": llama_cpp.__version__,
    }, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
