//! The cost of the harness next to the syscalls themselves.
//!
//! For each state, the same case runs through the harness (`run_case`:
//! free-port check, setup, verification, second bind, teardown) and as a
//! bare socket2 loop doing only the syscalls of the setup and the second
//! bind. Their ratio is the harness overhead; the goal is 2x.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use socket2::{Domain, Socket, Type};

use crate::run::{self, run_case};
use crate::scenario::{self, Case, Endpoint, Holder, Options, Proto, SocketSpec, State};

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
    }
}

/// The syscalls of one case and nothing else: the floor.
fn raw_case(proto: Proto, state: State) -> std::io::Result<()> {
    let ty = match proto {
        Proto::Tcp => Type::STREAM,
        Proto::Udp => Type::DGRAM,
    };
    let any: SocketAddr = (Ipv4Addr::LOCALHOST, 0).into();
    let new = || Socket::new(Domain::IPV4, ty, None);
    let wait = Duration::from_secs(2);
    let listener = || -> std::io::Result<Socket> {
        let l = new()?;
        l.bind(&any.into())?;
        l.listen(128)?;
        // Bounds accept() where the OS honours it (Linux).
        l.set_read_timeout(Some(wait))?;
        Ok(l)
    };
    let client_of = |l: &Socket| -> std::io::Result<Socket> {
        let c = Socket::new(Domain::IPV4, Type::STREAM, None)?;
        c.connect_timeout(&l.local_addr()?, wait)?;
        Ok(c)
    };
    let abort = |s: &Socket| s.set_linger(Some(Duration::ZERO));
    let mut keep = vec![];
    let addr = match state {
        State::TimeWaitClient => {
            let l = listener()?;
            let first = new()?;
            first.bind(&any.into())?;
            first.connect_timeout(&l.local_addr()?, wait)?;
            let (server, _) = l.accept()?;
            let addr = first.local_addr()?;
            drop((first, server, l));
            addr
        }
        State::BoundThenListen => {
            let first = new()?;
            first.bind(&any.into())?;
            let addr = first.local_addr()?;
            let second = new()?;
            let _ = second.bind(&addr);
            first.listen(128)?;
            let _ = second.listen(128);
            return Ok(());
        }
        State::Bound | State::Closed | State::Connected => {
            let first = new()?;
            first.bind(&any.into())?;
            let addr = first.local_addr()?;
            if state == State::Connected {
                let peer = new()?;
                peer.bind(&any.into())?;
                first.connect(&peer.local_addr()?)?;
                keep.push(peer);
            }
            if state != State::Closed {
                keep.push(first);
            }
            addr
        }
        State::Listening | State::ListeningWithBacklog => {
            let l = listener()?;
            let addr = l.local_addr()?;
            if state == State::ListeningWithBacklog {
                let c = client_of(&l)?;
                abort(&c)?;
                keep.push(c);
            }
            keep.push(l);
            addr
        }
        State::Established | State::CloseWait | State::FinWait2 | State::TimeWait => {
            let l = listener()?;
            let addr = l.local_addr()?;
            let client = client_of(&l)?;
            let (server, _) = l.accept()?;
            drop(l);
            match state {
                State::Established => {
                    abort(&server)?;
                    abort(&client)?;
                    keep.extend([server, client]);
                }
                State::CloseWait => {
                    drop(client);
                    abort(&server)?;
                    keep.push(server);
                }
                State::FinWait2 => {
                    drop(server);
                    // The ACK of the FIN, as the harness needs it too.
                    crate::platform::flush_ack(&client)?;
                    abort(&client)?;
                    keep.push(client);
                }
                _ => drop((server, client)),
            }
            addr
        }
    };
    let second = new()?;
    if second.bind(&addr).is_ok() && proto == Proto::Tcp {
        let _ = second.listen(128);
    }
    Ok(())
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
            for _ in 0..iterations {
                let _ = raw_case(proto, state);
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
    use std::fmt::Write;
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
    for m in measure(iterations) {
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
    out
}
