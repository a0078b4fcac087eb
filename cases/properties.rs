//! Properties of the harness and the kernel that hold on every platform,
//! checked on cases drawn at random from the whole matrix.

#[macro_use]
mod common;

use addrinuse::outcome::Outcome;
use addrinuse::probe;
use addrinuse::run::{self, ports, run_case};
use addrinuse::scenario::{matrix, Case, State};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use libtest_mimic::{Arguments, Completion, Failed, Trial};
use proptest::prelude::*;
use proptest::sample::select;

/// The cases this machine can run. Cases of options the platform lacks are
/// answered without a syscall; cases this machine cannot run (no IPv6, no
/// 127.0.0.2, not root) are counted by `the_whole_matrix_is_drawn_from`.
fn runnable() -> Vec<Case> {
    static RUNNABLE: OnceLock<Vec<Case>> = OnceLock::new();
    (RUNNABLE.get_or_init(|| {
        matrix()
            .into_iter()
            .filter(|c| run::precheck(c).is_none())
            .collect()
    }))
    .clone()
}

/// Ignored, with the reason, where the properties cannot draw from every
/// case of the matrix (and failed in CI).
fn the_whole_matrix_is_drawn_from() -> Result<Completion, Failed> {
    let cases: Vec<Case> = matrix()
        .into_iter()
        .filter(|c| !run::precheck(c).is_some_and(|s| s.is_unsupported()))
        .collect();
    common::skip_for(common::lacks(&cases)).unwrap_or(Ok(Completion::Completed))
}

/// Plain functions listed here, not `#[test]`s: this binary has its own
/// harness (libtest-mimic), so that what a machine cannot run is counted as
/// ignored, with its reason, in the summary.
fn main() {
    // Before any thread: the cases run in a network of their own (root).
    run::isolate();
    common::init();
    let args = Arguments::from_args();
    let mut trials = trials![
        a_case_answers_the_same_twice,
        delivery_verdicts_repeat,
        concurrency_does_not_change_answers,
        nothing_remains_bound_after_a_case,
        a_closed_socket_leaves_no_trace,
    ];
    trials.push(Trial::ignorable_test(
        "the_whole_matrix_is_drawn_from",
        the_whole_matrix_is_drawn_from,
    ));
    libtest_mimic::run(&args, trials).exit();
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
    fn a_case_answers_the_same_twice(case in select(runnable())) {
        let first = run_case(&case).outcome;
        let again = run_case(&case).outcome;
        prop_assert_eq!(first, again, "{}", probe::format(&case));
    }

    /// Who receives the traffic when two sockets hold one port is the same
    /// every run: the verdict repeats, whatever the split of a balancing
    /// kernel (cases without traffic are drawn again).
    fn delivery_verdicts_repeat(
        case in select(runnable_where(|c| c.state.receives(c.proto)))
    ) {
        let first = run_case(&case);
        prop_assume!(first.delivery.is_some());
        let verdict = first.outcome.delivery();
        for _ in 0..2 {
            let again = run_case(&case);
            prop_assert_eq!(again.outcome.delivery(), verdict, "{}", probe::format(&case));
        }
    }

    /// Cases running side by side answer as they do alone.
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
    fn a_closed_socket_leaves_no_trace(
        case in select(runnable_where(|c| c.state == State::Closed))
    ) {
        let closed = run_case(&case).outcome;
        let alone = run::second_bind_alone(&case);
        prop_assert_eq!(closed, alone, "{}", probe::format(&case));
    }
}
