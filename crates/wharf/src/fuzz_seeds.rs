//! The committed seeds of a fuzz target that reaches wharf's own parsers,
//! run as a unit test: each seed is named for the outcome it must give
//! (`outcome_description`).

/// Runs `run` on every seed of `fuzz/seeds/<target>` (at least ten) and
/// checks each outcome against the seed's name.
pub(crate) fn check(target: &str, run: impl Fn(&[u8]) -> &'static str) {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/seeds")
        .join(target);
    let mut seeds: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|entry| entry.expect("directory entry").path())
        .collect();
    seeds.sort();
    assert!(seeds.len() >= 10, "only {} seeds", seeds.len());
    for path in seeds {
        let name = path
            .file_name()
            .expect("file name")
            .to_string_lossy()
            .into_owned();
        let data = std::fs::read(&path).expect("seed file");
        let (expected, _) = name.split_once('_').expect("outcome_description");
        assert_eq!(run(&data), expected, "seed {name}");
    }
}
