#!/usr/bin/env bash
# Attention patterns and speculative decoding on the QEMU ESP32-C3 board (integer engine,
# exact instruction counts under -icount shift=0): the console's `bench` (greedy positions
# 0..context, instructions per token at positions 1, 64, 128 and the last) after
# `set attention P` for each pattern, then a greedy `gen` of the whole context without and with
# `set speculative on` (instructions per position from `stats`, the drafts' acceptance).
#   scripts/bench-board-patterns.sh [MODEL ARGS...]   (default: the built-in model)
# Needs the chip toolchain (shared/TOOLCHAIN.md).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-target/release/ruvllm-esp32}
PATTERNS=${PATTERNS:-"full window:32 strided:8 dilated:2:32 bigbird:1:16:8 bigbird:2:32:16"}
PROMPT="Once upon a time"

script() {
    echo "set steps 256"
    for p in $PATTERNS; do
        echo "set attention $p"
        echo "bench"
    done
    echo "set attention full"
    for s in off on; do
        echo "set speculative $s"
        echo "gen $PROMPT"
        echo "stats"
    done
    echo "quit"
}
script | "$BIN" board "$@" 2>&1 | tr -d '\r' | awk '
    /^> set attention / { pattern = $4 }
    /^instructions\/token at position/ {
        at[pattern] = at[pattern] sprintf(" | %s", $5)
        if (n == 0) { sub(":", "", $4); head = head sprintf(" | position %s", $4); rule = rule " | ---" }
    }
    /^error: / { errors = errors "\n" $0 }
    /^instructions\/token average/ { avg[pattern] = $6; order[++n] = pattern }
    /^> set speculative / { spec = $4 }
    /^speculative: / { acc = $0 }
    /^last generation: / { gen[spec] = $0; accs[spec] = acc; acc = "" }
    END {
        print "| pattern" head " | average 0-127 |"
        print "| ---" rule " | --- |"
        for (i = 1; i <= n; i++) { p = order[i]; printf "| %s%s | %s |\n", p, at[p], avg[p] }
        print ""
        for (s in gen) printf "speculative %s: %s %s\n", s, gen[s], accs[s]
        if (errors != "") print "board errors:" errors
    }'
