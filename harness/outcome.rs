//! What the kernel answered for one case, and how an answer reads in a
//! table cell.

use std::fmt;
use std::io;
use std::net::IpAddr;

use crate::platform;
use crate::scenario::{Case, Holder, SockOpt};

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
        /// Who received the traffic sent to the shared port afterwards,
        /// when both sockets could receive it (`delivery::applies`).
        delivery: Option<Verdict>,
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

    /// The answer part of a table cell: `ok`, `EADDRINUSE`, `ok/EADDRINUSE`
    /// (bind/listen), a `?` suffix when the state could not be verified.
    /// The whole cell adds the delivery mark (`report::table::cell`).
    pub fn answer(&self) -> String {
        match self {
            Outcome::Ran {
                bind,
                listen,
                check,
                ..
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

    /// Who received the traffic, when delivery was tried.
    pub fn delivery(&self) -> Option<Verdict> {
        match self {
            Outcome::Ran { delivery, .. } => *delivery,
            _ => None,
        }
    }
}

/// Who received the traffic sent to a port two sockets hold: the one-word
/// answer of the delivery step (`run::delivery`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Verdict {
    /// Only the first socket (the one that held the port first).
    First,
    /// Only the second socket.
    Second,
    /// Both received some (the kernel balances; the split is in `Delivery`).
    Both,
    /// Neither: every connection was refused or every datagram lost.
    None,
}

impl Verdict {
    pub const ALL: &'static [Verdict] = &[
        Verdict::First,
        Verdict::Second,
        Verdict::Both,
        Verdict::None,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Verdict::First => "first",
            Verdict::Second => "second",
            Verdict::Both => "both",
            Verdict::None => "none",
        }
    }

    /// The verdict for what each socket received.
    pub fn of(first: u32, second: u32) -> Verdict {
        match (first > 0, second > 0) {
            (true, false) => Verdict::First,
            (false, true) => Verdict::Second,
            (true, true) => Verdict::Both,
            (false, false) => Verdict::None,
        }
    }

    /// Whether the second socket received any of the traffic.
    pub fn reaches_second(self) -> bool {
        matches!(self, Verdict::Second | Verdict::Both)
    }

    /// A port takeover: the second socket belongs to another process (or
    /// another user) than the live first socket, and receives traffic
    /// meant for it.
    pub fn is_takeover(self, holder: Holder) -> bool {
        holder != Holder::SameProcess && self.reaches_second()
    }
}

/// Who sent the traffic of one delivery probe.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Sender {
    /// New clients (fresh sockets on ports the kernel picks): what a server
    /// on the port expects.
    New,
    /// The peer a connected UDP first socket is connected to: the only
    /// sender it receives from.
    Peer,
}

impl Sender {
    pub fn name(self) -> &'static str {
        match self {
            Sender::New => "new",
            Sender::Peer => "peer",
        }
    }
}

/// The traffic sent to one address of the shared port, and who got it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Probe {
    pub to: IpAddr,
    pub sender: Sender,
    /// Connections opened (TCP) or datagrams sent (UDP).
    pub sent: u32,
    /// Accepted (TCP) or received (UDP) by the first socket.
    pub first: u32,
    /// Accepted or received by the second socket.
    pub second: u32,
    /// TCP: connect() refused or reset; UDP: the kernel answered "port
    /// unreachable" (nobody took the datagram).
    pub refused: u32,
    /// Connected or sent, and received by neither socket within the wait.
    pub lost: u32,
}

/// What the delivery step measured: one probe per address and sender.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Delivery {
    pub probes: Vec<Probe>,
}

impl Delivery {
    /// Who received the traffic meant for the first socket: everything
    /// sent to the shared addresses, or, for a connected UDP first socket,
    /// what its peer sent (it receives from nobody else).
    pub fn verdict(&self) -> Verdict {
        let peer = self.probes.iter().any(|p| p.sender == Sender::Peer);
        let meant = self
            .probes
            .iter()
            .filter(|p| !peer || p.sender == Sender::Peer);
        let (first, second) = meant.fold((0, 0), |(f, s), p| (f + p.first, s + p.second));
        Verdict::of(first, second)
    }
}

/// A case with its answer, the port it used and the traffic it counted
/// (neither is part of the answer: the port differs from run to run, and
/// so does the split of a balancing kernel; the verdict is in `outcome`).
#[derive(Clone, Debug)]
pub struct Record {
    pub case: Case,
    pub outcome: Outcome,
    pub port: Option<u16>,
    pub delivery: Option<Delivery>,
}

impl Record {
    /// Whether this case is a port takeover (`Verdict::is_takeover`).
    pub fn is_takeover(&self) -> bool {
        (self.outcome.delivery()).is_some_and(|v| v.is_takeover(self.case.holder))
    }
}
