//! Start-up, on x86-64 Linux with glibc:
//! - link the unwinder statically (libgcc_eh) instead of loading libgcc_s.so at every start.
//!   std asks the linker for `-lgcc_s`; a linker script of that name found first points it at
//!   the static archive. Saves the dynamic loader a library and the library's constructor,
//!   whose CPU probe traps to the hypervisor on a VM (twelve `cpuid`s);
//! - link the tool as a fixed-address executable (no PIE): the loader then applies
//!   no relocations, which wrote (and so copied) some 65 pages of pointer tables at every
//!   start, 80 page faults of 340 for a short `gen`. The cost: no address randomization of
//!   the tool's own code (libraries, heap and stack keep theirs).
fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let var = |k: &str| std::env::var(k).unwrap_or_default();
    // x86-64 only: the one measured, and without PIE the static unwinder need not be PIC.
    if var("CARGO_CFG_TARGET_OS") != "linux"
        || var("CARGO_CFG_TARGET_ARCH") != "x86_64"
        || var("CARGO_CFG_TARGET_ENV") != "gnu"
        || var("CARGO_CFG_TARGET_FEATURE").split(',').any(|f| f == "crt-static")
    {
        return;
    }
    let out = var("OUT_DIR");
    if std::fs::write(format!("{out}/libgcc_s.so"), "INPUT(-lgcc_eh)\n").is_ok() {
        println!("cargo:rustc-link-search=native={out}");
    }
    println!("cargo:rustc-link-arg-bins=-no-pie");
}
