#!/usr/bin/env bash
# Builds the console for WebAssembly (crates/ruvllm-wasm, wasm32-unknown-unknown) and puts it
# where the web page and the npm package load it: web/ruvllm.wasm and npm/ruvllm.wasm, with
# the one JavaScript wrapper of its ABI (web/ruvllm.js) copied beside the npm one.
# Debian's rustc with its own std source and build-std (docs/WEB.md, ../shared/TOOLCHAIN.md):
# the rustup toolchain here carries only the x86_64 standard library.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x /usr/bin/rustc ] || [ ! -d /usr/lib/rustlib/src/rust/library ]; then
    echo "build-web: needs Debian's rustc-web, cargo-web and rust-web-src (apt-get install them)" >&2
    exit 1
fi
LLD="$(rustc +stable --print sysroot 2>/dev/null || rustc --print sysroot)/lib/rustlib/x86_64-unknown-linux-gnu/bin/rust-lld"
if [ -x "$LLD" ]; then
    export CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_LINKER="$LLD"
fi
RUSTC=/usr/bin/rustc RUSTDOC=/usr/bin/rustdoc RUSTC_BOOTSTRAP=1 CARGO_TARGET_DIR=target/chip \
    /usr/bin/cargo build --release -p ruvllm-wasm --target wasm32-unknown-unknown \
    -Zbuild-std=std,panic_abort
out=target/chip/wasm32-unknown-unknown/release/ruvllm_wasm.wasm
cp "$out" web/ruvllm.wasm
cp "$out" npm/ruvllm.wasm
cp web/ruvllm.js npm/ruvllm.js
# esptool-js for the page's flash button, from web/node_modules (`cd web && npm ci`).
if [ -f web/node_modules/esptool-js/bundle.js ]; then
    mkdir -p web/vendor
    cp web/node_modules/esptool-js/bundle.js web/vendor/esptool.js
else
    echo "build-web: web/node_modules/esptool-js is missing (cd web && npm ci): the page cannot flash" >&2
fi
echo "build-web: $out ($(stat -c %s "$out") bytes)"
