//! FreeBSD (and, with its own cross-user rule, macOS): the BSD bind check
//! of `in_pcbbind_setup` / `in6_pcbbind` (sys/netinet/in_pcb.c,
//! sys/netinet6/in6_pcb.c). Not recorded yet: checked against the facts
//! of FreeBSD's own tests/sys/netinet/socket_afinet.c (`FACTS`).

use super::{both, lacking, Addr, Answer, Fact, Prediction, Rule, Why};
use crate::scenario::{Case, Holder, Proto, SockOpt, State};

pub static NO_EXCLUSIVE: Rule = Rule {
    name: "no-such-option",
    says: "SO_EXCLUSIVEADDRUSE is Windows only: the case is unsupported",
    source: "setsockopt(2) on FreeBSD lists SO_REUSEADDR, SO_REUSEPORT, SO_REUSEPORT_LB",
};
pub static NO_REUSE_LOOKS_WIDE: Rule = Rule {
    name: "no-option-looks-wide",
    says: "a bind without SO_REUSEADDR/SO_REUSEPORT meets every socket on the port whose address overlaps, wildcards included, connected or not",
    source: "in_pcbbind_setup: lookupflags = INPLOOKUP_WILDCARD when no SO_REUSE* is set; in_pcblookup_local; socket_afinet.c bind_connected_port_test",
};
pub static REUSE_LOOKS_EXACT: Rule = Rule {
    name: "reuse-option-looks-exact",
    says: "with SO_REUSEADDR or SO_REUSEPORT on the new socket, only an unconnected socket on exactly the same address counts: wildcards and connections no longer block",
    source: "in_pcblookup_local without INPLOOKUP_WILDCARD (inp_faddr == INADDR_ANY && inp_laddr == laddr)",
};
pub static REUSEPORT_BOTH: Rule = Rule {
    name: "reuseport-on-both",
    says: "SO_REUSEPORT (or SO_REUSEPORT_LB) on both sockets lets them bind the same address; SO_REUSEADDR alone never does",
    source: "in_pcbbind_setup: (reuseport & inp_so_options(t)) == 0 -> EADDRINUSE; socket_afinet.c multibind_test",
};
pub static IN_USE: Rule = Rule {
    name: "in-use",
    says: "a socket the lookup finds, without the same SO_REUSEPORT option, makes bind() fail with EADDRINUSE",
    source: "in_pcbbind_setup, in6_pcbbind",
};
pub static NO_OVERLAP: Rule = Rule {
    name: "no-overlap",
    says: "sockets on different addresses of one family, or a V6ONLY socket and an IPv4 one, never meet",
    source: "in_pcblookup_local, in6_pcblookup_local (INP_IPV4 / INP_IPV6 vflags)",
};
pub static OTHER_OWNER: Rule = Rule {
    name: "owner-must-match",
    says: "an unprivileged user never shares an address with another user's socket, whatever the options; a TCP connection is spared (its 4-tuple is unique), a connected UDP socket is not",
    source: "in_pcbbind_setup: cr_uid check (priv_check_cred PRIV_NETINET_REUSEPORT); socket_afinet.c multibind_test and bind_connected_port_test",
};
pub static LISTEN_NO_CHECK: Rule = Rule {
    name: "listen-does-not-check",
    says: "listen() on a bound socket does not look at the port again",
    source: "tcp_usr_listen: in_pcbbind only when inp_lport == 0",
};
pub static CLOSED_FREES: Rule = Rule {
    name: "close-frees-the-port",
    says: "a socket closed before it connected leaves nothing on the port",
    source: "tcp_usr_detach -> in_pcbfree",
};
pub static CONNECTION_NARROWS: Rule = Rule {
    name: "connection-narrows",
    says: "a connection moves a wildcard-bound socket onto the local address the peer reached",
    source: "in_pcbconnect_setup / in6_pcbconnect: inp_laddr set from the route's source address",
};

pub static RULES: &[&Rule] = &[
    &NO_EXCLUSIVE,
    &NO_REUSE_LOOKS_WIDE,
    &REUSE_LOOKS_EXACT,
    &REUSEPORT_BOTH,
    &IN_USE,
    &NO_OVERLAP,
    &OTHER_OWNER,
    &LISTEN_NO_CHECK,
    &CLOSED_FREES,
    &CONNECTION_NARROWS,
    &WILDCARD_FAMILIES,
];

/// Which BSD: FreeBSD, or XNU (macOS) with its own cross-user rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flavor {
    FreeBsd,
    Xnu,
}

/// One protocol control block on the port.
#[derive(Clone, Copy, Debug)]
struct Pcb {
    addr: Addr,
    inet6: bool,
    v6only: bool,
    connected: bool,
    reuseport: bool,
    reuseport_lb: bool,
}

impl Pcb {
    fn of(spec: &crate::scenario::SocketSpec) -> Pcb {
        Pcb {
            addr: Addr::of(&spec.endpoint),
            inet6: spec.endpoint.ip.is_ipv6(),
            v6only: spec.endpoint.v6only == Some(true),
            connected: false,
            reuseport: spec.options.has(SockOpt::ReusePort),
            reuseport_lb: spec.options.has(SockOpt::ReusePortLb),
        }
    }

    fn connected(mut self, case: &Case) -> Pcb {
        self.connected = true;
        if self.addr.wildcard {
            self.addr.wildcard = false;
            self.addr.key = super::connection_local_ip(case);
        }
        self
    }

    /// Its place in the IPv4 space (wildcard?, address), if any: AF_INET
    /// and v4-mapped sockets, and a dual-stack `::`.
    fn v4(&self) -> Option<(bool, std::net::IpAddr)> {
        if self.addr.v4_space {
            Some((self.addr.wildcard, self.addr.key))
        } else if self.addr.wildcard && !self.v6only {
            Some((true, std::net::Ipv4Addr::UNSPECIFIED.into()))
        } else {
            None
        }
    }

    fn v6(&self) -> Option<(bool, std::net::IpAddr)> {
        (!self.addr.v4_space).then_some((self.addr.wildcard, self.addr.key))
    }
}

/// Whether binder `a` meets `t`: in the IPv4 space (AF_INET, v4-mapped
/// and a dual-stack `::`) or the IPv6 one. `wide` lets a wildcard cover a
/// specific address; otherwise only the same address counts. Two IPv4
/// wildcards of different kinds may stay apart (`Bsd::families`).
fn meet(bsd: &Bsd, a: &Pcb, t: &Pcb, wide: bool, why: &mut Why) -> bool {
    let v4 = match (a.v4(), t.v4()) {
        (Some((aw, ak)), Some((tw, tk))) => {
            let apart = aw
                && tw
                && match bsd.flavor {
                    // in6_pcbbind's IPv4 check (a dual-stack binder):
                    // INP_SOCKAF(so) == INP_SOCKAF(t->inp_socket);
                    // in_pcbbind_setup: both INP_IPV6PROTO.
                    Flavor::FreeBsd if !a.addr.v4_space => !t.inet6,
                    Flavor::FreeBsd => a.inet6 && t.inet6,
                    // XNU in_pcbbind and in6_pcbbind: INP_SOCKAF differs.
                    Flavor::Xnu => a.inet6 != t.inet6,
                };
            if apart {
                why.say(bsd.families);
            }
            !apart && (ak == tk || (wide && (aw || tw)))
        }
        _ => false,
    };
    let v6 = match (a.v6(), t.v6()) {
        (Some((aw, ak)), Some((tw, tk))) => ak == tk || (wide && (aw || tw)),
        _ => false,
    };
    v4 || v6
}

/// The sockets the first socket's state leaves on the port.
fn first_pcbs(case: &Case, why: &mut Why) -> Vec<Pcb> {
    let first = Pcb::of(&case.first);
    let ep = &case.first.endpoint;
    let conn = |why: &mut Why| {
        if ep.is_wildcard() {
            why.say(&CONNECTION_NARROWS);
        }
        first.connected(case)
    };
    match case.state {
        State::Bound | State::BoundThenListen | State::Listening => vec![first],
        State::ListeningWithBacklog => vec![first, conn(why)],
        State::Closed => {
            why.say(&CLOSED_FREES);
            Vec::new()
        }
        _ => vec![conn(why)],
    }
}

/// What differs between the BSD models.
pub struct Bsd {
    pub flavor: Flavor,
    pub supported: &'static [SockOpt],
    pub no_option: &'static Rule,
    pub owner: &'static Rule,
    pub families: &'static Rule,
}

/// The BSD model's answer for `case`.
pub fn predict_bsd(bsd: &Bsd, case: &Case) -> Prediction {
    let mut why = Why::default();
    if lacking(case, bsd.supported).is_some() {
        why.say(bsd.no_option);
        return why.answer(Answer::Unsupported);
    }
    let others = first_pcbs(case, &mut why);
    let new = Pcb::of(&case.second);
    let opts = case.second.options;
    let wide = !(opts.has(SockOpt::ReuseAddr)
        || opts.has(SockOpt::ReusePort)
        || opts.has(SockOpt::ReusePortLb));
    let mut bind = Ok(());
    for t in &others {
        if case.holder == Holder::OtherUser {
            let seen = match bsd.flavor {
                // in_pcbbind_setup: a TCP connection (unique 4-tuple) is
                // spared; a connected UDP socket is not.
                Flavor::FreeBsd => {
                    (case.proto == Proto::Udp || !t.connected) && meet(bsd, &new, t, true, &mut why)
                }
                // XNU in_pcbbind: so_uid check, sparing two wildcards when
                // the first has SO_REUSEPORT.
                Flavor::Xnu => {
                    meet(bsd, &new, t, true, &mut why)
                        && !(new.addr.wildcard && t.addr.wildcard && t.reuseport)
                }
            };
            if seen {
                why.say(bsd.owner);
                bind = Err("EADDRINUSE");
                break;
            }
        }
        why.say(if wide {
            &NO_REUSE_LOOKS_WIDE
        } else {
            &REUSE_LOOKS_EXACT
        });
        let found = if wide {
            meet(bsd, &new, t, true, &mut why)
        } else {
            !t.connected && meet(bsd, &new, t, false, &mut why)
        };
        if !found {
            why.say(&NO_OVERLAP);
            continue;
        }
        if (both(case, SockOpt::ReusePort) && t.reuseport)
            || (both(case, SockOpt::ReusePortLb) && t.reuseport_lb)
        {
            why.say(&REUSEPORT_BOTH);
            continue;
        }
        why.say(&IN_USE);
        bind = Err("EADDRINUSE");
        break;
    }
    why.answer_listen_unchecked(case.proto, bind, &LISTEN_NO_CHECK)
}

pub static WILDCARD_FAMILIES: Rule = Rule {
    name: "ipv4-wildcards-of-two-kinds",
    says: "two IPv4 wildcards stay apart when a dual-stack :: binds over 0.0.0.0 (not the other way round), and when both are IPv6 sockets (::ffff:0.0.0.0 and ::)",
    source: "in6_pcbbind: INP_SOCKAF(so) == INP_SOCKAF(t->inp_socket); in_pcbbind_setup: (inp_vflag & INP_IPV6PROTO) on both",
};

/// The FreeBSD model's answer for `case`.
pub fn predict(case: &Case) -> Prediction {
    predict_bsd(
        &Bsd {
            flavor: Flavor::FreeBsd,
            supported: &[SockOpt::ReuseAddr, SockOpt::ReusePort, SockOpt::ReusePortLb],
            no_option: &NO_EXCLUSIVE,
            owner: &OTHER_OWNER,
            families: &WILDCARD_FAMILIES,
        },
        case,
    )
}

const MULTIBIND: &str = "tests/sys/netinet/socket_afinet.c, multibind_test";
const CONNECTED: &str = "tests/sys/netinet/socket_afinet.c, bind_connected_port_test";

/// FreeBSD's own tests, as cases of the matrix.
const GO: &str = "Go src/net/listen_test.go, dualStackTCPListenerTests / dualStackUDPListenerTests (Go sets SO_REUSEADDR on TCP listeners; \"tcp\" wildcards listen on a dual-stack ::, \"tcp6\" on a V6ONLY one)";

/// Go's dual-stack listener tables, which hold for darwin, freebsd and
/// linux alike.
pub const GO_FACTS: &[Fact] = &[
    Fact {
        case: "tcp listening ::/dual+reuseaddr ::/dual+reuseaddr",
        cell: "EADDRINUSE",
        source: GO,
    },
    Fact {
        case: "tcp listening 0.0.0.0+reuseaddr ::/v6only+reuseaddr",
        cell: "ok/ok",
        source: GO,
    },
    Fact {
        case: "tcp listening ::/v6only+reuseaddr 0.0.0.0+reuseaddr",
        cell: "ok/ok",
        source: GO,
    },
    Fact {
        case: "tcp listening 127.0.0.1+reuseaddr ::1/dual+reuseaddr",
        cell: "ok/ok",
        source: GO,
    },
    Fact {
        case: "tcp listening ::1/dual+reuseaddr 127.0.0.1+reuseaddr",
        cell: "ok/ok",
        source: GO,
    },
    Fact {
        case: "tcp listening 127.0.0.1+reuseaddr ::1/v6only+reuseaddr",
        cell: "ok/ok",
        source: GO,
    },
    Fact {
        case: "udp bound ::/dual ::/dual",
        cell: "EADDRINUSE",
        source: GO,
    },
    Fact {
        case: "udp bound 0.0.0.0 ::/v6only",
        cell: "ok",
        source: GO,
    },
    Fact {
        case: "udp bound ::/v6only 0.0.0.0",
        cell: "ok",
        source: GO,
    },
    Fact {
        case: "udp bound 127.0.0.1 ::1/dual",
        cell: "ok",
        source: GO,
    },
    Fact {
        case: "udp bound ::1/dual 127.0.0.1",
        cell: "ok",
        source: GO,
    },
];

pub const FACTS: &[Fact] = &[
    Fact {
        case: "tcp bound 127.0.0.1 127.0.0.1",
        cell: "EADDRINUSE",
        source: MULTIBIND,
    },
    Fact {
        case: "tcp bound 127.0.0.1+reuseport 127.0.0.1+reuseport",
        cell: "ok/ok",
        source: MULTIBIND,
    },
    Fact {
        case: "tcp bound 0.0.0.0+reuseport_lb 0.0.0.0+reuseport_lb",
        cell: "ok/ok",
        source: MULTIBIND,
    },
    Fact {
        case: "tcp bound ::1/v6only+reuseaddr ::1/v6only+reuseaddr",
        cell: "EADDRINUSE",
        source: MULTIBIND,
    },
    Fact {
        case: "udp bound 127.0.0.1+reuseaddr 127.0.0.1+reuseaddr",
        cell: "EADDRINUSE",
        source: MULTIBIND,
    },
    Fact {
        case: "udp bound ::/v6only+reuseport ::/v6only+reuseport",
        cell: "ok",
        source: MULTIBIND,
    },
    Fact {
        case: "tcp bound 127.0.0.1+reuseport 127.0.0.1+reuseport_lb",
        cell: "EADDRINUSE",
        source: MULTIBIND,
    },
    Fact {
        case: "tcp bound 127.0.0.1+reuseport 127.0.0.1+reuseport other-user",
        cell: "EADDRINUSE",
        source: MULTIBIND,
    },
    Fact {
        case: "udp bound 0.0.0.0+reuseport 0.0.0.0+reuseport other-user",
        cell: "EADDRINUSE",
        source: MULTIBIND,
    },
    Fact {
        case: "tcp established 0.0.0.0 0.0.0.0",
        cell: "EADDRINUSE",
        source: CONNECTED,
    },
    Fact {
        case: "tcp established ::/v6only ::/v6only other-user",
        cell: "EADDRINUSE",
        source: CONNECTED,
    },
];
