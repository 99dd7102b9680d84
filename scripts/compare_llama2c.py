#!/usr/bin/env python3
"""Whole-process speed of `ruvllm-esp32 gen` against llama2.c's `run`, on the same model, prompt
and steps, single thread. The two programs run alternately (A B A B ...) so that the noise of a
shared machine falls on both alike; the figure is the ratio of median wall times.

llama2.c is not part of this repository: build it yourself from https://github.com/karpathy/llama2.c
with `gcc -Ofast -march=native -o run run.c -lm` and pass its path.

usage: scripts/compare_llama2c.py /path/to/llama2c/run [--runs 40] [--steps 256] [--cpu N]
                                  [--before /path/to/older/ruvllm-esp32] [--runq /path/to/runq]

`--runq` adds llama2.c's int8 program (`gcc -Ofast -march=native -o runq runq.c -lm`) on the
model written as its int8 checkpoint by `convert --quant q8 --llama2c --pad-ffn 64` (groups of
64, as llama2.c's export.py picks them; runq.c needs groups that divide the FFN width, so the
FFN is padded with zero units from 172 to 192: the same model, 12% more FFN work for runq).

`--before` adds another build of this engine (say, main's, before a change) to the same
alternating runs, on the same images, so a before/after pair is measured under the same noise.
"""
import argparse
import os
import re
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.path.join(os.path.dirname(ROOT), "shared", "models")


def timed(cmd):
    """Wall time, stdout, and the in-loop speed the program itself reports on stderr."""
    t = time.perf_counter()
    r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    dt = time.perf_counter() - t
    if r.returncode != 0:
        sys.exit(f"failed: {' '.join(cmd)}")
    m = re.search(rb"achieved tok/s: ([0-9.]+)", r.stderr)
    return dt, r.stdout, float(m.group(1)) if m else float("nan")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("llama2c_run")
    ap.add_argument("--runs", type=int, default=40)
    ap.add_argument("--steps", type=int, default=256)
    ap.add_argument("--prompt", default="Once upon a time")
    ap.add_argument("--model", default=os.path.join(SHARED, "stories260K.bin"))
    ap.add_argument("--tokenizer", default=os.path.join(SHARED, "tok512.bin"))
    ap.add_argument("--cpu", type=int, default=None,
                    help="pin every run to this CPU (taskset): on a VM whose vCPUs differ in "
                         "speed, both programs then meet the same CPU")
    ap.add_argument("--before", default=None,
                    help="another ruvllm-esp32 binary to time alongside (its .gguf rows)")
    ap.add_argument("--runq", default=None,
                    help="llama2.c's runq (int8) to time alongside, on the model's int8 checkpoint")
    a = ap.parse_args()

    subprocess.run(["cargo", "build", "--release", "-q"], cwd=ROOT, check=True)
    ours = os.path.join(ROOT, "target", "release", "ruvllm-esp32")
    tmp = os.path.join(ROOT, "target", "compare")
    os.makedirs(tmp, exist_ok=True)
    images = {}
    for q in ["f32", "q8"]:
        images[q] = os.path.join(tmp, f"model-{q}.gguf")
        subprocess.run([ours, "convert", a.model, "--tokenizer", a.tokenizer, "--quant", q,
                        "-o", images[q]], check=True, stderr=subprocess.DEVNULL)

    steps = str(a.steps)
    cmds = {
        "llama2.c run (fp32)": [a.llama2c_run, a.model, "-z", a.tokenizer, "-t", "0",
                                "-n", steps, "-i", a.prompt],
        "ruvllm gen .bin (fp32)": [ours, "gen", "-m", a.model, "-z", a.tokenizer,
                                   "-p", a.prompt, "-n", steps],
        "ruvllm gen .gguf f32": [ours, "gen", "-m", images["f32"], "-p", a.prompt, "-n", steps],
        "ruvllm gen .gguf q8": [ours, "gen", "-m", images["q8"], "-p", a.prompt, "-n", steps],
    }
    if a.runq:
        ckpt = os.path.join(tmp, "model-q8-llama2c.bin")
        subprocess.run([ours, "convert", a.model, "--tokenizer", a.tokenizer, "--quant", "q8",
                        "--llama2c", "--pad-ffn", "64", "-o", ckpt], check=True,
                       stderr=subprocess.DEVNULL)
        cmds["llama2.c runq (int8)"] = [a.runq, ckpt, "-z", a.tokenizer, "-t", "0", "-n", steps,
                                        "-i", a.prompt]
    if a.before:
        for q in ["f32", "q8"]:
            cmds[f"before: gen .gguf {q}"] = [a.before, "gen", "-m", images[q], "-p", a.prompt,
                                              "-n", steps]
    if a.cpu is not None:
        cmds = {k: ["taskset", "-c", str(a.cpu)] + c for k, c in cmds.items()}
    times = {k: [] for k in cmds}
    loop = {k: [] for k in cmds}
    outputs = {}
    for _ in range(a.runs):
        for k, c in cmds.items():
            dt, out, tps = timed(c)
            times[k].append(dt)
            loop[k].append(tps)
            outputs[k] = out
    ref = outputs["llama2.c run (fp32)"]
    base = statistics.median(times["llama2.c run (fp32)"])
    base_loop = statistics.median(loop["llama2.c run (fp32)"])
    pinned = f", pinned to CPU {a.cpu}" if a.cpu is not None else ""
    print(f"{a.runs} alternating runs each, {a.steps} positions, prompt {a.prompt!r}{pinned}")
    print("whole process = wall time of the command; loop = the 'achieved tok/s' it reports")
    print(f"{'program':<26} {'median ms':>10} {'tok/s':>8} {'speedup':>8} "
          f"{'loop tok/s':>11} {'speedup':>8}  output")
    for k in cmds:
        m = statistics.median(times[k])
        lt = statistics.median(loop[k])
        same = "same as llama2.c" if outputs[k] == ref else "differs"
        print(f"{k:<26} {m * 1e3:>10.2f} {a.steps / m:>8.0f} {base / m:>7.2f}x "
              f"{lt:>11.0f} {lt / base_loop:>7.2f}x  {same}")
    if a.runq:
        q, r = "ruvllm gen .gguf q8", "llama2.c runq (int8)"
        print(f"q8 image against runq: {statistics.median(times[r]) / statistics.median(times[q]):.2f}x "
              f"whole process, {statistics.median(loop[q]) / statistics.median(loop[r]):.2f}x loop")


if __name__ == "__main__":
    main()
