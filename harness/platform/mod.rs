//! The platform seam: everything that differs between operating systems,
//! and the only place in the crate with `cfg` attributes.
//!
//! Each OS module provides the same small set of functions:
//! - `set_option`: set one `SockOpt` (or say it does not exist here),
//! - `error_name`: a raw OS error code's stable name (`EADDRINUSE`, ...),
//! - `observe_tcp`: what the kernel's socket table says about a TCP socket,
//!   so that a state is verified before the second bind,
//! - `facts`: the platform facts that change the answers (for the header),
//! - `changed_settings`: settings known to change answers that are not at
//!   their default (a record made under them says so),
//! - `ephemeral_ports`: the range the kernel picks ports from,
//! - `ChildLines`: a child process's stdout line by line, each wait bounded
//!   (poll(2) on Unix, a reader thread on Windows).

use std::io;
use std::net::SocketAddr;

use std::sync::OnceLock;

use socket2::{Domain, Socket, Type};

use crate::scenario::SockOpt;

#[cfg(unix)]
mod unix;

/// The socket tables and port ranges of every platform as pure parsers,
/// tested here on byte layouts built from the published structs.
pub mod tables;

#[cfg(target_os = "linux")]
#[path = "linux.rs"]
mod os;

#[cfg(all(unix, not(target_os = "linux")))]
#[path = "bsd.rs"]
mod os;

#[cfg(windows)]
#[path = "windows.rs"]
mod os;

#[cfg(windows)]
pub use os::ChildLines;
#[cfg(unix)]
pub use unix::ChildLines;

pub use os::{
    abstract_unix_addr, become_user, census, changed_settings, ephemeral_ports, error_name,
    excluded_ports, facts, flush_ack, in_machine_network, is_listening, listeners_of, observe_tcp,
    prepare_free_probe, private_network, set_option, DUAL_STACK_PROBE_MISSES_V4, NO_SWITCH_USER,
    POLL, STATE_CHECK, TIME_WAIT,
};

/// The platform's name for tables and snapshot folders: the same value as
/// `std::env::consts::OS`, so `snapshots/<os>/` matches it.
pub const OS: &str = std::env::consts::OS;

/// The names Python's interpreter has on PATH, in the order to try:
/// Windows installs `python`, and its `python3` may be the Store's
/// installer stub.
pub const PYTHON: &[&str] = if cfg!(windows) {
    &["python", "python3"]
} else {
    &["python3", "python"]
};

/// Whether the process may do what root/Administrator may (bind ports below
/// 1024, switch users).
pub fn privileged() -> bool {
    os::privileged()
}

/// The owner the kernel records for this process's sockets: the effective
/// uid on Unix (Windows reports no owner, and nothing asks there).
pub fn euid() -> u32 {
    #[cfg(unix)]
    return unix::euid();
    #[cfg(not(unix))]
    return 0;
}

/// Whether this platform has `opt` at all, found out once by setting it on
/// a throwaway socket.
pub fn supports(opt: SockOpt) -> bool {
    static SUPPORTED: OnceLock<Vec<bool>> = OnceLock::new();
    SUPPORTED.get_or_init(|| {
        SockOpt::ALL
            .iter()
            .map(|&o| {
                // If no socket can be made, assume yes: the case itself
                // then finds out.
                Socket::new(Domain::IPV4, Type::DGRAM, None).map_or(true, |socket| {
                    !matches!(set_option(&socket, o), Err(OptionError::Unsupported))
                })
            })
            .collect()
    })[opt as usize]
}

/// Why setting an option did not work.
#[derive(Debug)]
pub enum OptionError {
    /// The option does not exist on this platform: the case is recorded as
    /// `unsupported`, not run.
    Unsupported,
    /// The OS refused it; that refusal is the case's answer.
    Refused(io::Error),
}

/// A TCP state as the kernel's socket table reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TcpState {
    Established,
    SynSent,
    SynRecv,
    FinWait1,
    FinWait2,
    TimeWait,
    Close,
    CloseWait,
    LastAck,
    Listen,
    Closing,
    Other(u8),
}

/// What a socket-table lookup found for one TCP socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Observed {
    /// The kernel has a socket with exactly this local (and remote)
    /// address, in this state; the platform does not say more.
    State(TcpState),
    /// Linux: a full socket in this state, owned by this uid. An orphan
    /// keeps its owner's uid, and SO_REUSEPORT's same-owner rule still
    /// applies to it.
    Owned(TcpState, u32),
    /// Linux: an inet_timewait_sock in this state: TIME_WAIT, or the
    /// FIN_WAIT2 "mini-socket" an orphan becomes. It has no owner, and bind
    /// conflicts treat it as TIME_WAIT whatever its state.
    MiniSocket(TcpState),
    /// The kernel has no such socket.
    Absent,
    /// This platform offers no way to look (the reason is `STATE_CHECK`).
    Unknown,
}

impl Observed {
    /// Whether what the kernel reports (`self`) is what a case asked for
    /// (`want`). Where the platform reports only the state, the state
    /// decides.
    pub fn satisfies(self, want: Observed) -> bool {
        use Observed::*;
        match (self, want) {
            (State(a), State(b) | Owned(b, _) | MiniSocket(b)) => a == b,
            (Owned(a, _) | MiniSocket(a), State(b)) => a == b,
            (seen, want) => seen == want,
        }
    }
}

/// One socket on a port, as the platform's socket table lists it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PortSocket {
    pub local: SocketAddr,
    /// `0.0.0.0:0` / `[::]:0` when not connected.
    pub remote: SocketAddr,
    /// Its state (a UDP socket is `Close`, or `Established` when
    /// connected, as Linux reports it) and, where known, its owner.
    pub seen: Observed,
}

/// Every socket of one protocol on one port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Census {
    pub sockets: Vec<PortSocket>,
    /// Whether bound sockets that neither listen nor connect are listed
    /// (Linux before 6.8 leaves them out).
    pub lists_bound_only: bool,
}

/// A listening socket and its options, as getsockopt reads them (`None`:
/// could not be read; an option that does not apply, such as V6ONLY on an
/// IPv4 socket or SO_EXCLUSIVEADDRUSE off Windows, is `None` too).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListenerOptions {
    pub addr: SocketAddr,
    pub reuseaddr: Option<bool>,
    pub reuseport: Option<bool>,
    pub v6only: Option<bool>,
    pub exclusive: Option<bool>,
}

/// Why a child process gave no line.
#[derive(Debug, PartialEq, Eq)]
pub enum LineError {
    /// Not within the deadline.
    Timeout,
    /// Its stdout closed: it exited, or was killed.
    Closed,
}

/// A line's text, without a `\r` before its end (as `BufRead::lines`).
fn line_text(line: &[u8]) -> String {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    String::from_utf8_lossy(line).into_owned()
}

/// A free-standing helper the OS modules share: a raw `setsockopt` result to
/// `OptionError`.
pub(crate) fn refused(result: io::Result<()>) -> Result<(), OptionError> {
    result.map_err(OptionError::Refused)
}

/// Set SO_REUSEADDR, the one option every platform has under that name.
pub(crate) fn set_reuseaddr(socket: &Socket) -> Result<(), OptionError> {
    refused(socket.set_reuse_address(true))
}

// Every OS module must offer the seam with exactly these signatures.
const _: fn(&Socket, SockOpt) -> Result<(), OptionError> = set_option;
const _: fn(i32) -> Option<&'static str> = error_name;
const _: fn(SocketAddr, Option<SocketAddr>) -> io::Result<Observed> = observe_tcp;
const _: fn(crate::scenario::Proto, u16, bool) -> io::Result<Option<Census>> = census;
const _: fn() -> Vec<(&'static str, String)> = facts;
const _: fn() -> Vec<String> = changed_settings;
const _: fn() -> Option<(u16, u16)> = ephemeral_ports;
const _: fn() -> Vec<(u16, u16)> = excluded_ports;
const _: &str = STATE_CHECK;
const _: std::time::Duration = TIME_WAIT;
const _: std::time::Duration = POLL;
const _: fn() -> io::Result<()> = private_network;
const _: fn(&Socket) = prepare_free_probe;
const _: bool = DUAL_STACK_PROBE_MISSES_V4;
const _: Option<&str> = NO_SWITCH_USER;
const _: fn(&str) -> io::Result<()> = become_user;
const _: fn(&str) -> Option<socket2::SockAddr> = abstract_unix_addr;
const _: fn(&Socket) -> io::Result<()> = flush_ack;
const _: fn(&Socket) -> io::Result<bool> = is_listening;
const _: fn(u32, u16) -> io::Result<Option<Vec<ListenerOptions>>> = listeners_of;
const _: fn(std::process::ChildStdout) -> ChildLines = ChildLines::new;
const _: fn(&mut ChildLines, std::time::Instant) -> Result<String, LineError> = ChildLines::next;
