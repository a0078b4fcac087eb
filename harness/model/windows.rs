//! Windows: Microsoft's table of what a second bind gets, by each
//! socket's option (none, SO_REUSEADDR, SO_EXCLUSIVEADDRUSE) and address
//! (wildcard or specific). Not recorded yet: checked against the facts of
//! Microsoft's documentation (`FACTS`).

use super::{lacking, Addr, Answer, Fact, Prediction, Rule, Step, Why};
use crate::scenario::{Case, Holder, SockOpt, SocketSpec, State};

const WINE: &str = "Wine dlls/ws2_32/tests/sock.c, test_reuseaddr (its expectations are Windows' answers; todo_wine marks Wine's own gaps)";
const MS_DOC: &str = "Microsoft, \"Using SO_REUSEADDR and SO_EXCLUSIVEADDRUSE\" (Winsock) and \"Sharing Transport Addresses\" (WSK): the second-bind table";

pub static NO_SUCH_OPTION: Rule = Rule {
    name: "no-such-option",
    says: "SO_REUSEPORT and SO_REUSEPORT_LB do not exist on Windows, and other-user holders are not implemented there: the case is unsupported",
    source: "Winsock SOL_SOCKET options (no SO_REUSEPORT)",
};
pub static BOTH_OPTIONS_REFUSED: Rule = Rule {
    name: "reuseaddr-with-exclusive-refused",
    says: "setsockopt() refuses SO_EXCLUSIVEADDRUSE together with SO_REUSEADDR on one socket (WSAEINVAL)",
    source: "Microsoft, \"SO_EXCLUSIVEADDRUSE socket option\"",
};
pub static NO_OVERLAP: Rule = Rule {
    name: "no-overlap",
    says: "sockets on different specific addresses, or in different families (a V6ONLY socket and an IPv4 one), never meet",
    source: MS_DOC,
};
pub static TABLE: Rule = Rule {
    name: "second-bind-table",
    says: "when the addresses overlap, the answer is the documented cell for (second option, second wildcard?) x (first option, first wildcard?): INUSE = EADDRINUSE, DENIED = EACCES",
    source: MS_DOC,
};
pub static EXCLUSIVE_GUARDS: Rule = Rule {
    name: "exclusive-guards",
    says: "SO_EXCLUSIVEADDRUSE on the first socket refuses every overlapping bind (EACCES for a forced SO_REUSEADDR bind)",
    source: MS_DOC,
};
pub static REUSEADDR_STEALS: Rule = Rule {
    name: "reuseaddr-on-second-binds",
    says: "SO_REUSEADDR on the second socket alone lets it bind over a first socket that did not set SO_EXCLUSIVEADDRUSE (port stealing)",
    source: MS_DOC,
};
pub static SAME_ACCOUNT_CHECK: Rule = Rule {
    name: "same-account-check",
    says: "a specific bind over a wildcard socket succeeds after a security check that passes for the same account (same-process and other-process holders run as one user)",
    source: "Microsoft's second-bind table, CHECK cells (enhanced socket security, Windows Server 2003 and later)",
};
pub static CONNECTIONS: Rule = Rule {
    name: "connections-keep-the-port-until-closed",
    says: "an open connection (accepted, or closing with its socket still open) holds its local address like a bound socket; a closed one in TIME_WAIT or FIN_WAIT2 holds none (assumption, not yet checked against a Windows record)",
    source: "assumption from the Winsock bind/closesocket documentation; to be checked once snapshots/windows/ exists",
};
pub static LISTEN_NO_CHECK: Rule = Rule {
    name: "listen-does-not-check",
    says: "listen() on a bound socket does not look at the port again: two SO_REUSEADDR sockets on one address both listen",
    source: WINE,
};
pub static DUAL_IPV4_SIDE: Rule = Rule {
    name: "dual-stack-ipv4-side-only-if-exclusive",
    says: "a dual-stack :: socket holds the IPv4 side of the port only when it has SO_EXCLUSIVEADDRUSE: then an IPv4 bind over it gets EACCES, and it cannot bind over an IPv4 socket; without it, 0.0.0.0 and :: coexist",
    source: WINE,
};

pub static RULES: &[&Rule] = &[
    &NO_SUCH_OPTION,
    &BOTH_OPTIONS_REFUSED,
    &NO_OVERLAP,
    &TABLE,
    &EXCLUSIVE_GUARDS,
    &REUSEADDR_STEALS,
    &SAME_ACCOUNT_CHECK,
    &CONNECTIONS,
    &LISTEN_NO_CHECK,
    &DUAL_IPV4_SIDE,
];

#[derive(Clone, Copy, PartialEq)]
enum Opt {
    None,
    ReuseAddr,
    Exclusive,
}

fn opt(spec: &SocketSpec) -> Opt {
    if spec.options.has(SockOpt::ExclusiveAddrUse) {
        Opt::Exclusive
    } else if spec.options.has(SockOpt::ReuseAddr) {
        Opt::ReuseAddr
    } else {
        Opt::None
    }
}

#[derive(Clone, Copy, PartialEq, Debug)]
enum Cell {
    Success,
    InUse,
    Denied,
    Check,
}

/// The documented table: `[second option][second specific?][first option * 2 + first specific?]`.
const SECOND_BIND: [[[Cell; 6]; 2]; 3] = {
    use Cell::*;
    [
        // second: no option; first: none W, none S, reuseaddr W, reuseaddr S, exclusive W, exclusive S
        [
            [InUse, Success, InUse, Success, InUse, Success],
            [Check, InUse, Check, Denied, Denied, InUse],
        ],
        // second: SO_REUSEADDR
        [
            [Denied, Success, Success, Success, Denied, Success],
            [Check, Denied, Success, Success, Denied, Denied],
        ],
        // second: SO_EXCLUSIVEADDRUSE
        [
            [InUse, InUse, InUse, InUse, InUse, InUse],
            [Check, InUse, Check, InUse, Denied, InUse],
        ],
    ]
};

/// How two sockets' addresses relate.
#[derive(PartialEq)]
enum Meet {
    Apart,
    /// Same family space: the documented table decides.
    Table,
    /// The first is an exclusive dual-stack wildcard, the second an IPv4
    /// (or v4-mapped) socket: refused with EACCES.
    ExclusiveDualGuardsIpv4,
}

fn meet(first: &SocketSpec, second: &SocketSpec, why: &mut Why) -> Meet {
    let (a, b) = (Addr::of(&first.endpoint), Addr::of(&second.endpoint));
    let overlap = a.wildcard || b.wildcard || a.key == b.key;
    if a.v4_space == b.v4_space {
        return if overlap { Meet::Table } else { Meet::Apart };
    }
    // A dual-stack `::` reaches into IPv4 only when it is exclusive.
    let exclusive_dual = |s: &SocketSpec, ad: &Addr| {
        ad.wildcard
            && !ad.v4_space
            && s.endpoint.v6only == Some(false)
            && s.options.has(SockOpt::ExclusiveAddrUse)
    };
    if exclusive_dual(first, &a) {
        why.say(&DUAL_IPV4_SIDE);
        return Meet::ExclusiveDualGuardsIpv4;
    }
    if exclusive_dual(second, &b) {
        why.say(&DUAL_IPV4_SIDE);
        return Meet::Table;
    }
    if (a.wildcard && !a.v4_space && first.endpoint.v6only == Some(false))
        || (b.wildcard && !b.v4_space && second.endpoint.v6only == Some(false))
    {
        why.say(&DUAL_IPV4_SIDE);
    }
    Meet::Apart
}

/// The Windows model's answer for `case`.
pub fn predict(case: &Case) -> Prediction {
    let mut why = Why::default();
    if lacking(case, &[SockOpt::ReuseAddr, SockOpt::ExclusiveAddrUse]).is_some()
        || case.holder == Holder::OtherUser
    {
        why.say(&NO_SUCH_OPTION);
        return why.answer(Answer::Unsupported);
    }
    let both = |s: &SocketSpec| {
        s.options.has(SockOpt::ReuseAddr) && s.options.has(SockOpt::ExclusiveAddrUse)
    };
    if both(&case.first) || both(&case.second) {
        why.say(&BOTH_OPTIONS_REFUSED);
        return why.answer(Answer::OptionRefused {
            second: !both(&case.first),
            error: "EINVAL",
        });
    }
    let holds = match case.state {
        State::Closed => false,
        State::FinWait2 | State::TimeWait | State::TimeWaitClient => {
            why.say(&CONNECTIONS);
            false
        }
        State::Established | State::CloseWait => {
            why.say(&CONNECTIONS);
            true
        }
        _ => true,
    };
    let bind = if !holds {
        Ok(())
    } else {
        match meet(&case.first, &case.second, &mut why) {
            Meet::Apart => {
                why.say(&NO_OVERLAP);
                Ok(())
            }
            Meet::ExclusiveDualGuardsIpv4 => Err("EACCES"),
            Meet::Table => table(case, &mut why),
        }
    };
    why.answer_listen_unchecked(case.proto, bind, &LISTEN_NO_CHECK)
}

/// The documented cell for two overlapping sockets of one family.
fn table(case: &Case, why: &mut Why) -> Step {
    why.say(&TABLE);
    let (first, second) = (opt(&case.first), opt(&case.second));
    let specific = |s: &SocketSpec| usize::from(!s.endpoint.is_wildcard());
    let cell = SECOND_BIND[second as usize][specific(&case.second)]
        [first as usize * 2 + specific(&case.first)];
    match (first, second, cell) {
        (Opt::Exclusive, _, Cell::Denied | Cell::InUse) => why.say(&EXCLUSIVE_GUARDS),
        (_, Opt::ReuseAddr, Cell::Success) if first != Opt::ReuseAddr => why.say(&REUSEADDR_STEALS),
        (_, _, Cell::Check) => why.say(&SAME_ACCOUNT_CHECK),
        _ => {}
    }
    match cell {
        Cell::Success | Cell::Check => Ok(()),
        Cell::InUse => Err("EADDRINUSE"),
        Cell::Denied => Err("EACCES"),
    }
}

/// Microsoft's table and Wine's test_reuseaddr, as cases of the matrix
/// (loopback is the "specific" address; both sockets in one process, so
/// CHECK passes).
pub const FACTS: &[Fact] = &[
    Fact {
        case: "tcp bound 0.0.0.0 0.0.0.0",
        cell: "EADDRINUSE",
        source: MS_DOC,
    },
    Fact {
        case: "tcp bound 0.0.0.0 0.0.0.0+reuseaddr",
        cell: "EACCES",
        source: MS_DOC,
    },
    Fact {
        case: "tcp bound 0.0.0.0+reuseaddr 0.0.0.0+reuseaddr",
        cell: "ok/ok",
        source: MS_DOC,
    },
    Fact {
        case: "tcp bound 0.0.0.0+exclusive 0.0.0.0+reuseaddr",
        cell: "EACCES",
        source: MS_DOC,
    },
    Fact {
        case: "tcp bound 127.0.0.1+reuseaddr 127.0.0.1",
        cell: "EACCES",
        source: MS_DOC,
    },
    Fact {
        case: "udp bound 0.0.0.0 0.0.0.0+exclusive",
        cell: "EADDRINUSE",
        source: MS_DOC,
    },
    Fact {
        case: "tcp bound 127.0.0.1 127.0.0.2",
        cell: "ok/ok",
        source: MS_DOC,
    },
    Fact {
        case: "tcp bound 127.0.0.1 127.0.0.1+reuseaddr",
        cell: "EACCES",
        source: WINE,
    },
    Fact {
        case: "tcp bound ::1/v6only 0.0.0.0",
        cell: "ok/ok",
        source: WINE,
    },
    Fact {
        case: "tcp bound-then-listen 127.0.0.1+reuseaddr 127.0.0.1+reuseaddr",
        cell: "ok/ok",
        source: WINE,
    },
    Fact {
        case: "tcp bound-then-listen ::1/v6only+reuseaddr ::1/v6only+reuseaddr",
        cell: "ok/ok",
        source: WINE,
    },
    Fact {
        case: "tcp listening 0.0.0.0 127.0.0.1",
        cell: "ok/ok",
        source: WINE,
    },
    Fact {
        case: "tcp listening 127.0.0.1 0.0.0.0",
        cell: "ok/ok",
        source: WINE,
    },
    Fact {
        case: "tcp bound ::/v6only ::/v6only",
        cell: "EADDRINUSE",
        source: WINE,
    },
    Fact {
        case: "tcp bound 0.0.0.0+exclusive 127.0.0.1",
        cell: "EACCES",
        source: WINE,
    },
    Fact {
        case: "tcp bound ::/dual+exclusive 127.0.0.1",
        cell: "EACCES",
        source: WINE,
    },
    Fact {
        case: "tcp bound 0.0.0.0 127.0.0.1+exclusive",
        cell: "ok/ok",
        source: WINE,
    },
    Fact {
        case: "tcp bound 0.0.0.0+exclusive 127.0.0.1+exclusive",
        cell: "EACCES",
        source: WINE,
    },
    Fact {
        case: "tcp bound 127.0.0.1+exclusive 0.0.0.0",
        cell: "ok/ok",
        source: WINE,
    },
    Fact {
        case: "tcp bound 127.0.0.1 0.0.0.0+exclusive",
        cell: "EADDRINUSE",
        source: WINE,
    },
    Fact {
        case: "tcp bound 127.0.0.1 ::/dual+exclusive",
        cell: "EADDRINUSE",
        source: WINE,
    },
    Fact {
        case: "tcp bound ::1/dual 0.0.0.0+exclusive",
        cell: "ok/ok",
        source: WINE,
    },
    Fact {
        case: "tcp bound ::1/dual+exclusive 127.0.0.1+exclusive",
        cell: "ok/ok",
        source: WINE,
    },
    Fact {
        case: "tcp bound ::ffff:127.0.0.1 0.0.0.0+exclusive",
        cell: "EADDRINUSE",
        source: WINE,
    },
    Fact {
        case: "tcp bound ::/dual+exclusive 0.0.0.0",
        cell: "EACCES",
        source: WINE,
    },
    Fact {
        case: "tcp bound ::/dual 0.0.0.0+exclusive",
        cell: "ok/ok",
        source: WINE,
    },
    Fact {
        case: "tcp bound 0.0.0.0 0.0.0.0+exclusive",
        cell: "EADDRINUSE",
        source: WINE,
    },
    Fact {
        case: "tcp bound ::/dual 0.0.0.0",
        cell: "ok/ok",
        source: WINE,
    },
    Fact {
        case: "tcp bound ::ffff:0.0.0.0 0.0.0.0",
        cell: "EADDRINUSE",
        source: WINE,
    },
    Fact {
        case: "tcp bound ::ffff:127.0.0.1 127.0.0.1",
        cell: "EADDRINUSE",
        source: WINE,
    },
    Fact {
        case: "tcp bound 127.0.0.1 ::ffff:127.0.0.1",
        cell: "EADDRINUSE",
        source: WINE,
    },
    Fact {
        case: "tcp bound 127.0.0.1+exclusive 127.0.0.1",
        cell: "EADDRINUSE",
        source: WINE,
    },
    Fact {
        case: "tcp bound 127.0.0.1 127.0.0.1+exclusive",
        cell: "EADDRINUSE",
        source: WINE,
    },
    Fact {
        case: "tcp bound 0.0.0.0+reuseaddr+exclusive 0.0.0.0",
        cell: "first-opt:EINVAL",
        source: WINE,
    },
];
