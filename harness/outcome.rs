//! What the kernel answered for one case, and how an answer reads in a
//! table cell.

use std::fmt;
use std::io;

use crate::platform;
use crate::scenario::{Case, SockOpt};

/// A failed syscall: its stable name (`EADDRINUSE`) and the raw OS code.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct OsError {
    pub code: i32,
}

impl OsError {
    pub fn of(err: &io::Error) -> OsError {
        OsError {
            // Errors the harness makes up itself (timeouts) carry no OS code.
            code: err.raw_os_error().unwrap_or(-1),
        }
    }

    /// `EADDRINUSE` on every platform (Winsock's WSAEADDRINUSE included);
    /// codes without a name read `os-error-N`.
    pub fn name(&self) -> String {
        match platform::error_name(self.code) {
            Some(name) => name.to_string(),
            None => format!("os-error-{}", self.code),
        }
    }
}

impl fmt::Display for OsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())
    }
}

/// Side socket of a case something happened to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Side {
    First,
    Second,
}

impl Side {
    pub fn name(self) -> &'static str {
        match self {
            Side::First => "first",
            Side::Second => "second",
        }
    }
}

/// Why a case did not run.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Skip {
    /// The platform has no such option: recorded as `unsupported`.
    Unsupported(SockOpt),
    /// The platform has no such feature (abstract socket names outside
    /// Linux, other-user holders on Windows): recorded as `unsupported`.
    NotOnPlatform(&'static str),
    /// This machine lacks something the case needs (IPv6, 127.0.0.2).
    Unavailable(&'static str),
}

impl Skip {
    /// The platform lacks what the case asks for (an `unsupported` cell),
    /// as opposed to a machine that lacks a capability (`skipped`).
    pub fn is_unsupported(&self) -> bool {
        matches!(self, Skip::Unsupported(_) | Skip::NotOnPlatform(_))
    }

    pub fn reason(&self) -> String {
        match self {
            Skip::Unsupported(opt) => format!("{} does not exist on {}", opt.name(), platform::OS),
            Skip::Unavailable(why) | Skip::NotOnPlatform(why) => why.to_string(),
        }
    }
}

/// Whether the first socket's state was checked in the kernel's socket
/// table before the second bind, or could only be assumed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum StateCheck {
    Verified,
    /// The platform offers no way to look (see `platform::STATE_CHECK`).
    Unverified,
}

/// Why the first socket could not be brought into its state.
#[derive(Debug, PartialEq, Eq)]
pub enum SetupError {
    /// The platform lacks an option the case asks for.
    Unsupported(SockOpt),
    /// The OS refused an option: a real answer, recorded as such.
    Refused(Side, SockOpt, OsError),
    /// The kernel refused the first socket's `bind()` or `connect()` on a
    /// port checked free: also an answer (a new kernel's refusal is then
    /// reviewable instead of looking like a broken runner).
    FirstRefused(&'static str, OsError),
    /// Anything else: the case is `setup-failed` with this reason.
    Failed(String),
}

impl SetupError {
    /// `what: EADDRINUSE`: a syscall of the setup failed.
    pub fn failed(what: &str, err: io::Error) -> SetupError {
        SetupError::Failed(format!("{what}: {}", OsError::of(&err)))
    }
}

/// The one mapping from a failed setup to the case's answer, wherever the
/// first socket was held.
impl From<SetupError> for Outcome {
    fn from(err: SetupError) -> Outcome {
        match err {
            SetupError::Unsupported(opt) => Outcome::Skipped(Skip::Unsupported(opt)),
            SetupError::Refused(socket, option, error) => Outcome::Refused {
                socket,
                option,
                error,
            },
            SetupError::FirstRefused(call, error) => Outcome::FirstRefused { call, error },
            SetupError::Failed(why) => Outcome::SetupFailed(why),
        }
    }
}

/// The answer for one case.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// The second socket was bound (and, for TCP when the bind worked,
    /// `listen()` was called on it).
    Ran {
        bind: Result<(), OsError>,
        /// `None` for UDP, and for TCP when the bind failed.
        listen: Option<Result<(), OsError>>,
        check: StateCheck,
    },
    /// The OS refused a requested option at `setsockopt()` time (Windows:
    /// SO_REUSEADDR together with SO_EXCLUSIVEADDRUSE). That is the answer.
    Refused {
        socket: Side,
        option: SockOpt,
        error: OsError,
    },
    /// The kernel refused the first socket's `call` (`bind`, `connect`).
    FirstRefused {
        call: &'static str,
        error: OsError,
    },
    Skipped(Skip),
    /// The first socket could not be brought into its state, or the state
    /// did not verify: nothing is claimed about the second bind.
    SetupFailed(String),
}

fn step(result: &Result<(), OsError>) -> String {
    match result {
        Ok(()) => "ok".into(),
        Err(e) => e.name(),
    }
}

impl Outcome {
    /// The `bind` field of machine output.
    pub fn bind_word(&self) -> String {
        match self {
            Outcome::Ran { bind, .. } => step(bind),
            Outcome::Refused { .. } => "option-refused".into(),
            Outcome::FirstRefused { .. } => "first-refused".into(),
            // The same word the table cell shows.
            Outcome::Skipped(skip) if skip.is_unsupported() => "unsupported".into(),
            Outcome::Skipped(_) => "skipped".into(),
            Outcome::SetupFailed(_) => "setup-failed".into(),
        }
    }

    /// The `listen` field of machine output: `None` when not attempted.
    pub fn listen_word(&self) -> Option<String> {
        match self {
            Outcome::Ran {
                listen: Some(listen),
                ..
            } => Some(step(listen)),
            _ => None,
        }
    }

    /// A table cell: `ok`, `EADDRINUSE`, `ok/EADDRINUSE` (bind/listen),
    /// a `?` suffix when the state could not be verified.
    pub fn cell(&self) -> String {
        match self {
            Outcome::Ran {
                bind,
                listen,
                check,
            } => {
                let mut cell = step(bind);
                if let Some(listen) = listen {
                    cell = format!("{cell}/{}", step(listen));
                }
                if *check == StateCheck::Unverified {
                    cell.push('?');
                }
                cell
            }
            Outcome::Refused { socket, error, .. } => format!("{}-opt:{error}", socket.name()),
            Outcome::FirstRefused { call, error } => format!("first-{call}:{error}"),
            Outcome::Skipped(Skip::Unsupported(_) | Skip::NotOnPlatform(_)) => "unsupported".into(),
            Outcome::Skipped(Skip::Unavailable(_)) => "skipped".into(),
            Outcome::SetupFailed(_) => "setup-failed".into(),
        }
    }

    /// Whether the platform lacks what the case asks for (an `unsupported`
    /// cell, as opposed to a machine that lacks a capability).
    pub fn is_unsupported(&self) -> bool {
        matches!(self, Outcome::Skipped(skip) if skip.is_unsupported())
    }

    /// Why the case has no kernel answer, if it has none.
    pub fn reason(&self) -> Option<String> {
        match self {
            Outcome::Skipped(skip) => Some(skip.reason()),
            Outcome::SetupFailed(why) => Some(why.clone()),
            Outcome::Refused {
                socket,
                option,
                error,
            } => Some(format!(
                "setsockopt({}) on the {} socket failed with {error}",
                option.name(),
                socket.name()
            )),
            Outcome::FirstRefused { call, error } => Some(format!(
                "the kernel refused the first socket's {call}() on a port checked free: {error}"
            )),
            Outcome::Ran { .. } => None,
        }
    }
}

/// A case with its answer, and the port it used (not part of the answer:
/// it differs from run to run).
#[derive(Clone, Debug)]
pub struct Record {
    pub case: Case,
    pub outcome: Outcome,
    pub port: Option<u16>,
}
