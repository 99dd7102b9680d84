//! The host tool's reusable half: dataset readers and the index benchmark, shared by the
//! `ruvllm-esp32` binary and the comparison bench against other ANN libraries.

pub mod ann;
pub mod board_flash;
pub mod datasets;
pub mod serial;
pub mod snapshot;
