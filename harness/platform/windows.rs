//! Windows: Winsock error codes, SO_EXCLUSIVEADDRUSE, no SO_REUSEPORT.
//! Also notices when the "Windows" is Wine, whose answers are its own
//! emulation on top of the host kernel, not what Windows answers.

use std::ffi::{c_char, CStr};
use std::io;
use std::net::SocketAddr;
use std::os::windows::io::AsRawSocket;
use std::sync::OnceLock;

use socket2::Socket;
use windows_sys::Wdk::System::SystemServices::RtlGetVersion;
use windows_sys::Win32::Networking::WinSock as ws;
use windows_sys::Win32::System::LibraryLoader::{GetModuleHandleA, GetProcAddress};
use windows_sys::Win32::System::SystemInformation::OSVERSIONINFOW;

use super::tables::{self, portrange};
use super::{refused, set_reuseaddr, Census, Observed, OptionError};
use crate::scenario::{Proto, SockOpt};

pub const STATE_CHECK: &str =
    "GetExtendedTcpTable: TCP by address pair and state; UDP unlisted; none under Wine (`?`)";

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
    if wine().is_some() {
        return Some(wine_host_ephemeral_ports());
    }
    // `netsh int ipv4 show dynamicport tcp`; unreadable: the default
    // since Windows Vista.
    let netsh = std::process::Command::new("netsh")
        .args(["int", "ipv4", "show", "dynamicport", "tcp"])
        .output()
        .ok()
        .filter(|out| out.status.success());
    Some(
        netsh
            .and_then(|out| portrange::parse_dynamic_port(&String::from_utf8_lossy(&out.stdout)))
            .unwrap_or((49152, 65535)),
    )
}

/// Under Wine the host kernel picks the ports of connect() and bind(port
/// 0), from its own range (Linux: 32768-60999), which overlaps the range
/// the harness would take below Windows' 49152. Wine maps the host's root
/// to drive Z:, so the Linux value is read there; without it, the union of
/// the Linux and Windows defaults.
fn wine_host_ephemeral_ports() -> (u16, u16) {
    std::fs::read_to_string(r"Z:\proc\sys\net\ipv4\ip_local_port_range")
        .ok()
        .and_then(|text| {
            let mut it = text.split_whitespace().map(|n| n.parse::<u16>().ok());
            Some((it.next()??, it.next()??))
        })
        .filter(|(lo, hi)| lo <= hi)
        .unwrap_or((32768, 65535))
}

/// Whether this process runs elevated (an Administrator's full token).
pub fn privileged() -> bool {
    use windows_sys::Win32::Foundation::{CloseHandle, HANDLE};
    use windows_sys::Win32::Security::{
        GetTokenInformation, TokenElevation, TOKEN_ELEVATION, TOKEN_QUERY,
    };
    use windows_sys::Win32::System::Threading::{GetCurrentProcess, OpenProcessToken};
    let mut token: HANDLE = std::ptr::null_mut();
    let mut elevation = TOKEN_ELEVATION { TokenIsElevated: 0 };
    let mut len = 0u32;
    // SAFETY: the token handle is opened, queried into a correctly sized
    // struct, and closed.
    unsafe {
        if OpenProcessToken(GetCurrentProcess(), TOKEN_QUERY, &mut token) == 0 {
            return false;
        }
        let ok = GetTokenInformation(
            token,
            TokenElevation,
            (&mut elevation as *mut TOKEN_ELEVATION).cast(),
            std::mem::size_of::<TOKEN_ELEVATION>() as u32,
            &mut len,
        );
        CloseHandle(token);
        ok != 0 && elevation.TokenIsElevated != 0
    }
}

/// How often a state is polled: each poll copies both TCP tables.
pub const POLL: std::time::Duration = std::time::Duration::from_millis(1);

/// No setting of this platform is known to change a recorded answer.
pub fn changed_settings() -> Vec<String> {
    Vec::new()
}

pub fn facts() -> Vec<(&'static str, String)> {
    let mut facts = vec![("kernel", windows_version())];
    if let Some(wine) = wine() {
        facts.push((
            "emulation",
            format!(
                "{}: results are Wine's emulation, not Windows'",
                wine.version
            ),
        ));
        if let Some(host) = &wine.host {
            facts.push(("emulation host", host.clone()));
        }
    }
    facts
}

/// `Windows 10.0.19045`: the version the kernel reports. RtlGetVersion,
/// unlike GetVersionEx, is not capped at 6.2 for programs without a
/// compatibility manifest. Under Wine it is the version the prefix
/// pretends to be.
fn windows_version() -> String {
    let mut info = OSVERSIONINFOW {
        dwOSVersionInfoSize: std::mem::size_of::<OSVERSIONINFOW>() as u32,
        ..Default::default()
    };
    // SAFETY: a writable OSVERSIONINFOW with its size field set.
    if unsafe { RtlGetVersion(&mut info) } != 0 {
        return "Windows (version unknown)".into();
    }
    let mut text = format!(
        "Windows {}.{}.{}",
        info.dwMajorVersion, info.dwMinorVersion, info.dwBuildNumber
    );
    let len = info
        .szCSDVersion
        .iter()
        .position(|&c| c == 0)
        .unwrap_or(info.szCSDVersion.len());
    let service_pack = String::from_utf16_lossy(&info.szCSDVersion[..len]);
    if !service_pack.trim().is_empty() {
        text = format!("{text} {}", service_pack.trim());
    }
    text
}

/// What Wine says about itself, when the process runs under Wine.
struct Wine {
    /// `Wine 8.0`.
    version: String,
    /// `Linux 6.1.0-18-amd64`: the kernel that really answers.
    host: Option<String>,
}

/// Wine, if this process runs under it: Wine's ntdll exports
/// `wine_get_version`, which no Windows ntdll has.
fn wine() -> Option<&'static Wine> {
    static WINE: OnceLock<Option<Wine>> = OnceLock::new();
    WINE.get_or_init(detect_wine).as_ref()
}

fn detect_wine() -> Option<Wine> {
    // SAFETY: ntdll.dll is mapped into every Windows process; both names
    // are NUL-terminated.
    let ntdll = unsafe { GetModuleHandleA(c"ntdll.dll".as_ptr().cast()) };
    if ntdll.is_null() {
        return None;
    }
    // SAFETY: as above; a missing export gives None.
    let get_version = unsafe { GetProcAddress(ntdll, c"wine_get_version".as_ptr().cast()) }?;
    // SAFETY: Wine declares `const char *CDECL wine_get_version(void)`;
    // the string is static and NUL-terminated.
    let version = unsafe {
        let get_version: unsafe extern "C" fn() -> *const c_char = std::mem::transmute(get_version);
        c_text(get_version())
    }?;
    // SAFETY: as above.
    let host =
        unsafe { GetProcAddress(ntdll, c"wine_get_host_version".as_ptr().cast()) }.and_then(|f| {
            let mut sysname: *const c_char = std::ptr::null();
            let mut release: *const c_char = std::ptr::null();
            // SAFETY: Wine declares `void CDECL wine_get_host_version(const
            // char **sysname, const char **release)` and fills both with
            // static strings.
            unsafe {
                let f: unsafe extern "C" fn(*mut *const c_char, *mut *const c_char) =
                    std::mem::transmute(f);
                f(&mut sysname, &mut release);
                Some(format!("{} {}", c_text(sysname)?, c_text(release)?))
            }
        });
    Some(Wine {
        version: format!("Wine {version}"),
        host,
    })
}

/// A C string's text, `None` for a null pointer.
///
/// # Safety
/// `ptr` is null or points to a NUL-terminated string that outlives the call.
unsafe fn c_text(ptr: *const c_char) -> Option<String> {
    // SAFETY: the caller's promise.
    (!ptr.is_null()).then(|| {
        unsafe { CStr::from_ptr(ptr) }
            .to_string_lossy()
            .into_owned()
    })
}

/// The TCP socket at `local` connected to `remote`, or with `None` the
/// listener that a connection to `local` would reach, from both of the
/// kernel's tables (a connection of a dual-stack socket to an IPv4 peer is
/// in the IPv4 one).
pub fn observe_tcp(local: SocketAddr, remote: Option<SocketAddr>) -> io::Result<Observed> {
    // Wine's table is its emulation's, not Windows' word.
    if wine().is_some() {
        return Ok(Observed::Unknown);
    }
    let mut entries = tables::windows::parse_tcp_table(&tcp_table(ws::AF_INET)?)?;
    entries.extend(tables::windows::parse_tcp6_table(&tcp_table(
        ws::AF_INET6,
    )?)?);
    Ok(tables::find(&entries, local, remote))
}

/// The TCP sockets on `port` from both tables; UDP sockets are not read.
pub fn census(proto: Proto, port: u16, _bound_only: bool) -> io::Result<Option<Census>> {
    if proto == Proto::Udp || wine().is_some() {
        return Ok(None);
    }
    let mut entries = tables::windows::parse_tcp_table(&tcp_table(ws::AF_INET)?)?;
    entries.extend(tables::windows::parse_tcp6_table(&tcp_table(
        ws::AF_INET6,
    )?)?);
    Ok(Some(tables::census(&entries, port)))
}

/// `GetExtendedTcpTable(TCP_TABLE_OWNER_PID_ALL)` for one family: its size
/// first, then the table; asked again (bounded) when it grew in between.
fn tcp_table(family: ws::ADDRESS_FAMILY) -> io::Result<Vec<u8>> {
    use windows_sys::Win32::Foundation::{ERROR_INSUFFICIENT_BUFFER, NO_ERROR};
    use windows_sys::Win32::NetworkManagement::IpHelper::{
        GetExtendedTcpTable, TCP_TABLE_OWNER_PID_ALL,
    };
    let mut size = 0u32;
    for _ in 0..8 {
        // DWORD storage: the table is DWORDs and wants their alignment.
        let mut buf = vec![0u32; (size as usize).div_ceil(4)];
        let table = if buf.is_empty() {
            std::ptr::null_mut()
        } else {
            buf.as_mut_ptr().cast()
        };
        // SAFETY: table is null (size 0: asks for the size) or valid for
        // size bytes; size is updated to what the table needs.
        let rc = unsafe {
            GetExtendedTcpTable(
                table,
                &mut size,
                0,
                u32::from(family),
                TCP_TABLE_OWNER_PID_ALL,
                0,
            )
        };
        match rc {
            // The bytes as they lie in memory (Windows is little-endian).
            NO_ERROR => return Ok(buf.iter().flat_map(|w| w.to_le_bytes()).collect()),
            ERROR_INSUFFICIENT_BUFFER => continue,
            e => return Err(io::Error::from_raw_os_error(e as i32)),
        }
    }
    Err(io::Error::other(
        "GetExtendedTcpTable: the table kept growing",
    ))
}

/// Holders running as another user are not implemented on Windows.
pub const NO_SWITCH_USER: Option<&str> =
    Some("other-user holders are not implemented on windows (they would need a second account and its logon token)");

pub fn become_user(_user: &str) -> io::Result<()> {
    Err(io::Error::from(io::ErrorKind::Unsupported))
}

/// Abstract socket names are a Linux feature.
pub fn abstract_unix_addr(_name: &str) -> Option<socket2::SockAddr> {
    None
}

/// ACKs are not delayed in a way the harness has to hurry here.
pub fn flush_ack(_socket: &Socket) -> io::Result<()> {
    Ok(())
}

/// Whether the socket is in the LISTEN state (SO_ACCEPTCONN).
pub fn is_listening(socket: &Socket) -> io::Result<bool> {
    let mut value: i32 = 0;
    let mut len = std::mem::size_of::<i32>() as i32;
    // SAFETY: a valid socket handle and an int-sized option buffer.
    let rc = unsafe {
        ws::getsockopt(
            socket.as_raw_socket() as ws::SOCKET,
            ws::SOL_SOCKET,
            ws::SO_ACCEPTCONN,
            (&mut value as *mut i32).cast(),
            &mut len,
        )
    };
    if rc == 0 {
        Ok(value != 0)
    } else {
        Err(io::Error::last_os_error())
    }
}

/// How long a TIME_WAIT lasts here at most (TcpTimedWaitDelay: 240 s by default (120 s on newer releases).)
pub const TIME_WAIT: std::time::Duration = std::time::Duration::from_secs(241);

/// No network namespaces here: runs share the machine's ports (and take
/// turns through the ports' lock).
pub fn private_network() -> io::Result<()> {
    Err(io::ErrorKind::Unsupported.into())
}

/// Every program runs in the machine's network here.
pub fn in_machine_network(_command: &mut std::process::Command) {}

/// Readies the free-port check's probe socket (see `ports::is_free`).
pub fn prepare_free_probe(socket: &Socket) {
    let _ = set_exclusive(socket);
}

/// Whether a dual-stack `[::]` bind can succeed beside an IPv4 socket on the
/// same port, so that the free-port check must try `0.0.0.0` too.
pub const DUAL_STACK_PROBE_MISSES_V4: bool = false;

/// Ports Windows keeps out of use (Hyper-V, WinNAT and administrators
/// reserve ranges: `netsh int ipv4 show excludedportrange protocol=tcp`).
/// Read once; none under Wine, and none when unreadable.
pub fn excluded_ports() -> Vec<(u16, u16)> {
    static EXCLUDED: OnceLock<Vec<(u16, u16)>> = OnceLock::new();
    EXCLUDED
        .get_or_init(|| {
            if wine().is_some() {
                return Vec::new();
            }
            std::process::Command::new("netsh")
                .args(["int", "ipv4", "show", "excludedportrange", "protocol=tcp"])
                .output()
                .ok()
                .filter(|out| out.status.success())
                .map(|out| {
                    portrange::parse_excluded_ranges(&String::from_utf8_lossy(&out.stdout))
                        .into_iter()
                        .map(|e| (e.start, e.end))
                        .collect()
                })
                .unwrap_or_default()
        })
        .clone()
}

/// Other processes' sockets are not read from outside here (`None`): the
/// runtimes story relies on what each program reads itself.
pub fn listeners_of(_pid: u32, _port: u16) -> io::Result<Option<Vec<super::ListenerOptions>>> {
    Ok(None)
}

/// A child process's stdout, read line by line, each wait bounded: a
/// thread reads the pipe (Windows cannot poll an anonymous pipe) and hands
/// the lines over. It reads until the pipe closes, which it does when the
/// child exits or is killed: the thread never outlives the child.
pub struct ChildLines {
    lines: std::sync::mpsc::Receiver<String>,
}

impl ChildLines {
    pub fn new(stdout: std::process::ChildStdout) -> ChildLines {
        use std::io::BufRead;
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).split(b'\n') {
                let Ok(line) = line else { break };
                if tx.send(super::line_text(&line)).is_err() {
                    break;
                }
            }
        });
        ChildLines { lines }
    }

    /// The next line (without its end), waiting until `deadline` at most.
    pub fn next(&mut self, deadline: std::time::Instant) -> Result<String, super::LineError> {
        use std::sync::mpsc::RecvTimeoutError;
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        self.lines.recv_timeout(left).map_err(|e| match e {
            RecvTimeoutError::Timeout => super::LineError::Timeout,
            RecvTimeoutError::Disconnected => super::LineError::Closed,
        })
    }
}
