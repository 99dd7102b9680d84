#!/usr/bin/env python3
"""Pruning figures for docs/BENCHMARKS.md ("Pruning"), measured in one run.

For the built-in model (and stories260K when ../shared has it), at 0, 25, 50 and 75% sparsity,
unstructured and structured (`convert --prune S [--structured]`), optionally fine-tuned
(`train --init`, built-in model only: its own generated corpus is what it was trained on):
  - perplexity on held-out text on the integer path (`eval --int`): the built-in model on
    generated documents of another seed (`corpus --seed 7 --docs 300`, `eval --documents`),
    stories260K on testdata/heldout.txt;
  - with --board: instructions per token on the QEMU ESP32-C3 board (`bench --chip esp32c3`,
    average over positions 0-127: exact, whatever the machine is doing), on the image as
    `convert` writes it (unstructured pruning past the sparse kernel's break-even, 75% of a
    matrix's codes zero, stores that matrix as sparse rows); and a second table at 75% and 90%
    unstructured: sparse rows against the same image stored dense (`--dense`), with the
    bytes of the image a token reads from flash and whether `gen --int` writes the same text;
  - attention heads: 1 to all but one key/value head removed from every layer with their query
    heads (`convert --prune-heads N`; "sparsity" is the share of heads removed), fine-tuned as
    the rest;
  - with --host-speed: q8 generation tok/s of `bench`, as a ratio against the unpruned model
    measured in the same run (alternating, median of the rounds; noisy on a shared machine).

Usage: python3 scripts/prune_sweep.py [--board] [--host-speed] [--fine-tune-steps N] [--rounds R]
(after `cargo build --release -p ruvllm-cli`; runs target/release/ruvllm-esp32).
"""
import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLI = os.path.join(ROOT, "target", "release", "ruvllm-esp32")
SHARED = os.path.join(os.path.dirname(ROOT), "shared", "models")
SPARSITIES = [0.0, 0.25, 0.5, 0.75]


def run(*args, stdout_only=False):
    r = subprocess.run([CLI, *args], capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"{' '.join(args)}: {r.stderr.strip()}")
    return r.stdout if stdout_only else r.stdout + r.stderr


def perplexity(model, text, documents):
    out = run("eval", "-m", model, "--text", text, "--int", *(["--documents"] if documents else []))
    return float(re.search(r"perplexity: ([0-9.]+)", out).group(1))


def gen_tok_s(model):
    out = json.loads(run("bench", "-m", model, "-n", "256", "--repeat", "3", "--json", stdout_only=True))
    row = max((r for r in out["rows"] if r["precision"] == "q8"), key=lambda r: r["gen_tok_s"])
    return row["gen_tok_s"]


def board_run(model):
    out = run("bench", "--chip", "esp32c3", "-m", model)
    m = re.search(r"instructions/token average over positions 0-127: (\d+)", out)
    f = re.search(r"flash read per token: (\d+) bytes", out)
    return (int(m.group(1)) if m else None, int(f.group(1)) if f else None)


def board_instructions(model):
    return board_run(model)[0]


def gen_int(model):
    return run("gen", "-m", model, "--int", "-p", "Once upon a time", "-n", "128", "--seed", "5", stdout_only=True)


def sparse_vs_dense(tmp, name, src, extra):
    """Unstructured 75% and 90%: sparse rows against the same image stored dense, on the board."""
    print(f"\n{name}: unstructured pruning, sparse rows against dense codes (board: average over positions 0-127)")
    print("| sparsity | storage | sparse matrices | image bytes | flash bytes read per token | board instructions/token | gen --int text |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for s in [0.75, 0.9]:
        texts = {}
        for storage, flag in [("sparse rows", []), ("dense", ["--dense"])]:
            out = os.path.join(tmp, f"{name}-sv-{s}-{'dense' if flag else 'sparse'}.gguf")
            log = run("convert", src, *extra, "--quant", "q8", "--prune", str(s), *flag, "-o", out)
            m = re.search(r"stored (\d+) of (\d+) block matrices as sparse rows", log)
            texts[storage] = gen_int(out)
            instr, flash = board_run(out)
            same = "same" if storage == "dense" and texts["dense"] == texts["sparse rows"] else (
                "-" if storage != "dense" else "DIFFERENT")
            print(f"| {int(s * 100)}% | {storage} | {f'{m.group(1)} of {m.group(2)}' if m else '0'} "
                  f"| {os.path.getsize(out):,} | {flash:,} | {instr:,} | {same} |")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--board", action="store_true")
    ap.add_argument("--host-speed", action="store_true")
    ap.add_argument("--fine-tune-steps", type=int, default=300)
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="prune-sweep-")
    heldout_docs = os.path.join(tmp, "corpus-heldout.txt")
    run("corpus", "-o", heldout_docs, "--docs", "300", "--seed", "7")
    bases = [("built-in", os.path.join(ROOT, "crates", "ruvllm-cli", "data", "default.gguf"), [], heldout_docs, True)]
    bin_, tok = os.path.join(SHARED, "stories260K.bin"), os.path.join(SHARED, "tok512.bin")
    if os.path.exists(bin_):
        text = os.path.join(ROOT, "testdata", "heldout.txt")
        bases.append(("stories260K", bin_, ["-z", tok], text, False))
    for name, src, extra, text, tune in bases:
        rows = []
        for how in ["unstructured", "structured"]:
            for s in SPARSITIES:
                if s == 0.0 and how == "structured":
                    continue
                out = os.path.join(tmp, f"{name}-{how}-{s}.gguf")
                prune = [] if s == 0.0 else ["--prune", str(s)] + (["--structured"] if how == "structured" else [])
                log = run("convert", src, *extra, "--quant", "q8", *prune, "-o", out)
                m = re.search(r"pruned (\d+) of (\d+) block weights \(([0-9.]+)%\); feed-forward width (\d+) -> (\d+)", log)
                label = "none" if s == 0.0 else how
                sp = re.search(r"stored (\d+) of (\d+) block matrices as sparse rows", log)
                row = {"model": name, "pruning": label, "sparsity": s, "file": out,
                       "sparse": f"{sp.group(1)} of {sp.group(2)}" if sp else "0",
                       "share": float(m.group(3)) if m else 0.0, "width": m.group(5) if m else "",
                       "bytes": os.path.getsize(out), "ppl": perplexity(out, text, tune)}
                if m:
                    row["width_before"] = int(m.group(4))
                    row["weights_before"] = int(m.group(2))
                if tune and s > 0.0:
                    ft = os.path.join(tmp, f"{name}-{how}-{s}-ft.gguf")
                    run("train", "--init", out, "--preset", "default", "--steps", str(a.fine_tune_steps),
                        "--quant", "q8", "-o", ft)
                    row["ppl_ft"] = perplexity(ft, text, tune)
                rows.append(row)
        # Attention heads: 1..k key/value heads removed from every layer, with their query heads
        # (`--prune-heads N`); the trainer does not fine-tune such a model yet.
        info = run("info", rows[0]["file"], stdout_only=True)
        kv = int(re.search(r"kv_heads (\d+)", info).group(1))
        params = lambda text: int(re.search(r"parameters: (\d+)", text).group(1))
        block = next(r["weights_before"] for r in rows if "weights_before" in r)
        for n in range(1, kv):
            out = os.path.join(tmp, f"{name}-heads-{n}.gguf")
            log = run("convert", src, *extra, "--quant", "q8", "--prune-heads", str(n), "-o", out)
            m = re.search(r"attention heads (\d+) -> (\d+)", log)
            row = {"model": name, "pruning": f"heads {m.group(1)} -> {m.group(2)}", "sparsity": n / kv,
                   "file": out, "sparse": "0", "bytes": os.path.getsize(out),
                   "share": 100.0 * (params(info) - params(run("info", out, stdout_only=True))) / block,
                   "width": re.search(r"hidden (\d+)", info).group(1),
                   "ppl": perplexity(out, text, tune)}
            if tune:
                ft = os.path.join(tmp, f"{name}-heads-{n}-ft.gguf")
                run("train", "--init", out, "--preset", "default", "--steps", str(a.fine_tune_steps),
                    "--quant", "q8", "-o", ft)
                row["ppl_ft"] = perplexity(ft, text, tune)
            rows.append(row)
        # The unpruned width, from any structured row's report.
        rows[0]["width"] = next((str(r["width_before"]) for r in rows if "width_before" in r), "")
        base = rows[0]["file"]
        ratios = {r["file"]: [] for r in rows}
        for _ in range(a.rounds if a.host_speed else 0):
            b = gen_tok_s(base)
            for r in rows[1:]:
                ratios[r["file"]].append(gen_tok_s(r["file"]) / b)
        print(f"\n{name}: perplexity on the integer path; q8 generation speed against the unpruned model "
              f"(median of {a.rounds} alternating rounds, with --host-speed); board: average over positions 0-127")
        print("| pruning | sparsity | block weights removed or zero | FFN width | sparse matrices | q8 image bytes "
              "| perplexity | after fine-tuning | host speed | board instructions/token |")
        print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
        for r in rows:
            speed = "1.00x" if r["file"] == base else (
                f"{statistics.median(ratios[r['file']]):.2f}x" if ratios[r["file"]] else "-")
            ft = f"{r['ppl_ft']:.3f}" if "ppl_ft" in r else "-"
            board = board_instructions(r["file"]) if a.board else None
            print(f"| {r['pruning']} | {int(r['sparsity'] * 100)}% | {r['share']:.1f}% | {r['width']} | {r['sparse']} | {r['bytes']:,} "
                  f"| {r['ppl']:.3f} | {ft} | {speed} | {f'{board:,}' if board else '-'} |")
        if a.board:
            sparse_vs_dense(tmp, name, src, extra)


if __name__ == "__main__":
    main()
