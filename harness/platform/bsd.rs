//! macOS, FreeBSD and the other BSDs: SO_REUSEPORT with BSD semantics,
//! FreeBSD's SO_REUSEPORT_LB; states are verified through the kernel's
//! pcb list sysctl on FreeBSD and macOS (parsed in `tables`), elsewhere
//! they are marked `state not verified`.

use std::io;
use std::net::SocketAddr;

use socket2::Socket;

use super::tables::{self, portrange};
use super::unix;
use super::{set_reuseaddr, Census, Observed, OptionError};
use crate::scenario::{Proto, SockOpt};

pub use unix::{error_name, privileged};

#[cfg(target_os = "freebsd")]
pub const STATE_CHECK: &str = "net.inet.tcp.pcblist: TCP by address pair and state; UDP unlisted";

#[cfg(target_os = "macos")]
pub const STATE_CHECK: &str = "net.inet.tcp.pcblist_n: TCP by address pair and state; UDP unlisted";

#[cfg(not(any(target_os = "freebsd", target_os = "macos")))]
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
    let read = || {
        portrange::bsd_ephemeral(
            sysctl_int(c"net.inet.ip.portrange.first")?,
            sysctl_int(c"net.inet.ip.portrange.last")?,
        )
    };
    // Unreadable: IANA's dynamic range, macOS's default (FreeBSD's is
    // 10000-65535).
    Some(read().unwrap_or((49152, 65535)))
}

/// An integer sysctl, by name.
fn sysctl_int(name: &std::ffi::CStr) -> Option<i32> {
    let mut value: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>();
    // SAFETY: a NUL-terminated name and an int-sized output buffer whose
    // size is passed along; nothing is written to the kernel.
    let rc = unsafe {
        libc::sysctlbyname(
            name.as_ptr(),
            (&mut value as *mut libc::c_int).cast(),
            &mut len,
            std::ptr::null_mut(),
            0,
        )
    };
    (rc == 0 && len == std::mem::size_of::<libc::c_int>()).then_some(value)
}

/// An opaque sysctl, by name: its size first, then the data; a table that
/// grew in between (ENOMEM) is asked for again, a bounded number of times.
#[cfg(any(target_os = "freebsd", target_os = "macos"))]
fn sysctl_bytes(name: &std::ffi::CStr) -> io::Result<Vec<u8>> {
    for _ in 0..8 {
        let mut len = 0usize;
        // SAFETY: a NUL-terminated name; a null buffer asks for the size.
        let rc = unsafe {
            libc::sysctlbyname(
                name.as_ptr(),
                std::ptr::null_mut(),
                &mut len,
                std::ptr::null_mut(),
                0,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        let mut buf = vec![0u8; len];
        // SAFETY: buf is valid for len bytes, and len says so.
        let rc = unsafe {
            libc::sysctlbyname(
                name.as_ptr(),
                buf.as_mut_ptr().cast(),
                &mut len,
                std::ptr::null_mut(),
                0,
            )
        };
        if rc == 0 {
            buf.truncate(len);
            return Ok(buf);
        }
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::ENOMEM) {
            return Err(e);
        }
    }
    Err(io::Error::other(format!(
        "{}: the table kept growing",
        name.to_string_lossy()
    )))
}

/// Every TCP socket the kernel lists, or `None` where no list is read.
#[cfg(target_os = "freebsd")]
fn tcp_table() -> Option<io::Result<Vec<tables::TcpEntry>>> {
    Some(
        sysctl_bytes(c"net.inet.tcp.pcblist").and_then(|b| Ok(tables::freebsd::parse_pcblist(&b)?)),
    )
}

#[cfg(target_os = "macos")]
fn tcp_table() -> Option<io::Result<Vec<tables::TcpEntry>>> {
    Some(
        sysctl_bytes(c"net.inet.tcp.pcblist_n")
            .and_then(|b| Ok(tables::darwin::parse_pcblist_n(&b)?)),
    )
}

#[cfg(not(any(target_os = "freebsd", target_os = "macos")))]
fn tcp_table() -> Option<io::Result<Vec<tables::TcpEntry>>> {
    None
}

/// The sysctls that change the answers: how long TIME_WAIT lasts (FreeBSD
/// 15 has a much shorter MSL for local peers, and `nolocaltimewait` skips
/// TIME_WAIT for them altogether), and where the kernel picks ports.
const FACT_SYSCTLS: &[(&str, &std::ffi::CStr)] = &[
    ("net.inet.tcp.msl", c"net.inet.tcp.msl"),
    ("net.inet.tcp.msl_local", c"net.inet.tcp.msl_local"),
    (
        "net.inet.tcp.nolocaltimewait",
        c"net.inet.tcp.nolocaltimewait",
    ),
    (
        "net.inet.ip.portrange.first",
        c"net.inet.ip.portrange.first",
    ),
    ("net.inet.ip.portrange.last", c"net.inet.ip.portrange.last"),
];

/// No setting of this platform is known to change a recorded answer.
pub fn changed_settings() -> Vec<String> {
    Vec::new()
}

pub fn facts() -> Vec<(&'static str, String)> {
    let mut facts = vec![("kernel", unix::kernel_release())];
    for (label, name) in FACT_SYSCTLS {
        let value = sysctl_int(name).map_or_else(|| "not present".into(), |v| v.to_string());
        facts.push((label, value));
    }
    facts.push(("user", unix::user_fact()));
    facts
}

/// How often a state is polled: each poll copies the whole pcb list.
pub const POLL: std::time::Duration = std::time::Duration::from_millis(1);

/// The TCP socket at `local` connected to `remote`, or with `None` the
/// listener that a connection to `local` would reach.
pub fn observe_tcp(local: SocketAddr, remote: Option<SocketAddr>) -> io::Result<Observed> {
    match tcp_table() {
        Some(entries) => Ok(tables::find(&entries?, local, remote)),
        None => Ok(Observed::Unknown),
    }
}

/// The TCP sockets on `port` from the same table; UDP sockets are not
/// read on these platforms.
pub fn census(proto: Proto, port: u16, _bound_only: bool) -> io::Result<Option<Census>> {
    match (proto, tcp_table()) {
        (Proto::Tcp, Some(entries)) => Ok(Some(tables::census(&entries?, port))),
        _ => Ok(None),
    }
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

/// No network namespaces here: runs share the machine's ports (and take
/// turns through the ports' lock).
pub fn private_network() -> io::Result<()> {
    Err(io::ErrorKind::Unsupported.into())
}

/// Every program runs in the machine's network here.
pub fn in_machine_network(_command: &mut std::process::Command) {}

/// Readies the free-port check's probe socket (see `ports::is_free`).
pub fn prepare_free_probe(_socket: &Socket) {}

/// Whether a dual-stack `[::]` bind can succeed beside an IPv4 socket on the
/// same port, so that the free-port check must try `0.0.0.0` too.
pub const DUAL_STACK_PROBE_MISSES_V4: bool = true;

/// No ports are reserved outside the ephemeral range here.
pub fn excluded_ports() -> Vec<(u16, u16)> {
    Vec::new()
}

/// Other processes' sockets are not read from outside here (`None`): the
/// runtimes story relies on what each program reads itself.
pub fn listeners_of(_pid: u32, _port: u16) -> io::Result<Option<Vec<super::ListenerOptions>>> {
    Ok(None)
}
