//! Linux: the kernel's own bind-conflict logic, step by step, on the
//! sockets a case leaves on the port. Function names are those of
//! net/ipv4/inet_connection_sock.c, net/ipv4/inet_hashtables.c and
//! net/ipv4/udp.c; the reference line is 6.18 (the committed
//! `snapshots/linux/`), and `LinuxLine::V6_1` lists where 6.1 differs.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::{Answer, LinuxLine, Prediction, Rule, Why};
use crate::scenario::{Case, Endpoint, Holder, Proto, SockOpt, State};

macro_rules! rules {
    ($($id:ident = $name:literal, $says:literal, $source:literal;)*) => {
        $(pub static $id: Rule = Rule { name: $name, says: $says, source: $source };)*
        /// Every rule of the Linux model (both lines).
        pub static RULES: &[&Rule] = &[$(&$id,)*];
    };
}

rules! {
    NOT_ON_LINUX = "no-such-option",
        "SO_EXCLUSIVEADDRUSE (Windows) and SO_REUSEPORT_LB (FreeBSD) do not exist on Linux: the case is unsupported",
        "socket(7): the SOL_SOCKET options Linux has";
    CLOSED_FREES = "close-frees-the-port",
        "a socket that is closed before it ever connected leaves nothing on the port",
        "inet_release -> tcp_close -> inet_put_port (net/ipv4/inet_hashtables.c)";
    ACCEPTED_INHERITS = "accepted-inherits",
        "an accepted connection holds the listener's port after the listener is closed, with the listener's options and owner",
        "inet_csk_clone_lock (sk_clone_lock copies sk_reuse, sk_reuseport, sk_uid), __inet_inherit_port";
    CONNECTION_NARROWS = "connection-narrows",
        "a connection moves a wildcard-bound socket onto the local address the peer reached (127.0.0.1, ::ffff:127.0.0.1 or ::1); an IPv6 socket keeps its V6ONLY value and gets a placeholder IPv4 address",
        "tcp_v6_syn_recv_sock, tcp_v6_connect, ip6_datagram_dst_update (inet_rcv_saddr = LOOPBACK4_IPV6), ip4_datagram_connect";
    TIMEWAIT_KEEPS = "time-wait-keeps-options",
        "a TIME_WAIT socket, and the FIN_WAIT2 mini-socket a closed connection becomes, keeps the address and the SO_REUSEADDR/SO_REUSEPORT of the socket it came from",
        "inet_twsk_alloc (tw_reuse, tw_reuseport, tw_ipv6only); tcp_close -> tcp_time_wait(sk, TCP_FIN_WAIT2, tmo)";
    SPECIFIC_V6_IS_V6ONLY = "specific-ipv6-is-v6only",
        "bind() to a specific IPv6 address (not :: and not v4-mapped) sets IPV6_V6ONLY, whatever was asked",
        "__inet6_bind: if (addr_type != IPV6_ADDR_MAPPED) sk->sk_ipv6only = 1";
    SAME_ADDRESS = "same-address",
        "two sockets on the same address meet (an IPv4 address and its v4-mapped form are one address)",
        "inet_bind2_bucket_addr_match, inet_bhash2_conflict (net/ipv4/inet_connection_sock.c)";
    WILDCARD_COVERS = "wildcard-covers",
        "a wildcard meets the addresses it covers: 0.0.0.0 and ::ffff:0.0.0.0 cover IPv4 and v4-mapped addresses; :: covers IPv6 and, unless V6ONLY, IPv4",
        "inet_bhash2_addr_any_conflict + inet_bind2_bucket_match_addr_any (a specific binder), inet_rcv_saddr_equal (a wildcard binder)";
    V6ONLY_SEPARATES = "v6only-separates",
        "a V6ONLY socket never meets an IPv4 or v4-mapped one",
        "__inet_bhash2_conflict, ipv6_rcv_saddr_equal, ipv4_rcv_saddr_equal (sk2_ipv6only)";
    PLACEHOLDER_MEETS_ANY4 = "ipv4-wildcard-meets-narrowed-dual-socket",
        "0.0.0.0 still meets a dual-stack socket a connection narrowed to ::1: it compares only the socket's placeholder IPv4 address, and 0.0.0.0 matches any",
        "ipv4_rcv_saddr_equal (match_sk1_wildcard && !sk1_rcv_saddr) after inet_rcv_saddr = LOOPBACK4_IPV6";
    DIFFERENT_ADDRESSES = "different-addresses",
        "sockets on different addresses, neither covering the other, never meet",
        "inet_bhash2_conflict only scans the binder's own address and the wildcards (inet_use_bhash2_on_bind), inet_rcv_saddr_equal";
    REUSEADDR_SHARES = "reuseaddr-shares",
        "TCP: SO_REUSEADDR on both sockets lets them share the port, unless the socket already there listens",
        "inet_bind_conflict: sk->sk_reuse && sk2->sk_reuse && sk2->sk_state != TCP_LISTEN";
    REUSEADDR_NOT_WITH_LISTENER = "reuseaddr-not-with-a-listener",
        "TCP: SO_REUSEADDR does not share with a socket that listens",
        "inet_bind_conflict: sk2->sk_state != TCP_LISTEN";
    REUSEPORT_SAME_UID = "reuseport-same-uid",
        "SO_REUSEPORT on both sockets lets them share when both belong to the same effective uid",
        "inet_bind_conflict (uid_eq(sk_uid, sock_i_uid(sk2))), udp_lib_lport_inuse; socket(7) SO_REUSEPORT";
    REUSEPORT_TIMEWAIT_ANY_UID = "reuseport-time-wait-any-uid",
        "TCP: SO_REUSEPORT on both shares with a TIME_WAIT (or FIN_WAIT2 mini-) socket whoever owned it: the uid is not checked",
        "inet_bind_conflict: sk2->sk_state == TCP_TIME_WAIT || uid_eq(...)";
    REUSEPORT_OTHER_UID = "reuseport-needs-same-uid",
        "SO_REUSEPORT on both does not share across effective uids (other-user)",
        "inet_bind_conflict, udp_lib_lport_inuse: uid_eq(uid, sock_i_uid(sk2))";
    IN_USE = "in-use",
        "a socket that meets the new one and shares by neither option makes the call fail with EADDRINUSE",
        "inet_csk_get_port -> inet_csk_bind_conflict; udp_lib_get_port -> udp_lib_lport_inuse";
    LISTEN_RECHECKS = "listen-checks-again",
        "TCP listen() checks the port again, as a listening socket, against every socket there at that moment",
        "inet_csk_listen_start -> inet_csk_get_port (reuse = sk_reuse && sk_state != TCP_LISTEN)";
    UDP_REUSEADDR_SHARES = "udp-reuseaddr-shares",
        "UDP: SO_REUSEADDR on both sockets lets them share the port, whoever owns them, connected or not",
        "udp_lib_lport_inuse: (!sk2->sk_reuse || !sk->sk_reuse)";
    MAPPED_WILDCARD_MISSED = "6.1-misses-mapped-wildcard",
        "6.1: a socket on a specific v4-mapped address does not see one on ::ffff:0.0.0.0 (only :: and 0.0.0.0 count as wildcards for it)",
        "inet_bind2_bucket_match_addr_any in 6.1 stable (ipv6_addr_any only, before \"tcp: Save address type in inet_bind2_bucket\")";
}

/// The rules a line can fire.
pub fn rules(line: LinuxLine) -> Vec<&'static Rule> {
    (RULES.iter().copied())
        .filter(|r| line == LinuxLine::V6_1 || !std::ptr::eq(*r, &MAPPED_WILDCARD_MISSED))
        .collect()
}

const EADDRINUSE: &str = "EADDRINUSE";
/// The IPv4 address Linux gives an IPv6 socket on a non-mapped address.
const LOOPBACK4_IPV6: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 6);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Bound,
    Listen,
    Connection,
    /// TIME_WAIT, or the FIN_WAIT2 mini-socket (also `sk_state == TCP_TIME_WAIT`).
    TimeWait,
}

/// A socket as the bind-conflict code sees it.
#[derive(Clone, Copy, Debug)]
struct Sock {
    inet6: bool,
    /// `sk_v6_rcv_saddr` (AF_INET sockets: the v4-mapped form, as in bhash2).
    addr6: Ipv6Addr,
    /// `sk_rcv_saddr`.
    addr4: Ipv4Addr,
    v6only: bool,
    /// V6ONLY was set by bind() to a specific IPv6 address, not asked for.
    v6only_forced: bool,
    /// A connection moved it off a wildcard.
    narrowed: bool,
    kind: Kind,
    reuseaddr: bool,
    reuseport: bool,
    /// The effective uid: same-process and other-process run as one user.
    other_user: bool,
}

#[derive(PartialEq)]
enum AddrType {
    Any,
    Mapped,
    Unicast,
}

fn addr_type(a: &Ipv6Addr) -> AddrType {
    if a.is_unspecified() {
        AddrType::Any
    } else if a.to_ipv4_mapped().is_some() {
        AddrType::Mapped
    } else {
        AddrType::Unicast
    }
}

impl Sock {
    /// A socket bound to `endpoint` (`__inet6_bind`, `__inet_bind`).
    fn bound(endpoint: &Endpoint, options: crate::scenario::Options, kind: Kind) -> Sock {
        let (inet6, addr6, addr4, v6only, forced) = match endpoint.ip {
            IpAddr::V4(v4) => (false, v4.to_ipv6_mapped(), v4, false, false),
            IpAddr::V6(v6) => {
                let asked = endpoint.v6only.unwrap_or(false);
                match (addr_type(&v6), v6.to_ipv4_mapped()) {
                    (AddrType::Any, _) => (true, v6, Ipv4Addr::UNSPECIFIED, asked, false),
                    (AddrType::Mapped, Some(v4)) => (true, v6, v4, false, false),
                    _ => (true, v6, LOOPBACK4_IPV6, true, !asked),
                }
            }
        };
        Sock {
            inet6,
            addr6,
            addr4,
            v6only,
            v6only_forced: forced,
            narrowed: false,
            kind,
            reuseaddr: options.has(SockOpt::ReuseAddr),
            reuseport: options.has(SockOpt::ReusePort),
            other_user: false,
        }
    }

    /// The same socket after a connection on it: a wildcard becomes the
    /// local address the peer reached.
    fn connected(mut self, case: &Case, kind: Kind) -> Sock {
        self.kind = kind;
        if case.first.endpoint.is_wildcard() {
            self.narrowed = true;
            match super::connection_local_ip(case) {
                IpAddr::V4(v4) => {
                    self.addr4 = v4;
                    self.addr6 = v4.to_ipv6_mapped();
                }
                IpAddr::V6(v6) => {
                    self.addr6 = v6;
                    self.addr4 = LOOPBACK4_IPV6;
                }
            }
        }
        self
    }

    fn is_wildcard(&self) -> bool {
        if self.inet6 {
            addr_type(&self.addr6) == AddrType::Any
                || (addr_type(&self.addr6) == AddrType::Mapped && self.addr4.is_unspecified())
        } else {
            self.addr4.is_unspecified()
        }
    }

    /// Whether it lives in the IPv4 space: AF_INET or v4-mapped.
    fn ipv4ish(&self) -> bool {
        !self.inet6 || addr_type(&self.addr6) == AddrType::Mapped
    }
}

/// `inet_use_bhash2_on_bind`: a binder on a specific address checks only
/// its own address and the wildcards; a wildcard binder checks everyone.
fn use_bhash2_on_bind(sk: &Sock) -> bool {
    if sk.inet6 {
        match addr_type(&sk.addr6) {
            AddrType::Any => return false,
            AddrType::Unicast => return true,
            AddrType::Mapped => {}
        }
    }
    !sk.addr4.is_unspecified()
}

/// `inet_bind2_bucket_match_addr_any`: whether `tb` (a socket's bucket)
/// counts as a wildcard for binder `sk`.
fn match_addr_any(line: LinuxLine, tb: &Sock, sk: &Sock) -> bool {
    match line {
        LinuxLine::Reference => {
            let tb_type = if tb.inet6 {
                addr_type(&tb.addr6)
            } else {
                AddrType::Mapped
            };
            match tb_type {
                AddrType::Any => true,
                AddrType::Unicast => false,
                AddrType::Mapped => {
                    !(sk.inet6 && addr_type(&sk.addr6) != AddrType::Mapped)
                        && tb.addr4.is_unspecified()
                }
            }
        }
        LinuxLine::V6_1 => match (sk.inet6, tb.inet6) {
            (false, true) => {
                tb.addr6.is_unspecified() || tb.addr6 == Ipv4Addr::UNSPECIFIED.to_ipv6_mapped()
            }
            (true, false) => addr_type(&sk.addr6) == AddrType::Mapped && tb.addr4.is_unspecified(),
            (true, true) => tb.addr6.is_unspecified(),
            (false, false) => tb.addr4.is_unspecified(),
        },
    }
}

fn ipv4_rcv_saddr_equal(a1: Ipv4Addr, a2: Ipv4Addr, sk2_ipv6only: bool) -> bool {
    !sk2_ipv6only && (a1 == a2 || a1.is_unspecified() || a2.is_unspecified())
}

/// `inet_rcv_saddr_equal(sk, sk2, true)`.
fn rcv_saddr_equal(sk: &Sock, sk2: &Sock) -> bool {
    if !sk.inet6 {
        return ipv4_rcv_saddr_equal(sk.addr4, sk2.addr4, sk2.v6only);
    }
    // ipv6_rcv_saddr_equal; an AF_INET sk2 has no IPv6 address and counts as mapped.
    let t1 = addr_type(&sk.addr6);
    let t2 = if sk2.inet6 {
        addr_type(&sk2.addr6)
    } else {
        AddrType::Mapped
    };
    if t1 == AddrType::Mapped && t2 == AddrType::Mapped {
        return ipv4_rcv_saddr_equal(sk.addr4, sk2.addr4, sk2.v6only);
    }
    // The kernel's first test, both `::`, is covered by the next line.
    (t2 == AddrType::Any && !(sk2.v6only && t1 == AddrType::Mapped))
        || (t1 == AddrType::Any && !(sk.v6only && t2 == AddrType::Mapped))
        || (sk2.inet6 && sk.addr6 == sk2.addr6)
}

/// Whether binder `sk` meets `sk2` on the port, and the rule that says so.
fn meets(line: LinuxLine, proto: Proto, sk: &Sock, sk2: &Sock) -> (bool, &'static Rule) {
    let v6only_rule = |sk2: &Sock| {
        if sk.v6only_forced || sk2.v6only_forced {
            &SPECIFIC_V6_IS_V6ONLY
        } else {
            &V6ONLY_SEPARATES
        }
    };
    if proto == Proto::Tcp && use_bhash2_on_bind(sk) {
        // inet_bhash2_addr_any_conflict, then inet_bhash2_conflict on
        // the binder's own bucket; __inet_bhash2_conflict skips V6ONLY
        // sockets for an IPv4 or v4-mapped binder.
        let same = sk.addr6 == sk2.addr6;
        let wildcard = !same && match_addr_any(line, sk2, sk);
        if (same || wildcard) && sk2.v6only && sk.ipv4ish() {
            return (false, v6only_rule(sk2));
        }
        if same {
            return (true, &SAME_ADDRESS);
        }
        if wildcard {
            return (true, &WILDCARD_COVERS);
        }
        if match_addr_any(LinuxLine::Reference, sk2, sk) {
            return (false, &MAPPED_WILDCARD_MISSED);
        }
        return (false, &DIFFERENT_ADDRESSES);
    }
    // A wildcard TCP binder, and every UDP binder (udp_lib_lport_inuse):
    // the address comparison of the whole port.
    if rcv_saddr_equal(sk, sk2) {
        let rule = if !sk.inet6 && sk2.inet6 && sk2.narrowed && !sk2.ipv4ish() {
            &PLACEHOLDER_MEETS_ANY4
        } else if sk.addr6 == sk2.addr6 || (!sk.is_wildcard() && !sk2.is_wildcard()) {
            &SAME_ADDRESS
        } else {
            &WILDCARD_COVERS
        };
        return (true, rule);
    }
    let (mut a, mut b) = (*sk, *sk2);
    a.v6only = false;
    b.v6only = false;
    if rcv_saddr_equal(&a, &b) {
        (false, v6only_rule(sk2))
    } else {
        (false, &DIFFERENT_ADDRESSES)
    }
}

/// `inet_bind_conflict` / `udp_lib_lport_inuse` for two sockets that
/// meet: the rule that lets them share, or `None`.
fn shares(proto: Proto, sk: &Sock, sk2: &Sock, why: &mut Why) -> Option<&'static Rule> {
    let same_uid = sk.other_user == sk2.other_user;
    if proto == Proto::Udp {
        if sk.reuseaddr && sk2.reuseaddr {
            return Some(&UDP_REUSEADDR_SHARES);
        }
        if sk.reuseport && sk2.reuseport {
            if same_uid {
                return Some(&REUSEPORT_SAME_UID);
            }
            why.say(&REUSEPORT_OTHER_UID);
        }
        return None;
    }
    if sk.reuseaddr && sk2.reuseaddr {
        if sk2.kind != Kind::Listen {
            return Some(&REUSEADDR_SHARES);
        }
        why.say(&REUSEADDR_NOT_WITH_LISTENER);
    }
    if sk.reuseport && sk2.reuseport {
        if sk2.kind == Kind::TimeWait {
            return Some(&REUSEPORT_TIMEWAIT_ANY_UID);
        }
        if same_uid {
            return Some(&REUSEPORT_SAME_UID);
        }
        why.say(&REUSEPORT_OTHER_UID);
    }
    None
}

/// Whether `sk` binding (or listening) finds a conflict among `others`.
fn conflicts(line: LinuxLine, proto: Proto, sk: &Sock, others: &[Sock], why: &mut Why) -> bool {
    for sk2 in others {
        let (meet, rule) = meets(line, proto, sk, sk2);
        why.say(rule);
        if !meet {
            continue;
        }
        match shares(proto, sk, sk2, why) {
            Some(rule) => why.say(rule),
            None => {
                why.say(&IN_USE);
                return true;
            }
        }
    }
    false
}

/// The sockets the first socket's state leaves on the port.
fn first_sockets(case: &Case, why: &mut Why) -> Vec<Sock> {
    let ep = &case.first.endpoint;
    let mut first = Sock::bound(ep, case.first.options, Kind::Bound);
    first.other_user = case.holder == Holder::OtherUser;
    let narrowing = |why: &mut Why| {
        if ep.is_wildcard() {
            why.say(&CONNECTION_NARROWS);
        }
    };
    match case.state {
        State::Bound | State::BoundThenListen => vec![first],
        State::Listening => vec![Sock {
            kind: Kind::Listen,
            ..first
        }],
        State::ListeningWithBacklog => {
            narrowing(why);
            let child = first.connected(case, Kind::Connection);
            vec![
                Sock {
                    kind: Kind::Listen,
                    ..first
                },
                child,
            ]
        }
        State::Established | State::CloseWait => {
            why.say(&ACCEPTED_INHERITS);
            narrowing(why);
            vec![first.connected(case, Kind::Connection)]
        }
        State::FinWait2 | State::TimeWait => {
            why.say(&ACCEPTED_INHERITS);
            why.say(&TIMEWAIT_KEEPS);
            narrowing(why);
            vec![first.connected(case, Kind::TimeWait)]
        }
        State::TimeWaitClient => {
            why.say(&TIMEWAIT_KEEPS);
            narrowing(why);
            vec![first.connected(case, Kind::TimeWait)]
        }
        State::Closed => {
            why.say(&CLOSED_FREES);
            Vec::new()
        }
        State::Connected => {
            narrowing(why);
            vec![first.connected(case, Kind::Connection)]
        }
    }
}

/// The Linux model's answer for `case` on kernel line `line`.
pub fn predict(line: LinuxLine, case: &Case) -> Prediction {
    let mut why = Why::default();
    if super::lacking(case, &[SockOpt::ReuseAddr, SockOpt::ReusePort]).is_some() {
        why.say(&NOT_ON_LINUX);
        return why.answer(Answer::Unsupported);
    }
    let proto = case.proto;
    let mut others = first_sockets(case, &mut why);
    let mut sk = Sock::bound(&case.second.endpoint, case.second.options, Kind::Bound);
    if conflicts(line, proto, &sk, &others, &mut why) {
        return why.answer(Answer::Ran {
            bind: Err(EADDRINUSE),
            listen: None,
        });
    }
    if proto == Proto::Udp {
        return why.answer(Answer::Ran {
            bind: Ok(()),
            listen: None,
        });
    }
    why.say(&LISTEN_RECHECKS);
    if case.state == State::BoundThenListen {
        // The first socket listens now, with the second one bound.
        let mut first = others[0];
        first.kind = Kind::Listen;
        if conflicts(line, proto, &first, &[sk], &mut why) {
            return why.answer(Answer::FirstRefused {
                call: "listen",
                error: EADDRINUSE,
            });
        }
        others[0] = first;
    }
    sk.kind = Kind::Listen;
    let listen = if conflicts(line, proto, &sk, &others, &mut why) {
        Err(EADDRINUSE)
    } else {
        Ok(())
    };
    why.answer(Answer::Ran {
        bind: Ok(()),
        listen: Some(listen),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::probe;

    fn cell(line: LinuxLine, text: &str) -> String {
        let case = probe::parse(&[text.to_string()]).unwrap();
        predict(line, &case).answer.cell()
    }

    /// The kernel lab's 6.1 examples (README, "the kernel lab").
    #[test]
    fn the_6_1_line_differs_where_the_lab_saw_it() {
        for (text, reference, old) in [
            (
                "tcp listening ::ffff:0.0.0.0+reuseport ::ffff:127.0.0.1+reuseport other-user",
                "EADDRINUSE",
                "ok/ok",
            ),
            (
                "tcp bound ::ffff:0.0.0.0 ::ffff:127.0.0.1",
                "EADDRINUSE",
                "ok/ok",
            ),
            (
                "tcp bound-then-listen ::ffff:0.0.0.0+reuseaddr ::ffff:127.0.0.1+reuseaddr",
                "ok/EADDRINUSE",
                "ok/ok",
            ),
            (
                "tcp bound-then-listen ::ffff:0.0.0.0 ::ffff:127.0.0.1",
                "EADDRINUSE",
                "first-listen:EADDRINUSE",
            ),
        ] {
            assert_eq!(cell(LinuxLine::Reference, text), reference, "{text}");
            assert_eq!(cell(LinuxLine::V6_1, text), old, "{text}");
        }
    }

    /// The kernel lab ran Debian's 6.1.176 on the whole matrix (README,
    /// "the kernel lab"): 120 cases answered differently from 6.18, 30 of
    /// them `first-listen:EADDRINUSE`, every one with the first socket on
    /// ::ffff:0.0.0.0 and the second on ::ffff:127.0.0.1.
    #[test]
    fn the_6_1_line_differs_in_the_120_cases_the_lab_found() {
        let differ: Vec<Case> = crate::scenario::matrix()
            .into_iter()
            .filter(|c| {
                predict(LinuxLine::Reference, c).answer != predict(LinuxLine::V6_1, c).answer
            })
            .collect();
        let first_listen = differ
            .iter()
            .filter(|c| {
                matches!(
                    predict(LinuxLine::V6_1, c).answer,
                    Answer::FirstRefused { .. }
                )
            })
            .count();
        assert_eq!((differ.len(), first_listen), (120, 30));
        for c in &differ {
            assert_eq!(
                (
                    c.first.endpoint.to_string().as_str(),
                    c.second.endpoint.to_string().as_str()
                ),
                ("::ffff:0.0.0.0", "::ffff:127.0.0.1"),
                "{}",
                probe::format(c)
            );
        }
    }
}
