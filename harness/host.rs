//! What this machine can do: the capabilities the matrix needs.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::OnceLock;

use socket2::{Domain, Socket, Type};

use crate::outcome::Skip;
use crate::platform;
use crate::scenario::{Endpoint, Family, Holder, NO_OTHER_USER};

/// The machine's capabilities, detected once per process.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Capabilities {
    /// `::1` can be bound: IPv6 works on loopback.
    pub ipv6: bool,
    /// `127.0.0.2` can be bound (Linux routes all of 127/8 to loopback;
    /// macOS needs an alias).
    pub loopback2: bool,
    /// root / Administrator.
    pub privileged: bool,
}

pub const NO_IPV6: &str = "IPv6 is not available on loopback (binding ::1 fails)";
pub const NO_LOOPBACK2: &str =
    "127.0.0.2 is not configured on loopback (macOS: sudo ifconfig lo0 alias 127.0.0.2 up)";

fn can_bind(ip: IpAddr) -> bool {
    let addr = SocketAddr::new(ip, 0);
    Socket::new(Domain::for_address(addr), Type::DGRAM, None)
        .and_then(|s| s.bind(&addr.into()))
        .is_ok()
}

pub fn capabilities() -> Capabilities {
    static CAPS: OnceLock<Capabilities> = OnceLock::new();
    *CAPS.get_or_init(|| Capabilities {
        ipv6: can_bind(Ipv6Addr::LOCALHOST.into()),
        loopback2: can_bind(Ipv4Addr::new(127, 0, 0, 2).into()),
        privileged: platform::privileged(),
    })
}

impl Capabilities {
    /// Why an endpoint cannot be used on this machine, if so.
    pub fn lacks(&self, endpoint: &Endpoint) -> Option<&'static str> {
        let v4 = match endpoint.ip {
            IpAddr::V4(ip) => Some(ip),
            IpAddr::V6(ip) => ip.to_ipv4_mapped(),
        };
        if endpoint.family() != Family::V4 && !self.ipv6 {
            return Some(NO_IPV6);
        }
        match v4 {
            Some(ip) if ip != Ipv4Addr::LOCALHOST && ip.is_loopback() && !self.loopback2 => {
                Some(NO_LOOPBACK2)
            }
            _ => None,
        }
    }
}

impl Capabilities {
    /// Why cases of this holder cannot run on this machine, if so.
    pub fn lacks_holder(&self, holder: Holder) -> Option<Skip> {
        match (holder, platform::NO_SWITCH_USER) {
            (Holder::OtherUser, Some(why)) => Some(Skip::NotOnPlatform(why)),
            (Holder::OtherUser, None) if !self.privileged => Some(Skip::Unavailable(NO_OTHER_USER)),
            _ => None,
        }
    }
}

/// Whether a fresh IPv6 socket starts with IPV6_V6ONLY on (Windows,
/// FreeBSD) or off (Linux unless net.ipv6.bindv6only=1, macOS); `None` if
/// it cannot be read.
pub fn v6only_default() -> Option<bool> {
    static DEFAULT: OnceLock<Option<bool>> = OnceLock::new();
    *DEFAULT.get_or_init(|| {
        Socket::new(Domain::IPV6, Type::STREAM, None)
            .and_then(|s| s.only_v6())
            .ok()
    })
}

/// Whether a dual-stack socket must turn IPV6_V6ONLY off itself (when in
/// doubt, yes).
pub fn v6only_by_default() -> bool {
    v6only_default() != Some(false)
}
