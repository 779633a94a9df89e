//! The migrations are embedded at compile time (`sqlx::migrate!`): a new or changed file under
//! `migrations/` must rebuild the engine, which cargo does not know by itself.
//!
//! (Linking `runbook` without PIE was measured here — 2026-11-30, bench/README.md — and saves a
//! one-step run ~160 page faults and ~1 ms of CPU; it was not kept: the executable's own address
//! would no longer be randomised, a hardening an ops tool with production credentials keeps.)

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=../migrations");
}
