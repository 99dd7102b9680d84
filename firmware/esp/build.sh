#!/usr/bin/env bash
# CI compile check (and the build for real boards) of the esp-hal firmware for the RISC-V
# ESP32s, with Debian's rustc + build-std as in ../../../shared/TOOLCHAIN.md:
#     firmware/esp/build.sh esp32c3|esp32c6 MODEL.gguf
# MODEL.gguf: `ruvllm-esp32 convert ... --quant q8 (or ternary, binary) -o MODEL.gguf`. Prints the ELF's path and
# its flash / RAM use. Environment: RUSTC_CHIP (default /usr/bin/rustc), LLD (default rustup's
# rust-lld, else ld.lld), CARGO_TARGET_DIR (default firmware/esp/target), CLIPPY=1 (run clippy
# with -D warnings first; needs rust-web-clippy).
set -euo pipefail

chip="${1:-}"
model="${2:-}"
# Paths given relative to the caller's directory, before moving to the crate's.
if [ -n "$model" ] && [ -f "$model" ]; then model="$(realpath "$model")"; fi
if [ -n "${CARGO_TARGET_DIR:-}" ]; then export CARGO_TARGET_DIR="$(realpath -m "$CARGO_TARGET_DIR")"; fi
cd "$(dirname "$0")"
case "$chip" in
    esp32c3) target=riscv32imc-unknown-none-elf ;;
    esp32c6) target=riscv32imac-unknown-none-elf ;;
    esp32 | esp32s2 | esp32s3)
        echo "error: $chip is Xtensa: build it with espup's toolchain (see README.md)" >&2
        exit 2 ;;
    *) echo "usage: $0 esp32c3|esp32c6 MODEL.gguf" >&2; exit 2 ;;
esac
if [ -z "$model" ] || [ ! -f "$model" ]; then
    echo "error: model image '$model' not found (make one with ruvllm-esp32 convert --quant q8)" >&2
    exit 2
fi

rustc_chip="${RUSTC_CHIP:-/usr/bin/rustc}"
if [ -z "${LLD:-}" ]; then
    LLD="$(rustc +stable --print sysroot 2>/dev/null)/lib/rustlib/x86_64-unknown-linux-gnu/bin/rust-lld" || true
    [ -x "$LLD" ] || LLD="$(command -v ld.lld || command -v rust-lld || true)"
fi
if [ ! -x "$LLD" ]; then
    echo "error: no rust-lld / ld.lld found; set LLD" >&2
    exit 2
fi
triple_var="CARGO_TARGET_$(echo "$target" | tr 'a-z-' 'A-Z_')_LINKER"

chip_cargo() {
    env RUSTC="$rustc_chip" RUSTDOC="${RUSTDOC:-/usr/bin/rustdoc}" RUSTC_BOOTSTRAP=1 \
        RUVLLM_MODEL="$model" "$triple_var=$LLD" CARGO="${CARGO_CHIP:-/usr/bin/cargo}" \
        "${@:1:1}" "${@:2:1}" --release --features "$chip" --target "$target" \
        -Zbuild-std=core,alloc -Zbuild-std-features=compiler-builtins-mem "${@:3}"
}
# CLIPPY=1: lint the firmware first with Debian's rust-web-clippy (the same version as
# rustc-web), called directly: `cargo clippy` would find rustup's proxy first.
if [ "${CLIPPY:-0}" = 1 ]; then
    chip_cargo /usr/bin/cargo-clippy clippy -- -D warnings
fi
chip_cargo "${CARGO_CHIP:-/usr/bin/cargo}" build

elf="${CARGO_TARGET_DIR:-target}/$target/release/ruvllm-esp"
echo "built $elf"
python3 ./elf_size.py "$elf"
