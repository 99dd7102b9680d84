#!/usr/bin/env python3
"""Mean negative log-likelihood of a text under a real llama.cpp (llama-cpp-python), as the
reference for the interop tests (crates/ruvllm-cli/tests/llama_cpp.rs): the text is tokenized
the way llama.cpp does it (BOS added), evaluated in one pass, and every next token is scored by
the log-softmax of llama.cpp's logits at the position before it, in f64, like
`ruvllm-esp32 eval --text FILE`. Prints JSON on stdout:

    {"ids": [...], "tokens": N, "nll": MEAN}

usage: llama_nll.py MODEL.gguf TEXT_FILE
"""
import json
import sys

import llama_cpp
import numpy as np


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__.strip().splitlines()[-1])
    model, text_file = sys.argv[1], sys.argv[2]
    with open(text_file, "rb") as f:
        text = f.read()
    probe = llama_cpp.Llama(model_path=model, vocab_only=True, verbose=False)
    ids = probe.tokenize(text, add_bos=True, special=False)
    llm = llama_cpp.Llama(
        model_path=model,
        n_ctx=len(ids),
        n_batch=len(ids),
        n_threads=1,
        n_threads_batch=1,
        n_gpu_layers=0,
        logits_all=True,
        verbose=False,
    )
    llm.eval(ids)
    logits = np.asarray(llm.scores[: len(ids)], dtype=np.float64)
    nll = 0.0
    for pos in range(len(ids) - 1):
        row = logits[pos]
        top = row.max()
        log_z = top + np.log(np.exp(row - top).sum())
        nll += log_z - row[ids[pos + 1]]
    n = len(ids) - 1
    print(json.dumps({"ids": ids, "tokens": n, "nll": nll / n}))


if __name__ == "__main__":
    main()
