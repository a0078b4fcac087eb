//! Properties of the harness and the kernel that hold on every platform,
//! checked on cases drawn at random from the whole matrix.

mod common;

use addrinuse::outcome::Outcome;
use addrinuse::probe;
use addrinuse::run::{self, ports, run_case};
use addrinuse::scenario::{matrix, Case, State};
use std::time::{Duration, Instant};

use proptest::prelude::*;
use proptest::sample::select;

/// The cases this machine can run (the rest are skipped for a reason the
/// snapshot tables already show).
fn runnable() -> Vec<Case> {
    common::init();
    let cases: Vec<Case> = matrix()
        .into_iter()
        .filter(|c| !run::precheck(c).is_some_and(|s| s.is_unsupported()))
        .collect();
    if common::capable("properties", common::lacks(&cases)) {
        cases
    } else {
        cases
            .into_iter()
            .filter(|c| run::precheck(c).is_none())
            .collect()
    }
}

fn runnable_where(keep: fn(&Case) -> bool) -> Vec<Case> {
    runnable().into_iter().filter(keep).collect()
}

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 64,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config())]

    /// The same case run twice (on two fresh ports) gives the same answer.
    #[test]
    fn a_case_answers_the_same_twice(case in select(runnable())) {
        let first = run_case(&case).outcome;
        let again = run_case(&case).outcome;
        prop_assert_eq!(first, again, "{}", probe::format(&case));
    }

    /// Cases running side by side answer as they do alone.
    #[test]
    fn concurrency_does_not_change_answers(cases in prop::collection::vec(select(runnable()), 2..24)) {
        let alone: Vec<Outcome> = cases.iter().map(|c| run_case(c).outcome).collect();
        let together: Vec<Outcome> = run::run_all(&cases, 4, &|_| {})
            .into_iter()
            .map(|r| r.outcome)
            .collect();
        prop_assert_eq!(alone, together);
    }

    /// After a case, nothing of it holds its port (TIME_WAIT is the one
    /// state that outlives a case on purpose).
    #[test]
    fn nothing_remains_bound_after_a_case(
        case in select(runnable_where(|c| !c.state.lingers()))
    ) {
        let record = run_case(&case);
        // Every runnable case gets a port; a case without one proves nothing.
        let port = record.port.expect("a runnable case gets a port");
        // The teardown's RST is handled asynchronously on some kernels
        // (BSD loopback): give the port a bounded second to come free.
        let deadline = Instant::now() + Duration::from_secs(1);
        let mut free = ports::is_free(case.proto, port);
        while !free && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
            free = ports::is_free(case.proto, port);
        }
        prop_assert!(
            free,
            "port {} still held after {} ({:?})", port, probe::format(&case), record.outcome
        );
    }

    /// A first socket that was closed leaves no trace: the second bind
    /// answers exactly as it does on a port nobody ever used.
    #[test]
    fn a_closed_socket_leaves_no_trace(
        case in select(runnable_where(|c| c.state == State::Closed))
    ) {
        let closed = run_case(&case).outcome;
        let alone = run::second_bind_alone(&case);
        prop_assert_eq!(closed, alone, "{}", probe::format(&case));
    }
}
