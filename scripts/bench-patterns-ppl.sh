#!/usr/bin/env bash
# Perplexity of each attention pattern against full attention, float and integer paths:
# stories260K (f32 and --int) on testdata/heldout-long.txt (stories written for this project,
# 3,703 tokens for its tokenizer, scored as one text in windows of the 512-position context),
# the built-in model (q8 and --int) on 60 documents of another corpus seed (11,355 tokens, each
# document after a BOS, as it was trained: `corpus --seed 99 --docs 60`).
#   scripts/bench-patterns-ppl.sh       (release binary: cargo build --release -p ruvllm-cli)
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-target/release/ruvllm-esp32}
SHARED=${SHARED:-../shared/models}
PATTERNS=${PATTERNS:-"full window:128 window:32 strided:8 strided:16 dilated:2 dilated:2:64 dilated:4:32 bigbird:1:32:8 bigbird:2:64:16 bigbird:1:8:4"}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"$BIN" corpus --seed 99 --docs 60 -o "$tmp/corpus99.txt" >/dev/null

ppl() { "$BIN" eval "$@" | awk '/^tokens:/ {t = $2} /^perplexity:/ {p = $2} END {printf "%.4f (%d)", p, t}'; }

echo "| attention | stories260K f32 | stories260K --int | built-in q8 | built-in --int |"
echo "| --- | --- | --- | --- | --- |"
for p in $PATTERNS; do
    a=(--attention "$p")
    s=(-m "$SHARED/stories260K.bin" -z "$SHARED/tok512.bin" --text testdata/heldout-long.txt)
    b=(--text "$tmp/corpus99.txt" --documents)
    printf '| %s | %s | %s | %s | %s |\n' "$p" \
        "$(ppl "${s[@]}" --quant f32 "${a[@]}")" "$(ppl "${s[@]}" --int "${a[@]}")" \
        "$(ppl "${b[@]}" "${a[@]}")" "$(ppl "${b[@]}" --int "${a[@]}")"
done
