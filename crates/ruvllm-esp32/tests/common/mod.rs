//! Locating the shared test models (kept outside the repository, beside it in `../shared`).

use std::path::PathBuf;

/// Reads `shared/models/<name>`. Returns `None` (after saying so) when the file is absent,
/// except under CI (`CI=true`), where a missing model is a failure.
pub fn shared_model(name: &str) -> Option<Vec<u8>> {
    let dir = std::env::var_os("RUVLLM_MODELS")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/models")
        });
    let path = dir.join(name);
    match std::fs::read(&path) {
        Ok(b) => Some(b),
        Err(e) => {
            if std::env::var("CI").as_deref() == Ok("true") {
                panic!(
                    "CI=true but test model {} is unavailable: {e}",
                    path.display()
                );
            }
            eprintln!("SKIPPED: test model {} not found ({e})", path.display());
            None
        }
    }
}
