//! The fuzz targets' bodies (`runbook_engine::fuzzing`) run over the seed corpus on stable, so the
//! harness keeps compiling and working while nobody runs the fuzzer (see docs/fuzzing.md).

use crate::common::repo;
use runbook_engine::fuzzing::{template_bytes, validate_bytes};

fn seed_files() -> Vec<std::path::PathBuf> {
    let dir = repo().join("tests").join("golden");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    files
}

#[test]
fn fuzz_bodies_run_over_the_golden_corpus() {
    let files = seed_files();
    assert!(files.len() >= 24, "too few golden cases: {}", files.len());
    for f in &files {
        let bytes = std::fs::read(f).expect("read seed");
        validate_bytes(&bytes);
        template_bytes(&bytes);
        for line in bytes.split(|b| *b == b'\n') {
            template_bytes(line);
        }
    }
}

#[test]
fn fuzz_bodies_survive_hostile_input() {
    let cases: &[&[u8]] = &[
        b"",
        b"\xff\xfe\x00",
        b"name: x\nsteps:\n  - id: a\n    uses: flow.sleep\n    with: { for: 1e308 }\n",
        b"name: x\nsteps: [{id: a, uses: flow.noop, retry: {attempts: -9223372036854775808}}]\n",
        b"{{ {{ }}",
        b"{% for x in range(3) %}{{ x }}{% endfor %}",
        b"steps.disk.used_pct > vars.limits.soft",
        b"[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[",
    ];
    for c in cases {
        validate_bytes(c);
        template_bytes(c);
    }
}
