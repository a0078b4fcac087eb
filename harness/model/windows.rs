//! Windows: Microsoft's table of what a second bind gets, by each
//! socket's option (none, SO_REUSEADDR, SO_EXCLUSIVEADDRUSE) and address
//! (wildcard or specific). Not recorded yet: checked against the facts of
//! Microsoft's documentation (`FACTS`).

use super::freebsd::Fact;
use super::{lacking, Addr, Answer, Prediction, Rule, Why};
use crate::scenario::{Case, Holder, Proto, SockOpt, SocketSpec, State};

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
    says: "listen() on a bound socket does not look at the port again",
    source: "Winsock listen(): WSAEADDRINUSE is normally reported by bind()",
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

/// Whether two addresses meet: same family space (a dual-stack `::` is
/// in both) and the same address or a wildcard.
fn meet(a: &SocketSpec, b: &SocketSpec) -> bool {
    let (x, y) = (Addr::of(&a.endpoint), Addr::of(&b.endpoint));
    let dual =
        |s: &SocketSpec, ad: &Addr| ad.wildcard && !ad.v4_space && s.endpoint.v6only == Some(false);
    let same_space =
        x.v4_space == y.v4_space || (dual(a, &x) && y.v4_space) || (dual(b, &y) && x.v4_space);
    same_space && (x.wildcard || y.wildcard || x.key == y.key)
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
    } else if !meet(&case.first, &case.second) {
        why.say(&NO_OVERLAP);
        Ok(())
    } else {
        why.say(&TABLE);
        let (first, second) = (opt(&case.first), opt(&case.second));
        let specific = |s: &SocketSpec| usize::from(!s.endpoint.is_wildcard());
        let cell = SECOND_BIND[second as usize][specific(&case.second)]
            [first as usize * 2 + specific(&case.first)];
        match (first, second, cell) {
            (Opt::Exclusive, _, Cell::Denied | Cell::InUse) => why.say(&EXCLUSIVE_GUARDS),
            (_, Opt::ReuseAddr, Cell::Success) if first != Opt::ReuseAddr => {
                why.say(&REUSEADDR_STEALS)
            }
            (_, _, Cell::Check) => why.say(&SAME_ACCOUNT_CHECK),
            _ => {}
        }
        match cell {
            Cell::Success | Cell::Check => Ok(()),
            Cell::InUse => Err("EADDRINUSE"),
            Cell::Denied => Err("EACCES"),
        }
    };
    let listen = match (case.proto, bind) {
        (Proto::Tcp, Ok(())) => {
            why.say(&LISTEN_NO_CHECK);
            Some(Ok(()))
        }
        _ => None,
    };
    why.answer(Answer::Ran { bind, listen })
}

/// Microsoft's table, as cases of the matrix (loopback is the "specific"
/// address; both sockets in one process, so CHECK passes).
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
        case: "tcp bound 127.0.0.1 0.0.0.0",
        cell: "ok/ok",
        source: MS_DOC,
    },
    Fact {
        case: "tcp bound 127.0.0.1 127.0.0.1",
        cell: "EADDRINUSE",
        source: MS_DOC,
    },
    Fact {
        case: "tcp bound 127.0.0.1+reuseaddr 127.0.0.1",
        cell: "EACCES",
        source: MS_DOC,
    },
    Fact {
        case: "tcp bound 0.0.0.0 127.0.0.1",
        cell: "ok/ok",
        source: "Microsoft's second-bind table: CHECK, same account",
    },
    Fact {
        case: "tcp bound 0.0.0.0+exclusive 127.0.0.1",
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
        case: "tcp bound 0.0.0.0+reuseaddr+exclusive 0.0.0.0",
        cell: "first-opt:EINVAL",
        source: "Microsoft, \"SO_EXCLUSIVEADDRUSE socket option\"",
    },
];
