//! macOS's `net.inet.tcp.pcblist_n`: a `struct xinpgen`, then per
//! connection a group of typed records, each starting with its length and
//! kind and padded to a multiple of 8 (ROUNDUP64): `xinpcb_n` (XSO_INPCB),
//! `xsocket_n` (XSO_SOCKET), two `xsockbuf_n` (XSO_RCVBUF, XSO_SNDBUF),
//! `xsockstat_n` (XSO_STATS), `xtcpcb_n` (XSO_TCPCB); and a closing
//! `struct xinpgen`.
//!
//! Layouts read from apple-oss-distributions/xnu at tag xnu-11417.101.15
//! (macOS 15.4), unchanged from xnu-8792.41.9 (macOS 13) to
//! xnu-11417.121.6: every one of these structs is under `#pragma pack(4)`,
//! so 64-bit fields are only 4-aligned, on arm64 and x86_64 alike.
//! - `bsd/netinet/in_pcb.h`: `struct xinpgen`, `struct xinpcb_n`,
//!   INP_IPV4/INP_IPV6;
//! - `bsd/sys/socketvar.h`: XSO_* kinds, `struct xsocket_n`,
//!   `struct xsockbuf_n`, `struct xsockstat_n` (SO_TC_STATS_MAX 4);
//! - `bsd/netinet/tcp_var.h`: `struct xtcpcb_n` (TCPT_NTIMERS_EXT 4);
//! - `bsd/netinet/in_pcblist.c`: `get_pcblist_n` (the order and padding)
//!   and `bsd/net/ntstat.c`: user-space (Skywalk) flows in the same format;
//! - apple-oss-distributions/network_cmds (network_cmds-741.100.2)
//!   `netstat.tproj/inet.c`: how netstat walks and groups the records.
//!
//! Records may grow at their end (Apple appended fields before), so a
//! record longer than known is accepted, a shorter one is an error.

use super::{bsd_addrs, bsd_state, error, Bytes, ParseError, TcpEntry};

/// `sizeof(struct xinpgen)` under pack(4): u32, u32, u64, u64.
const XINPGEN: usize = 24;

const XSO_SOCKET: u32 = 0x001;
const XSO_RCVBUF: u32 = 0x002;
const XSO_SNDBUF: u32 = 0x004;
const XSO_STATS: u32 = 0x008;
const XSO_INPCB: u32 = 0x010;
const XSO_TCPCB: u32 = 0x020;
/// The kinds that make up one TCP connection (netstat's ALL_XGN_KIND_TCP).
const ALL_TCP: u32 = XSO_SOCKET | XSO_RCVBUF | XSO_SNDBUF | XSO_STATS | XSO_INPCB | XSO_TCPCB;

// struct xinpcb_n (104 bytes).
const XINPCB_N: usize = 104;
const INP_FPORT: usize = 16;
const INP_LPORT: usize = 18;
const INP_VFLAG: usize = 44;
const INP_FADDR: usize = 48;
const INP_LADDR: usize = 64;
// struct xsocket_n (104 bytes).
const XSOCKET_N: usize = 104;
const XSO_PROTOCOL: usize = 36;
const XSO_FAMILY: usize = 40;
const SO_UID: usize = 64;
const SO_LAST_PID: usize = 68;
// struct xtcpcb_n (204 bytes): t_state after t_segq, t_dupacks, t_timer[4].
const XTCPCB_N: usize = 204;
const T_STATE: usize = 36;

const IPPROTO_TCP: i32 = 6;

/// ROUNDUP64: every record is padded to a multiple of 8 bytes.
fn roundup64(len: usize) -> usize {
    len.div_ceil(8) * 8
}

/// Every TCP connection in a `net.inet.tcp.pcblist_n` answer.
pub fn parse_pcblist_n(buf: &[u8]) -> Result<Vec<TcpEntry>, ParseError> {
    let bytes = Bytes::new(buf, "net.inet.tcp.pcblist_n");
    let head = bytes.u32(0)?;
    if head as usize != XINPGEN {
        return error(format!(
            "net.inet.tcp.pcblist_n: xinpgen of {head} bytes, this parser knows {XINPGEN}"
        ));
    }
    let mut entries = Vec::new();
    // The records of the connection being read, by kind.
    let mut group: [Option<&[u8]>; 3] = [None; 3]; // inpcb, socket, tcpcb
    let mut seen = 0u32;
    let mut at = XINPGEN;
    loop {
        let (len, kind) = match (bytes.u32(at), bytes.u32(at + 4)) {
            (Ok(len), Ok(kind)) => (len as usize, kind),
            _ => {
                return error(format!(
                    "net.inet.tcp.pcblist_n: truncated after {at} bytes (no closing xinpgen)"
                ))
            }
        };
        // The closing xinpgen: the first record no longer than an xinpgen.
        if len <= XINPGEN {
            if seen != 0 {
                return error(format!(
                    "net.inet.tcp.pcblist_n: the last connection lacks records (kinds {seen:#x} of {ALL_TCP:#x})"
                ));
            }
            return Ok(entries);
        }
        let record = bytes.slice(at, len)?;
        // The buffers and statistics are not read; a kind this parser does
        // not know is skipped, as netstat does.
        let (slot, needed, name) = match kind {
            XSO_INPCB => (Some(0), XINPCB_N, "xinpcb_n"),
            XSO_SOCKET => (Some(1), XSOCKET_N, "xsocket_n"),
            XSO_TCPCB => (Some(2), XTCPCB_N, "xtcpcb_n"),
            _ => (None, 0, ""),
        };
        if kind & ALL_TCP != 0 && kind.count_ones() == 1 {
            if seen & kind != 0 {
                return error(format!(
                    "net.inet.tcp.pcblist_n: a second record of kind {kind:#x} at offset {at} before the connection was complete"
                ));
            }
            seen |= kind;
        }
        if let Some(slot) = slot {
            if len < needed {
                return error(format!(
                    "net.inet.tcp.pcblist_n: {name} of {len} bytes at offset {at}, this parser needs {needed}"
                ));
            }
            group[slot] = Some(record);
        }
        if seen == ALL_TCP {
            let [Some(inpcb), Some(socket), Some(tcpcb)] = group else {
                unreachable!("every kind was seen");
            };
            entries.extend(connection(inpcb, socket, tcpcb)?);
            (group, seen) = ([None; 3], 0);
        }
        at += roundup64(len);
    }
}

fn connection(inpcb: &[u8], socket: &[u8], tcpcb: &[u8]) -> Result<Option<TcpEntry>, ParseError> {
    let (inpcb, socket) = (
        Bytes::new(inpcb, "xinpcb_n"),
        Bytes::new(socket, "xsocket_n"),
    );
    let tcpcb = Bytes::new(tcpcb, "xtcpcb_n");
    // netstat skips sockets of other protocols, which a TCP list should
    // not hold; a pcb without a socket has protocol and family 0.
    let family = socket.i32(XSO_FAMILY)?;
    let protocol = socket.i32(XSO_PROTOCOL)?;
    if family != 0 && protocol != IPPROTO_TCP {
        return Ok(None);
    }
    let local = (inpcb.array(INP_LADDR)?, inpcb.u16_be(INP_LPORT)?);
    let remote = (inpcb.array(INP_FADDR)?, inpcb.u16_be(INP_FPORT)?);
    let Some((local, remote)) = bsd_addrs(inpcb.array::<1>(INP_VFLAG)?[0], local, remote) else {
        return Ok(None);
    };
    let has_socket = family != 0;
    let pid = socket.i32(SO_LAST_PID)?;
    Ok(Some(TcpEntry {
        local,
        remote,
        state: bsd_state(tcpcb.i32(T_STATE)?),
        uid: has_socket.then(|| socket.u32(SO_UID)).transpose()?,
        pid: (has_socket && pid > 0).then_some(pid as u32),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::platform::TcpState;
    use std::mem::{offset_of, size_of};
    use std::net::SocketAddr;

    // Mirrors of the XNU structs, field for field, from the headers named
    // in the module comment. `packed(4)` is `#pragma pack(4)`; the C
    // compiler's implicit padding is written out (`_pad`).

    /// bsd/netinet/in_pcb.h, struct xinpgen.
    #[repr(C, packed(4))]
    #[derive(Clone, Copy, Default)]
    struct XInpGen {
        xig_len: u32,
        xig_count: u32,
        xig_gen: u64,
        xig_sogen: u64,
    }

    /// bsd/netinet/in_pcb.h, struct xinpcb_n (the address unions as bytes,
    /// inp_depend4 and inp_depend6 as their members).
    #[repr(C, packed(4))]
    #[derive(Clone, Copy, Default)]
    struct XInpcbN {
        xi_len: u32,
        xi_kind: u32,
        xi_inpp: u64,
        inp_fport: [u8; 2],
        inp_lport: [u8; 2],
        inp_ppcb: u64,
        inp_gencnt: u64,
        inp_flags: i32,
        inp_flow: u32,
        inp_vflag: u8,
        inp_ip_ttl: u8,
        inp_ip_p: u8,
        _pad1: u8,
        inp_dependfaddr: [u8; 16],
        inp_dependladdr: [u8; 16],
        inp4_ip_tos: u8,
        _pad2: [u8; 3],
        inp6_hlim: u8,
        _pad3: [u8; 3],
        inp6_cksum: i32,
        inp6_ifindex: u16,
        inp6_hops: i16,
        inp_flowhash: u32,
        inp_flags2: u32,
    }

    /// bsd/sys/socketvar.h, struct xsocket_n.
    #[repr(C, packed(4))]
    #[derive(Clone, Copy, Default)]
    struct XSocketN {
        xso_len: u32,
        xso_kind: u32,
        xso_so: u64,
        so_type: i16,
        _pad1: i16,
        so_options: u32,
        so_linger: i16,
        so_state: i16,
        so_pcb: u64,
        xso_protocol: i32,
        xso_family: i32,
        so_qlen: i16,
        so_incqlen: i16,
        so_qlimit: i16,
        so_timeo: i16,
        so_error: u16,
        _pad2: u16,
        so_pgid: i32,
        so_oobmark: u32,
        so_uid: u32,
        so_last_pid: i32,
        so_e_pid: i32,
        so_gencnt: u64,
        so_flags: u32,
        so_flags1: u32,
        so_usecount: i32,
        so_retaincnt: i32,
        xso_filter_flags: u32,
    }

    /// bsd/sys/socketvar.h, struct xsockbuf_n.
    #[repr(C, packed(4))]
    #[derive(Clone, Copy, Default)]
    struct XSockBufN {
        xsb_len: u32,
        xsb_kind: u32,
        sb_cc: u32,
        sb_hiwat: u32,
        sb_mbcnt: u32,
        sb_mbmax: u32,
        sb_lowat: i32,
        sb_flags: i16,
        sb_timeo: i16,
    }

    /// bsd/sys/socketvar.h, struct xsockstat_n (4 x struct data_stats).
    #[repr(C, packed(4))]
    #[derive(Clone, Copy, Default)]
    struct XSockStatN {
        xst_len: u32,
        xst_kind: u32,
        xst_tc_stats: [[u64; 4]; 4],
    }

    /// bsd/netinet/tcp_var.h, struct xtcpcb_n: the 31 32-bit fields from
    /// t_flags to t_softerror, the 6 bytes t_oobflags .. requested_s_scale
    /// and the 8 32-bit fields from ts_recent on, as arrays.
    #[repr(C, packed(4))]
    #[derive(Clone, Copy, Default)]
    struct XTcpcbN {
        xt_len: u32,
        xt_kind: u32,
        t_segq: u64,
        t_dupacks: i32,
        t_timer: [i32; 4],
        t_state: i32,
        t_flags_to_t_softerror: [u32; 31],
        t_oobflags_to_requested_s_scale: [u8; 6],
        _pad: [u8; 2],
        ts_recent_to_snd_ssthresh_prev: [u32; 8],
    }

    fn bytes_of<T: Copy>(value: &T) -> Vec<u8> {
        // SAFETY: T is one of the mirrors above: plain integers with every
        // padding byte written out as a field, so all bytes are initialized.
        unsafe { std::slice::from_raw_parts((value as *const T).cast::<u8>(), size_of::<T>()) }
            .to_vec()
    }

    /// A record padded to 8 bytes, as ADVANCE64 lays them out.
    fn padded<T: Copy>(value: &T) -> Vec<u8> {
        let mut out = bytes_of(value);
        out.resize(out.len().div_ceil(8) * 8, 0);
        out
    }

    /// One connection's group, as get_pcblist_n writes it.
    fn group(local: SocketAddr, remote: SocketAddr, state: i32, uid: Option<u32>) -> Vec<u8> {
        let field = |a: SocketAddr| match a {
            SocketAddr::V4(v4) => {
                let mut out = [0u8; 16];
                out[12..].copy_from_slice(&v4.ip().octets());
                out
            }
            SocketAddr::V6(v6) => v6.ip().octets(),
        };
        let inpcb = XInpcbN {
            xi_len: size_of::<XInpcbN>() as u32,
            xi_kind: XSO_INPCB,
            inp_fport: remote.port().to_be_bytes(),
            inp_lport: local.port().to_be_bytes(),
            inp_vflag: if local.is_ipv6() { 0x2 } else { 0x1 },
            inp_ip_p: 6,
            inp_dependfaddr: field(remote),
            inp_dependladdr: field(local),
            ..Default::default()
        };
        // sotoxsocket_n writes length and kind even without a socket.
        let mut socket = XSocketN {
            xso_len: size_of::<XSocketN>() as u32,
            xso_kind: XSO_SOCKET,
            ..Default::default()
        };
        if let Some(uid) = uid {
            socket.xso_so = 0xfeed;
            socket.xso_protocol = 6;
            socket.xso_family = if local.is_ipv6() { 30 } else { 2 };
            socket.so_uid = uid;
            socket.so_last_pid = 4242;
        }
        let buf = |kind| XSockBufN {
            xsb_len: size_of::<XSockBufN>() as u32,
            xsb_kind: kind,
            ..Default::default()
        };
        let stats = XSockStatN {
            xst_len: size_of::<XSockStatN>() as u32,
            xst_kind: XSO_STATS,
            ..Default::default()
        };
        let tcpcb = XTcpcbN {
            xt_len: size_of::<XTcpcbN>() as u32,
            xt_kind: XSO_TCPCB,
            t_state: state,
            ..Default::default()
        };
        [
            padded(&inpcb),
            padded(&socket),
            padded(&buf(XSO_RCVBUF)),
            padded(&buf(XSO_SNDBUF)),
            padded(&stats),
            padded(&tcpcb),
        ]
        .concat()
    }

    fn list(groups: &[Vec<u8>]) -> Vec<u8> {
        let gen = bytes_of(&XInpGen {
            xig_len: size_of::<XInpGen>() as u32,
            xig_count: groups.len() as u32,
            ..Default::default()
        });
        [vec![gen.clone()], groups.to_vec(), vec![gen]]
            .concat()
            .concat()
    }

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn the_offsets_are_those_of_the_c_structs() {
        assert_eq!(size_of::<XInpGen>(), XINPGEN);
        assert_eq!(size_of::<XInpcbN>(), XINPCB_N);
        assert_eq!(size_of::<XSocketN>(), XSOCKET_N);
        assert_eq!(size_of::<XSockBufN>(), 32);
        assert_eq!(size_of::<XSockStatN>(), 136);
        assert_eq!(size_of::<XTcpcbN>(), XTCPCB_N);
        assert_eq!(offset_of!(XInpcbN, inp_fport), INP_FPORT);
        assert_eq!(offset_of!(XInpcbN, inp_lport), INP_LPORT);
        assert_eq!(offset_of!(XInpcbN, inp_gencnt), 28);
        assert_eq!(offset_of!(XInpcbN, inp_vflag), INP_VFLAG);
        assert_eq!(offset_of!(XInpcbN, inp_dependfaddr), INP_FADDR);
        assert_eq!(offset_of!(XInpcbN, inp_dependladdr), INP_LADDR);
        assert_eq!(offset_of!(XSocketN, xso_protocol), XSO_PROTOCOL);
        assert_eq!(offset_of!(XSocketN, xso_family), XSO_FAMILY);
        assert_eq!(offset_of!(XSocketN, so_uid), SO_UID);
        assert_eq!(offset_of!(XSocketN, so_last_pid), SO_LAST_PID);
        assert_eq!(offset_of!(XTcpcbN, t_state), T_STATE);
        assert_eq!(offset_of!(XTcpcbN, ts_recent_to_snd_ssthresh_prev), 172);
        // One TCP item is 616 bytes (the kernel's item_size).
        assert_eq!(
            group(addr("127.0.0.1:1"), addr("127.0.0.1:2"), 4, None).len(),
            616
        );
    }

    #[test]
    fn listen_established_and_time_wait_in_both_families() {
        let bytes = list(&[
            group(addr("[::]:10001"), addr("[::]:0"), 1, Some(501)),
            group(addr("127.0.0.1:10002"), addr("127.0.0.1:50000"), 4, Some(0)),
            group(addr("127.0.0.1:10003"), addr("127.0.0.1:50001"), 10, None),
        ]);
        let entries = parse_pcblist_n(&bytes).unwrap();
        let want = |local: &str, remote: &str, state, uid: Option<u32>| TcpEntry {
            local: addr(local),
            remote: addr(remote),
            state,
            uid,
            pid: uid.map(|_| 4242),
        };
        assert_eq!(
            entries,
            [
                want("[::]:10001", "[::]:0", TcpState::Listen, Some(501)),
                want(
                    "127.0.0.1:10002",
                    "127.0.0.1:50000",
                    TcpState::Established,
                    Some(0)
                ),
                want(
                    "127.0.0.1:10003",
                    "127.0.0.1:50001",
                    TcpState::TimeWait,
                    None
                ),
            ]
        );
    }

    #[test]
    fn unknown_kinds_are_skipped_and_longer_records_accepted() {
        let mut g = group(addr("[::1]:10001"), addr("[::1]:50000"), 9, Some(0));
        // An unknown 32-byte record in the middle (a record of 24 bytes or
        // less would end the list), and 8 more bytes at the end of the
        // xtcpcb_n (its length says so; padding follows).
        let mut unknown = [32u32.to_le_bytes(), 0x400u32.to_le_bytes()].concat();
        unknown.resize(32, 0);
        g.splice(104..104, unknown);
        let tcpcb_at = g.len() - 208;
        g[tcpcb_at..tcpcb_at + 4].copy_from_slice(&212u32.to_le_bytes());
        g.extend([0; 8]);
        let entries = parse_pcblist_n(&list(&[g])).unwrap();
        assert_eq!(entries.len(), 1);
        assert_eq!(entries[0].state, TcpState::FinWait2);
    }

    #[test]
    fn an_empty_list_is_two_headers() {
        assert_eq!(parse_pcblist_n(&list(&[])).unwrap(), []);
    }

    #[test]
    fn truncated_input_is_an_error() {
        let bytes = list(&[group(addr("127.0.0.1:1"), addr("127.0.0.1:2"), 4, Some(0))]);
        for len in [
            0,
            3,
            XINPGEN,
            XINPGEN + 4,
            XINPGEN + 100,
            XINPGEN + 616 - 1,
            XINPGEN + 616,
        ] {
            assert!(parse_pcblist_n(&bytes[..len]).is_err(), "{len} bytes");
        }
        assert!(parse_pcblist_n(&bytes).is_ok());
    }

    #[test]
    fn short_records_and_broken_groups_are_errors() {
        let g = group(addr("127.0.0.1:1"), addr("127.0.0.1:2"), 4, Some(0));
        // An xinpcb_n claiming 40 bytes.
        let mut short = g.clone();
        short[..4].copy_from_slice(&40u32.to_le_bytes());
        assert!(parse_pcblist_n(&list(&[short])).is_err());
        // A group without its xtcpcb_n, then a complete one.
        let partial = g[..616 - 208].to_vec();
        assert!(parse_pcblist_n(&list(&[partial.clone(), g.clone()])).is_err());
        assert!(parse_pcblist_n(&list(&[partial])).is_err());
        // A wrong header.
        let mut header = list(&[g]);
        header[..4].copy_from_slice(&64u32.to_le_bytes());
        assert!(parse_pcblist_n(&header).is_err());
    }
}
