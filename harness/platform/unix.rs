//! What Linux, macOS and the BSDs share: errno names, uname, euid.

use std::ffi::CStr;

use socket2::Socket;

use super::{refused, OptionError};

/// The stable name of an errno value. Only the errors a bind, listen,
/// connect or setsockopt can give are named; others keep their number.
pub fn error_name(code: i32) -> Option<&'static str> {
    match code {
        libc::EADDRINUSE => Some("EADDRINUSE"),
        libc::EADDRNOTAVAIL => Some("EADDRNOTAVAIL"),
        libc::EACCES => Some("EACCES"),
        libc::EPERM => Some("EPERM"),
        libc::EINVAL => Some("EINVAL"),
        libc::EAFNOSUPPORT => Some("EAFNOSUPPORT"),
        libc::EPROTONOSUPPORT => Some("EPROTONOSUPPORT"),
        libc::EOPNOTSUPP => Some("EOPNOTSUPP"),
        libc::ENOPROTOOPT => Some("ENOPROTOOPT"),
        libc::EISCONN => Some("EISCONN"),
        libc::ECONNREFUSED => Some("ECONNREFUSED"),
        libc::ETIMEDOUT => Some("ETIMEDOUT"),
        libc::ENOBUFS => Some("ENOBUFS"),
        libc::EMFILE => Some("EMFILE"),
        _ => None,
    }
}

/// `uname -sr`: the kernel name and release.
pub fn kernel_release() -> String {
    // SAFETY: uname fills the zeroed struct; the fields are NUL-terminated.
    unsafe {
        let mut u: libc::utsname = std::mem::zeroed();
        if libc::uname(&mut u) != 0 {
            return "unknown".into();
        }
        let sys = CStr::from_ptr(u.sysname.as_ptr()).to_string_lossy();
        let rel = CStr::from_ptr(u.release.as_ptr()).to_string_lossy();
        format!("{sys} {rel}")
    }
}

pub fn privileged() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// This process's effective uid: the owner the kernel records for the
/// sockets it opens.
pub fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() }
}

pub fn user_fact() -> String {
    // SAFETY: geteuid has no preconditions.
    let uid = unsafe { libc::geteuid() };
    if uid == 0 {
        "root (uid 0)".into()
    } else {
        format!("unprivileged (uid {uid})")
    }
}

pub fn set_reuseport(socket: &Socket) -> Result<(), OptionError> {
    refused(socket.set_reuse_port(true))
}

/// Switch this process to `user` for good (groups, gid, then uid), as an
/// `other-user` holder does before it creates any socket.
pub fn become_user(user: &str) -> std::io::Result<()> {
    use std::io::{Error, ErrorKind};
    let name = std::ffi::CString::new(user).map_err(|_| Error::from(ErrorKind::InvalidInput))?;
    // SAFETY: getpwnam returns a pointer into static storage or NULL; the
    // fields are read before any other call that could overwrite it.
    let (uid, gid) = unsafe {
        let pw = libc::getpwnam(name.as_ptr());
        if pw.is_null() {
            return Err(Error::new(ErrorKind::NotFound, format!("no user {user}")));
        }
        ((*pw).pw_uid, (*pw).pw_gid)
    };
    // SAFETY: plain syscalls on this process; each result is checked.
    unsafe {
        if libc::setgroups(0, std::ptr::null()) != 0
            || libc::setgid(gid) != 0
            || libc::setuid(uid) != 0
        {
            return Err(Error::last_os_error());
        }
    }
    Ok(())
}

/// Whether the kernel has the socket in the LISTEN state (SO_ACCEPTCONN).
pub fn is_listening(socket: &Socket) -> std::io::Result<bool> {
    use std::os::fd::AsRawFd;
    let mut value: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: a valid descriptor and an int-sized option buffer.
    let rc = unsafe {
        libc::getsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_ACCEPTCONN,
            (&mut value as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    if rc == 0 {
        Ok(value != 0)
    } else {
        Err(std::io::Error::last_os_error())
    }
}
