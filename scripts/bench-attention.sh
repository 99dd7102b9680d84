#!/usr/bin/env bash
# Sliding-window attention against full attention, in the same run: `gen` of 256 positions
# (the built-in model's context; greedy), alternating full and window:N RUNS times, medians of
# the time per position the tool reports (a window changes the text, so its length too).
#   scripts/bench-attention.sh [RUNS]      (release binary: cargo build --release -p ruvllm-cli)
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-target/release/ruvllm-esp32}
RUNS=${1:-11}

# Microseconds per position: "achieved tok/s: R (N positions in T ms; ...".
gen_us() {
    "$BIN" gen -p "Once upon a time" -n 256 "$@" 2>&1 >/dev/null |
        sed -n 's/.*(\([0-9]*\) positions in \([0-9.]*\) ms.*/\2 \1/p' | awk '{printf "%.3f\n", 1000 * $1 / $2}'
}
median() { sort -n | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }

echo "| path | attention | full us/position | window us/position | full / window |"
echo "| --- | --- | --- | --- | --- |"
for path in "" "--int"; do
    for w in 16 64 128; do
        full=() win=()
        for _ in $(seq "$RUNS"); do
            # shellcheck disable=SC2086
            full+=("$(gen_us $path)")
            # shellcheck disable=SC2086
            win+=("$(gen_us $path --attention window:$w)")
        done
        f=$(printf '%s\n' "${full[@]}" | median)
        v=$(printf '%s\n' "${win[@]}" | median)
        printf '| %s | window:%s | %.2f | %.2f | %.2fx |\n' "${path:-float (q8)}" "$w" "$f" "$v" "$(echo "$f / $v" | bc -l)"
    done
done
