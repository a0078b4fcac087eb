//! macOS, FreeBSD and the other BSDs: SO_REUSEPORT with BSD semantics,
//! FreeBSD's SO_REUSEPORT_LB; no socket-table query is wired up yet, so
//! states that only the kernel can see are marked `state not verified`.

use std::io;
use std::net::SocketAddr;

use socket2::Socket;

use super::unix;
use super::{set_reuseaddr, Observed, OptionError};
use crate::scenario::SockOpt;

pub use unix::{error_name, privileged};

pub const STATE_CHECK: &str =
    "none: no socket-table query on this platform yet, so states the harness cannot see through its own descriptors are marked `?` (state not verified)";

pub fn set_option(socket: &Socket, opt: SockOpt) -> Result<(), OptionError> {
    match opt {
        SockOpt::ReuseAddr => set_reuseaddr(socket),
        SockOpt::ReusePort => unix::set_reuseport(socket),
        SockOpt::ReusePortLb => set_reuseport_lb(socket),
        SockOpt::ExclusiveAddrUse => Err(OptionError::Unsupported),
    }
}

#[cfg(target_os = "freebsd")]
fn set_reuseport_lb(socket: &Socket) -> Result<(), OptionError> {
    super::refused(socket.set_reuse_port_lb(true))
}

#[cfg(not(target_os = "freebsd"))]
fn set_reuseport_lb(_: &Socket) -> Result<(), OptionError> {
    Err(OptionError::Unsupported)
}

pub fn ephemeral_ports() -> Option<(u16, u16)> {
    // IANA's dynamic range, the default of macOS and FreeBSD
    // (net.inet.ip.portrange.first / .last).
    Some((49152, 65535))
}

pub fn facts() -> Vec<(&'static str, String)> {
    vec![
        ("kernel", unix::kernel_release()),
        ("user", unix::user_fact()),
    ]
}

pub fn observe_tcp(_local: SocketAddr, _remote: Option<SocketAddr>) -> io::Result<Observed> {
    Ok(Observed::Unknown)
}

/// Every Unix lets root switch users (other-user holders).
pub const NO_SWITCH_USER: Option<&str> = None;

pub use unix::{become_user, is_listening};

/// Abstract socket names are a Linux feature.
pub fn abstract_unix_addr(_name: &str) -> Option<socket2::SockAddr> {
    None
}

/// ACKs are not delayed in a way the harness has to hurry here.
pub fn flush_ack(_socket: &Socket) -> io::Result<()> {
    Ok(())
}

/// How long a TIME_WAIT lasts here at most (2 x MSL: 30 s on macOS, 60 s on FreeBSD.)
pub const TIME_WAIT: std::time::Duration = std::time::Duration::from_secs(61);
