# The published entry points, each a thin wrapper over the host tool (`ruvllm-esp32 <command>
# --help` says more). Variables, e.g. `make flash CHIP=esp32c6 PORT=/dev/ttyACM0 MODEL=my.gguf`:
#   CHIP    esp32c3 (or esp32c6; esp32, esp32s2, esp32s3 need espup: see ./install.sh)
#   MODEL   a model file; empty: the built-in model
#   PORT    the board's serial port (`ruvllm-esp32 ports` lists them; a board whose only USB
#           port is the chip's own USB-Serial-JTAG shows up as /dev/ttyACM0)
#   CHIPS   chips in the cluster plan (1 to the model's layer count)
#   OUT     where `make cluster` writes its plan
#   RUVLLM  the tool: this checkout's, built in release; RUVLLM=ruvllm-esp32 uses the installed one

ROOT   := $(patsubst %/,%,$(dir $(abspath $(lastword $(MAKEFILE_LIST)))))
RUVLLM ?= cargo run --release --quiet --manifest-path $(ROOT)/Cargo.toml -p ruvllm-cli --
CHIP   ?= esp32c3
MODEL  ?=
PORT   ?= /dev/ttyUSB0
CHIPS  ?= 2
OUT    ?= cluster.toml

MODEL_ARG = $(if $(MODEL),--model $(MODEL))

.PHONY: build flash monitor cluster test install check

# The firmware for CHIP around MODEL; prints the ELF's path.
build:
	$(RUVLLM) build --target $(CHIP) --release $(MODEL_ARG)

# Build, then write bootloader, partition table, app and model partition to the board on PORT.
flash:
	$(RUVLLM) flash --chip $(CHIP) --port $(PORT) $(MODEL_ARG)

# The board's serial output here, keys to it (Ctrl-] quits).
monitor:
	$(RUVLLM) monitor --port $(PORT)

# A pipeline-parallel plan over CHIPS chips (layer ranges per chip), written to OUT.
cluster:
	$(RUVLLM) cluster --chips $(CHIPS) $(MODEL_ARG) -o $(OUT)

# The test command README.md gives (what .ci/run runs).
test:
	cargo test --manifest-path $(ROOT)/Cargo.toml --workspace

install:
	$(ROOT)/install.sh

check:
	$(ROOT)/install.sh --check
