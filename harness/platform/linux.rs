//! Linux: SO_REUSEPORT exists, states are verified through sock_diag
//! (the netlink interface `ss` uses), facts come from /proc/sys.

use std::cell::RefCell;
use std::io;
use std::mem::size_of;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::Duration;

use socket2::Socket;

use super::unix;
use super::{set_reuseaddr, Census, Observed, OptionError, PortSocket, TcpState};
use crate::scenario::{Proto, SockOpt};

pub use unix::{error_name, privileged};

pub const STATE_CHECK: &str = "sock_diag: TCP by address pair, state, owner; UDP whole port";

pub fn set_option(socket: &Socket, opt: SockOpt) -> Result<(), OptionError> {
    match opt {
        SockOpt::ReuseAddr => set_reuseaddr(socket),
        SockOpt::ReusePort => unix::set_reuseport(socket),
        SockOpt::ExclusiveAddrUse | SockOpt::ReusePortLb => Err(OptionError::Unsupported),
    }
}

fn sysctl(path: &str) -> Option<String> {
    std::fs::read_to_string(format!("/proc/sys/{path}"))
        .ok()
        .map(|s| s.split_whitespace().collect::<Vec<_>>().join(" "))
}

pub fn ephemeral_ports() -> Option<(u16, u16)> {
    let text = sysctl("net/ipv4/ip_local_port_range")?;
    let mut it = text.split(' ').map(|n| n.parse::<u16>().ok());
    Some((it.next()??, it.next()??))
}

/// How often a state is polled: one exact-match sock_diag query is cheap.
pub const POLL: std::time::Duration = std::time::Duration::from_micros(20);

/// Per-namespace settings that change recorded answers, with the kernel's
/// default. At 120 s instead of 60, an orphaned FIN_WAIT2 end stays a full
/// socket (its owner's uid, so SO_REUSEPORT's owner check applies) instead
/// of becoming a TIME_WAIT mini-socket: the `fin-wait-2` other-user cells
/// flip from ok/ok to EADDRINUSE.
const SETTINGS: &[(&str, &str, &str)] =
    &[("net.ipv4.tcp_fin_timeout", "net/ipv4/tcp_fin_timeout", "60")];

/// The settings of `SETTINGS` that are not at their default, as
/// `name=value (default d)`.
pub fn changed_settings() -> Vec<String> {
    SETTINGS
        .iter()
        .filter_map(|(name, path, default)| {
            let value = sysctl(path)?;
            (value != *default).then(|| format!("{name}={value} (default {default})"))
        })
        .collect()
}

pub fn facts() -> Vec<(&'static str, String)> {
    let read = |path| sysctl(path).unwrap_or_else(|| "unreadable".into());
    vec![
        ("kernel", unix::kernel_release()),
        ("net.ipv6.bindv6only", read("net/ipv6/bindv6only")),
        (
            "net.ipv4.ip_autobind_reuse",
            read("net/ipv4/ip_autobind_reuse"),
        ),
        (
            "net.ipv4.ip_local_port_range",
            read("net/ipv4/ip_local_port_range"),
        ),
        ("net.ipv4.tcp_fin_timeout", read("net/ipv4/tcp_fin_timeout")),
        ("user", unix::user_fact()),
    ]
}

// The sock_diag wire format (linux/sock_diag.h, linux/inet_diag.h).
const NETLINK_SOCK_DIAG: i32 = 4;
const SOCK_DIAG_BY_FAMILY: u16 = 20;
const NLM_F_REQUEST: u16 = 1;
const NLMSG_ERROR: u16 = 2;

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct NlMsgHdr {
    len: u32,
    kind: u16,
    flags: u16,
    seq: u32,
    pid: u32,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct InetDiagSockId {
    sport: [u8; 2],
    dport: [u8; 2],
    src: [u8; 16],
    dst: [u8; 16],
    interface: u32,
    cookie: [u32; 2],
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct InetDiagReqV2 {
    family: u8,
    protocol: u8,
    ext: u8,
    pad: u8,
    states: u32,
    id: InetDiagSockId,
}

#[repr(C)]
struct Request {
    header: NlMsgHdr,
    body: InetDiagReqV2,
}

/// Addresses as the kernel hashes them: a v4-mapped pair is an IPv4 pair.
fn diag_family(local: &SocketAddr, remote: &SocketAddr) -> (u8, [u8; 16], [u8; 16]) {
    let v4 = |ip: IpAddr| match ip {
        IpAddr::V4(v4) => Some(v4),
        IpAddr::V6(v6) => v6.to_ipv4_mapped(),
    };
    let pad4 = |octets: [u8; 4]| {
        let mut out = [0u8; 16];
        out[..4].copy_from_slice(&octets);
        out
    };
    match (v4(local.ip()), v4(remote.ip())) {
        (Some(l), Some(r)) => (libc::AF_INET as u8, pad4(l.octets()), pad4(r.octets())),
        _ => {
            let v6 = |ip: IpAddr| match ip {
                IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
                IpAddr::V6(v6) => v6.octets(),
            };
            (libc::AF_INET6 as u8, v6(local.ip()), v6(remote.ip()))
        }
    }
}

thread_local! {
    /// One netlink socket per thread, opened on first use.
    static DIAG: RefCell<Option<(OwnedFd, u32)>> = const { RefCell::new(None) };
}

fn open_diag() -> io::Result<OwnedFd> {
    // SAFETY: plain socket(2); the fd is owned right away.
    let fd = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_DGRAM | libc::SOCK_CLOEXEC,
            NETLINK_SOCK_DIAG,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh, valid descriptor nobody else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // A lost reply must not hang the harness: bound every receive.
    let sock = socket2::SockRef::from(&fd);
    sock.set_read_timeout(Some(Duration::from_secs(1)))?;
    Ok(fd)
}

/// Run `f` with this thread's sock_diag socket and the next sequence
/// number, opening the socket on first use.
fn with_diag<T>(f: impl FnOnce(&OwnedFd, u32) -> io::Result<T>) -> io::Result<T> {
    DIAG.with(|cell| {
        let mut slot = cell.borrow_mut();
        if slot.is_none() {
            *slot = Some((open_diag()?, 0));
        }
        let (fd, seq) = slot.as_mut().expect("just opened");
        *seq = seq.wrapping_add(1);
        f(fd, *seq)
    })
}

/// Send one request, a `repr(C)` struct of plain data without padding.
fn send_request<T>(fd: &OwnedFd, request: &T) -> io::Result<()> {
    // SAFETY: T is plain data; the kernel reads size_of::<T>() bytes of it.
    let sent = unsafe {
        libc::send(
            fd.as_raw_fd(),
            (request as *const T).cast(),
            size_of::<T>(),
            0,
        )
    };
    if sent < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// One exact-match sock_diag query: the TCP socket whose local address is
/// `local` and whose remote address is `remote` (0.0.0.0:0 finds a listener).
fn query(local: SocketAddr, remote: SocketAddr) -> io::Result<Observed> {
    let (family, src, dst) = diag_family(&local, &remote);
    with_diag(|fd, seq| {
        let request = Request {
            header: NlMsgHdr {
                len: size_of::<Request>() as u32,
                kind: SOCK_DIAG_BY_FAMILY,
                flags: NLM_F_REQUEST,
                seq,
                pid: 0,
            },
            body: InetDiagReqV2 {
                family,
                protocol: libc::IPPROTO_TCP as u8,
                states: !0,
                id: InetDiagSockId {
                    sport: local.port().to_be_bytes(),
                    dport: remote.port().to_be_bytes(),
                    src,
                    dst,
                    interface: 0,
                    // INET_DIAG_NOCOOKIE: match by addresses alone.
                    cookie: [!0, !0],
                },
                ..Default::default()
            },
        };
        send_request(fd, &request)?;
        let mut buf = [0u8; 1024];
        // Replies to earlier, timed-out queries may still be queued: skip
        // them, a bounded number of times.
        for _ in 0..8 {
            // SAFETY: buf is valid for its length.
            let n = unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
            if n < 0 {
                return Err(io::Error::last_os_error());
            }
            let n = n as usize;
            if n < size_of::<NlMsgHdr>() + 4 {
                return Err(io::Error::other("short sock_diag reply"));
            }
            // SAFETY: the buffer holds at least a header; read unaligned.
            let header: NlMsgHdr = unsafe { std::ptr::read_unaligned(buf.as_ptr().cast()) };
            if header.seq != seq {
                continue;
            }
            let body = &buf[size_of::<NlMsgHdr>()..n];
            if header.kind == NLMSG_ERROR {
                let errno = -i32::from_ne_bytes(body[..4].try_into().expect("4 bytes"));
                return match errno {
                    libc::ENOENT => Ok(Observed::Absent),
                    0 => Err(io::Error::other("sock_diag acknowledged without data")),
                    e => Err(io::Error::from_raw_os_error(e)),
                };
            }
            if header.kind != SOCK_DIAG_BY_FAMILY || body.len() < INET_DIAG_MSG_LEN {
                return Err(io::Error::other("unexpected sock_diag reply"));
            }
            return Ok(observed(body));
        }
        Err(io::Error::other("no matching sock_diag reply"))
    })
}

/// struct inet_diag_msg: family, state, timer, retrans, id (48 bytes),
/// expires, rqueue, wqueue, uid, inode.
const INET_DIAG_MSG_LEN: usize = 72;

/// A full socket or a mini-socket: `inet_twsk_diag_fill` reports every
/// inet_timewait_sock (TIME_WAIT, and the FIN_WAIT2 an orphan becomes)
/// with `idiag_timer` 3, which no full socket reports, and uid 0.
fn observed(msg: &[u8]) -> Observed {
    let state = tcp_state(msg[1]);
    if msg[2] == 3 {
        return Observed::MiniSocket(state);
    }
    let uid = u32::from_ne_bytes(msg[64..68].try_into().expect("4 bytes"));
    Observed::Owned(state, uid)
}

fn tcp_state(code: u8) -> TcpState {
    // include/net/tcp_states.h
    match code {
        1 => TcpState::Established,
        2 => TcpState::SynSent,
        3 => TcpState::SynRecv,
        4 => TcpState::FinWait1,
        5 => TcpState::FinWait2,
        6 => TcpState::TimeWait,
        7 => TcpState::Close,
        8 => TcpState::CloseWait,
        9 => TcpState::LastAck,
        10 => TcpState::Listen,
        11 => TcpState::Closing,
        other => TcpState::Other(other),
    }
}

/// The TCP socket at `local` connected to `remote`, or with `None` the
/// listener that a connection to `local` would reach.
pub fn observe_tcp(local: SocketAddr, remote: Option<SocketAddr>) -> io::Result<Observed> {
    let remote = remote.unwrap_or_else(|| match local {
        SocketAddr::V4(_) => SocketAddr::from(([0u8; 4], 0)),
        SocketAddr::V6(_) => SocketAddr::from(([0u16; 8], 0)),
    });
    query(local, remote)
}

const NLM_F_DUMP: u16 = 0x300;
const NLMSG_DONE: u16 = 3;
const INET_DIAG_REQ_BYTECODE: u16 = 1;
const INET_DIAG_BC_S_EQ: u8 = 11;

/// A dump request: the filter is `struct nlattr` + two `inet_diag_bc_op`.
#[repr(C)]
struct DumpRequest {
    header: NlMsgHdr,
    body: InetDiagReqV2,
    attr_len: u16,
    attr_type: u16,
    bytecode: [u8; 8],
}

/// Every socket of `protocol` in `family` whose local port is `port`,
/// filtered in the kernel (INET_DIAG_BC_S_EQ), into `out`.
fn dump(
    family: u8,
    protocol: u8,
    port: u16,
    states: u32,
    out: &mut Vec<PortSocket>,
) -> io::Result<()> {
    with_diag(|fd, seq| {
        // { S_EQ, yes = 8 (past the end: accept), no = 12 (reject) },
        // { 0, 0, port }: the kernel compares the second op's `no` field.
        let mut bytecode = [INET_DIAG_BC_S_EQ, 8, 12, 0, 0, 0, 0, 0];
        bytecode[6..8].copy_from_slice(&port.to_ne_bytes());
        let request = DumpRequest {
            header: NlMsgHdr {
                len: size_of::<DumpRequest>() as u32,
                kind: SOCK_DIAG_BY_FAMILY,
                flags: NLM_F_REQUEST | NLM_F_DUMP,
                seq,
                pid: 0,
            },
            body: InetDiagReqV2 {
                family,
                protocol,
                states,
                ..Default::default()
            },
            attr_len: 4 + 8,
            attr_type: INET_DIAG_REQ_BYTECODE,
            bytecode,
        };
        send_request(fd, &request)?;
        let mut buf = vec![0u8; 16 * 1024];
        // One port holds a handful of sockets; bound the loop anyway.
        for _ in 0..256 {
            // SAFETY: buf is valid for its length.
            let n = unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
            if n < 0 {
                return Err(io::Error::last_os_error());
            }
            let mut rest = &buf[..n as usize];
            while rest.len() >= size_of::<NlMsgHdr>() {
                // SAFETY: at least a header's worth of bytes; unaligned read.
                let header: NlMsgHdr = unsafe { std::ptr::read_unaligned(rest.as_ptr().cast()) };
                let len = header.len as usize;
                if len < size_of::<NlMsgHdr>() || len > rest.len() {
                    return Err(io::Error::other("bad netlink message length"));
                }
                let body = &rest[size_of::<NlMsgHdr>()..len];
                rest = &rest[len.next_multiple_of(4).min(rest.len())..];
                if header.seq != seq {
                    continue;
                }
                match header.kind {
                    NLMSG_DONE => return Ok(()),
                    NLMSG_ERROR if body.len() >= 4 => {
                        let errno = -i32::from_ne_bytes(body[..4].try_into().expect("4 bytes"));
                        return Err(io::Error::from_raw_os_error(errno));
                    }
                    SOCK_DIAG_BY_FAMILY if body.len() >= INET_DIAG_MSG_LEN => {
                        out.push(port_socket(body));
                    }
                    _ => return Err(io::Error::other("unexpected sock_diag reply")),
                }
            }
        }
        Err(io::Error::other("the sock_diag dump did not end"))
    })
}

/// One `inet_diag_msg` of a dump.
fn port_socket(msg: &[u8]) -> PortSocket {
    let family = msg[0];
    let port = |at: usize| u16::from_be_bytes([msg[at], msg[at + 1]]);
    let ip = |at: usize| -> IpAddr {
        let bytes: [u8; 16] = msg[at..at + 16].try_into().expect("16 bytes");
        if family == libc::AF_INET as u8 {
            IpAddr::from([bytes[0], bytes[1], bytes[2], bytes[3]])
        } else {
            IpAddr::from(bytes)
        }
    };
    // id: sport at 4, dport at 6, src at 8, dst at 24.
    PortSocket {
        local: SocketAddr::new(ip(8), port(4)),
        remote: SocketAddr::new(ip(24), port(6)),
        seen: observed(msg),
    }
}

/// Whether this kernel's sock_diag lists bound TCP sockets that neither
/// listen nor connect (Linux 6.8 and later): asked once, with a socket of
/// our own.
fn lists_bound_tcp() -> bool {
    static LISTS: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *LISTS.get_or_init(|| {
        let probe = || -> io::Result<bool> {
            let socket = Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
            socket.bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())?;
            let port = socket.local_addr()?.as_socket().map_or(0, |a| a.port());
            let mut found = Vec::new();
            dump(
                libc::AF_INET as u8,
                libc::IPPROTO_TCP as u8,
                port,
                1 << TCP_BOUND_INACTIVE,
                &mut found,
            )?;
            Ok(!found.is_empty())
        };
        probe().unwrap_or(false)
    })
}

/// include/net/tcp_states.h: a bound TCP socket that neither listens nor
/// connects. sock_diag lists such sockets when asked for this state, from
/// Linux 6.8 on; older kernels ignore the bit.
const TCP_BOUND_INACTIVE: u32 = 13;

/// Every socket of `proto` on `port`, in both families, from sock_diag.
/// Bound-only TCP sockets are listed only when `bound_only` asks: that
/// walks the kernel's whole bind hash table as well. Kernels before 6.8
/// cannot list them at all (`lists_bound_only` says so).
pub fn census(proto: Proto, port: u16, bound_only: bool) -> io::Result<Option<Census>> {
    let (protocol, states) = match proto {
        Proto::Tcp if bound_only => (libc::IPPROTO_TCP, !0),
        Proto::Tcp => (libc::IPPROTO_TCP, !(1 << TCP_BOUND_INACTIVE)),
        Proto::Udp => (libc::IPPROTO_UDP, !0),
    };
    let mut sockets = Vec::new();
    for family in [libc::AF_INET, libc::AF_INET6] {
        dump(family as u8, protocol as u8, port, states, &mut sockets)?;
    }
    Ok(Some(Census {
        sockets,
        lists_bound_only: proto == Proto::Udp || (bound_only && lists_bound_tcp()),
    }))
}

/// Every Unix lets root switch users (other-user holders).
pub const NO_SWITCH_USER: Option<&str> = None;

pub use unix::{become_user, is_listening};

/// A Linux abstract socket name (a leading NUL byte: no file is created).
pub fn abstract_unix_addr(name: &str) -> Option<socket2::SockAddr> {
    // SAFETY: the closure fills a zeroed sockaddr_un and reports its length.
    let (_, addr) = unsafe {
        socket2::SockAddr::try_init(|storage, len| {
            let sun = &mut *storage.cast::<libc::sockaddr_un>();
            sun.sun_family = libc::AF_UNIX as libc::sa_family_t;
            let bytes = name.as_bytes();
            let n = bytes.len().min(sun.sun_path.len() - 1);
            for (dst, src) in sun.sun_path[1..=n].iter_mut().zip(bytes) {
                *dst = *src as libc::c_char;
            }
            *len = (std::mem::size_of::<libc::sa_family_t>() + 1 + n) as libc::socklen_t;
            Ok(())
        })
    }
    .ok()?;
    Some(addr)
}

/// Make a socket acknowledge what it received right away. Linux delays
/// the ACK of a FIN (the connection enters "pingpong" mode), which would
/// keep the peer in FIN_WAIT1 for milliseconds. TCP_QUICKACK sends it now,
/// but only once the FIN is read off the receive queue (a non-blocking
/// read that sees the end of the stream; nothing is sent back).
pub fn flush_ack(socket: &Socket) -> io::Result<()> {
    let mut byte = [std::mem::MaybeUninit::uninit(); 1];
    let _ = socket.recv_with_flags(&mut byte, libc::MSG_DONTWAIT);
    socket.set_tcp_quickack(true)
}

/// How long a TIME_WAIT lasts here at most (TCP_TIMEWAIT_LEN is 60 s.)
pub const TIME_WAIT: std::time::Duration = std::time::Duration::from_secs(61);

/// Move this process into a network namespace of its own, with only `lo`,
/// brought up: no TIME_WAIT of an earlier run, no other run and no other
/// program shares its ports. Child processes (holders, servers) inherit
/// it. unshare() applies to the calling thread and the threads it starts
/// later, so this must run before any other thread. Needs CAP_SYS_ADMIN.
pub fn private_network() -> io::Result<()> {
    // The machine's network, kept for the programs that must reach it
    // (`in_machine_network`).
    if let Ok(file) = std::fs::File::open("/proc/self/ns/net") {
        let _ = MACHINE_NETWORK.set(file.into());
    }
    new_network()?;
    // A namespace shares the kernel's global TCP hash table (here 262,144
    // buckets) unless its parent asked for one of its own (Linux 6.1 on),
    // and a socket-table listing walks every bucket: 0.4 ms in the global
    // table, a few us in a small one. So the run makes an intermediate
    // namespace, sets the size there (never the machine's), and runs in a
    // child of it. The table holds no answer: bind conflicts are decided in
    // the bind hash, which stays global. A namespace with a table of its
    // own keeps at most half as many TIME_WAIT sockets as the table has
    // buckets (tcp_set_hashinfo) and drops the rest: it gets the usual
    // limit back, or TIME_WAIT cases would find no TIME_WAIT.
    let set = |name: &str, value: &str| {
        std::fs::write(format!("/proc/sys/net/ipv4/{name}"), value).is_ok()
    };
    let tw_limit = sysctl("net/ipv4/tcp_max_tw_buckets");
    // The UDP table stays the global one: in a small table a UDP socket that
    // connect()s from a wildcard address moves between chains while other
    // CPUs look datagrams up, and a delivery count can miss it.
    if set("tcp_child_ehash_entries", "1024") {
        new_network()?;
        match tw_limit {
            Some(limit) if set("tcp_max_tw_buckets", &limit) => {}
            _ => return Err(io::Error::other("cannot keep net.ipv4.tcp_max_tw_buckets")),
        }
    }
    lo_up()
}

/// The network namespace this process started in, before `private_network`.
static MACHINE_NETWORK: std::sync::OnceLock<OwnedFd> = std::sync::OnceLock::new();

/// Start `command` in the network this process started in, not the private
/// one of the run (only lo there): a build that fetches packages (cargo
/// and the runtimes story's tokio) must reach the package registry.
pub fn in_machine_network(command: &mut std::process::Command) {
    use std::os::unix::process::CommandExt;
    let Some(fd) = MACHINE_NETWORK.get().map(AsRawFd::as_raw_fd) else {
        return;
    };
    // SAFETY: between fork and exec the child only makes one syscall on a
    // descriptor this process keeps open for its whole life.
    unsafe {
        command.pre_exec(move || {
            if libc::setns(fd, libc::CLONE_NEWNET) != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

fn new_network() -> io::Result<()> {
    // SAFETY: plain syscall on this thread's namespaces.
    if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Bring up `lo` (127.0.0.1, ::1) in this thread's network namespace.
fn lo_up() -> io::Result<()> {
    // SAFETY: plain socket(2); the fd is owned right away.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh, valid descriptor nobody else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: ifreq is plain data; all zeroes is a valid value.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in ifr.ifr_name.iter_mut().zip(b"lo\0") {
        *dst = *src as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS/SIOCSIFFLAGS read and write the ifreq we own.
    unsafe {
        if libc::ioctl(fd.as_raw_fd(), libc::SIOCGIFFLAGS as _, &mut ifr) != 0 {
            return Err(io::Error::last_os_error());
        }
        ifr.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
        if libc::ioctl(fd.as_raw_fd(), libc::SIOCSIFFLAGS as _, &ifr) != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Readies the free-port check's probe socket (see `ports::is_free`).
pub fn prepare_free_probe(_socket: &Socket) {}

/// Whether a dual-stack `[::]` bind can succeed beside an IPv4 socket on the
/// same port, so that the free-port check must try `0.0.0.0` too.
pub const DUAL_STACK_PROBE_MISSES_V4: bool = false;

/// No ports are reserved outside the ephemeral range here.
pub fn excluded_ports() -> Vec<(u16, u16)> {
    Vec::new()
}

/// The TCP sockets that process `pid` listens with on `port`, their
/// options read from outside: each of its socket descriptors is copied
/// with pidfd_getfd (Linux 5.6; root, or ptrace rights over the process)
/// and asked with getsockopt. The copies are closed before this returns,
/// so a listener dies with its process as usual.
pub fn listeners_of(pid: u32, port: u16) -> io::Result<Option<Vec<super::ListenerOptions>>> {
    // SAFETY: plain syscall; the result is a new descriptor or -1.
    let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::c_int, 0) };
    if pidfd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor nobody else owns.
    let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd as i32) };
    let mut found = Vec::new();
    for entry in std::fs::read_dir(format!("/proc/{pid}/fd"))? {
        let entry = entry?;
        let is_socket = std::fs::read_link(entry.path())
            .is_ok_and(|target| target.to_string_lossy().starts_with("socket:"));
        let Some(target_fd) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        if !is_socket {
            continue;
        }
        // SAFETY: plain syscall; the copy comes with FD_CLOEXEC set.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_getfd, pidfd.as_raw_fd(), target_fd, 0) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a fresh descriptor nobody else owns.
        let socket = Socket::from(unsafe { OwnedFd::from_raw_fd(fd as i32) });
        let Some(addr) = socket.local_addr().ok().and_then(|a| a.as_socket()) else {
            continue;
        };
        let tcp = socket.r#type().is_ok_and(|t| t == socket2::Type::STREAM);
        if !tcp || addr.port() != port || !is_listening(&socket)? {
            continue;
        }
        found.push(super::ListenerOptions {
            addr,
            reuseaddr: socket.reuse_address().ok(),
            reuseport: socket.reuse_port().ok(),
            v6only: addr.is_ipv6().then(|| socket.only_v6().ok()).flatten(),
            exclusive: None,
        });
    }
    Ok(Some(found))
}
