//! What the test suites share: the capability gate.

use std::collections::BTreeSet;

use addrinuse::outcome::Skip;
use addrinuse::run;
use addrinuse::scenario::Case;

/// Once per test binary: child holder processes run the `addrinuse`
/// binary cargo built for these tests.
pub fn init() {
    addrinuse::holder::set_program(env!("CARGO_BIN_EXE_addrinuse"));
}

/// Whether the tests run in CI, where a missing capability is a failure.
pub fn in_ci() -> bool {
    std::env::var_os("CI").is_some_and(|v| !v.is_empty() && v != "false")
}

/// Whether this machine can run `cases`. Locally a missing capability (IPv6,
/// 127.0.0.2) skips the test with a visible reason; in CI it fails it, so
/// a CI run can never pass by skipping.
pub fn capable(test: &str, cases: &[Case]) -> bool {
    let missing: BTreeSet<String> = cases
        .iter()
        .filter_map(|c| match run::precheck(c) {
            Some(skip @ Skip::Unavailable(_)) => Some(skip.reason()),
            _ => None,
        })
        .collect();
    if missing.is_empty() {
        return true;
    }
    let why = missing.into_iter().collect::<Vec<_>>().join("; ");
    assert!(
        !in_ci(),
        "{test}: this CI machine lacks a capability: {why}"
    );
    eprintln!("SKIPPED {test}: {why}");
    false
}
