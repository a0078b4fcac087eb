//! The kernels' socket tables as plain bytes in, entries out.
//!
//! Everything here is pure: no syscalls and no `cfg`, so that the parsers
//! of every platform compile and are tested on any machine, on byte
//! layouts built from the platforms' published struct definitions. The OS
//! modules fetch the bytes (`sysctlbyname`, `GetExtendedTcpTable`) and
//! hand them to these functions.
//!
//! - [`freebsd`]: `net.inet.tcp.pcblist` (`struct xtcpcb` records),
//! - [`darwin`]: macOS `net.inet.tcp.pcblist_n` (typed `*_n` records),
//! - [`windows`]: `GetExtendedTcpTable` (`MIB_TCP{,6}TABLE_OWNER_PID`),
//! - [`portrange`]: ephemeral and excluded port ranges, and the harness's
//!   choice of ports outside them.
//!
//! Every supported target (FreeBSD amd64/aarch64, macOS arm64/x86_64,
//! Windows x86_64/aarch64) is little-endian, so native integers are read as
//! little-endian; ports and addresses are in network byte order.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

use super::{Observed, TcpState};

pub mod darwin;
pub mod freebsd;
pub mod portrange;
pub mod windows;

/// One TCP socket as a kernel's table lists it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TcpEntry {
    pub local: SocketAddr,
    /// `0.0.0.0:0` / `[::]:0` for a listener.
    pub remote: SocketAddr,
    pub state: TcpState,
    /// The owner's uid, where the table has one and a socket still exists
    /// (a TIME_WAIT entry has lost its socket on FreeBSD).
    pub uid: Option<u32>,
    /// The owning process, where the table names one (Windows; TIME_WAIT
    /// entries there belong to no process).
    pub pid: Option<u32>,
}

/// Why a table could not be read: always an error, never a panic, so that a
/// kernel whose layout changed is reported instead of misread.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParseError(pub String);

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ParseError {}

impl From<ParseError> for std::io::Error {
    fn from(e: ParseError) -> Self {
        std::io::Error::new(std::io::ErrorKind::InvalidData, e)
    }
}

fn error<T>(text: String) -> Result<T, ParseError> {
    Err(ParseError(text))
}

/// Bounds-checked reads from a byte buffer.
#[derive(Clone, Copy)]
struct Bytes<'a> {
    buf: &'a [u8],
    /// What the buffer holds, for error messages (`xtcpcb at 64`).
    what: &'a str,
}

impl<'a> Bytes<'a> {
    fn new(buf: &'a [u8], what: &'a str) -> Self {
        Bytes { buf, what }
    }

    fn array<const N: usize>(&self, at: usize) -> Result<[u8; N], ParseError> {
        at.checked_add(N)
            .and_then(|end| self.buf.get(at..end))
            .map(|s| s.try_into().expect("N bytes"))
            .ok_or_else(|| {
                ParseError(format!(
                    "{}: {} bytes, too short for {N} bytes at offset {at}",
                    self.what,
                    self.buf.len()
                ))
            })
    }

    fn u16_be(&self, at: usize) -> Result<u16, ParseError> {
        self.array(at).map(u16::from_be_bytes)
    }

    fn u32(&self, at: usize) -> Result<u32, ParseError> {
        self.array(at).map(u32::from_le_bytes)
    }

    fn i32(&self, at: usize) -> Result<i32, ParseError> {
        self.array(at).map(i32::from_le_bytes)
    }

    fn u64(&self, at: usize) -> Result<u64, ParseError> {
        self.array(at).map(u64::from_le_bytes)
    }

    /// `len` bytes from `at`, or an error naming the record that is cut off.
    fn slice(&self, at: usize, len: usize) -> Result<&'a [u8], ParseError> {
        at.checked_add(len)
            .and_then(|end| self.buf.get(at..end))
            .ok_or_else(|| {
                ParseError(format!(
                    "{}: truncated: a {len}-byte record at offset {at}, {} bytes in all",
                    self.what,
                    self.buf.len()
                ))
            })
    }
}

/// The TCPS_* numbering of 4.4BSD, kept by FreeBSD and XNU
/// (`sys/netinet/tcp_fsm.h` in both).
fn bsd_state(code: i32) -> TcpState {
    match code {
        0 => TcpState::Close,
        1 => TcpState::Listen,
        2 => TcpState::SynSent,
        3 => TcpState::SynRecv,
        4 => TcpState::Established,
        5 => TcpState::CloseWait,
        6 => TcpState::FinWait1,
        7 => TcpState::Closing,
        8 => TcpState::LastAck,
        9 => TcpState::FinWait2,
        10 => TcpState::TimeWait,
        other => TcpState::Other(u8::try_from(other).unwrap_or(u8::MAX)),
    }
}

/// `inp_vflag` bits, the same in FreeBSD and XNU (`netinet/in_pcb.h`).
const INP_IPV4: u8 = 0x1;
const INP_IPV6: u8 = 0x2;

/// A BSD pcb's address pair. Both kernels keep IPv4 addresses in the last
/// 4 bytes of a 16-byte field (`struct in_addr_4in6`), and say which family
/// applies in `inp_vflag`, as netstat reads it: IPv4 when INP_IPV4 is set.
/// The exception is a dual-stack `[::]` socket, which has both bits and an
/// all-zero address: it is reported as `[::]`, what the program bound.
/// `None` for a pcb with neither bit (netstat skips those too).
fn bsd_addrs(
    vflag: u8,
    (laddr, lport): ([u8; 16], u16),
    (faddr, fport): ([u8; 16], u16),
) -> Option<(SocketAddr, SocketAddr)> {
    let v4 =
        |a: [u8; 16], port| SocketAddr::from((Ipv4Addr::new(a[12], a[13], a[14], a[15]), port));
    let v6 = |a: [u8; 16], port| SocketAddr::from((Ipv6Addr::from(a), port));
    let dual_wildcard = vflag & INP_IPV6 != 0 && laddr == [0; 16];
    if vflag & INP_IPV4 != 0 && !dual_wildcard {
        Some((v4(laddr, lport), v4(faddr, fport)))
    } else if vflag & INP_IPV6 != 0 {
        Some((v6(laddr, lport), v6(faddr, fport)))
    } else {
        None
    }
}

/// An address as the kernel matches it: a v4-mapped IPv6 address is its
/// IPv4 address.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    }
}

/// Same address and port, whatever the family spelling, scope or flow info.
fn same(a: SocketAddr, b: SocketAddr) -> bool {
    a.port() == b.port() && canonical(a.ip()) == canonical(b.ip())
}

/// Whether a listener bound to `bound` receives connections to `to`: the
/// same address, or a wildcard of a family that reaches it (`0.0.0.0` only
/// IPv4; `[::]` IPv6 and, when dual-stack, IPv4 as well: the tables do not
/// always say whether it is, so it is assumed).
fn listener_reaches(bound: IpAddr, to: IpAddr) -> bool {
    let (bound, to) = (canonical(bound), canonical(to));
    bound == to
        || match bound {
            IpAddr::V4(b) => b.is_unspecified() && to.is_ipv4(),
            IpAddr::V6(b) => b.is_unspecified(),
        }
}

/// What the table says about the socket at `local` connected to `remote`,
/// or with `None` the listener that a connection to `local` would reach:
/// the same question Linux's `observe_tcp` asks sock_diag. A listener bound
/// to `local` itself wins over a wildcard one; a live connection wins over
/// a TIME_WAIT one with the same address pair.
pub fn find(entries: &[TcpEntry], local: SocketAddr, remote: Option<SocketAddr>) -> Observed {
    let found = match remote {
        Some(remote) => entries
            .iter()
            .filter(|e| same(e.local, local) && same(e.remote, remote))
            .min_by_key(|e| e.state == TcpState::TimeWait),
        None => entries
            .iter()
            .filter(|e| {
                e.state == TcpState::Listen
                    && e.local.port() == local.port()
                    && listener_reaches(e.local.ip(), local.ip())
            })
            .min_by_key(|e| canonical(e.local.ip()) != canonical(local.ip())),
    };
    found.map_or(Observed::Absent, |e| Observed::State(e.state))
}

/// The TCP sockets of the table on `port` (their local port). Such tables
/// are not known to list bound sockets that neither listen nor connect.
pub fn census(entries: &[TcpEntry], port: u16) -> super::Census {
    let sockets = entries
        .iter()
        .filter(|e| e.local.port() == port)
        .map(|e| super::PortSocket {
            local: e.local,
            remote: e.remote,
            seen: e.uid.map_or(Observed::State(e.state), |uid| {
                Observed::Owned(e.state, uid)
            }),
        })
        .collect();
    super::Census {
        sockets,
        lists_bound_only: false,
    }
}

/// `0.0.0.0:0` or `[::]:0`: the remote end of a listener.
fn unspecified_like(addr: SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V4(_) => SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => SocketAddrV6::new(Ipv6Addr::UNSPECIFIED, 0, 0, 0).into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(local: &str, remote: &str, state: TcpState) -> TcpEntry {
        TcpEntry {
            local: local.parse().unwrap(),
            remote: remote.parse().unwrap(),
            state,
            uid: None,
            pid: None,
        }
    }

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn an_exact_pair_matches_whatever_the_family_spelling() {
        let table = [entry(
            "127.0.0.1:10001",
            "127.0.0.1:50000",
            TcpState::Established,
        )];
        let want = Observed::State(TcpState::Established);
        assert_eq!(
            find(
                &table,
                addr("127.0.0.1:10001"),
                Some(addr("127.0.0.1:50000"))
            ),
            want
        );
        assert_eq!(
            find(
                &table,
                addr("[::ffff:127.0.0.1]:10001"),
                Some(addr("[::ffff:127.0.0.1]:50000"))
            ),
            want
        );
        assert_eq!(
            find(
                &table,
                addr("127.0.0.1:10001"),
                Some(addr("127.0.0.1:50001"))
            ),
            Observed::Absent
        );
    }

    #[test]
    fn a_live_connection_wins_over_a_time_wait_with_the_same_pair() {
        let table = [
            entry("[::1]:10001", "[::1]:50000", TcpState::TimeWait),
            entry("[::1]:10001", "[::1]:50000", TcpState::SynSent),
        ];
        assert_eq!(
            find(&table, addr("[::1]:10001"), Some(addr("[::1]:50000"))),
            Observed::State(TcpState::SynSent)
        );
    }

    #[test]
    fn without_a_remote_only_a_reaching_listener_counts() {
        let connection = entry("127.0.0.1:10001", "127.0.0.1:50000", TcpState::Established);
        assert_eq!(
            find(&[connection], addr("127.0.0.1:10001"), None),
            Observed::Absent
        );
        let listen = |local| entry(local, "0.0.0.0:0", TcpState::Listen);
        let want = Observed::State(TcpState::Listen);
        // A wildcard of the right family, the exact address, a dual-stack [::].
        assert_eq!(
            find(&[listen("0.0.0.0:10001")], addr("127.0.0.1:10001"), None),
            want
        );
        assert_eq!(
            find(
                &[listen("127.0.0.1:10001")],
                addr("[::ffff:127.0.0.1]:10001"),
                None
            ),
            want
        );
        assert_eq!(
            find(&[listen("[::]:10001")], addr("127.0.0.1:10001"), None),
            want
        );
        // Another address, port or family.
        assert_eq!(
            find(&[listen("127.0.0.2:10001")], addr("127.0.0.1:10001"), None),
            Observed::Absent
        );
        assert_eq!(
            find(&[listen("0.0.0.0:10002")], addr("127.0.0.1:10001"), None),
            Observed::Absent
        );
        assert_eq!(
            find(&[listen("0.0.0.0:10001")], addr("[::1]:10001"), None),
            Observed::Absent
        );
    }

    #[test]
    fn bsd_addresses_follow_vflag() {
        let mut v4 = [0u8; 16];
        v4[12..].copy_from_slice(&[127, 0, 0, 1]);
        let v6 = Ipv6Addr::LOCALHOST.octets();
        let pair = |vflag, a| bsd_addrs(vflag, (a, 10001), (a, 50000)).map(|(l, _)| l);
        assert_eq!(pair(INP_IPV4, v4), Some(addr("127.0.0.1:10001")));
        assert_eq!(pair(INP_IPV6, v6), Some(addr("[::1]:10001")));
        assert_eq!(pair(INP_IPV4 | INP_IPV6, [0; 16]), Some(addr("[::]:10001")));
        assert_eq!(pair(0, v6), None);
    }

    #[test]
    fn bsd_states_keep_their_numbers() {
        assert_eq!(bsd_state(1), TcpState::Listen);
        assert_eq!(bsd_state(4), TcpState::Established);
        assert_eq!(bsd_state(9), TcpState::FinWait2);
        assert_eq!(bsd_state(10), TcpState::TimeWait);
        assert_eq!(bsd_state(11), TcpState::Other(11));
        assert_eq!(bsd_state(-1), TcpState::Other(255));
    }

    #[test]
    fn reads_past_the_end_are_errors() {
        let bytes = Bytes::new(&[1, 2, 3], "test");
        assert!(bytes.u32(0).is_err());
        assert!(bytes.u16_be(2).is_err());
        assert!(bytes.slice(usize::MAX, 2).is_err());
        assert_eq!(bytes.u16_be(1), Ok(0x0203));
    }
}
