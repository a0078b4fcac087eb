//! What a case is: the tables of protocols, states, addresses and options
//! that the matrix crosses, the tables they group into, and the choice of
//! cases (`Selection`). Everything here is plain data; running a case lives
//! in `run`, each state's recipe in `run::state`.
//!
//! Like a kselftest `FIXTURE_VARIANT` table, every dimension is one `const`
//! slice: adding a row to a table adds its cases everywhere (runner, tables,
//! snapshots, filters).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// A fixed list of values with a stable name each: what tables, the probe
/// grammar and the command line's value lists are made from.
pub trait Named: Copy + 'static {
    /// What the value is called in error messages ("state", "holder").
    const WHAT: &'static str;
    /// Every value, in table order.
    const ALL: &'static [Self];
    fn name(self) -> &'static str;

    /// The value called `word`, or a one-line error naming every choice.
    fn parse_name(word: &str) -> Result<Self, String> {
        Self::ALL
            .iter()
            .copied()
            .find(|v| v.name() == word)
            .ok_or_else(|| {
                let names: Vec<_> = Self::ALL.iter().map(|v| v.name()).collect();
                format!(
                    "unknown {} '{word}' (expected one of: {})",
                    Self::WHAT,
                    names.join(", ")
                )
            })
    }
}

/// Lets clap take a `Named` type's values from its table, so `--help` and
/// the error messages list exactly what the library knows.
macro_rules! value_enum {
    ($($t:ty),*) => {$(
        impl clap::ValueEnum for $t {
            fn value_variants<'a>() -> &'a [Self] {
                <$t as Named>::ALL
            }
            fn to_possible_value(&self) -> Option<clap::builder::PossibleValue> {
                Some(clap::builder::PossibleValue::new(Named::name(*self)))
            }
        }
    )*};
}
pub(crate) use value_enum;

/// Transport protocol of both sockets of a case.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Proto {
    Tcp,
    Udp,
}

impl Named for Proto {
    const WHAT: &'static str = "protocol";
    const ALL: &'static [Proto] = &[Proto::Tcp, Proto::Udp];

    fn name(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        }
    }
}

impl Proto {
    /// The states the first socket can be brought into for this protocol,
    /// in table order.
    pub fn states(self) -> impl Iterator<Item = State> {
        State::ALL
            .iter()
            .copied()
            .filter(move |s| s.exists_for(self))
    }
}

/// One row of the state table: everything the crate knows about a state
/// apart from how to build it (that is its recipe in `run::state`).
#[derive(Debug)]
pub struct StateRow {
    pub state: State,
    /// The name in tables, filters and probe text.
    pub name: &'static str,
    /// The protocols the state exists for.
    pub protos: &'static [Proto],
    /// The state outlives the case (TIME_WAIT and the FIN_WAIT2 mini-socket
    /// stay in the kernel after every descriptor is closed), so its port is
    /// kept out of use afterwards.
    pub lingers: bool,
    /// The protocols for which the first socket, in this state, receives
    /// traffic while the second binds (a listener, a bound UDP socket):
    /// those cases also count who receives new traffic (`run::delivery`).
    pub receives: &'static [Proto],
    /// The first socket is (or was) connected to a loopback peer. A
    /// dual-stack wildcard first socket can have an IPv4 or an IPv6 peer,
    /// and the two are different cases (`Peer`).
    pub connects: bool,
}

const TCP: &[Proto] = &[Proto::Tcp];
const UDP: &[Proto] = &[Proto::Udp];
const TCP_UDP: &[Proto] = &[Proto::Tcp, Proto::Udp];
const NONE: &[Proto] = &[];

/// Declares `State` and `STATES` from one list, so that a state cannot
/// exist without its row (and `run::state` cannot build without a recipe
/// and a floor for it).
macro_rules! states {
    ($($(#[doc = $doc:literal])* $variant:ident = $name:literal, $protos:expr, lingers: $lingers:literal, receives: $receives:expr, connects: $connects:literal;)*) => {
        /// The state the first socket is in when the second socket binds.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum State {
            $($(#[doc = $doc])* $variant,)*
        }

        /// Every state, in table order.
        pub const STATES: &[StateRow] = &[
            $(StateRow {
                state: State::$variant,
                name: $name,
                protos: $protos,
                lingers: $lingers,
                receives: $receives,
                connects: $connects,
            },)*
        ];

        impl Named for State {
            const WHAT: &'static str = "state";
            const ALL: &'static [State] = &[$(State::$variant,)*];

            fn name(self) -> &'static str {
                self.row().name
            }
        }
    };
}

states! {
    /// `bind()` only.
    Bound = "bound", TCP_UDP, lingers: false, receives: UDP, connects: false;
    /// Bound; once the second socket has bound too, the first listens, and
    /// only then the second: the order in which Linux lets two SO_REUSEADDR
    /// sockets bind and fails the second listen.
    BoundThenListen = "bound-then-listen", TCP, lingers: false, receives: TCP, connects: false;
    /// `bind()` + `listen()`.
    Listening = "listening", TCP, lingers: false, receives: TCP, connects: false;
    /// Listening, with a connection completed but not yet accepted.
    ListeningWithBacklog = "listening-with-backlog", TCP, lingers: false, receives: TCP, connects: false;
    /// Listened, accepted a loopback connection, then the listener was
    /// closed while the accepted connection stays open: a server restart
    /// while clients are still connected.
    Established = "established", TCP, lingers: false, receives: NONE, connects: true;
    /// As `Established`, then the peer closed and the holder did not: the
    /// accepted connection sits in CLOSE_WAIT (a server that never closes
    /// sockets its clients left).
    CloseWait = "close-wait", TCP, lingers: false, receives: NONE, connects: true;
    /// As `Established`, then the holder closed and the peer stays silent:
    /// the holder's end sits in FIN_WAIT_2, as the mini-socket a closed
    /// socket becomes (see its recipe). Like TIME_WAIT it outlives the case
    /// (the peer's RST at teardown ends it, asynchronously).
    FinWait2 = "fin-wait-2", TCP, lingers: true, receives: NONE, connects: true;
    /// As `Established`, then the accepted connection closed first and the
    /// peer after it, so the server side of the connection sits in TIME_WAIT.
    TimeWait = "time-wait", TCP, lingers: true, receives: NONE, connects: true;
    /// TIME_WAIT on the active opener's side: the first socket is a client
    /// bound explicitly to the port, connected to a loopback listener, and
    /// it closed first.
    TimeWaitClient = "time-wait-client", TCP, lingers: true, receives: NONE, connects: true;
    /// Bound, then closed.
    Closed = "closed", TCP, lingers: false, receives: NONE, connects: false;
    /// UDP: bound, then `connect()`ed to a loopback peer.
    Connected = "connected", UDP, lingers: false, receives: UDP, connects: true;
}

impl State {
    /// This state's row of `STATES`.
    pub fn row(self) -> &'static StateRow {
        &STATES[self as usize]
    }

    pub fn exists_for(self, proto: Proto) -> bool {
        self.row().protos.contains(&proto)
    }

    pub fn lingers(self) -> bool {
        self.row().lingers
    }

    /// Whether the first socket has (or had) a loopback peer in this state.
    pub fn connects(self) -> bool {
        self.row().connects
    }

    /// Whether the first socket receives new traffic in this state.
    pub fn receives(self, proto: Proto) -> bool {
        self.row().receives.contains(&proto)
    }

    /// Every (protocol, state) pair, in table order.
    pub fn all() -> impl Iterator<Item = (Proto, State)> {
        Proto::ALL
            .iter()
            .flat_map(|&p| p.states().map(move |s| (p, s)))
    }
}

/// How an address relates to the two IP families; it decides which address
/// group (and so which snapshot table) a pair of endpoints belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Family {
    /// An AF_INET socket.
    V4,
    /// An AF_INET6 socket on a native IPv6 address.
    V6,
    /// An AF_INET6 socket on a v4-mapped address (`::ffff:a.b.c.d`).
    Mapped,
}

impl Named for Family {
    const WHAT: &'static str = "family";
    const ALL: &'static [Family] = &[Family::V4, Family::V6, Family::Mapped];

    fn name(self) -> &'static str {
        match self {
            Family::V4 => "v4",
            Family::V6 => "v6",
            Family::Mapped => "mapped",
        }
    }
}

/// The address family of the loopback peer a first socket is connected to
/// (or was: a TIME_WAIT end remembers it). Only a dual-stack wildcard
/// (`::/dual`) takes peers of both families, and the accepted connection
/// then holds `::ffff:127.0.0.1` or `::1`: different answers. Every other
/// first socket's peer is the loopback address of its own family
/// (`Endpoint::peer_ip`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Peer {
    /// The peer is 127.0.0.1.
    V4,
    /// The peer is ::1.
    V6,
}

impl Named for Peer {
    const WHAT: &'static str = "peer";
    const ALL: &'static [Peer] = &[Peer::V4, Peer::V6];

    fn name(self) -> &'static str {
        match self {
            Peer::V4 => "v4-peer",
            Peer::V6 => "v6-peer",
        }
    }
}

impl Peer {
    pub fn ip(self) -> IpAddr {
        match self {
            Peer::V4 => Ipv4Addr::LOCALHOST.into(),
            Peer::V6 => Ipv6Addr::LOCALHOST.into(),
        }
    }

    /// `v4` or `v6`: the family alone (machine output).
    pub fn family(self) -> &'static str {
        match self {
            Peer::V4 => "v4",
            Peer::V6 => "v6",
        }
    }
}

/// One socket's address: the literal IP and, for AF_INET6 sockets, the
/// IPV6_V6ONLY value the harness sets explicitly (never the OS default).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Endpoint {
    pub ip: IpAddr,
    /// `None` for AF_INET sockets.
    pub v6only: Option<bool>,
}

const fn v4(a: u8, b: u8, c: u8, d: u8) -> Endpoint {
    Endpoint {
        ip: IpAddr::V4(Ipv4Addr::new(a, b, c, d)),
        v6only: None,
    }
}

const fn v6(segments: [u16; 8], v6only: bool) -> Endpoint {
    let [a, b, c, d, e, f, g, h] = segments;
    Endpoint {
        ip: IpAddr::V6(Ipv6Addr::new(a, b, c, d, e, f, g, h)),
        v6only: Some(v6only),
    }
}

const LOOPBACK6: [u16; 8] = [0, 0, 0, 0, 0, 0, 0, 1];
const ANY6: [u16; 8] = [0; 8];
const MAPPED_LOOPBACK: [u16; 8] = [0, 0, 0, 0, 0, 0xffff, 0x7f00, 1];
const MAPPED_ANY: [u16; 8] = [0, 0, 0, 0, 0, 0xffff, 0, 0];

/// Every address a socket of the matrix binds. The matrix crosses this table
/// with itself, so every pair is tried in both orders.
pub const ENDPOINTS: &[Endpoint] = &[
    v4(127, 0, 0, 1),
    v4(127, 0, 0, 2),
    v4(0, 0, 0, 0),
    v6(LOOPBACK6, true),
    v6(LOOPBACK6, false),
    v6(ANY6, true),
    v6(ANY6, false),
    // A v4-mapped address cannot be bound on a V6ONLY socket: always off.
    v6(MAPPED_LOOPBACK, false),
    v6(MAPPED_ANY, false),
];

impl Endpoint {
    pub fn family(&self) -> Family {
        match self.ip {
            IpAddr::V4(_) => Family::V4,
            IpAddr::V6(ip) if ip.to_ipv4_mapped().is_some() => Family::Mapped,
            IpAddr::V6(_) => Family::V6,
        }
    }

    pub fn is_wildcard(&self) -> bool {
        match self.ip {
            IpAddr::V4(ip) => ip.is_unspecified(),
            IpAddr::V6(ip) => {
                ip.is_unspecified() || ip.to_ipv4_mapped().is_some_and(|v4| v4.is_unspecified())
            }
        }
    }

    /// The loopback address a peer connects to in order to reach a socket
    /// bound here (wildcards are reached through loopback of their family;
    /// v4-mapped addresses through an ordinary IPv4 peer).
    pub fn peer_ip(&self) -> IpAddr {
        match self.ip {
            IpAddr::V4(ip) if ip.is_unspecified() => Ipv4Addr::LOCALHOST.into(),
            IpAddr::V4(ip) => ip.into(),
            IpAddr::V6(ip) => match ip.to_ipv4_mapped() {
                Some(v4) if v4.is_unspecified() => Ipv4Addr::LOCALHOST.into(),
                Some(v4) => v4.into(),
                None if ip.is_unspecified() => Ipv6Addr::LOCALHOST.into(),
                None => ip.into(),
            },
        }
    }

    /// The loopback addresses at which a client reaches a socket bound
    /// here: its own address, or for a wildcard 127.0.0.1 and, if the
    /// socket takes IPv6, ::1 (v4-mapped addresses take IPv4 clients only).
    pub fn reach(&self) -> Vec<IpAddr> {
        let v4 = IpAddr::from(Ipv4Addr::LOCALHOST);
        let v6 = IpAddr::from(Ipv6Addr::LOCALHOST);
        match (self.is_wildcard(), self.family(), self.v6only) {
            (true, Family::V6, Some(true)) => vec![v6],
            (true, Family::V6, _) => vec![v4, v6],
            _ => vec![self.peer_ip()],
        }
    }

    /// The peers a first socket bound here can be connected to: both
    /// families for a dual-stack wildcard, else none to choose from.
    pub fn peer_choices(&self) -> &'static [Option<Peer>] {
        if self.is_wildcard() && self.family() == Family::V6 && self.v6only == Some(false) {
            &[Some(Peer::V4), Some(Peer::V6)]
        } else {
            &[None]
        }
    }

    /// Why this endpoint cannot be requested at all (not a platform limit:
    /// a request that makes no sense), if so.
    pub fn invalid_reason(&self) -> Option<&'static str> {
        match (self.family(), self.v6only) {
            (Family::V4, Some(_)) => Some("IPV6_V6ONLY applies to IPv6 addresses only"),
            (Family::V6 | Family::Mapped, None) => {
                Some("an IPv6 address needs IPV6_V6ONLY set explicitly (v6only or dual)")
            }
            (Family::Mapped, Some(true)) => {
                Some("a v4-mapped address cannot be bound on an IPV6_V6ONLY socket")
            }
            _ => None,
        }
    }
}

/// Whether the harness may bind `ip`: loopback, wildcard, or their
/// v4-mapped forms. Nothing else is ever bound or connected to.
pub fn is_loopback_or_wildcard(ip: IpAddr) -> bool {
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    };
    ip.is_loopback() || ip.is_unspecified()
}

impl fmt::Display for Endpoint {
    /// `127.0.0.1`, `::1/v6only`, `::/dual`, `::ffff:127.0.0.1`: the label in
    /// tables and in probe text.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.family(), self.v6only) {
            (Family::V6, Some(true)) => write!(f, "{}/v6only", self.ip),
            (Family::V6, Some(false)) => write!(f, "{}/dual", self.ip),
            _ => write!(f, "{}", self.ip),
        }
    }
}

/// One socket option the matrix can set before `bind()`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SockOpt {
    ReuseAddr,
    ReusePort,
    /// Windows only: nobody else may bind this port while the socket lives.
    ExclusiveAddrUse,
    /// FreeBSD only: SO_REUSEPORT with load balancing between the sockets.
    ReusePortLb,
}

impl SockOpt {
    pub const ALL: &'static [SockOpt] = &[
        SockOpt::ReuseAddr,
        SockOpt::ReusePort,
        SockOpt::ExclusiveAddrUse,
        SockOpt::ReusePortLb,
    ];

    /// The C name of the option.
    pub fn name(self) -> &'static str {
        match self {
            SockOpt::ReuseAddr => "SO_REUSEADDR",
            SockOpt::ReusePort => "SO_REUSEPORT",
            SockOpt::ExclusiveAddrUse => "SO_EXCLUSIVEADDRUSE",
            SockOpt::ReusePortLb => "SO_REUSEPORT_LB",
        }
    }

    /// The short name used in tables and probe text.
    pub fn short(self) -> &'static str {
        match self {
            SockOpt::ReuseAddr => "reuseaddr",
            SockOpt::ReusePort => "reuseport",
            SockOpt::ExclusiveAddrUse => "exclusive",
            SockOpt::ReusePortLb => "reuseport_lb",
        }
    }

    pub fn from_short(text: &str) -> Option<SockOpt> {
        SockOpt::ALL.iter().copied().find(|o| o.short() == text)
    }

    fn bit(self) -> u8 {
        1 << self as u8
    }
}

/// A set of socket options set before `bind()`: one column (second socket)
/// or one row part (first socket) of a table.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Options(u8);

impl Options {
    pub const NONE: Options = Options(0);

    pub const fn of(opts: &[SockOpt]) -> Options {
        let mut bits = 0;
        let mut i = 0;
        while i < opts.len() {
            bits |= 1 << opts[i] as u8;
            i += 1;
        }
        Options(bits)
    }

    pub fn has(&self, opt: SockOpt) -> bool {
        self.0 & opt.bit() != 0
    }

    pub fn with(self, opt: SockOpt) -> Options {
        Options(self.0 | opt.bit())
    }

    /// The options in this set, in `SockOpt::ALL` order (the order in
    /// which they are set on the socket).
    pub fn iter(&self) -> impl Iterator<Item = SockOpt> + '_ {
        SockOpt::ALL.iter().copied().filter(|&o| self.has(o))
    }
}

impl fmt::Display for Options {
    /// `none`, `reuseaddr`, `reuseaddr+reuseport`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Written piece by piece, no allocation: the model's check of the
        // records formats the options of every case of the matrix.
        let mut names = self.iter().map(SockOpt::short);
        let Some(first) = names.next() else {
            return f.write_str("none");
        };
        f.write_str(first)?;
        names.try_for_each(|name| write!(f, "+{name}"))
    }
}

/// The option sets each socket is tried with, chosen independently for the
/// first and the second socket. Sets whose options a platform lacks are
/// recorded there as `unsupported`, not left out.
pub const OPTION_SETS: &[Options] = {
    use SockOpt::*;
    &[
        Options::NONE,
        Options::of(&[ReuseAddr]),
        Options::of(&[ReusePort]),
        Options::of(&[ReuseAddr, ReusePort]),
        Options::of(&[ExclusiveAddrUse]),
        // Windows refuses this pair at setsockopt() time: that refusal is
        // the recorded answer.
        Options::of(&[ReuseAddr, ExclusiveAddrUse]),
        Options::of(&[ReusePortLb]),
    ]
};

/// One socket of a case: where it binds and with which options.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SocketSpec {
    pub endpoint: Endpoint,
    pub options: Options,
}

/// Who owns the first socket while the second one binds. Kernels decide
/// differently by owner: Linux ties SO_REUSEPORT to the effective uid,
/// FreeBSD forbids multibinding across owners, Windows decides by security
/// context.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Holder {
    /// The process that binds the second socket.
    SameProcess,
    /// A child process (the suite's own binary in holder mode).
    OtherProcess,
    /// A child process running as an unprivileged user (`nobody`), while
    /// a second child running as another unprivileged user (`daemon`)
    /// binds the second socket.
    OtherUser,
}

/// `other-user` cases: the unprivileged user that holds the first socket,
/// and a second one that binds the second socket (neither is root: BSD
/// kernels skip their cross-user check for a privileged binder).
macro_rules! other_users {
    (first) => {
        "nobody"
    };
    (second) => {
        "daemon"
    };
}
pub const OTHER_USER: &str = other_users!(first);
pub const SECOND_USER: &str = other_users!(second);

/// Why `other-user` cases cannot run here, if so.
pub const NO_OTHER_USER: &str = concat!(
    "other-user needs root: child processes switch to the unprivileged users ",
    other_users!(first),
    " (first socket) and ",
    other_users!(second),
    " (second socket)"
);

impl Named for Holder {
    const WHAT: &'static str = "holder";
    const ALL: &'static [Holder] = &[Holder::SameProcess, Holder::OtherProcess, Holder::OtherUser];

    fn name(self) -> &'static str {
        match self {
            Holder::SameProcess => "same-process",
            Holder::OtherProcess => "other-process",
            Holder::OtherUser => "other-user",
        }
    }
}

/// One cell of the matrix: the first socket, brought into `state` by
/// `holder`, holds a port; the second socket binds the same port.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Case {
    pub proto: Proto,
    pub state: State,
    pub holder: Holder,
    pub first: SocketSpec,
    pub second: SocketSpec,
    /// The family of the first socket's peer, where it has a choice
    /// (`Endpoint::peer_choices`, in a state that `connects`).
    pub peer: Option<Peer>,
}

/// The address group a pair of endpoints belongs to: one snapshot table per
/// (protocol, state, holder, group). Cross-family groups hold both orders.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Group {
    V4,
    V6,
    Mapped,
    V4V6,
    V4Mapped,
    V6Mapped,
}

impl Named for Group {
    const WHAT: &'static str = "group";
    const ALL: &'static [Group] = &[
        Group::V4,
        Group::V6,
        Group::Mapped,
        Group::V4V6,
        Group::V4Mapped,
        Group::V6Mapped,
    ];

    fn name(self) -> &'static str {
        match self {
            Group::V4 => "v4",
            Group::V6 => "v6",
            Group::Mapped => "mapped",
            Group::V4V6 => "v4-v6",
            Group::V4Mapped => "v4-mapped",
            Group::V6Mapped => "v6-mapped",
        }
    }
}

impl Group {
    pub fn of(first: &Endpoint, second: &Endpoint) -> Group {
        use Family::*;
        let mut pair = [first.family(), second.family()];
        pair.sort();
        match pair {
            [V4, V4] => Group::V4,
            [V6, V6] => Group::V6,
            [Mapped, Mapped] => Group::Mapped,
            [V4, V6] => Group::V4V6,
            [V4, Mapped] => Group::V4Mapped,
            [V6, Mapped] => Group::V6Mapped,
            _ => unreachable!("pair is sorted"),
        }
    }
}

value_enum!(Proto, State, Holder, Family, Group, Peer);

impl Case {
    pub fn group(&self) -> Group {
        Group::of(&self.first.endpoint, &self.second.endpoint)
    }

    /// The table this case is a cell of.
    pub fn table(&self) -> TableKey {
        TableKey {
            proto: self.proto,
            state: self.state,
            holder: self.holder,
            group: self.group(),
        }
    }

    /// The peers this case's first socket can have: a choice for a
    /// dual-stack wildcard in a state that connects, else `[None]`.
    pub fn peer_choices(&self) -> &'static [Option<Peer>] {
        if self.state.connects() {
            self.first.endpoint.peer_choices()
        } else {
            &[None]
        }
    }

    /// The loopback address of the first socket's peer (its client, or
    /// for `time-wait-client` and `connected` the socket it connects to).
    pub fn peer_ip(&self) -> IpAddr {
        self.peer
            .map_or_else(|| self.first.endpoint.peer_ip(), Peer::ip)
    }

    /// Why this case cannot be requested at all, if so (probe input).
    pub fn invalid_reason(&self) -> Option<String> {
        if !self.state.exists_for(self.proto) {
            return Some(format!(
                "state {} does not exist for {}",
                self.state.name(),
                self.proto.name()
            ));
        }
        for (which, spec) in [("first", &self.first), ("second", &self.second)] {
            if let Some(why) = spec.endpoint.invalid_reason() {
                return Some(format!("{which} socket: {why}"));
            }
        }
        if !self.peer_choices().contains(&self.peer) {
            return Some(match self.peer {
                Some(_) => format!(
                    "a peer family applies only to a dual-stack wildcard first socket \
                     (::/dual) in a state with a peer, not {} {}",
                    self.first.endpoint,
                    self.state.name()
                ),
                None => format!(
                    "{} {} takes clients of both families: say v4-peer or v6-peer",
                    self.first.endpoint,
                    self.state.name()
                ),
            });
        }
        None
    }
}

/// The whole matrix in a stable order: holder (so that a child process can
/// hold a run of cases), protocol, state, first endpoint, second endpoint,
/// first options, second options.
pub fn matrix() -> Vec<Case> {
    let mut cases = Vec::new();
    for &holder in Holder::ALL {
        for (proto, state) in State::all() {
            cases.extend(cases_of(proto, state, holder));
        }
    }
    cases
}

/// Every case of one (protocol, state, holder).
fn cases_of(proto: Proto, state: State, holder: Holder) -> Vec<Case> {
    let mut cases = Vec::new();
    for &a in ENDPOINTS {
        let peers = if state.connects() {
            a.peer_choices()
        } else {
            &[None]
        };
        for &peer in peers {
            for &b in ENDPOINTS {
                for &oa in OPTION_SETS {
                    for &ob in OPTION_SETS {
                        cases.push(Case {
                            proto,
                            state,
                            holder,
                            first: SocketSpec {
                                endpoint: a,
                                options: oa,
                            },
                            second: SocketSpec {
                                endpoint: b,
                                options: ob,
                            },
                            peer,
                        });
                    }
                }
            }
        }
    }
    cases
}

/// The identity of one matrix table (and of its snapshot).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TableKey {
    pub proto: Proto,
    pub state: State,
    pub holder: Holder,
    pub group: Group,
}

impl TableKey {
    /// The snapshot name: `tcp_time-wait_other-process_v4-v6` (no
    /// characters a Windows file name cannot hold).
    pub fn name(&self) -> String {
        format!(
            "{}_{}_{}_{}",
            self.proto.name(),
            self.state.name(),
            self.holder.name(),
            self.group.name()
        )
    }

    /// Every table of the matrix, in report order.
    pub fn all() -> Vec<TableKey> {
        let mut keys = Vec::new();
        for (proto, state) in State::all() {
            for &holder in Holder::ALL {
                for &group in Group::ALL {
                    keys.push(TableKey {
                        proto,
                        state,
                        holder,
                        group,
                    });
                }
            }
        }
        keys
    }
}

/// A choice of cases: each list empty means "all". The command's filters
/// and the tests choose cases through it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Selection {
    pub protos: Vec<Proto>,
    pub states: Vec<State>,
    pub holders: Vec<Holder>,
    pub groups: Vec<Group>,
    /// Cases where either socket has one of these families.
    pub families: Vec<Family>,
}

impl Selection {
    /// Exactly the cases of one table.
    pub fn table(key: &TableKey) -> Selection {
        Selection {
            protos: vec![key.proto],
            states: vec![key.state],
            holders: vec![key.holder],
            groups: vec![key.group],
            families: Vec::new(),
        }
    }

    pub fn is_everything(&self) -> bool {
        *self == Selection::default()
    }

    pub fn matches(&self, case: &Case) -> bool {
        self.matches_block(case.proto, case.state, case.holder)
            && any(&self.groups, &case.group())
            && (self.families.is_empty()
                || self.families.contains(&case.first.endpoint.family())
                || self.families.contains(&case.second.endpoint.family()))
    }

    /// Whether any case of this (protocol, state, holder) can match.
    fn matches_block(&self, proto: Proto, state: State, holder: Holder) -> bool {
        any(&self.protos, &proto) && any(&self.states, &state) && any(&self.holders, &holder)
    }

    /// The selected cases, in matrix order. Only the selected blocks are
    /// built: a test asks for each of 216 tables, and the whole matrix is
    /// 150,822 cases.
    pub fn cases(&self) -> Vec<Case> {
        let mut cases = Vec::new();
        for &holder in Holder::ALL {
            for (proto, state) in State::all() {
                if self.matches_block(proto, state, holder) {
                    let block = cases_of(proto, state, holder);
                    cases.extend(block.into_iter().filter(|c| self.matches(c)));
                }
            }
        }
        cases
    }
}

/// An empty filter list lets everything through.
fn any<T: PartialEq>(list: &[T], value: &T) -> bool {
    list.is_empty() || list.contains(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Building only the selected blocks gives exactly the whole matrix,
    /// filtered, in the same order.
    #[test]
    fn a_selection_is_the_matrix_filtered() {
        let everything = matrix();
        let key = TableKey {
            proto: Proto::Udp,
            state: State::Connected,
            holder: Holder::OtherUser,
            group: Group::V4Mapped,
        };
        for selection in [
            Selection::default(),
            Selection::table(&key),
            Selection {
                states: vec![State::TimeWait, State::Bound],
                families: vec![Family::Mapped],
                ..Selection::default()
            },
        ] {
            let filtered: Vec<Case> = (everything.iter().copied())
                .filter(|c| selection.matches(c))
                .collect();
            assert!(!filtered.is_empty(), "{selection:?}");
            assert_eq!(selection.cases(), filtered, "{selection:?}");
        }
    }
}
