//! macOS: XNU's `in_pcbbind` (bsd/netinet/in_pcb.c), the BSD bind check
//! of `freebsd.rs` with XNU's own cross-user rule and no SO_REUSEPORT_LB.
//! Not recorded yet: checked against facts of XNU's source (`FACTS`).

use super::freebsd::{self, Bsd, Flavor};
use super::{Fact, Prediction, Rule};
use crate::scenario::{Case, SockOpt};

pub static NO_SUCH_OPTION: Rule = Rule {
    name: "no-such-option",
    says: "SO_EXCLUSIVEADDRUSE (Windows) and SO_REUSEPORT_LB (FreeBSD) do not exist on macOS: the case is unsupported",
    source: "XNU bsd/sys/socket.h: SO_REUSEADDR and SO_REUSEPORT only",
};
pub static OTHER_OWNER: Rule = Rule {
    name: "owner-must-match",
    says: "a non-root user's bind meets another user's socket on an overlapping address (connections included) and fails, unless both are wildcards and the first has SO_REUSEPORT",
    source: "XNU in_pcbbind: so->so_uid && in_pcblookup_local_and_cleanup(..., INPLOOKUP_WILDCARD), so_uid != t->inp_socket->so_uid",
};

pub static WILDCARD_FAMILIES: Rule = Rule {
    name: "ipv4-wildcards-of-two-kinds",
    says: "an AF_INET and an AF_INET6 socket on the IPv4 wildcard (0.0.0.0 and a dual-stack :: or ::ffff:0.0.0.0) stay apart, in either order",
    source: "XNU in_pcbbind and in6_pcbbind: INP_SOCKAF(so) == INP_SOCKAF(t->inp_socket) for two INADDR_ANY sockets",
};

pub static RULES: &[&Rule] = &[
    &NO_SUCH_OPTION,
    &freebsd::NO_REUSE_LOOKS_WIDE,
    &freebsd::REUSE_LOOKS_EXACT,
    &freebsd::REUSEPORT_BOTH,
    &freebsd::IN_USE,
    &freebsd::NO_OVERLAP,
    &OTHER_OWNER,
    &freebsd::LISTEN_NO_CHECK,
    &freebsd::CLOSED_FREES,
    &freebsd::CONNECTION_NARROWS,
    &WILDCARD_FAMILIES,
];

/// The macOS model's answer for `case`.
pub fn predict(case: &Case) -> Prediction {
    freebsd::predict_bsd(
        &Bsd {
            flavor: Flavor::Xnu,
            supported: &[SockOpt::ReuseAddr, SockOpt::ReusePort],
            no_option: &NO_SUCH_OPTION,
            owner: &OTHER_OWNER,
            families: &WILDCARD_FAMILIES,
        },
        case,
    )
}

const IN_PCBBIND: &str = "XNU bsd/netinet/in_pcb.c, in_pcbbind";

/// Facts of XNU's source, as cases of the matrix.
pub const FACTS: &[Fact] = &[
    Fact { case: "tcp bound 127.0.0.1 127.0.0.1", cell: "EADDRINUSE", source: IN_PCBBIND },
    Fact { case: "tcp bound 127.0.0.1+reuseport 127.0.0.1+reuseport", cell: "ok/ok", source: IN_PCBBIND },
    Fact { case: "tcp listening 0.0.0.0 127.0.0.1+reuseaddr", cell: "ok/ok", source: "XNU in_pcbbind: wild = 0 with SO_REUSEADDR (exact lookup)" },
    Fact { case: "tcp listening 0.0.0.0 127.0.0.1", cell: "EADDRINUSE", source: "XNU in_pcbbind: INPLOOKUP_WILDCARD without SO_REUSE*" },
    Fact { case: "tcp bound ::/dual 0.0.0.0", cell: "ok/ok", source: "XNU in_pcbbind: INP_SOCKAF(so) != INP_SOCKAF(t->inp_socket) for two wildcards" },
    Fact { case: "tcp bound 0.0.0.0+reuseport 0.0.0.0+reuseport other-user", cell: "ok/ok", source: "XNU in_pcbbind: so_uid check spares two wildcards when t has SO_REUSEPORT" },
    Fact { case: "tcp bound 127.0.0.1+reuseport 127.0.0.1+reuseport other-user", cell: "EADDRINUSE", source: "XNU in_pcbbind: so_uid != t->inp_socket->so_uid" },
    Fact { case: "udp bound 127.0.0.1+reuseaddr 127.0.0.1+reuseaddr", cell: "EADDRINUSE", source: "XNU in_pcbbind: (reuseport & t->inp_socket->so_options) == 0; SO_REUSEADDR counts only for multicast" },
];
