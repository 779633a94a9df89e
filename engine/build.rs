//! Links the `runbook` executable as a position-dependent executable on Linux (glibc).
//!
//! A position-independent executable is relocated by the dynamic loader at every start: with the
//! plugin families' clients (kube, mongodb) the binary carries ~40,000 relative relocations, and
//! applying them writes every page of `.data.rel.ro` and the GOT (~170 pages), each a copy-on-write
//! page fault. A one-step run paid ~160 more page faults and ~1 ms more CPU for it than the same
//! binary linked without PIE, and ~1.4 MB more peak RSS (bench/README.md, 2026-11-30). The cost is
//! the executable's own address not being randomised (libraries, heap, stack and mmaps still are).
//! Only the `runbook` binary is linked so; the library, tests and examples are left as they were.

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let cfg = |key: &str| std::env::var(key).unwrap_or_default();
    // glibc only: a musl build that links statically is a static PIE, which `-no-pie` would
    // contradict.
    if cfg("CARGO_CFG_TARGET_OS") == "linux" && cfg("CARGO_CFG_TARGET_ENV") == "gnu" {
        println!("cargo:rustc-link-arg-bin=runbook=-no-pie");
    }
}
