#!/usr/bin/env python3
"""DEBUGGING HELPER, not a test path: rewrites a GGUF from `ruvllm-esp32 convert` as it was
before the format followed llama.cpp (issue 15) into what llama.cpp loads: drops the extra
`ruvllm.rope` tensor and renames the tokens to SentencePiece's conventions. It showed that the
llama.cpp test harness (llama_greedy.py) agrees with the engine before the format change landed.

usage: debug_llamacpp_fixup.py IN.gguf OUT.gguf
"""
import os
import sys

import gguf

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import conventions  # noqa: E402


def main():
    src, dst = sys.argv[1:]
    r = gguf.GGUFReader(src)
    arch = r.fields["general.architecture"].contents()
    wr = gguf.GGUFWriter(dst, arch)
    for key, f in r.fields.items():
        if key.startswith("GGUF.") or key in ("general.architecture", "ruvllm.checksum", "tokenizer.ggml.tokens",
                                               "tokenizer.ggml.token_type"):
            continue
        sub = f.types[-1] if f.types[0] == gguf.GGUFValueType.ARRAY else None
        wr.add_key_value(key, f.contents(), f.types[0], sub_type=sub)
    tf = r.fields["tokenizer.ggml.tokens"]
    pieces = [bytes(tf.parts[i]) for i in tf.data]
    bos = r.fields["tokenizer.ggml.bos_token_id"].contents()
    eos = r.fields["tokenizer.ggml.eos_token_id"].contents()
    tokens, types = conventions.sentencepiece(pieces, bos, eos)
    wr.add_token_list(tokens)
    wr.add_token_types(types)
    for t in r.tensors:
        if t.name == "ruvllm.rope":
            continue
        wr.add_tensor(t.name, t.data, raw_shape=list(reversed([int(d) for d in t.shape])),
                      raw_dtype=t.tensor_type)
    conventions.write(wr)


if __name__ == "__main__":
    main()
