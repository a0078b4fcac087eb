//! Windows: Winsock error codes, SO_EXCLUSIVEADDRUSE, no SO_REUSEPORT.

use std::io;
use std::net::SocketAddr;
use std::os::windows::io::AsRawSocket;

use socket2::Socket;
use windows_sys::Win32::Networking::WinSock as ws;

use super::{refused, set_reuseaddr, Observed, OptionError};
use crate::scenario::SockOpt;

pub const STATE_CHECK: &str =
    "none: no socket-table query on this platform yet, so states the harness cannot see through its own descriptors are marked `?` (state not verified)";

/// Winsock errors under the same stable names as errno values.
pub fn error_name(code: i32) -> Option<&'static str> {
    Some(match code {
        ws::WSAEADDRINUSE => "EADDRINUSE",
        ws::WSAEADDRNOTAVAIL => "EADDRNOTAVAIL",
        ws::WSAEACCES => "EACCES",
        ws::WSAEINVAL => "EINVAL",
        ws::WSAEAFNOSUPPORT => "EAFNOSUPPORT",
        ws::WSAEPROTONOSUPPORT => "EPROTONOSUPPORT",
        ws::WSAEOPNOTSUPP => "EOPNOTSUPP",
        ws::WSAENOPROTOOPT => "ENOPROTOOPT",
        ws::WSAEISCONN => "EISCONN",
        ws::WSAECONNREFUSED => "ECONNREFUSED",
        ws::WSAETIMEDOUT => "ETIMEDOUT",
        ws::WSAENOBUFS => "ENOBUFS",
        ws::WSAEMFILE => "EMFILE",
        _ => return None,
    })
}

pub fn set_option(socket: &Socket, opt: SockOpt) -> Result<(), OptionError> {
    match opt {
        SockOpt::ReuseAddr => set_reuseaddr(socket),
        SockOpt::ExclusiveAddrUse => refused(set_exclusive(socket)),
        SockOpt::ReusePort | SockOpt::ReusePortLb => Err(OptionError::Unsupported),
    }
}

fn set_exclusive(socket: &Socket) -> io::Result<()> {
    let on: i32 = 1;
    // SAFETY: a valid socket handle and a 4-byte BOOL option value.
    let rc = unsafe {
        ws::setsockopt(
            socket.as_raw_socket() as ws::SOCKET,
            ws::SOL_SOCKET,
            ws::SO_EXCLUSIVEADDRUSE,
            (&on as *const i32).cast(),
            std::mem::size_of::<i32>() as i32,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

pub fn ephemeral_ports() -> Option<(u16, u16)> {
    // The default dynamic range since Windows Vista
    // (`netsh int ipv4 show dynamicport tcp`).
    Some((49152, 65535))
}

pub fn privileged() -> bool {
    false
}

pub fn facts() -> Vec<(&'static str, String)> {
    vec![("kernel", "Windows".into())]
}

pub fn observe_tcp(_local: SocketAddr, _remote: Option<SocketAddr>) -> io::Result<Observed> {
    Ok(Observed::Unknown)
}
