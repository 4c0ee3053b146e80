//! Replays every file of the fuzz corpora (`fuzz/corpus/<target>/`) through the same
//! harnesses the cargo-fuzz targets run, as ordinary tests.

#[path = "../fuzz/harness.rs"]
mod harness;

use std::path::Path;

fn replay(target: &str, run: fn(&[u8])) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut n = 0;
    let mut entries: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(Result::ok)
        .filter(|e| e.path().is_file())
        .collect();
    entries.sort_by_key(|e| e.path());
    for e in entries {
        let data = std::fs::read(e.path()).unwrap();
        run(&data);
        n += 1;
    }
    assert!(n > 0, "empty corpus for {target}");
}

#[test]
fn segment_reorder_corpus() {
    replay("segment_reorder", harness::segment_reorder);
}

#[test]
fn preprocess_corpus() {
    replay("preprocess", harness::preprocess);
}

#[test]
fn reorder_stage_corpus() {
    replay("reorder_stage", harness::reorder_stage);
}

#[test]
fn engine_corpus() {
    replay("engine", harness::engine);
}

#[test]
fn extensions_corpus() {
    replay("extensions", harness::extensions);
}

#[cfg(feature = "ebpf")]
#[test]
fn ebpf_loader_corpus() {
    replay("ebpf_loader", harness::ebpf_loader);
}
