//! The cost of the harness next to the syscalls themselves.
//!
//! For each state, the same case runs through the harness (`run_case`:
//! free-port check, setup, verification, second bind, teardown) and as a
//! bare socket2 loop doing only the syscalls of the setup and the second
//! bind. Their ratio is the harness overhead; the goal is 2x.

use std::fmt::Write;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use crate::run::state::recipe;
use crate::run::{self, run_case};
use crate::scenario::{self, Case, Endpoint, Holder, Named, Options, Proto, SocketSpec, State};

pub struct Measurement {
    pub proto: Proto,
    pub state: State,
    pub harness: Duration,
    pub raw: Duration,
}

fn loopback_case(proto: Proto, state: State) -> Case {
    let spec = SocketSpec {
        endpoint: Endpoint {
            ip: Ipv4Addr::LOCALHOST.into(),
            v6only: None,
        },
        options: Options::NONE,
    };
    Case {
        proto,
        state,
        holder: Holder::SameProcess,
        first: spec,
        second: spec,
        peer: None,
    }
}

/// Measure every state, `iterations` cases each, on one thread.
pub fn measure(iterations: u32) -> Vec<Measurement> {
    State::all()
        .map(|(proto, state)| {
            let case = loopback_case(proto, state);
            let start = Instant::now();
            for _ in 0..iterations {
                run_case(&case);
            }
            let harness = start.elapsed() / iterations;
            let start = Instant::now();
            let floor = recipe(state).floor;
            for _ in 0..iterations {
                let _ = floor(proto);
            }
            let raw = start.elapsed() / iterations;
            Measurement {
                proto,
                state,
                harness,
                raw,
            }
        })
        .collect()
}

/// Wall time of the whole default matrix on `threads` threads.
pub fn whole_matrix(threads: usize) -> (usize, Duration) {
    let cases = scenario::matrix();
    let start = Instant::now();
    let records = run::run_all(&cases, threads, &|_| {});
    (records.len(), start.elapsed())
}

/// The bench report as `addrinuse bench` and `cargo bench` print it.
pub fn report(iterations: u32) -> String {
    let mut out = String::new();
    // First, while the port range is free of TIME_WAIT from the loops below.
    let threads = run::default_threads();
    let (n, wall) = whole_matrix(threads);
    writeln!(
        out,
        "whole matrix: {n} cases in {:.3} s on {threads} threads",
        wall.as_secs_f64()
    )
    .unwrap();
    writeln!(
        out,
        "per-case cost, one thread, {iterations} cases per state (127.0.0.1 -> 127.0.0.1, no options)"
    )
    .unwrap();
    writeln!(
        out,
        "{:<5} {:<22} {:>10} {:>10} {:>7}",
        "proto", "state", "harness", "raw", "ratio"
    )
    .unwrap();
    let measured = measure(iterations);
    for m in &measured {
        writeln!(
            out,
            "{:<5} {:<22} {:>8.1}us {:>8.1}us {:>6.2}x",
            m.proto.name(),
            m.state.name(),
            m.harness.as_secs_f64() * 1e6,
            m.raw.as_secs_f64() * 1e6,
            m.harness.as_secs_f64() / m.raw.as_secs_f64()
        )
        .unwrap();
    }
    // The floor of the whole run: each case that runs here at its state's
    // bare-syscall cost, one thread. The run's two cores must pay for all
    // of the harness (holders, checks, teardown) to reach 1.0x.
    let floor: Duration = (scenario::matrix().iter())
        .filter(|case| run::precheck(case).is_none())
        .filter_map(|case| {
            let m = measured
                .iter()
                .find(|m| (m.proto, m.state) == (case.proto, case.state))?;
            Some(m.raw)
        })
        .sum();
    writeln!(
        out,
        "whole matrix against its floor: {:.3} s / {:.3} s = {:.2}x\n  (floor: every case that runs here at its state's raw cost, one thread)",
        wall.as_secs_f64(),
        floor.as_secs_f64(),
        wall.as_secs_f64() / floor.as_secs_f64()
    )
    .unwrap();
    out
}
