//! Every committed seed of every target, run through the target (no AFL++ needed): a seed
//! that panics is a regression. Also checks each target has a corpus and that the seeds the
//! encoders make today run too.

use std::path::Path;

#[test]
fn every_corpus_file_runs_through_its_target() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
    let mut total = 0;
    for (name, target) in apiary_fuzz::TARGETS {
        let dir = root.join(name);
        let mut files: Vec<_> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        assert!(!files.is_empty(), "no corpus for {name}");
        for f in &files {
            let data = std::fs::read(f).unwrap();
            let r = std::panic::catch_unwind(|| target(&data));
            assert!(r.is_ok(), "{name}: {} panics", f.display());
            total += 1;
        }
    }
    println!("{total} corpus files replayed");
}

#[test]
fn fresh_seeds_run_through_their_targets() {
    for (name, target) in apiary_fuzz::TARGETS {
        let seeds = apiary_fuzz::seeds::seeds(name);
        assert!(!seeds.is_empty(), "no seeds for {name}");
        for (file, data) in seeds {
            let r = std::panic::catch_unwind(|| target(&data));
            assert!(r.is_ok(), "{name}: fresh {file} panics");
        }
    }
}

#[test]
fn genuine_seeds_reach_past_the_checks() {
    // The seeds made by real encoders must get through, or the fuzzers would start shallow.
    for i in 0u8..6 {
        assert!(
            apiary_fuzz::bundle::run(&[i]),
            "honest proof_bundle {i} does not verify"
        );
    }
    for (file, data) in apiary_fuzz::seeds::seeds("merkle_proof") {
        assert!(
            apiary_fuzz::merkle::run(&data),
            "merkle_proof {file} does not verify"
        );
    }
    let delivered: usize = apiary_fuzz::seeds::seeds("stream")
        .iter()
        .map(|(_, data)| apiary_fuzz::stream::run(data))
        .sum();
    // Seeds 4 and 5 (both roles) deliver their two messages, seed 6 the one before its break.
    assert_eq!(delivered, 5, "genuine stream seeds deliver their messages");
}
