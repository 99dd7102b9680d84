#!/usr/bin/env bash
# Speculative decoding against plain decoding, in the same run: each configuration alternates
# a plain `gen` and a speculative one RUNS times and reports the medians (whole process, wall
# clock) and their ratio, with the acceptance rate and tokens per target pass the tool prints.
#   scripts/bench-speculative.sh [RUNS] [SECTION]   (release binary: cargo build --release -p ruvllm-cli)
# SECTION: builtin, stories260K or 3m (the default runs all three).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-target/release/ruvllm-esp32}
RUNS=${1:-9}
SECTION=${2:-all}
SHARED=../shared/models
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT

# Milliseconds of one whole process; its stderr kept in $TMP/err.
run_ms() {
    local t0 t1
    t0=$(date +%s%N)
    "$BIN" "$@" >"$TMP/out" 2>"$TMP/err"
    t1=$(date +%s%N)
    echo $(((t1 - t0) / 1000))
}

median() { sort -n | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }

# bench LABEL "MODEL ARGS" "SPECULATIVE ARGS"
bench() {
    local label=$1 model=$2 spec=$3 plain_us=() spec_us=() stats
    for _ in $(seq "$RUNS"); do
        # shellcheck disable=SC2086
        plain_us+=("$(run_ms gen $model -p "Once upon a time")")
        cp "$TMP/out" "$TMP/plain.txt"
        # shellcheck disable=SC2086
        spec_us+=("$(run_ms gen $model -p "Once upon a time" --speculative $spec)")
        cmp -s "$TMP/out" "$TMP/plain.txt" || { echo "$label: output differs from plain" >&2; exit 1; }
    done
    stats=$(grep -o 'acceptance [0-9.]*%\|[0-9.]* tokens per target pass' "$TMP/err" | tr '\n' ' ')
    local p s
    p=$(printf '%s\n' "${plain_us[@]}" | median)
    s=$(printf '%s\n' "${spec_us[@]}" | median)
    printf '| %s | %s | %s | %.2f | %.2f | %.2fx |\n' "$label" "$spec" "$stats" \
        "$(echo "$p / 1000" | bc -l)" "$(echo "$s / 1000" | bc -l)" "$(echo "$p / $s" | bc -l)"
}

echo "| model | speculative | draft statistics | plain ms | speculative ms | speedup |"
echo "| --- | --- | --- | --- | --- | --- |"
want() { [ "$SECTION" = all ] || [ "$SECTION" = "$1" ]; }
if want builtin; then
for g in 1 2 3 4 6 8; do
    bench "built-in, -n 256" "-n 256" "--draft models/draft.gguf --gamma $g"
done
for l in 1 2 3 4; do
    bench "built-in, -n 256" "-n 256" "--early-exit $l --gamma 2"
done
for g in 1 2 4; do
    bench "built-in, integer path, -n 256" "--int -n 256" "--draft models/draft.gguf --gamma $g"
done
fi
if want stories260K && [ -f "$SHARED/stories260K.bin" ]; then
    for q in f32 q8; do
        "$BIN" convert "$SHARED/stories260K.bin" -z "$SHARED/tok512.bin" --quant $q -o "$TMP/s-$q.gguf" 2>/dev/null
        for l in 1 2 3 4; do
            bench "stories260K $q, -n 512" "-m $TMP/s-$q.gguf -n 512" "--early-exit $l --gamma 2"
        done
    done
fi
# A target whose weights do not fit the CPU's caches: models/3m.gguf (2,969,728 parameters;
# 3.4 MB at q8, 11.9 MB at f32) with the built-in model (same tokenizer) as its draft.
if want 3m; then
    "$BIN" convert models/3m.gguf --quant f32 -o "$TMP/3m-f32.gguf" 2>/dev/null
    for g in 2 4 6 8; do
        bench "3m f32, -n 128" "-m $TMP/3m-f32.gguf -n 128" "--draft crates/ruvllm-cli/data/default.gguf --gamma $g"
    done
    for g in 4 8; do
        bench "3m q8, -n 128" "-m models/3m.gguf -n 128" "--draft crates/ruvllm-cli/data/default.gguf --gamma $g"
    done
    bench "3m f32, -n 128" "-m $TMP/3m-f32.gguf -n 128" "--early-exit 12 --gamma 4"
fi
