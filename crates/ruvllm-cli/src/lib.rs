//! The host tool's reusable half: dataset readers and the index benchmark, shared by the
//! `ruvllm-esp32` binary and the comparison bench against other ANN libraries.
#![warn(clippy::print_stdout)] // stdout goes through outln!, which reports a failed write

pub mod ann;
pub mod board_flash;
pub mod datasets;
pub mod input;
pub mod out;
pub mod serial;
pub mod snapshot;
