//! FreeBSD's `net.inet.tcp.pcblist`: a `struct xinpgen`, one `struct
//! xtcpcb` per connection (each embeds a `struct xinpcb`, which embeds a
//! `struct xsocket`), and a closing `struct xinpgen`.
//!
//! Layouts read from freebsd/freebsd-src (stable/14 and main/15 era
//! headers; the code index does not name the release tag of each copy):
//! - `sys/netinet/in_pcb.h`: `struct xinpgen`, `struct xinpcb`,
//!   `struct in_conninfo`, `struct in_endpoints`, `union in_dependaddr`;
//! - `sys/sys/socketvar.h`: `struct xsocket`, `struct xsockbuf`;
//! - `sys/netinet/tcp_var.h`: `struct xtcpcb` (`xt_stack[32]`
//!   TCP_FUNCTION_NAME_LEN_MAX, `xt_logid[64]` TCP_LOG_ID_LEN,
//!   `xt_cc[16]` TCP_CA_NAME_MAX, `spare64[6]`, then `t_state`);
//! - `sys/netinet/tcp_syncache.c`: `syncache_pcblist` (SYN_RECEIVED
//!   entries with `xi_len` 0 and no uid);
//! - `sys/netinet/tcp_subr.c`: `tcp_pcblist` (the header/records/trailer).
//!
//! The changes between 13, 14 and 15 (`so_splice_so`, `so_fibnum`,
//! `inp_unused`, `inp_ppcb` folded into `inp_spare64`, `xt_cc` out of
//! `spare64`, the reworked `union in_dependaddr`) all kept every size and
//! offset, and amd64 and aarch64 are both LP64 with `ksize_t`/`kvaddr_t`
//! 64-bit: one layout. The record lengths the kernel writes are checked
//! against it, so a future change is an error, not a misreading.

use super::{bsd_addrs, bsd_state, error, Bytes, ParseError, TcpEntry};

/// `sizeof(struct xinpgen)`: ksize_t, 2 x u32, 2 x u64, u64[4].
const XINPGEN: usize = 64;
/// `sizeof(struct xtcpcb)`.
const XTCPCB: usize = 744;
/// `sizeof(struct xinpcb)`, at offset 8 of the xtcpcb.
const XINPCB: usize = 400;
/// `sizeof(struct xsocket)`, at offset 8 of the xinpcb.
const XSOCKET: usize = 240;

// Offsets within one xtcpcb record.
const XI_LEN: usize = 8;
const XSO_LEN: usize = XI_LEN + 8;
/// xsocket.so_uid (after 12 x 64-bit fields and 6 x 32-bit ones).
const SO_UID: usize = XSO_LEN + 120;
/// xinpcb.inp_inc (`struct in_conninfo`): flags, len, fibnum, then
/// `struct in_endpoints`: fport, lport, faddr[16], laddr[16], zoneid.
const INP_INC: usize = XI_LEN + 248;
const INC_FPORT: usize = INP_INC + 4;
const INC_LPORT: usize = INP_INC + 6;
const INC_FADDR: usize = INP_INC + 8;
const INC_LADDR: usize = INP_INC + 24;
const INP_VFLAG: usize = XI_LEN + 392;
const T_STATE: usize = XI_LEN + XINPCB + 32 + 64 + 16 + 48;

/// Every TCP connection in a `net.inet.tcp.pcblist` answer.
pub fn parse_pcblist(buf: &[u8]) -> Result<Vec<TcpEntry>, ParseError> {
    let bytes = Bytes::new(buf, "net.inet.tcp.pcblist");
    let head = bytes.u64(0)?;
    if head != XINPGEN as u64 {
        return error(format!(
            "net.inet.tcp.pcblist: xinpgen of {head} bytes, this parser knows {XINPGEN}"
        ));
    }
    let mut entries = Vec::new();
    let mut at = XINPGEN;
    loop {
        // Each record starts with its length; the closing xinpgen is the
        // one no longer than an xinpgen (netstat's test, too).
        let len = bytes.u64(at).map_err(|_| {
            ParseError(format!(
                "net.inet.tcp.pcblist: truncated after {at} bytes (no closing xinpgen)"
            ))
        })?;
        if len <= XINPGEN as u64 {
            return Ok(entries);
        }
        if len != XTCPCB as u64 {
            return error(format!(
                "net.inet.tcp.pcblist: record of {len} bytes at offset {at}, this parser knows xtcpcb of {XTCPCB}"
            ));
        }
        let record = Bytes::new(bytes.slice(at, XTCPCB)?, "xtcpcb");
        entries.extend(parse_xtcpcb(record)?);
        at += XTCPCB;
    }
}

fn parse_xtcpcb(record: Bytes) -> Result<Option<TcpEntry>, ParseError> {
    // xi_len is 0 in the syncache's SYN_RECEIVED entries, which have no
    // pcb; xso_len is 0 when the pcb has lost its socket (TIME_WAIT).
    let xi_len = record.u64(XI_LEN)?;
    let xso_len = record.u64(XSO_LEN)?;
    if ![0, XINPCB as u64].contains(&xi_len) || ![0, XSOCKET as u64].contains(&xso_len) {
        return error(format!(
            "xtcpcb: xinpcb of {xi_len} bytes and xsocket of {xso_len}, this parser knows {XINPCB} and {XSOCKET}"
        ));
    }
    let local = (record.array(INC_LADDR)?, record.u16_be(INC_LPORT)?);
    let remote = (record.array(INC_FADDR)?, record.u16_be(INC_FPORT)?);
    let Some((local, remote)) = bsd_addrs(record.array::<1>(INP_VFLAG)?[0], local, remote) else {
        return Ok(None);
    };
    let uid = (xi_len != 0 && xso_len != 0)
        .then(|| record.u32(SO_UID))
        .transpose()?;
    Ok(Some(TcpEntry {
        local,
        remote,
        state: bsd_state(record.i32(T_STATE)?),
        uid,
        pid: None,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::platform::TcpState;
    use std::mem::{offset_of, size_of};
    use std::net::SocketAddr;

    // Mirrors of the C structs, field for field, from the headers named in
    // the module comment. The C compiler's implicit padding is written out
    // (`_pad`), so the structs have no uninitialized bytes to copy.

    /// sys/netinet/in_pcb.h, struct xinpgen (__aligned(8)).
    #[repr(C, align(8))]
    #[derive(Clone, Copy, Default)]
    struct XInpGen {
        xig_len: u64,
        xig_count: u32,
        _xig_spare32: u32,
        xig_gen: u64,
        xig_sogen: u64,
        _xig_spare64: [u64; 4],
    }

    /// sys/sys/socketvar.h, struct xsockbuf (inside struct xsocket).
    #[repr(C)]
    #[derive(Clone, Copy, Default)]
    struct XSockBuf {
        sb_cc: u32,
        sb_hiwat: u32,
        sb_mbcnt: u32,
        sb_spare0: u32,
        sb_spare1: u32,
        sb_mbmax: u32,
        sb_lowat: i32,
        sb_timeo: i32,
        sb_flags: i16,
        _pad: i16,
    }

    /// sys/sys/socketvar.h, struct xsocket.
    #[repr(C)]
    #[derive(Clone, Copy, Default)]
    struct XSocket {
        xso_len: u64,
        xso_so: u64,
        so_pcb: u64,
        so_oobmark: u64,
        so_splice_so: u64,
        so_spare64: [i64; 7],
        xso_protocol: i32,
        xso_family: i32,
        so_qlen: u32,
        so_incqlen: u32,
        so_qlimit: u32,
        so_pgid: i32,
        so_uid: u32,
        so_spare32: [i32; 8],
        so_type: i16,
        so_options: i16,
        so_linger: i16,
        so_state: i16,
        so_timeo: i16,
        so_error: u16,
        so_rcv: XSockBuf,
        so_snd: XSockBuf,
    }

    /// sys/netinet/in_pcb.h, struct in_conninfo with struct in_endpoints
    /// inlined (`union in_dependaddr` is 16 bytes, 4-aligned).
    #[repr(C)]
    #[derive(Clone, Copy, Default)]
    struct InConnInfo {
        inc_flags: u8,
        inc_len: u8,
        inc_fibnum: u16,
        ie_fport: [u8; 2],
        ie_lport: [u8; 2],
        ie_dependfaddr: [u8; 16],
        ie_dependladdr: [u8; 16],
        ie6_zoneid: u32,
    }

    /// sys/netinet/in_pcb.h, struct xinpcb (__aligned(8)).
    #[repr(C, align(8))]
    #[derive(Clone, Copy, Default)]
    struct XInpcb {
        xi_len: u64,
        xi_socket: XSocket,
        inp_inc: InConnInfo,
        _pad: u32,
        inp_gencnt: u64,
        inp_ppcb: u64,
        inp_spare64: [i64; 4],
        inp_flow: u32,
        inp_flowid: u32,
        inp_flowtype: u32,
        inp_flags: i32,
        inp_flags2: i32,
        inp_unused: u32,
        in6p_cksum: i32,
        inp_spare32: [i32; 4],
        in6p_hops: u16,
        inp_ip_tos: u8,
        pad8: i8,
        inp_vflag: u8,
        inp_ip_ttl: u8,
        inp_ip_p: u8,
        inp_ip_minttl: u8,
        inp_spare8: [i8; 4],
    }

    /// sys/netinet/tcp_var.h, struct xtcpcb (__aligned(8)); the 20 32-bit
    /// fields after t_state (t_flags .. t_dsack_pack) as one array.
    #[repr(C, align(8))]
    #[derive(Clone, Copy)]
    struct XTcpcb {
        xt_len: u64,
        xt_inp: XInpcb,
        xt_stack: [u8; 32],
        xt_logid: [u8; 64],
        xt_cc: [u8; 16],
        spare64: [i64; 6],
        t_state: i32,
        t_flags_to_dsack_pack: [u32; 20],
        xt_encaps_port: u16,
        spare16: i16,
        spare32: [i32; 22],
    }

    fn bytes_of<T: Copy>(value: &T) -> Vec<u8> {
        // SAFETY: T is one of the mirrors above: plain integers with every
        // padding byte written out as a field, so all bytes are initialized.
        unsafe { std::slice::from_raw_parts((value as *const T).cast::<u8>(), size_of::<T>()) }
            .to_vec()
    }

    /// An xtcpcb as tcp_inptoxtp fills it, for a pcb with or without a
    /// socket.
    fn xtcpcb(local: SocketAddr, remote: SocketAddr, state: i32, uid: Option<u32>) -> XTcpcb {
        let field = |a: SocketAddr| match a {
            SocketAddr::V4(v4) => {
                let mut out = [0u8; 16];
                out[12..].copy_from_slice(&v4.ip().octets());
                out
            }
            SocketAddr::V6(v6) => v6.ip().octets(),
        };
        let v6 = local.is_ipv6();
        let mut xt = XTcpcb {
            xt_len: size_of::<XTcpcb>() as u64,
            xt_inp: XInpcb {
                xi_len: size_of::<XInpcb>() as u64,
                inp_inc: InConnInfo {
                    inc_flags: u8::from(v6), // INC_ISIPV6
                    ie_fport: remote.port().to_be_bytes(),
                    ie_lport: local.port().to_be_bytes(),
                    ie_dependfaddr: field(remote),
                    ie_dependladdr: field(local),
                    ..Default::default()
                },
                inp_vflag: if v6 { 0x2 } else { 0x1 },
                ..Default::default()
            },
            xt_stack: [0; 32],
            xt_logid: [0; 64],
            xt_cc: [0; 16],
            spare64: [0; 6],
            t_state: state,
            t_flags_to_dsack_pack: [0; 20],
            xt_encaps_port: 0,
            spare16: 0,
            spare32: [0; 22],
        };
        xt.xt_stack[..7].copy_from_slice(b"freebsd");
        if let Some(uid) = uid {
            xt.xt_inp.xi_socket = XSocket {
                xso_len: size_of::<XSocket>() as u64,
                xso_protocol: 6,
                xso_family: if v6 { 28 } else { 2 },
                so_uid: uid,
                ..Default::default()
            };
        }
        xt
    }

    fn list(records: &[XTcpcb]) -> Vec<u8> {
        let gen = XInpGen {
            xig_len: size_of::<XInpGen>() as u64,
            xig_count: records.len() as u32,
            ..Default::default()
        };
        let mut out = bytes_of(&gen);
        for r in records {
            out.extend(bytes_of(r));
        }
        out.extend(bytes_of(&gen));
        out
    }

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn the_offsets_are_those_of_the_c_structs() {
        assert_eq!(size_of::<XInpGen>(), XINPGEN);
        assert_eq!(size_of::<XSocket>(), XSOCKET);
        assert_eq!(size_of::<InConnInfo>(), 44);
        assert_eq!(size_of::<XInpcb>(), XINPCB);
        assert_eq!(size_of::<XTcpcb>(), XTCPCB);
        assert_eq!(offset_of!(XTcpcb, xt_inp.xi_len), XI_LEN);
        assert_eq!(offset_of!(XTcpcb, xt_inp.xi_socket.xso_len), XSO_LEN);
        assert_eq!(offset_of!(XTcpcb, xt_inp.xi_socket.so_uid), SO_UID);
        assert_eq!(offset_of!(XTcpcb, xt_inp.inp_inc), INP_INC);
        assert_eq!(offset_of!(XTcpcb, xt_inp.inp_inc.ie_fport), INC_FPORT);
        assert_eq!(offset_of!(XTcpcb, xt_inp.inp_inc.ie_lport), INC_LPORT);
        assert_eq!(offset_of!(XTcpcb, xt_inp.inp_inc.ie_dependfaddr), INC_FADDR);
        assert_eq!(offset_of!(XTcpcb, xt_inp.inp_inc.ie_dependladdr), INC_LADDR);
        assert_eq!(offset_of!(XTcpcb, xt_inp.inp_gencnt), XI_LEN + 296);
        assert_eq!(offset_of!(XTcpcb, xt_inp.inp_vflag), INP_VFLAG);
        assert_eq!(offset_of!(XTcpcb, t_state), T_STATE);
    }

    #[test]
    fn listen_established_and_time_wait_in_both_families() {
        let bytes = list(&[
            xtcpcb(addr("0.0.0.0:10001"), addr("0.0.0.0:0"), 1, Some(1001)),
            xtcpcb(
                addr("127.0.0.1:10001"),
                addr("127.0.0.1:50000"),
                4,
                Some(1001),
            ),
            xtcpcb(addr("127.0.0.1:50000"), addr("127.0.0.1:10001"), 4, Some(0)),
            xtcpcb(addr("[::1]:10002"), addr("[::1]:50001"), 10, None),
        ]);
        let entries = parse_pcblist(&bytes).unwrap();
        let want = |local: &str, remote: &str, state, uid| TcpEntry {
            local: addr(local),
            remote: addr(remote),
            state,
            uid,
            pid: None,
        };
        assert_eq!(
            entries,
            [
                want("0.0.0.0:10001", "0.0.0.0:0", TcpState::Listen, Some(1001)),
                want(
                    "127.0.0.1:10001",
                    "127.0.0.1:50000",
                    TcpState::Established,
                    Some(1001)
                ),
                want(
                    "127.0.0.1:50000",
                    "127.0.0.1:10001",
                    TcpState::Established,
                    Some(0)
                ),
                want("[::1]:10002", "[::1]:50001", TcpState::TimeWait, None),
            ]
        );
    }

    #[test]
    fn a_dual_stack_listener_is_reported_as_bound() {
        let mut xt = xtcpcb(addr("[::]:10001"), addr("[::]:0"), 1, Some(0));
        xt.xt_inp.inp_vflag = 0x1 | 0x2;
        let entries = parse_pcblist(&list(&[xt])).unwrap();
        assert_eq!(entries[0].local, addr("[::]:10001"));
    }

    #[test]
    fn a_syncache_entry_has_no_uid() {
        // syncache_pcblist: xt_len, vflag, inp_inc, t_state and xso_len;
        // xi_len stays 0.
        let mut xt = xtcpcb(addr("127.0.0.1:10001"), addr("127.0.0.1:50000"), 3, Some(0));
        xt.xt_inp.xi_len = 0;
        let entries = parse_pcblist(&list(&[xt])).unwrap();
        assert_eq!(entries[0].state, TcpState::SynRecv);
        assert_eq!(entries[0].uid, None);
    }

    #[test]
    fn an_empty_list_is_two_headers() {
        assert_eq!(parse_pcblist(&list(&[])).unwrap(), []);
    }

    #[test]
    fn truncated_input_is_an_error() {
        let bytes = list(&[xtcpcb(addr("127.0.0.1:1"), addr("127.0.0.1:2"), 4, Some(0))]);
        for len in [
            0,
            7,
            XINPGEN,
            XINPGEN + 8,
            XINPGEN + XTCPCB - 1,
            XINPGEN + XTCPCB,
        ] {
            assert!(parse_pcblist(&bytes[..len]).is_err(), "{len} bytes");
        }
        assert!(parse_pcblist(&bytes).is_ok());
    }

    #[test]
    fn unknown_lengths_are_errors() {
        let good = xtcpcb(addr("127.0.0.1:1"), addr("127.0.0.1:2"), 4, Some(0));
        let mut long = list(&[good]);
        long[XINPGEN..XINPGEN + 8].copy_from_slice(&752u64.to_le_bytes());
        assert!(parse_pcblist(&long).is_err());
        let mut header = list(&[good]);
        header[..8].copy_from_slice(&24u64.to_le_bytes());
        assert!(parse_pcblist(&header).is_err());
        let mut inpcb = good;
        inpcb.xt_inp.xi_len = 392;
        assert!(parse_pcblist(&list(&[inpcb])).is_err());
        let mut socket = good;
        socket.xt_inp.xi_socket.xso_len = 232;
        assert!(parse_pcblist(&list(&[socket])).is_err());
    }
}
