//! Running cases: one path for every case, whoever holds the first socket.
//!
//! precheck → a leased port → the first socket held (here or by a child
//! process, through `Holding`) → the second bind → release.

mod binder;
pub mod delivery;
mod holder;
pub mod ports;
pub mod second;
pub mod setup;
pub mod state;

use std::io;
use std::net::SocketAddr;
use std::ops::Range;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::thread;

pub use binder::serve as serve_binder;
pub use holder::serve as serve_holder;

use crate::host;
use crate::outcome::{Outcome, Record, SetupError, Skip, StateCheck};
use crate::platform;
use crate::scenario::{Case, Holder};
use crate::spawn;
use binder::Binding;

/// Where this process's cases run, as the header says it.
static NETWORK: OnceLock<String> = OnceLock::new();

/// Run this process's cases in a network namespace of their own where the
/// platform and the user allow it (Linux, as root): a clean port space
/// every run, with no TIME_WAIT of earlier runs and nothing of other runs
/// or programs. Elsewhere, or with `ADDRINUSE_SHARED_NETWORK` set, they
/// share the machine's, and runs take turns through the ports' lock.
/// Call it first thing in `main`, before any other thread starts.
pub fn isolate() {
    let how = if std::env::var_os("ADDRINUSE_SHARED_NETWORK").is_some() {
        "shared (ADDRINUSE_SHARED_NETWORK is set)".to_string()
    } else if !platform::privileged() {
        "shared (a private network namespace needs root)".to_string()
    } else {
        match platform::private_network() {
            Ok(()) => "private (a fresh network namespace of this run, only lo)".to_string(),
            Err(e) if e.kind() == io::ErrorKind::Unsupported => {
                format!("shared (no network namespaces on {})", platform::OS)
            }
            Err(e) => format!("shared (no private network namespace: {e})"),
        }
    };
    let _ = NETWORK.set(how);
}

/// Where this process's cases run: `private (...)` or `shared (...)`.
pub fn network() -> &'static str {
    NETWORK
        .get()
        .map_or("shared (the machine's)", String::as_str)
}

/// The variable that asks every case for a census of its port (`--census`);
/// holder children inherit it with the environment.
pub const CENSUS_VAR: &str = "ADDRINUSE_CENSUS";

/// Whether every TCP case lists its whole port in the socket table before
/// the second bind (`--census`). A listing walks every socket of the
/// namespace, TIME_WAIT ones included, so it costs 0.1 to 2 ms a case once
/// a run has left thousands of them; by default TCP states are checked by
/// exact lookups of the sockets they mean, UDP ports are always listed.
pub fn full_census() -> bool {
    static FULL: OnceLock<bool> = OnceLock::new();
    *FULL.get_or_init(|| std::env::var_os(CENSUS_VAR).is_some_and(|v| v == "full"))
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

/// Who holds the first sockets of a run of cases: this process, or a
/// child process that holds the whole run at once.
trait Holding {
    /// Case `i`'s first socket in its state, or why not.
    fn hold(&mut self, i: usize) -> Result<StateCheck, SetupError>;
    /// `bound-then-listen`: case `i`'s first socket listens now.
    fn first_listens(&mut self, i: usize) -> Result<(), SetupError>;
    /// Case `i` is done: let its first socket go.
    fn release(&mut self, i: usize);
    /// Delivery: count (and take) what waits on case `i`'s first socket.
    fn drain(&mut self, i: usize) -> Result<u32, String>;
    /// Delivery: `n` datagrams from the peer of case `i`'s connected UDP
    /// first socket to `to`; how many went out.
    fn peer_sends(&mut self, i: usize, to: SocketAddr, n: u32) -> Result<u32, String>;
}

/// First sockets held by this process, one case at a time.
struct Here<'a> {
    cases: &'a [(Case, u16)],
    held: Option<setup::Held>,
}

impl Holding for Here<'_> {
    fn hold(&mut self, i: usize) -> Result<StateCheck, SetupError> {
        let (case, port) = &self.cases[i];
        let held = self.held.insert(state::hold(case, *port)?);
        Ok(held.check)
    }

    fn first_listens(&mut self, _i: usize) -> Result<(), SetupError> {
        match &self.held {
            Some(held) => held.first_listens(),
            None => Err(SetupError::Failed("no first socket is held".into())),
        }
    }

    fn release(&mut self, _i: usize) {
        self.held = None;
    }

    fn drain(&mut self, _i: usize) -> Result<u32, String> {
        self.held.as_ref().ok_or("no first socket is held")?.drain()
    }

    fn peer_sends(&mut self, _i: usize, to: SocketAddr, n: u32) -> Result<u32, String> {
        (self.held.as_ref().ok_or("no first socket is held")?).peer_sends(to, n)
    }
}

/// Run one case: a fresh port, the first socket in its state, the second
/// bind, then everything torn down.
pub fn run_case(case: &Case) -> Record {
    run_unit(std::slice::from_ref(case)).remove(0)
}

/// Run cases that share a holder: here one by one, or through one child
/// process that holds them all.
fn run_unit(cases: &[Case]) -> Vec<Record> {
    let mut records: Vec<Record> = Vec::with_capacity(cases.len());
    let mut leases = Vec::new();
    // (index in `records`, (case, port)) of the cases that go ahead.
    let mut jobs = Vec::new();
    for case in cases {
        let outcome = match precheck(case) {
            Some(skip) => Some(Outcome::Skipped(skip)),
            None => match ports::pool().lease_for(case) {
                Ok(lease) => {
                    jobs.push((records.len(), (*case, lease.port())));
                    leases.push(lease);
                    None
                }
                Err(why) => Some(Outcome::SetupFailed(why)),
            },
        };
        records.push(Record {
            case: *case,
            // A placeholder until the case has run.
            outcome: outcome.unwrap_or_else(|| Outcome::SetupFailed(String::new())),
            port: None,
            delivery: None,
        });
    }
    let pairs: Vec<(Case, u16)> = jobs.iter().map(|(_, pair)| *pair).collect();
    let mut holding: Box<dyn Holding + '_> = match cases.first().map(|c| c.holder) {
        Some(Holder::SameProcess) | None => Box::new(Here {
            cases: &pairs,
            held: None,
        }),
        Some(holder) => Box::new(holder::Child::start(holder, &pairs)),
    };
    let mut binding: Box<dyn Binding> = match cases.first().map(|c| c.holder) {
        Some(Holder::OtherUser) if !pairs.is_empty() => Box::new(binder::Child::start()),
        _ => Box::new(binder::Here::default()),
    };
    for (i, (at, (case, port))) in jobs.iter().enumerate() {
        // No child may start (and inherit sockets) in the middle of a case.
        let _quiet = spawn::sockets();
        let mut outcome = match holding.hold(i) {
            Ok(check) => binding.bind(case, *port, check, &mut || holding.first_listens(i)),
            Err(e) => e.into(),
        };
        if delivery::applies(case, &outcome) {
            match delivery::measure(case, *port, i, &mut *holding, &mut *binding) {
                Ok(counted) => {
                    if let Outcome::Ran { delivery, .. } = &mut outcome {
                        *delivery = Some(counted.verdict());
                    }
                    records[*at].delivery = Some(counted);
                }
                Err(why) => outcome = Outcome::SetupFailed(format!("delivery: {why}")),
            }
        }
        binding.release();
        holding.release(i);
        records[*at].outcome = outcome;
        records[*at].port = Some(*port);
    }
    drop(binding);
    drop(holding);
    drop(leases);
    records
}

/// The second socket of `case` on a port nobody holds: what its bind
/// answers with no first socket at all.
pub fn second_bind_alone(case: &Case) -> Outcome {
    if let Some(skip) = precheck(case) {
        return Outcome::Skipped(skip);
    }
    match ports::pool().lease_for(case) {
        Ok(lease) => {
            let _quiet = spawn::sockets();
            second::bind(case, lease.port(), StateCheck::Verified, &mut || Ok(())).0
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

/// Split `cases` into units: runs of the same holder, `BATCH` long for
/// child processes and `CHUNK` long here.
fn units(cases: &[Case]) -> Vec<Range<usize>> {
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

/// `work` done on every item by `threads` threads, each taking the next
/// item as it is free; the results come back in the order of `items`.
pub fn in_order<T: Sync, R: Send>(
    items: &[T],
    threads: usize,
    work: impl Fn(&T) -> R + Sync,
) -> Vec<R> {
    let next = AtomicUsize::new(0);
    let mut done: Vec<(usize, R)> = thread::scope(|scope| {
        let workers: Vec<_> = (0..threads.max(1))
            .map(|_| {
                scope.spawn(|| {
                    let mut mine = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(item) = items.get(i) else {
                            return mine;
                        };
                        mine.push((i, work(item)));
                    }
                })
            })
            .collect();
        (workers.into_iter())
            .flat_map(|w| w.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
            .collect()
    });
    done.sort_by_key(|(i, _)| *i);
    done.into_iter().map(|(_, r)| r).collect()
}

/// Run `cases` on `threads` threads; records come back in the order of
/// `cases`. Each case has its own port, so the answers do not depend on
/// what runs beside it. `progress` is called with the number of cases done.
pub fn run_all(cases: &[Case], threads: usize, progress: &(dyn Fn(usize) + Sync)) -> Vec<Record> {
    // Cases that cannot run here are answered at once, so that units (and
    // the holder processes that serve them) carry only cases that run.
    let mut records: Vec<Option<Record>> = cases
        .iter()
        .map(|case| {
            precheck(case).map(|skip| Record {
                case: *case,
                outcome: Outcome::Skipped(skip),
                port: None,
                delivery: None,
            })
        })
        .collect();
    let runnable: Vec<usize> = (0..cases.len()).filter(|&i| records[i].is_none()).collect();
    let to_run: Vec<Case> = runnable.iter().map(|&i| cases[i]).collect();
    let answered = cases.len() - to_run.len();
    progress(answered);
    let units = units(&to_run);
    let done = AtomicUsize::new(answered);
    let parts = in_order(&units, threads, |range| {
        let unit = run_unit(&to_run[range.clone()]);
        progress(done.fetch_add(unit.len(), Ordering::Relaxed) + unit.len());
        (range.start, unit)
    });
    for (start, unit) in parts {
        for (k, record) in unit.into_iter().enumerate() {
            records[runnable[start + k]] = Some(record);
        }
    }
    records
        .into_iter()
        .map(|r| r.expect("every case has a record"))
        .collect()
}
