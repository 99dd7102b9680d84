#!/usr/bin/env python3
"""Pruning figures for docs/BENCHMARKS.md ("Pruning"), measured in one run.

For the built-in model (and stories260K when ../shared has it), at 0, 25, 50 and 75% sparsity,
unstructured and structured (`convert --prune S [--structured]`), optionally fine-tuned
(`train --init`, built-in model only: its own generated corpus is what it was trained on):
  - perplexity on held-out text on the integer path (`eval --int`): the built-in model on
    generated documents of another seed (`corpus --seed 7 --docs 300`, `eval --documents`),
    stories260K on testdata/heldout.txt;
  - host speed: q8 generation tok/s of `bench`, as a ratio against the unpruned model measured
    in the same run (alternating, median of the rounds);
  - with --board: instructions per token on the QEMU ESP32-C3 board (`bench --chip esp32c3`).

Usage: python3 scripts/prune_sweep.py [--board] [--fine-tune-steps N] [--rounds R]
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


def board_instructions(model):
    out = run("bench", "--chip", "esp32c3", "-m", model)
    m = re.search(r"instructions/token average over positions 0-127: (\d+)", out)
    return int(m.group(1)) if m else None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--board", action="store_true")
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
                row = {"model": name, "pruning": label, "sparsity": s, "file": out,
                       "share": float(m.group(3)) if m else 0.0, "width": m.group(5) if m else "",
                       "bytes": os.path.getsize(out), "ppl": perplexity(out, text, tune)}
                if m:
                    row["width_before"] = int(m.group(4))
                if tune and s > 0.0:
                    ft = os.path.join(tmp, f"{name}-{how}-{s}-ft.gguf")
                    run("train", "--init", out, "--preset", "default", "--steps", str(a.fine_tune_steps),
                        "--quant", "q8", "-o", ft)
                    row["ppl_ft"] = perplexity(ft, text, tune)
                rows.append(row)
        # The unpruned width, from any structured row's report.
        rows[0]["width"] = next((str(r["width_before"]) for r in rows if "width_before" in r), "")
        base = rows[0]["file"]
        ratios = {r["file"]: [] for r in rows}
        for _ in range(a.rounds):
            b = gen_tok_s(base)
            for r in rows[1:]:
                ratios[r["file"]].append(gen_tok_s(r["file"]) / b)
        print(f"\n{name}: perplexity on the integer path; q8 generation speed against the unpruned model "
              f"(median of {a.rounds} alternating rounds)")
        print("| pruning | sparsity | block weights removed or zero | FFN width | q8 image bytes | perplexity "
              "| after fine-tuning | host speed | board instructions/token |")
        print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
        for r in rows:
            speed = "1.00x" if r["file"] == base else f"{statistics.median(ratios[r['file']]):.2f}x"
            ft = f"{r['ppl_ft']:.3f}" if "ppl_ft" in r else "-"
            board = board_instructions(r["file"]) if a.board else None
            print(f"| {r['pruning']} | {int(r['sparsity'] * 100)}% | {r['share']:.1f}% | {r['width']} | {r['bytes']:,} "
                  f"| {r['ppl']:.3f} | {ft} | {speed} | {f'{board:,}' if board else '-'} |")


if __name__ == "__main__":
    main()
