//! Running cases: one case end to end, and many in parallel.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;

use crate::holder;
use crate::host;
use crate::outcome::{OsError, Outcome, Skip, Verified, Which};
use crate::platform;
use crate::ports;
use crate::scenario::{Case, Holder, Proto, State};
use crate::setup::{self, SetupError, BACKLOG};
use crate::spawn;

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
    if let Some(skip) = caps.lacks_holder(case.holder) {
        return Some(skip);
    }
    [&case.first, &case.second]
        .iter()
        .find_map(|spec| caps.lacks(&spec.endpoint))
        .map(Skip::Unavailable)
}

/// The second socket: options, bind, and for TCP `listen()`.
/// `first_listens` runs between the second socket's bind and its listen:
/// the `bound-then-listen` state makes the first socket listen there.
pub(crate) fn second_bind(
    case: &Case,
    port: u16,
    verified: Verified,
    first_listens: &mut dyn FnMut() -> Result<(), String>,
) -> Outcome {
    let socket = match setup::open(case.proto, &case.second, Which::Second) {
        Ok(s) => s,
        Err(e) => return setup_outcome(e),
    };
    let addr = SocketAddr::new(case.second.endpoint.ip, port);
    let bind = socket.bind(&addr.into()).map_err(|e| OsError::of(&e));
    if bind.is_ok() && case.state == State::BoundThenListen {
        if let Err(why) = first_listens() {
            return Outcome::SetupFailed(why);
        }
    }
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
    let mut lease = match ports::pool().take(case.proto) {
        Ok(lease) => lease,
        Err(why) => {
            return Record {
                case: *case,
                outcome: Outcome::SetupFailed(why),
                port: None,
            }
        }
    };
    let port = lease.port();
    if case.state.lingers() {
        lease.left_time_wait();
    }
    let outcome = match case.holder {
        Holder::SameProcess => {
            let _quiet = spawn::sockets();
            match setup::hold(case, port) {
                Ok(held) => {
                    let outcome =
                        second_bind(case, port, held.verified, &mut || held.first_listens());
                    drop(held);
                    outcome
                }
                Err(e) => setup_outcome(e),
            }
        }
        Holder::OtherProcess | Holder::OtherUser => holder::run_batch(&[(*case, port)]).remove(0),
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
        Ok(lease) => {
            let _quiet = spawn::sockets();
            second_bind(case, lease.port(), Verified::Yes, &mut || Ok(()))
        }
        Err(why) => Outcome::SetupFailed(why),
    }
}

/// How many threads `run_all` uses by default: one per core.
pub fn default_threads() -> usize {
    thread::available_parallelism().map_or(1, |n| n.get())
}

/// Cases per child process when another process holds the first sockets:
/// one process start per batch, and well below the usual limit of 1024
/// open descriptors (a case holds at most two).
const BATCH: usize = 128;

/// Cases per unit of work when this process holds them.
const CHUNK: usize = 32;

/// Run a run of cases that share a holder: here, or through one child.
fn run_unit(cases: &[Case]) -> Vec<Record> {
    if cases[0].holder == Holder::SameProcess {
        return cases.iter().map(run_case).collect();
    }
    let mut records: Vec<Record> = cases
        .iter()
        .map(|c| Record {
            case: *c,
            outcome: Outcome::SetupFailed(String::new()),
            port: None,
        })
        .collect();
    let mut batch = Vec::new();
    let mut leases = Vec::new();
    for (i, case) in cases.iter().enumerate() {
        if let Some(skip) = precheck(case) {
            records[i].outcome = Outcome::Skipped(skip);
            continue;
        }
        match ports::pool().take(case.proto) {
            Ok(mut lease) => {
                let port = lease.port();
                if case.state.lingers() {
                    lease.left_time_wait();
                }
                leases.push(lease);
                records[i].port = Some(port);
                batch.push((i, (*case, port)));
            }
            Err(why) => records[i].outcome = Outcome::SetupFailed(why),
        }
    }
    let pairs: Vec<(Case, u16)> = batch.iter().map(|(_, p)| *p).collect();
    for ((i, _), outcome) in batch.iter().zip(holder::run_batch(&pairs)) {
        records[*i].outcome = outcome;
    }
    drop(leases);
    records
}

/// Split `cases` into units: runs of the same holder, `BATCH` long for
/// child processes and `CHUNK` long here.
fn units(cases: &[Case]) -> Vec<std::ops::Range<usize>> {
    let mut out = Vec::new();
    let mut start = 0;
    while start < cases.len() {
        let holder = cases[start].holder;
        let size = if holder == Holder::SameProcess {
            CHUNK
        } else {
            BATCH
        };
        let mut end = start + 1;
        while end < cases.len() && end - start < size && cases[end].holder == holder {
            end += 1;
        }
        out.push(start..end);
        start = end;
    }
    out
}

/// Run `cases` on `threads` threads; records come back in the order of
/// `cases`. Each case has its own port, so the answers do not depend on
/// what runs beside it. `progress` is called with the number of cases done.
pub fn run_all(cases: &[Case], threads: usize, progress: &(dyn Fn(usize) + Sync)) -> Vec<Record> {
    let units = units(cases);
    let next = AtomicUsize::new(0);
    let done = AtomicUsize::new(0);
    let mut parts: Vec<(usize, Vec<Record>)> = thread::scope(|scope| {
        let workers: Vec<_> = (0..threads.max(1))
            .map(|_| {
                scope.spawn(|| {
                    let mut mine = Vec::new();
                    loop {
                        let n = next.fetch_add(1, Ordering::Relaxed);
                        let Some(range) = units.get(n) else {
                            return mine;
                        };
                        let records = run_unit(&cases[range.clone()]);
                        let count = records.len();
                        mine.push((range.start, records));
                        progress(done.fetch_add(count, Ordering::Relaxed) + count);
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
