//! Start-up: on Linux with glibc, link the unwinder statically (libgcc_eh) instead of loading
//! libgcc_s.so at every start. std asks the linker for `-lgcc_s`; a linker script of that name
//! found first points it at the static archive. Saves the dynamic loader a library and the
//! library's constructor, whose CPU probe traps to the hypervisor on a VM (twelve `cpuid`s).
fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let var = |k: &str| std::env::var(k).unwrap_or_default();
    if var("CARGO_CFG_TARGET_OS") != "linux"
        || var("CARGO_CFG_TARGET_ENV") != "gnu"
        || var("CARGO_CFG_TARGET_FEATURE").split(',').any(|f| f == "crt-static")
    {
        return;
    }
    let out = var("OUT_DIR");
    if std::fs::write(format!("{out}/libgcc_s.so"), "INPUT(-lgcc_eh)\n").is_ok() {
        println!("cargo:rustc-link-search=native={out}");
    }
}
