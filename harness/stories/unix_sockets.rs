//! The same problem on a path: a Unix-domain server that exits leaves its
//! socket file behind, and the next bind() of that path fails.
//!
//! Each case brings a path (or a Linux abstract name) into a situation,
//! then a new socket binds it; the table records bind (and listen).

use std::path::Path;

use socket2::{Domain, SockAddr, Socket, Type};

use super::server::{ServerAddr, ServerProcess};
use crate::outcome::{OsError, Outcome, Skip, StateCheck};
use crate::platform;
use crate::report::table::Table;
use crate::report::Recorded;
use crate::spawn;

/// What was there before the new bind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Situation {
    /// A listener in this process is bound to the path.
    LiveListener,
    /// A listener in this process bound the path, then was closed.
    ClosedWithoutUnlink,
    /// A server process bound the path and was killed (SIGKILL).
    KilledServer,
    /// As `KilledServer`, then the path was unlinked.
    KilledThenUnlinked,
    /// Linux abstract name held by a live listener.
    AbstractLive,
    /// Linux abstract name whose listener was closed.
    AbstractClosed,
}

impl Situation {
    pub const ALL: &'static [Situation] = &[
        Situation::LiveListener,
        Situation::ClosedWithoutUnlink,
        Situation::KilledServer,
        Situation::KilledThenUnlinked,
        Situation::AbstractLive,
        Situation::AbstractClosed,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Situation::LiveListener => "path of a live listener",
            Situation::ClosedWithoutUnlink => "path left by close() without unlink",
            Situation::KilledServer => "stale path of a killed server process",
            Situation::KilledThenUnlinked => "killed server's path after unlink()",
            Situation::AbstractLive => "abstract name of a live listener",
            Situation::AbstractClosed => "abstract name after its listener closed",
        }
    }
}

fn listener_at(addr: &SockAddr) -> std::io::Result<Socket> {
    let s = Socket::new(Domain::UNIX, Type::STREAM, None)?;
    s.bind(addr)?;
    s.listen(16)?;
    Ok(s)
}

/// The new socket's bind, then listen when the bind worked.
fn bind_again(addr: &SockAddr) -> Outcome {
    let s = match Socket::new(Domain::UNIX, Type::STREAM, None) {
        Ok(s) => s,
        Err(e) => return Outcome::SetupFailed(format!("socket(AF_UNIX): {}", OsError::of(&e))),
    };
    let bind = s.bind(addr).map_err(|e| OsError::of(&e));
    let listen = bind
        .is_ok()
        .then(|| s.listen(16).map_err(|e| OsError::of(&e)));
    Outcome::Ran {
        bind,
        listen,
        check: StateCheck::Verified,
        delivery: None,
    }
}

/// Run one situation in `dir` (a fresh temporary folder); `tag` keeps
/// abstract names of parallel runs apart.
pub fn run(situation: Situation, dir: &Path, tag: &str) -> Outcome {
    let setup = |what: &str, e: std::io::Error| {
        Outcome::SetupFailed(format!("{what}: {}", OsError::of(&e)))
    };
    if Socket::new(Domain::UNIX, Type::STREAM, None).is_err() {
        return Outcome::Skipped(Skip::NotOnPlatform(
            "AF_UNIX sockets are not available here",
        ));
    }
    let path = dir.join("server.sock");
    let addr = match SockAddr::unix(&path) {
        Ok(a) => a,
        Err(e) => return setup("socket path", e),
    };
    // Situations without a server process keep child processes started
    // elsewhere from holding copies of their sockets (see `spawn`).
    let _quiet = match situation {
        Situation::KilledServer | Situation::KilledThenUnlinked => None,
        _ => Some(spawn::sockets()),
    };
    match situation {
        Situation::LiveListener => match listener_at(&addr) {
            Ok(_held) => bind_again(&addr),
            Err(e) => setup("first listener", e),
        },
        Situation::ClosedWithoutUnlink => match listener_at(&addr) {
            Ok(first) => {
                drop(first);
                bind_again(&addr)
            }
            Err(e) => setup("first listener", e),
        },
        Situation::KilledServer | Situation::KilledThenUnlinked => {
            let server = match ServerProcess::start(
                &ServerAddr::Unix(path.clone()),
                Default::default(),
                false,
            ) {
                Ok((server, started)) if started.is_listening() => server,
                Ok(_) => {
                    return Outcome::SetupFailed(
                        "the server process could not listen on the path".into(),
                    )
                }
                Err(why) => return Outcome::SetupFailed(why),
            };
            if let Err(why) = server.kill() {
                return Outcome::SetupFailed(why);
            }
            if !path.exists() {
                return Outcome::SetupFailed("the killed server left no file behind".into());
            }
            if situation == Situation::KilledThenUnlinked {
                if let Err(e) = std::fs::remove_file(&path) {
                    return setup("unlink", e);
                }
            }
            bind_again(&addr)
        }
        Situation::AbstractLive | Situation::AbstractClosed => {
            let Some(name) = platform::abstract_unix_addr(&format!("addrinuse-{tag}")) else {
                return Outcome::Skipped(Skip::NotOnPlatform(
                    "abstract socket names exist on Linux only",
                ));
            };
            match listener_at(&name) {
                Ok(first) => {
                    if situation == Situation::AbstractClosed {
                        drop(first);
                        bind_again(&name)
                    } else {
                        let outcome = bind_again(&name);
                        drop(first);
                        outcome
                    }
                }
                Err(e) => setup("first listener", e),
            }
        }
    }
}

/// Every situation, each in its own temporary folder.
pub fn run_all() -> Vec<(Situation, Outcome)> {
    Situation::ALL
        .iter()
        .enumerate()
        .map(|(i, &s)| {
            let outcome = match tempfile_dir() {
                Ok(dir) => {
                    let tag = format!("{}-{i}", std::process::id());
                    let o = run(s, dir.path(), &tag);
                    drop(dir);
                    o
                }
                Err(e) => Outcome::SetupFailed(format!("temporary folder: {e}")),
            };
            (s, outcome)
        })
        .collect()
}

fn tempfile_dir() -> std::io::Result<tempfile::TempDir> {
    tempfile::Builder::new().prefix("addrinuse-").tempdir()
}

/// The results as a table (the form stored in snapshots).
pub fn table(results: &[(Situation, Outcome)]) -> Table {
    let heading = "unix-domain sockets: what a new socket's bind()/listen() answers on a path or name already used";
    let header = vec!["situation".to_string(), "new socket".to_string()];
    let mut table = Table::new(
        vec![heading.to_string()],
        Recorded::UnixSockets.key_columns(),
        header,
    );
    for (situation, outcome) in results {
        let mut cell = outcome.answer();
        if let Some(reason) = outcome.reason() {
            cell = format!("{cell}[{}]", table.footnote(reason));
        }
        table.rows.push(vec![situation.name().to_string(), cell]);
    }
    table
}
