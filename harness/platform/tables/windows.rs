//! Windows' `GetExtendedTcpTable(..., TCP_TABLE_OWNER_PID_ALL, ...)`: a
//! `DWORD dwNumEntries`, then that many rows.
//!
//! Layouts from the windows-sys 0.61.2 bindings
//! (`Win32::NetworkManagement::IpHelper`, generated from Microsoft's
//! metadata for `tcpmib.h`) and Microsoft's documentation of
//! MIB_TCPROW_OWNER_PID, MIB_TCP6ROW_OWNER_PID and MIB_TCP_STATE:
//! - AF_INET, `MIB_TCPTABLE_OWNER_PID`: rows of 6 DWORDs: dwState,
//!   dwLocalAddr, dwLocalPort, dwRemoteAddr, dwRemotePort, dwOwningPid;
//! - AF_INET6, `MIB_TCP6TABLE_OWNER_PID`: rows of ucLocalAddr[16],
//!   dwLocalScopeId, dwLocalPort, ucRemoteAddr[16], dwRemoteScopeId,
//!   dwRemotePort, dwState, dwOwningPid.
//!
//! Addresses are in network byte order; a port is in network byte order in
//! the low 16 bits of its DWORD, that is its first two bytes in memory.
//! The remote end of a listener "has no meaning" (the docs), so it is
//! reported as `0.0.0.0:0` / `[::]:0`. TIME_WAIT rows belong to no process
//! (dwOwningPid 0).

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV6};

use super::{error, unspecified_like, Bytes, ParseError, TcpEntry};
use crate::platform::TcpState;

const ROW_V4: usize = 24;
const ROW_V6: usize = 56;

/// MIB_TCP_STATE (tcpmib.h).
fn mib_state(code: u32) -> TcpState {
    match code {
        1 => TcpState::Close,
        2 => TcpState::Listen,
        3 => TcpState::SynSent,
        4 => TcpState::SynRecv,
        5 => TcpState::Established,
        6 => TcpState::FinWait1,
        7 => TcpState::FinWait2,
        8 => TcpState::CloseWait,
        9 => TcpState::Closing,
        10 => TcpState::LastAck,
        11 => TcpState::TimeWait,
        // 12 is DELETE_TCB.
        other => TcpState::Other(u8::try_from(other).unwrap_or(u8::MAX)),
    }
}

/// The rows of a table: `dwNumEntries` of them, all inside the buffer.
fn rows<'a>(buf: &'a [u8], row: usize, what: &'a str) -> Result<Vec<Bytes<'a>>, ParseError> {
    let bytes = Bytes::new(buf, what);
    let n = bytes.u32(0)? as usize;
    let Some(len) = n.checked_mul(row) else {
        return error(format!("{what}: {n} rows do not fit in memory"));
    };
    let table = bytes.slice(4, len).map_err(|_| {
        ParseError(format!(
            "{what}: {n} rows of {row} bytes announced, {} bytes given",
            buf.len()
        ))
    })?;
    Ok(table
        .chunks_exact(row)
        .map(|r| Bytes::new(r, what))
        .collect())
}

fn entry(local: SocketAddr, remote: SocketAddr, state: u32, pid: u32) -> TcpEntry {
    let state = mib_state(state);
    TcpEntry {
        local,
        remote: if state == TcpState::Listen {
            unspecified_like(local)
        } else {
            remote
        },
        state,
        uid: None,
        pid: (pid != 0).then_some(pid),
    }
}

/// Every row of an AF_INET `MIB_TCPTABLE_OWNER_PID`.
pub fn parse_tcp_table(buf: &[u8]) -> Result<Vec<TcpEntry>, ParseError> {
    rows(buf, ROW_V4, "MIB_TCPTABLE_OWNER_PID")?
        .into_iter()
        .map(|r| {
            let addr = |at| -> Result<SocketAddr, ParseError> {
                let ip = Ipv4Addr::from(r.array::<4>(at)?);
                Ok(SocketAddr::from((ip, r.u16_be(at + 4)?)))
            };
            Ok(entry(addr(4)?, addr(12)?, r.u32(0)?, r.u32(20)?))
        })
        .collect()
}

/// Every row of an AF_INET6 `MIB_TCP6TABLE_OWNER_PID`.
pub fn parse_tcp6_table(buf: &[u8]) -> Result<Vec<TcpEntry>, ParseError> {
    rows(buf, ROW_V6, "MIB_TCP6TABLE_OWNER_PID")?
        .into_iter()
        .map(|r| {
            let addr = |at| -> Result<SocketAddr, ParseError> {
                let ip = Ipv6Addr::from(r.array::<16>(at)?);
                let scope = r.u32(at + 16)?;
                Ok(SocketAddrV6::new(ip, r.u16_be(at + 20)?, 0, scope).into())
            };
            Ok(entry(addr(0)?, addr(24)?, r.u32(48)?, r.u32(52)?))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::{offset_of, size_of};

    /// MIB_TCPROW_OWNER_PID as windows-sys 0.61.2 declares it.
    #[repr(C)]
    #[derive(Clone, Copy, Default)]
    struct MibTcpRowOwnerPid {
        dw_state: u32,
        dw_local_addr: u32,
        dw_local_port: u32,
        dw_remote_addr: u32,
        dw_remote_port: u32,
        dw_owning_pid: u32,
    }

    /// MIB_TCP6ROW_OWNER_PID as windows-sys 0.61.2 declares it.
    #[repr(C)]
    #[derive(Clone, Copy, Default)]
    struct MibTcp6RowOwnerPid {
        uc_local_addr: [u8; 16],
        dw_local_scope_id: u32,
        dw_local_port: u32,
        uc_remote_addr: [u8; 16],
        dw_remote_scope_id: u32,
        dw_remote_port: u32,
        dw_state: u32,
        dw_owning_pid: u32,
    }

    /// A DWORD as Windows fills it on a little-endian machine: the value's
    /// bytes in network order, read as a native integer.
    fn net_dword(network_order: &[u8]) -> u32 {
        let mut b = [0u8; 4];
        b[..network_order.len()].copy_from_slice(network_order);
        u32::from_le_bytes(b)
    }

    fn v4_row(local: &str, remote: &str, state: u32, pid: u32) -> MibTcpRowOwnerPid {
        let (l, r): (SocketAddr, SocketAddr) = (local.parse().unwrap(), remote.parse().unwrap());
        let (SocketAddr::V4(l), SocketAddr::V4(r)) = (l, r) else {
            panic!("IPv4 rows")
        };
        MibTcpRowOwnerPid {
            dw_state: state,
            dw_local_addr: net_dword(&l.ip().octets()),
            dw_local_port: net_dword(&l.port().to_be_bytes()),
            dw_remote_addr: net_dword(&r.ip().octets()),
            dw_remote_port: net_dword(&r.port().to_be_bytes()),
            dw_owning_pid: pid,
        }
    }

    fn v6_row(local: &str, remote: &str, state: u32, pid: u32) -> MibTcp6RowOwnerPid {
        let (l, r): (SocketAddr, SocketAddr) = (local.parse().unwrap(), remote.parse().unwrap());
        let (SocketAddr::V6(l), SocketAddr::V6(r)) = (l, r) else {
            panic!("IPv6 rows")
        };
        MibTcp6RowOwnerPid {
            uc_local_addr: l.ip().octets(),
            dw_local_scope_id: l.scope_id(),
            dw_local_port: net_dword(&l.port().to_be_bytes()),
            uc_remote_addr: r.ip().octets(),
            dw_remote_scope_id: r.scope_id(),
            dw_remote_port: net_dword(&r.port().to_be_bytes()),
            dw_state: state,
            dw_owning_pid: pid,
        }
    }

    fn table<T: Copy>(rows: &[T]) -> Vec<u8> {
        let mut out = (rows.len() as u32).to_le_bytes().to_vec();
        for row in rows {
            // SAFETY: the row structs are DWORDs and byte arrays with no
            // padding, so all their bytes are initialized.
            out.extend_from_slice(unsafe {
                std::slice::from_raw_parts((row as *const T).cast::<u8>(), size_of::<T>())
            });
        }
        out
    }

    fn want(local: &str, remote: &str, state: TcpState, pid: Option<u32>) -> TcpEntry {
        TcpEntry {
            local: local.parse().unwrap(),
            remote: remote.parse().unwrap(),
            state,
            uid: None,
            pid,
        }
    }

    #[test]
    fn the_offsets_are_those_of_the_c_structs() {
        assert_eq!(size_of::<MibTcpRowOwnerPid>(), ROW_V4);
        assert_eq!(offset_of!(MibTcpRowOwnerPid, dw_local_addr), 4);
        assert_eq!(offset_of!(MibTcpRowOwnerPid, dw_local_port), 8);
        assert_eq!(offset_of!(MibTcpRowOwnerPid, dw_remote_addr), 12);
        assert_eq!(offset_of!(MibTcpRowOwnerPid, dw_remote_port), 16);
        assert_eq!(offset_of!(MibTcpRowOwnerPid, dw_owning_pid), 20);
        assert_eq!(size_of::<MibTcp6RowOwnerPid>(), ROW_V6);
        assert_eq!(offset_of!(MibTcp6RowOwnerPid, dw_local_scope_id), 16);
        assert_eq!(offset_of!(MibTcp6RowOwnerPid, dw_local_port), 20);
        assert_eq!(offset_of!(MibTcp6RowOwnerPid, uc_remote_addr), 24);
        assert_eq!(offset_of!(MibTcp6RowOwnerPid, dw_remote_scope_id), 40);
        assert_eq!(offset_of!(MibTcp6RowOwnerPid, dw_remote_port), 44);
        assert_eq!(offset_of!(MibTcp6RowOwnerPid, dw_state), 48);
        assert_eq!(offset_of!(MibTcp6RowOwnerPid, dw_owning_pid), 52);
    }

    #[test]
    fn ipv4_listen_established_and_time_wait() {
        let bytes = table(&[
            // The docs: a listener's remote address and port have no meaning.
            v4_row("0.0.0.0:10001", "0.0.0.0:18000", 2, 1234),
            v4_row("127.0.0.1:10001", "127.0.0.1:50000", 5, 1234),
            v4_row("127.0.0.1:50001", "127.0.0.1:10001", 11, 0),
        ]);
        assert_eq!(
            parse_tcp_table(&bytes).unwrap(),
            [
                want("0.0.0.0:10001", "0.0.0.0:0", TcpState::Listen, Some(1234)),
                want(
                    "127.0.0.1:10001",
                    "127.0.0.1:50000",
                    TcpState::Established,
                    Some(1234)
                ),
                want(
                    "127.0.0.1:50001",
                    "127.0.0.1:10001",
                    TcpState::TimeWait,
                    None
                ),
            ]
        );
    }

    #[test]
    fn ipv6_listen_established_and_time_wait() {
        let bytes = table(&[
            v6_row("[::]:10001", "[::]:0", 2, 77),
            v6_row("[::1]:10001", "[::1]:50000", 5, 77),
            v6_row("[fe80::1%3]:10002", "[fe80::2%3]:50001", 11, 0),
        ]);
        let entries = parse_tcp6_table(&bytes).unwrap();
        assert_eq!(
            entries,
            [
                want("[::]:10001", "[::]:0", TcpState::Listen, Some(77)),
                want(
                    "[::1]:10001",
                    "[::1]:50000",
                    TcpState::Established,
                    Some(77)
                ),
                want(
                    "[fe80::1%3]:10002",
                    "[fe80::2%3]:50001",
                    TcpState::TimeWait,
                    None
                ),
            ]
        );
    }

    #[test]
    fn every_mib_state_has_its_name() {
        let names: Vec<TcpState> = (1..=13).map(mib_state).collect();
        use TcpState::*;
        assert_eq!(
            names,
            [
                Close,
                Listen,
                SynSent,
                SynRecv,
                Established,
                FinWait1,
                FinWait2,
                CloseWait,
                Closing,
                LastAck,
                TimeWait,
                Other(12),
                Other(13)
            ]
        );
    }

    #[test]
    fn empty_truncated_and_oversized_tables() {
        assert_eq!(parse_tcp_table(&0u32.to_le_bytes()).unwrap(), []);
        assert_eq!(parse_tcp6_table(&0u32.to_le_bytes()).unwrap(), []);
        assert!(parse_tcp_table(&[]).is_err());
        let v4 = table(&[v4_row("127.0.0.1:1", "127.0.0.1:2", 5, 1)]);
        assert!(parse_tcp_table(&v4[..v4.len() - 1]).is_err());
        let v6 = table(&[v6_row("[::1]:1", "[::1]:2", 5, 1)]);
        assert!(parse_tcp6_table(&v6[..v6.len() - 1]).is_err());
        // A v4 table read as v6: 1 row of 56 bytes announced, 24 given.
        assert!(parse_tcp6_table(&v4).is_err());
        assert!(parse_tcp_table(&u32::MAX.to_le_bytes()).is_err());
        // A buffer larger than the rows (GetExtendedTcpTable's size is a
        // maximum): the rest is ignored.
        let mut padded = v4.clone();
        padded.extend([0xAA; 40]);
        assert_eq!(parse_tcp_table(&padded).unwrap().len(), 1);
    }
}
