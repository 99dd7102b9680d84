"""llama.cpp's conventions for the interop scripts: llama2.c's tokenizer pieces as SentencePiece
writes them, as llama.cpp reads them under `tokenizer.ggml.model = "llama"` (U+2581 for a
space, `<s>` / `</s>` for BOS / EOS, token types 1 normal, 2 unknown, 3 control, 6 byte), and
the GGUFWriter's closing steps."""
import re
import struct

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


def write(writer):
    """Writes a GGUFWriter's header, metadata and tensors, and closes it."""
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
