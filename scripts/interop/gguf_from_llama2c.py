#!/usr/bin/env python3
"""Writes a llama2.c checkpoint and tokenizer as a GGUF with the `gguf` Python package's
GGUFWriter, in llama.cpp's conventions (F32 tensors with llama.cpp's names, or Q8_0 matrices
from gguf's own quantizer; a SentencePiece vocabulary; no extra tensors): the file of another
tool that the engine must read, for the interop tests in crates/ruvllm-cli/tests/llama_cpp.rs.

usage: gguf_from_llama2c.py MODEL.bin TOKENIZER.bin OUT.gguf [--ffn N] [--q8_0]
"""
import argparse
import re
import struct
import sys

import gguf
import numpy as np

# llama.cpp reads `tokenizer.ggml.model = "llama"` in SentencePiece's conventions: U+2581 for a
# space, `<s>` / `</s>` for BOS / EOS, and these token types.
NORMAL, UNKNOWN, CONTROL, BYTE = 1, 2, 3, 6
_BYTE = re.compile(rb"<0x[0-9A-F]{2}>")


def read_llama2c_tokenizer(path, vocab_size):
    """(pieces as bytes, scores) of a llama2.c tokenizer.bin."""
    with open(path, "rb") as f:
        data = f.read()
    off = 4  # max_token_length
    pieces, scores = [], []
    for _ in range(vocab_size):
        score, n = struct.unpack_from("<fi", data, off)
        off += 8
        pieces.append(data[off:off + n])
        scores.append(score)
        off += n
    return pieces, scores


def sentencepiece(pieces, bos=1, eos=2, unk=0):
    """(tokens, types) in SentencePiece's conventions for llama2.c's `pieces` (bytes)."""
    tokens, types = [], []
    for i, p in enumerate(pieces):
        if i == bos:
            tokens.append(b"<s>"), types.append(CONTROL)
        elif i == eos:
            tokens.append(b"</s>"), types.append(CONTROL)
        elif i == unk:
            tokens.append(p), types.append(UNKNOWN)
        elif _BYTE.fullmatch(p):
            tokens.append(p), types.append(BYTE)
        else:
            tokens.append(p.replace(b" ", "\u2581".encode())), types.append(NORMAL)
    return tokens, types


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model")
    ap.add_argument("tokenizer")
    ap.add_argument("out")
    ap.add_argument("--ffn", type=int, default=None,
                    help="keep only the first N feed-forward units (e.g. 160: rows of whole Q8_0 blocks)")
    ap.add_argument("--q8_0", action="store_true",
                    help="store the matrices as Q8_0 (gguf's quantizer), norms stay F32")
    a = ap.parse_args()
    model, tokenizer, out = a.model, a.tokenizer, a.out
    raw = open(model, "rb").read()
    dim, hidden, n_layers, n_heads, n_kv_heads, vocab, seq_len = struct.unpack_from("<7i", raw)
    shared = vocab > 0  # llama2.c marks a separate classifier with a negative vocab size
    vocab = abs(vocab)
    head = dim // n_heads
    kv_dim = n_kv_heads * head
    w = np.frombuffer(raw, dtype="<f4", offset=7 * 4)
    at = 0

    def take(*shape):
        nonlocal at
        n = int(np.prod(shape))
        t = w[at:at + n].reshape(shape)
        at += n
        return t

    # llama2.c's order; matrices are [out][in], which is llama.cpp's (ne0 = in) as well.
    embd = take(vocab, dim)
    attn_norm = take(n_layers, dim)
    wq, wk = take(n_layers, dim, dim), take(n_layers, kv_dim, dim)
    wv, wo = take(n_layers, kv_dim, dim), take(n_layers, dim, dim)
    ffn_norm = take(n_layers, dim)
    w1, w2, w3 = take(n_layers, hidden, dim), take(n_layers, dim, hidden), take(n_layers, hidden, dim)
    out_norm = take(dim)
    take(seq_len, head)  # llama2.c's legacy RoPE tables (cos and sin halves): unused
    output = None if shared else take(vocab, dim)
    if a.ffn is not None:
        if not 0 < a.ffn <= hidden:
            sys.exit(f"--ffn {a.ffn}: use 1 to {hidden}")
        hidden = a.ffn
        w1, w2, w3 = w1[:, :hidden, :], w2[:, :, :hidden], w3[:, :hidden, :]

    def matrix(name, t):
        t = np.ascontiguousarray(t, dtype=np.float32)
        if a.q8_0:
            q = gguf.quants.quantize(t, gguf.GGMLQuantizationType.Q8_0)
            wr.add_tensor(name, q, raw_dtype=gguf.GGMLQuantizationType.Q8_0)
        else:
            wr.add_tensor(name, t)

    pieces, scores = read_llama2c_tokenizer(tokenizer, vocab)
    tokens, types = sentencepiece(pieces)

    wr = gguf.GGUFWriter(out, "llama")
    wr.add_name("stories260K (gguf-py)")
    wr.add_context_length(seq_len)
    wr.add_embedding_length(dim)
    wr.add_block_count(n_layers)
    wr.add_feed_forward_length(hidden)
    wr.add_head_count(n_heads)
    wr.add_head_count_kv(n_kv_heads)
    wr.add_rope_dimension_count(head)
    wr.add_layer_norm_rms_eps(1e-5)
    wr.add_rope_freq_base(10000.0)
    wr.add_file_type(gguf.LlamaFileType.MOSTLY_Q8_0 if a.q8_0 else gguf.LlamaFileType.ALL_F32)
    wr.add_tokenizer_model("llama")
    wr.add_token_list(tokens)
    wr.add_token_scores(scores)
    wr.add_token_types(types)
    wr.add_bos_token_id(1)
    wr.add_eos_token_id(2)
    wr.add_unk_token_id(0)
    matrix("token_embd.weight", embd)
    for i in range(n_layers):
        wr.add_tensor(f"blk.{i}.attn_norm.weight", np.ascontiguousarray(attn_norm[i]))
        wr.add_tensor(f"blk.{i}.ffn_norm.weight", np.ascontiguousarray(ffn_norm[i]))
        for name, t in [("attn_q", wq), ("attn_k", wk), ("attn_v", wv), ("attn_output", wo),
                        ("ffn_gate", w1), ("ffn_down", w2), ("ffn_up", w3)]:
            matrix(f"blk.{i}.{name}.weight", t[i])
    wr.add_tensor("output_norm.weight", np.ascontiguousarray(out_norm))
    if output is not None:
        matrix("output.weight", output)
    wr.write_header_to_file()
    wr.write_kv_data_to_file()
    wr.write_tensors_to_file()
    wr.close()


if __name__ == "__main__":
    main()
