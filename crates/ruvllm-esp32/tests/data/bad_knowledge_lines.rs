//! Shared by the console's unit tests and the QEMU board test (included with `#[path]`), so
//! that both type the same bad lines.

/// Bad input to each knowledge command and the one reply each gets: a 1 MB line per command,
/// then the cases of `bad_knowledge_lines.bin` (raw bytes: invalid UTF-8, control bytes, no
/// text; `line<TAB>reply` per line).
pub fn bad_knowledge_lines() -> Vec<(Vec<u8>, &'static str)> {
    let huge = ["add", "ask", "anomaly"].map(|cmd| {
        let mut l = format!("{cmd} ").into_bytes();
        l.resize(1 << 20, b'x');
        (l, "error: line too long (max 255 bytes)")
    });
    let cases = include_bytes!("bad_knowledge_lines.bin").split(|&b| b == b'\n').filter(|l| !l.is_empty());
    let cases = cases.map(|l| {
        let tab = l.iter().position(|&b| b == b'\t').expect("line<TAB>reply");
        (l[..tab].to_vec(), std::str::from_utf8(&l[tab + 1..]).expect("UTF-8 reply"))
    });
    huge.into_iter().chain(cases).collect()
}
