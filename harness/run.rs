//! Running cases: one case end to end, and many in parallel.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;

use crate::host;
use crate::outcome::{OsError, Outcome, Skip, Verified, Which};
use crate::platform;
use crate::ports;
use crate::scenario::{Case, Proto};
use crate::setup::{self, SetupError, BACKLOG};

/// A case with its answer, and the port it used (not part of the answer:
/// it differs from run to run).
#[derive(Clone, Debug)]
pub struct Record {
    pub case: Case,
    pub outcome: Outcome,
    pub port: Option<u16>,
}

/// Why a case cannot run on this machine at all, before any syscall.
pub fn precheck(case: &Case) -> Option<Skip> {
    let caps = host::capabilities();
    for spec in [&case.first, &case.second] {
        if let Some(opt) = spec.options.iter().find(|&o| !platform::supports(o)) {
            return Some(Skip::Unsupported(opt));
        }
    }
    [&case.first, &case.second]
        .iter()
        .find_map(|spec| caps.lacks(&spec.endpoint))
        .map(Skip::Unavailable)
}

/// The second socket: options, bind, and for TCP `listen()`.
fn second_bind(case: &Case, port: u16, verified: Verified) -> Outcome {
    let socket = match setup::open(case.proto, &case.second, Which::Second) {
        Ok(s) => s,
        Err(e) => return setup_outcome(e),
    };
    let addr = SocketAddr::new(case.second.endpoint.ip, port);
    let bind = socket.bind(&addr.into()).map_err(|e| OsError::of(&e));
    let listen = match (case.proto, &bind) {
        (Proto::Tcp, Ok(())) => Some(socket.listen(BACKLOG).map_err(|e| OsError::of(&e))),
        _ => None,
    };
    Outcome::Ran {
        bind,
        listen,
        verified,
    }
}

fn setup_outcome(err: SetupError) -> Outcome {
    match err {
        SetupError::Unsupported(opt) => Outcome::Skipped(Skip::Unsupported(opt)),
        SetupError::Refused(socket, option, error) => Outcome::Refused {
            socket,
            option,
            error,
        },
        SetupError::Failed(why) => Outcome::SetupFailed(why),
    }
}

/// Run one case: a fresh port, the first socket in its state, the second
/// bind, then everything torn down.
pub fn run_case(case: &Case) -> Record {
    if let Some(skip) = precheck(case) {
        return Record {
            case: *case,
            outcome: Outcome::Skipped(skip),
            port: None,
        };
    }
    let port = match ports::pool().take(case.proto) {
        Ok(port) => port,
        Err(why) => {
            return Record {
                case: *case,
                outcome: Outcome::SetupFailed(why),
                port: None,
            }
        }
    };
    let outcome = match setup::hold(case, port) {
        Ok(held) => {
            let outcome = second_bind(case, port, held.verified);
            drop(held);
            outcome
        }
        Err(e) => setup_outcome(e),
    };
    Record {
        case: *case,
        outcome,
        port: Some(port),
    }
}

/// The second socket of `case` on a port nobody holds: what its bind
/// answers with no first socket at all.
pub fn second_bind_alone(case: &Case) -> Outcome {
    if let Some(skip) = precheck(case) {
        return Outcome::Skipped(skip);
    }
    match ports::pool().take(case.proto) {
        Ok(port) => second_bind(case, port, Verified::Yes),
        Err(why) => Outcome::SetupFailed(why),
    }
}

/// How many threads `run_all` uses by default: one per core.
pub fn default_threads() -> usize {
    thread::available_parallelism().map_or(1, |n| n.get())
}

/// Run `cases` on `threads` threads; records come back in the order of
/// `cases`. Each case has its own port, so the answers do not depend on
/// what runs beside it. `progress` is called with the number of cases done.
pub fn run_all(cases: &[Case], threads: usize, progress: &(dyn Fn(usize) + Sync)) -> Vec<Record> {
    const CHUNK: usize = 32;
    let next = AtomicUsize::new(0);
    let done = AtomicUsize::new(0);
    let mut parts: Vec<(usize, Vec<Record>)> = thread::scope(|scope| {
        let workers: Vec<_> = (0..threads.max(1))
            .map(|_| {
                scope.spawn(|| {
                    let mut mine = Vec::new();
                    loop {
                        let start = next.fetch_add(CHUNK, Ordering::Relaxed);
                        if start >= cases.len() {
                            return mine;
                        }
                        let end = (start + CHUNK).min(cases.len());
                        let records = cases[start..end].iter().map(run_case).collect();
                        mine.push((start, records));
                        progress(done.fetch_add(end - start, Ordering::Relaxed) + end - start);
                    }
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().expect("a worker thread panicked"))
            .collect()
    });
    parts.sort_by_key(|(start, _)| *start);
    parts.into_iter().flat_map(|(_, records)| records).collect()
}
