//! What this machine can do (capabilities the matrix needs) and the facts
//! that change its answers (the header of every report).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::OnceLock;

use socket2::{Domain, Socket, Type};

use crate::outcome::Skip;
use crate::platform;
use crate::ports;
use crate::scenario::{Endpoint, Family, Holder, SockOpt};

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

/// Why `other-user` holders cannot run here, if so.
pub const NO_OTHER_USER: &str =
    "other-user needs root: the holder process switches to the unprivileged user nobody";

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
fn v6only_default() -> Option<bool> {
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

fn yes_no(b: bool) -> String {
    if b { "yes" } else { "no" }.into()
}

/// The header: every fact that changes the answers, in display order.
pub fn facts() -> Vec<(&'static str, String)> {
    let caps = capabilities();
    let mut facts = vec![(
        "os",
        format!("{} ({})", platform::OS, std::env::consts::ARCH),
    )];
    facts.extend(platform::facts());
    let unsupported: Vec<_> = SockOpt::ALL
        .iter()
        .filter(|o| !platform::supports(**o))
        .map(|o| o.name())
        .collect();
    facts.extend([
        (
            "IPV6_V6ONLY default",
            match v6only_default() {
                Some(true) => "on".into(),
                Some(false) => "off".into(),
                None => "unknown".into(),
            },
        ),
        ("127.0.0.2 usable", yes_no(caps.loopback2)),
        ("::1 usable", yes_no(caps.ipv6)),
        ("privileged", yes_no(caps.privileged)),
        (
            "options not on this platform",
            if unsupported.is_empty() {
                "none".into()
            } else {
                unsupported.join(", ")
            },
        ),
        ("state verification", platform::STATE_CHECK.into()),
        ("ports used by the harness", ports::pool().describe()),
    ]);
    facts
}
