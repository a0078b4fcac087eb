//! Which port each case uses.
//!
//! Every case binds its own port, so cases can run in parallel without
//! seeing each other. Ports come from a range the kernel never picks by
//! itself (outside the ephemeral range, where connect() and bind(port 0)
//! take theirs), and each is checked free before use: a port still held
//! by anyone, including a TIME_WAIT left by an earlier run, is passed over.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;

use socket2::{Domain, Socket, Type};

use crate::host;
use crate::platform;
use crate::scenario::Proto;

pub struct PortPool {
    first: u16,
    len: u32,
    next: AtomicU32,
}

/// The widest stretch of unprivileged ports outside the ephemeral range,
/// preferring ports from 10000 up (below are well-known services).
fn choose_range(ephemeral: Option<(u16, u16)>) -> (u16, u16) {
    let (lo, hi) = ephemeral.unwrap_or((32768, 65535));
    let below = (10000u16, lo.saturating_sub(1));
    let above = (hi.saturating_add(1).max(10000), 65535u16);
    let width = |(a, b): (u16, u16)| if b >= a { u32::from(b - a) + 1 } else { 0 };
    let best = if width(below) >= width(above) {
        below
    } else {
        above
    };
    if width(best) >= 4096 {
        best
    } else {
        (1024, lo.saturating_sub(1).max(1024))
    }
}

pub fn pool() -> &'static PortPool {
    static POOL: OnceLock<PortPool> = OnceLock::new();
    POOL.get_or_init(|| {
        let (first, last) = choose_range(platform::ephemeral_ports());
        let len = u32::from(last - first) + 1;
        // A random starting point, so that two processes running at once
        // rarely start on the same ports.
        let mut h = RandomState::new().build_hasher();
        h.write_u32(std::process::id());
        PortPool {
            first,
            len,
            next: AtomicU32::new(h.finish() as u32 % len),
        }
    })
}

impl PortPool {
    pub fn range(&self) -> (u16, u16) {
        (self.first, (u32::from(self.first) + self.len - 1) as u16)
    }

    /// A port nothing holds for `proto` right now. An earlier run leaves
    /// long stretches of ports in TIME_WAIT (its cases run in matrix order),
    /// so the search may pass over the whole range once, but not more.
    pub fn take(&self, proto: Proto) -> Result<u16, String> {
        for _ in 0..self.len {
            let n = self.next.fetch_add(1, Ordering::Relaxed) % self.len;
            let port = (u32::from(self.first) + n) as u16;
            if is_free(proto, port) {
                return Ok(port);
            }
        }
        let (lo, hi) = self.range();
        Err(format!("no free {} port in {lo}-{hi}", proto.name()))
    }
}

/// Whether nothing at all holds `port`: a wildcard bind without any reuse
/// option conflicts with every socket on the port, whatever its address
/// or state (TIME_WAIT included). With IPv6, a dual-stack `[::]` covers
/// both families at once.
pub fn is_free(proto: Proto, port: u16) -> bool {
    let ty = match proto {
        Proto::Tcp => Type::STREAM,
        Proto::Udp => Type::DGRAM,
    };
    let attempt = |addr: SocketAddr, dual: bool| {
        Socket::new(Domain::for_address(addr), ty, None)
            .and_then(|s| {
                if dual {
                    s.set_only_v6(false)?;
                }
                s.bind(&addr.into())
            })
            .is_ok()
    };
    if host::capabilities().ipv6 {
        attempt((Ipv6Addr::UNSPECIFIED, port).into(), true)
    } else {
        attempt((Ipv4Addr::UNSPECIFIED, port).into(), false)
    }
}
