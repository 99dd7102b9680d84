//! The host tool's reusable half: dataset readers and the index benchmark, shared by the
//! `ruvllm-esp32` binary and the comparison bench against other ANN libraries.
// Tests may print; the tool writes stdout through outln!, which reports a failed write.
#![cfg_attr(not(test), warn(clippy::print_stdout))]

pub mod ann;
pub mod board_flash;
pub mod cluster;
pub mod datasets;
pub mod input;
pub mod out;
pub mod serial;
pub mod snapshot;
