//! What Linux, macOS and the BSDs share: errno names, uname, euid, and
//! reading a child's lines.

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

/// A child process's stdout, read line by line by the thread that waits
/// for the line, each wait bounded by poll(2). A thread that read for it
/// would cost two more wake-ups per line, and the holders and binders
/// answer about 50,000 lines a run.
pub struct ChildLines {
    stdout: std::process::ChildStdout,
    /// Read but not yet returned.
    pending: Vec<u8>,
    closed: bool,
}

impl ChildLines {
    pub fn new(stdout: std::process::ChildStdout) -> ChildLines {
        ChildLines {
            stdout,
            pending: Vec::new(),
            closed: false,
        }
    }

    /// The next line (without its end), waiting until `deadline` at most.
    pub fn next(&mut self, deadline: std::time::Instant) -> Result<String, super::LineError> {
        use std::io::Read;
        use std::os::fd::AsRawFd;
        loop {
            if let Some(end) = self.pending.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.pending.drain(..=end).collect();
                return Ok(super::line_text(&line[..end]));
            }
            if self.closed {
                // A last line without its end, then nothing.
                return match std::mem::take(&mut self.pending) {
                    rest if rest.is_empty() => Err(super::LineError::Closed),
                    rest => Ok(super::line_text(&rest)),
                };
            }
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return Err(super::LineError::Timeout);
            }
            let mut fd = libc::pollfd {
                fd: self.stdout.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            let ms = left.as_millis().clamp(1, i32::MAX as u128) as libc::c_int;
            // SAFETY: one valid pollfd.
            if unsafe { libc::poll(&mut fd, 1, ms) } <= 0 {
                // Nothing yet, or EINTR: the deadline decides.
                continue;
            }
            let mut chunk = [0u8; 4096];
            match self.stdout.read(&mut chunk) {
                Ok(0) => self.closed = true,
                Ok(n) => self.pending.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => self.closed = true,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::platform::LineError;
    use std::process::{Command, Stdio};
    use std::time::{Duration, Instant};

    /// Lines come whole and without their ends; a wait with nothing to read
    /// ends at its deadline; after the child is gone, its last unended line,
    /// then `Closed`.
    #[test]
    fn a_childs_lines_come_one_by_one_within_their_deadline() {
        let mut child = Command::new("sh")
            .args(["-c", "printf 'one\\ntwo\\r\\nthree'; exec sleep 30"])
            .stdout(Stdio::piped())
            .spawn()
            .expect("sh");
        let mut lines = ChildLines::new(child.stdout.take().expect("piped"));
        let soon = || Instant::now() + Duration::from_secs(10);
        assert_eq!(lines.next(soon()), Ok("one".to_string()));
        assert_eq!(lines.next(soon()), Ok("two".to_string()));
        let now = Instant::now() + Duration::from_millis(50);
        assert_eq!(lines.next(now), Err(LineError::Timeout));
        child.kill().expect("kill");
        child.wait().expect("wait");
        assert_eq!(lines.next(soon()), Ok("three".to_string()));
        assert_eq!(lines.next(soon()), Err(LineError::Closed));
    }
}
