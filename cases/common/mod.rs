//! What the test suites share: the capability policy.
#![allow(dead_code)] // each test binary uses part of it

use std::collections::BTreeSet;

use addrinuse::outcome::Skip;
use addrinuse::run;
use addrinuse::scenario::Case;
use libtest_mimic::{Completion, Failed};

/// Once per test binary: child processes (holders, echo servers) run the
/// `addrinuse` binary cargo built for these tests.
pub fn init() {
    addrinuse::spawn::set_program(env!("CARGO_BIN_EXE_addrinuse"));
}

/// Whether the tests run in CI, where a missing capability is a failure.
pub fn in_ci() -> bool {
    std::env::var_os("CI").is_some_and(|v| !v.is_empty() && v != "false")
}

/// What this machine lacks to run `cases` (IPv6, 127.0.0.2, root for
/// other-user), if anything.
pub fn lacks(cases: &[Case]) -> Option<String> {
    let missing: BTreeSet<String> = cases
        .iter()
        .filter_map(|c| match run::precheck(c) {
            Some(skip @ Skip::Unavailable(_)) => Some(skip.reason()),
            _ => None,
        })
        .collect();
    (!missing.is_empty()).then(|| missing.into_iter().collect::<Vec<_>>().join("; "))
}

/// The one policy for a missing capability: in CI the test fails, so a CI
/// run can never pass by skipping; locally it is ignored at run time with
/// the reason, which the test summary shows and counts. `None`: go on.
pub fn skip_for(missing: Option<String>) -> Option<Result<Completion, Failed>> {
    let why = missing?;
    Some(if in_ci() {
        Err(format!("this CI machine lacks a capability: {why}").into())
    } else {
        Ok(Completion::ignored_with(why))
    })
}

/// Trials of plain test functions (`fn()` that panics on failure), for the
/// test binaries with their own harness: `trials![a, b]`.
#[allow(unused_macros)] // the matrix binary lists its trials by hand
macro_rules! trials {
    ($($test:ident),* $(,)?) => {
        vec![$(libtest_mimic::Trial::test(stringify!($test), || {
            $test();
            Ok(())
        })),*]
    };
}
