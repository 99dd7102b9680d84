#!/usr/bin/env bash
# Installs the host tool `ruvllm-esp32` from this checkout and checks the chip toolchains.
#
#   ./install.sh           cargo install --locked --path crates/ruvllm-cli (into ~/.cargo/bin),
#                          rustup's RISC-V targets for the ESP32-C3/C6 when rustup is there,
#                          then `ruvllm-esp32 install`: what each chip needs, and the steps left
#   ./install.sh --yes     the same, and `ruvllm-esp32 install --yes` runs `espup install`
#                          (the Xtensa ESP32/S2/S3 toolchain) when espup is there
#   ./install.sh --check   changes nothing: checks cargo, rustc, the installed tool's version
#                          and the chip toolchains; exits 1 when the host tool is not usable
#
# It never runs sudo or apt-get: the steps that need them are printed for you to run.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
MODE=install
YES=()
for arg in "$@"; do
    case "$arg" in
        --check) MODE=check ;;
        --yes) YES=(--yes) ;;
        -h | --help) sed -n '2,13s/^# \{0,1\}//p' "$0"; exit 0 ;;
        *) echo "install.sh: unknown option $arg (use --check, --yes or --help)" >&2; exit 2 ;;
    esac
done
if [ "$MODE" = check ] && [ ${#YES[@]} -gt 0 ]; then
    echo "install.sh: --check changes nothing, so it does not take --yes" >&2
    exit 2
fi

# The workspace's version and minimum Rust, from Cargo.toml.
field() { sed -n "s/^$1 = \"\(.*\)\"$/\1/p" "$ROOT/Cargo.toml" | head -n 1; }
VERSION="$(field version)"
MSRV="$(field rust-version)"

ok() { printf 'ok      %s\n' "$*"; }
missing() { printf 'missing %s\n' "$*"; }
# True when version $1 >= $2 (dotted numbers).
at_least() { [ "$(printf '%s\n%s\n' "$2" "$1" | sort -V | head -n 1)" = "$2" ]; }

if ! command -v cargo >/dev/null || ! command -v rustc >/dev/null; then
    missing "cargo and rustc: install Rust $MSRV or newer with rustup (rustup.rs), then run ./install.sh again"
    exit 1
fi
RUSTC="$(rustc --version | cut -d ' ' -f 2)"
if ! at_least "$RUSTC" "$MSRV"; then
    missing "rustc $MSRV or newer (this one is $RUSTC): rustup update stable"
    exit 1
fi
ok "rustc $RUSTC (at least $MSRV)"

# The installed tool's version, or nothing.
tool_version() { command -v ruvllm-esp32 >/dev/null && ruvllm-esp32 --version | cut -d ' ' -f 2 || true; }

if [ "$MODE" = install ]; then
    echo "running: cargo install --locked --path $ROOT/crates/ruvllm-cli"
    cargo install --locked --path "$ROOT/crates/ruvllm-cli"
    if command -v rustup >/dev/null; then
        for target in riscv32imc-unknown-none-elf riscv32imac-unknown-none-elf; do
            echo "running: rustup target add $target"
            rustup target add "$target" || echo "(rustup could not add $target: see the steps below)"
        done
    fi
fi

INSTALLED="$(tool_version)"
if [ -z "$INSTALLED" ]; then
    if [ "$MODE" = install ]; then
        missing "ruvllm-esp32 is not on PATH: add ~/.cargo/bin to PATH (cargo installed it there)"
    else
        missing "ruvllm-esp32 (the host tool): run ./install.sh"
    fi
    exit 1
fi
if [ "$INSTALLED" != "$VERSION" ]; then
    missing "ruvllm-esp32 $VERSION: the one on PATH is $INSTALLED; run ./install.sh"
    exit 1
fi
ok "ruvllm-esp32 $INSTALLED ($(command -v ruvllm-esp32))"

# The chip toolchains: the tool checks them and prints the steps for what is missing.
ruvllm-esp32 install "${YES[@]}"
