#!/usr/bin/env bash
# The flash images the web page and the npm package carry: for the ESP32-C3 and C6, the
# project's esp-hal firmware around the built-in model (firmware/esp/build.sh), merged by
# `ruvllm-esp32 flash --dry-run` (bootloader, partition table, app, model partition; 4 MiB)
# into web/firmware/<chip>.bin and npm/firmware/<chip>.bin. Needs what firmware/esp/build.sh
# needs (Debian's rustc-web, rust-web-src; ../shared/TOOLCHAIN.md).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="$PWD/target/chip/firmware-esp"
mkdir -p web/firmware npm/firmware
for chip in esp32c3 esp32c6; do
    firmware/esp/build.sh "$chip" crates/ruvllm-cli/data/default.gguf
    case "$chip" in
        esp32c3) target=riscv32imc-unknown-none-elf ;;
        esp32c6) target=riscv32imac-unknown-none-elf ;;
    esac
    cargo run --release -q -p ruvllm-cli -- flash --dry-run --chip "$chip" \
        --elf "$CARGO_TARGET_DIR/$target/release/ruvllm-esp" -o "web/firmware/$chip.bin"
    cp "web/firmware/$chip.bin" "npm/firmware/$chip.bin"
done
