//! Where `convert -o` writes: a regular file atomically, through a symbolic link to its
//! target, and never over a FIFO, device or directory (refused in one line, left as it was,
//! no temporary file left behind).

mod common;

use common::*;
use std::os::unix::fs::FileTypeExt;

fn convert_to(out: &std::path::Path) -> Option<std::process::Output> {
    let (model, tok) = (shared("models/stories260K.bin")?, shared("models/tok512.bin")?);
    Some(run(&["convert", s(&model), "--tokenizer", s(&tok), "--quant", "q8", "-o", s(out)]))
}

/// A fresh scratch directory `name` holding a FIFO `file`.
fn dir_with_fifo(name: &str, file: &str) -> (std::path::PathBuf, std::path::PathBuf) {
    let dir = scratch(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let fifo = dir.join(file);
    assert!(std::process::Command::new("mkfifo").arg(&fifo).status().unwrap().success());
    (dir, fifo)
}

/// The FIFO is still one and `dir` holds `n` entries (no temporary file left behind).
fn untouched(fifo: &std::path::Path, dir: &std::path::Path, n: usize) {
    assert!(std::fs::symlink_metadata(fifo).unwrap().file_type().is_fifo(), "the FIFO was replaced");
    let names: Vec<_> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(names.len(), n, "temporary file left behind: {names:?}");
}

/// Today `convert -o FIFO` replaced the FIFO with a regular file.
#[test]
fn convert_refuses_a_fifo_and_a_directory_and_leaves_no_temporary_file() {
    let (dir, fifo) = dir_with_fifo("special", "fifo.gguf");
    let Some(out) = convert_to(&fifo) else { return };
    fails_with(&out, "not a regular file");
    let sub = dir.join("sub.gguf");
    std::fs::create_dir(&sub).unwrap();
    fails_with(&convert_to(&sub).unwrap(), "not a regular file");
    assert!(sub.is_dir());
    untouched(&fifo, &dir, 2);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A symbolic link as `-o` is written through: the link stays, its target is the image.
#[test]
fn convert_writes_through_a_symlink() {
    let dir = scratch("linked");
    std::fs::create_dir_all(&dir).unwrap();
    let link = dir.join("model.gguf");
    std::os::unix::fs::symlink("real.gguf", &link).unwrap();
    let Some(out) = convert_to(&link) else { return };
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(std::fs::symlink_metadata(&link).unwrap().file_type().is_symlink(), "the link was replaced");
    assert!(std::fs::read(dir.join("real.gguf")).unwrap().starts_with(b"GGUF"));
    let _ = std::fs::remove_dir_all(&dir);
}

/// The other files the tool writes where the user says (`cluster -o`, and `flash --dry-run -o`,
/// which needs a firmware build, so `cluster` stands for both) go through the same writer: a
/// FIFO is refused and stays a FIFO.
#[test]
fn cluster_and_flash_images_refuse_a_fifo() {
    let (dir, fifo) = dir_with_fifo("special-others", "out");
    fails_with(&run(&["cluster", "--chips", "2", "-o", s(&fifo), "--force"]), "not a regular file");
    untouched(&fifo, &dir, 1);
    let _ = std::fs::remove_dir_all(&dir);
}
