//! The cost of the harness next to the syscalls themselves.
//!
//! For each state, the same case runs through the harness (`run_case`:
//! free-port check, setup, verification, second bind, teardown) and as a
//! bare socket2 loop doing only the syscalls of the setup and the second
//! bind. Their ratio is the harness overhead. The floor of the whole
//! matrix adds the delivery step's traffic at its bare cost per message
//! (`delivery::floor`), as many messages as the run really sent.

use std::fmt::Write;
use std::io;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use crate::outcome::{Record, Sender};
use crate::run::state::recipe;
use crate::run::{self, delivery, run_case};
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

/// The bare cost of one message of each kind of traffic, on one thread.
pub fn measure_traffic(iterations: u32) -> Vec<((Proto, Sender), io::Result<Duration>)> {
    delivery::TRAFFIC
        .into_iter()
        .map(|(proto, sender)| {
            let start = Instant::now();
            let cost =
                delivery::floor(proto, sender, iterations).map(|()| start.elapsed() / iterations);
            ((proto, sender), cost)
        })
        .collect()
}

/// The whole default matrix on `threads` threads: its records and wall time.
pub fn whole_matrix(threads: usize) -> (Vec<Record>, Duration) {
    let cases = scenario::matrix();
    let start = Instant::now();
    let records = run::run_all(&cases, threads, &|_| {});
    (records, start.elapsed())
}

/// How many messages of `kind` the run's delivery step sent.
fn messages(records: &[Record], kind: (Proto, Sender)) -> u32 {
    (records.iter())
        .filter(|r| r.case.proto == kind.0)
        .filter_map(|r| r.delivery.as_ref())
        .flat_map(|d| &d.probes)
        .filter(|p| p.sender == kind.1)
        .map(|p| p.sent)
        .sum()
}

/// The bench report as `addrinuse bench` and `cargo bench` print it.
pub fn report(iterations: u32) -> String {
    let mut out = String::new();
    // First, while the port range is free of TIME_WAIT from the loops below.
    let threads = run::default_threads();
    let (records, wall) = whole_matrix(threads);
    writeln!(
        out,
        "whole matrix: {} cases in {:.3} s on {threads} threads",
        records.len(),
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
    writeln!(
        out,
        "delivery traffic, one thread, {iterations} messages per kind (to 127.0.0.1)"
    )
    .unwrap();
    let traffic = measure_traffic(iterations);
    let mut traffic_floor = Duration::ZERO;
    for ((proto, sender), raw) in traffic {
        let sent = messages(&records, (proto, sender));
        let kind = format!("{:<5} from a {} sender", proto.name(), sender.name());
        match raw {
            Ok(raw) => {
                traffic_floor += raw * sent;
                let us = raw.as_secs_f64() * 1e6;
                writeln!(
                    out,
                    "{kind:<28} {us:>8.1}us per message, {sent} sent in the whole matrix"
                )
            }
            // Then the floor below lacks this traffic: say so.
            Err(e) => writeln!(out, "{kind:<28} not measured: {e}"),
        }
        .unwrap();
    }
    // The floor of the whole run: each case that runs here at its state's
    // bare-syscall cost, and its traffic at the bare cost per message, on
    // one thread. The run's two cores must pay for all of the harness
    // (holders, checks, counting, teardown) to reach 1.0x.
    let states_floor: Duration = (records.iter())
        .filter(|r| run::precheck(&r.case).is_none())
        .filter_map(|r| {
            let m =
                (measured.iter()).find(|m| (m.proto, m.state) == (r.case.proto, r.case.state))?;
            Some(m.raw)
        })
        .sum();
    let floor = states_floor + traffic_floor;
    writeln!(
        out,
        "whole matrix against its floor: {:.3} s / ({:.3} s states + {:.3} s traffic) = {:.2}x\n  (floor: every case that runs here at its state's raw cost, and its traffic, one thread)",
        wall.as_secs_f64(),
        states_floor.as_secs_f64(),
        traffic_floor.as_secs_f64(),
        wall.as_secs_f64() / floor.as_secs_f64()
    )
    .unwrap();
    out
}
