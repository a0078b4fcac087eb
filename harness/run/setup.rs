//! The building blocks of the state recipes (`run::state`): the first
//! socket with its options, loopback connections, and the checks that a
//! state is really there before the second socket binds.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::thread;
use std::time::{Duration, Instant};

use socket2::{Domain, Socket, Type};

use crate::outcome::{OsError, SetupError, Side, StateCheck};
use crate::platform::{self, Observed, OptionError, TcpState};
use crate::scenario::{Case, Proto, SocketSpec};

/// Listen backlog for every listener of the harness.
pub const BACKLOG: i32 = 128;

/// The longest any single wait of a setup may take (connect, accept, a
/// state transition). Loopback needs microseconds; this bound only stops
/// a broken kernel or an overloaded machine from hanging the run.
pub const WAIT: Duration = Duration::from_secs(2);

fn failed(what: &str, err: io::Error) -> SetupError {
    SetupError::failed(what, err)
}

/// The first socket in its state, with whatever keeps it there. Dropping
/// it tears everything down so that nothing of the case remains bound
/// (TIME_WAIT aside, which is the point).
pub struct Held {
    /// The socket the case bound, while it is open (a recipe that closes
    /// it, like `time-wait`, leaves `None`).
    pub first: Option<Socket>,
    /// Sockets that keep the state alive (a UDP peer), closed normally.
    pub peers: Vec<Socket>,
    /// Open TCP connections: aborted with RST on drop, so neither side
    /// lingers in TIME_WAIT afterwards.
    pub abort_on_drop: Vec<Socket>,
    /// The client whose connection waits unaccepted in the listener's
    /// queue (`listening-with-backlog`): not part of the delivery count.
    pub queued: Option<SocketAddr>,
    pub check: StateCheck,
}

impl Drop for Held {
    fn drop(&mut self) {
        for conn in &self.abort_on_drop {
            let _ = conn.set_linger(Some(Duration::ZERO));
        }
    }
}

impl Held {
    pub fn new() -> Held {
        Held {
            first: None,
            peers: Vec::new(),
            abort_on_drop: Vec::new(),
            queued: None,
            check: StateCheck::Verified,
        }
    }

    /// Delivery: count (and take) what waits on the first socket.
    pub fn drain(&self) -> Result<u32, String> {
        let first = (self.first.as_ref()).ok_or("no first socket is open")?;
        super::delivery::drain(first, self.queued).map_err(|e| format!("the first socket: {e}"))
    }

    /// Delivery: `n` datagrams from the peer of a connected UDP first
    /// socket to `to`; how many went out.
    pub fn peer_sends(&self, to: SocketAddr, n: u32) -> Result<u32, String> {
        let peer = self.peers.first().ok_or("the first socket has no peer")?;
        Ok(super::delivery::send_from(peer, to, n))
    }

    /// `bound-then-listen`: the first socket listens now (after the second
    /// socket bound), verified by SO_ACCEPTCONN. A kernel that refuses the
    /// listen gives its answer (`first-listen:EADDRINUSE`).
    pub fn first_listens(&self) -> Result<(), SetupError> {
        let first = (self.first.as_ref())
            .ok_or_else(|| SetupError::Failed("no first socket is held".into()))?;
        first
            .listen(BACKLOG)
            .map_err(|e| SetupError::FirstRefused("listen", OsError::of(&e)))?;
        expect_listening(first)
    }
}

impl Default for Held {
    fn default() -> Held {
        Held::new()
    }
}

impl From<Proto> for Type {
    fn from(proto: Proto) -> Type {
        match proto {
            Proto::Tcp => Type::STREAM,
            Proto::Udp => Type::DGRAM,
        }
    }
}

/// A socket for `spec` with IPV6_V6ONLY and the options set, not bound.
pub fn open(proto: Proto, spec: &SocketSpec, side: Side) -> Result<Socket, SetupError> {
    let domain = Domain::for_address(SocketAddr::new(spec.endpoint.ip, 0));
    let socket = Socket::new(domain, proto.into(), None)
        .map_err(|e| failed(&format!("socket() for the {} socket", side.name()), e))?;
    if let Some(v6only) = spec.endpoint.v6only {
        socket
            .set_only_v6(v6only)
            .map_err(|e| failed("setsockopt(IPV6_V6ONLY)", e))?;
    }
    for opt in spec.options.iter() {
        match platform::set_option(&socket, opt) {
            Ok(()) => {}
            Err(OptionError::Unsupported) => return Err(SetupError::Unsupported(opt)),
            Err(OptionError::Refused(e)) => {
                return Err(SetupError::Refused(side, opt, OsError::of(&e)))
            }
        }
    }
    Ok(socket)
}

/// The first socket, bound to the case's address and `port`.
pub fn bind_first(case: &Case, port: u16) -> Result<Socket, SetupError> {
    let socket = open(case.proto, &case.first, Side::First)?;
    let addr = SocketAddr::new(case.first.endpoint.ip, port);
    socket
        .bind(&addr.into())
        .map_err(|e| SetupError::FirstRefused("bind", OsError::of(&e)))?;
    match socket.local_addr().ok().and_then(|a| a.as_socket()) {
        Some(local) if local.port() == port => Ok(socket),
        other => Err(SetupError::Failed(format!(
            "the first socket reports local address {other:?}, not port {port}"
        ))),
    }
}

pub fn listen(socket: &Socket) -> Result<(), SetupError> {
    socket
        .listen(BACKLOG)
        .map_err(|e| failed("listen() of the first socket", e))
}

/// An address of `socket`'s family for `ip` (v4-mapped for an IPv6 socket).
pub fn in_family_of(socket: &SocketAddr, ip: IpAddr) -> IpAddr {
    match (socket, ip) {
        (SocketAddr::V6(_), IpAddr::V4(v4)) => v4.to_ipv6_mapped().into(),
        _ => ip,
    }
}

pub fn addr_of(sock: &Socket, what: &str) -> Result<SocketAddr, SetupError> {
    sock.local_addr()
        .map_err(|e| failed(&format!("getsockname() of {what}"), e))?
        .as_socket()
        .ok_or_else(|| SetupError::Failed(format!("{what} has no IP address")))
}

/// A socket of `ty` bound to `ip` on a port the kernel picks.
pub fn bound_anywhere(ip: IpAddr, ty: Type, what: &str) -> Result<Socket, SetupError> {
    let addr = SocketAddr::new(ip, 0);
    Socket::new(Domain::for_address(addr), ty, None)
        .and_then(|s| s.bind(&addr.into()).map(|()| s))
        .map_err(|e| failed(&format!("bind() of {what}"), e))
}

/// Accept on a non-blocking listener, retrying for at most `WAIT`.
pub fn accept_bounded(listener: &Socket) -> Result<Socket, SetupError> {
    listener
        .set_nonblocking(true)
        .map_err(|e| failed("set_nonblocking() of the listener", e))?;
    let deadline = Instant::now() + WAIT;
    loop {
        match listener.accept() {
            Ok((conn, _)) => return Ok(conn),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock && Instant::now() < deadline => {
                thread::yield_now()
            }
            Err(e) => return Err(failed("accept() of the loopback connection", e)),
        }
    }
}

/// A client connected to `target` (bounded by `WAIT`).
pub fn connect_client(target: SocketAddr) -> Result<Socket, SetupError> {
    let client = Socket::new(Domain::for_address(target), Type::STREAM, None)
        .map_err(|e| failed("socket() for the client", e))?;
    client
        .connect_timeout(&target.into(), WAIT)
        .map_err(|e| failed("connect() to the listener", e))?;
    Ok(client)
}

/// The first socket listening, and a loopback client connected to it
/// (completed, not yet accepted).
pub fn listen_and_connect(case: &Case, port: u16) -> Result<(Socket, Socket), SetupError> {
    let listener = bind_first(case, port)?;
    listen(&listener)?;
    let client = connect_client(SocketAddr::new(case.peer_ip(), port))?;
    Ok((listener, client))
}

/// An established loopback connection to the first socket's listener.
pub struct Connection {
    pub listener: Socket,
    /// The accepted socket: the server side, on the first socket's port.
    pub server: Socket,
    pub client: Socket,
    /// The server side's local address (the first socket's port).
    pub local: SocketAddr,
    /// The client's address.
    pub remote: SocketAddr,
}

pub fn connect_pair(case: &Case, port: u16) -> Result<Connection, SetupError> {
    let (listener, client) = listen_and_connect(case, port)?;
    let server = accept_bounded(&listener)?;
    let local = addr_of(&server, "the accepted socket")?;
    let remote = addr_of(&client, "the client")?;
    Ok(Connection {
        listener,
        server,
        client,
        local,
        remote,
    })
}

/// What the kernel says about a TCP socket, compared with what the case
/// needs; `Unknown` (no way to look on this platform) passes as unverified.
pub fn expect_tcp(
    local: SocketAddr,
    remote: Option<SocketAddr>,
    want: Observed,
    what: &str,
) -> Result<StateCheck, SetupError> {
    match platform::observe_tcp(local, remote) {
        Ok(Observed::Unknown) => Ok(StateCheck::Unverified),
        Ok(seen) if seen.satisfies(want) => Ok(StateCheck::Verified),
        Ok(seen) => Err(SetupError::Failed(format!(
            "{what}: expected {want:?}, the kernel reports {seen:?}"
        ))),
        Err(e) => Err(failed(&format!("{what}: socket-table query"), e)),
    }
}

/// A full socket of this process in `state` (owned by its uid).
pub fn owned(state: TcpState) -> Observed {
    Observed::Owned(state, platform::euid())
}

/// The kernel's own word (SO_ACCEPTCONN) that the socket listens: every
/// platform has it, and it costs one syscall.
pub fn expect_listening(listener: &Socket) -> Result<(), SetupError> {
    match platform::is_listening(listener) {
        Ok(true) => Ok(()),
        Ok(false) => Err(SetupError::Failed(
            "the listener does not listen (SO_ACCEPTCONN is off)".into(),
        )),
        Err(e) => Err(failed("getsockopt(SO_ACCEPTCONN)", e)),
    }
}

/// Poll the kernel until the connection is in `want`, for at most `WAIT`,
/// calling `nudge` between polls (to hurry the peer).
pub fn await_tcp(
    local: SocketAddr,
    remote: SocketAddr,
    want: Observed,
    what: &str,
    nudge: &dyn Fn(),
) -> Result<StateCheck, SetupError> {
    let deadline = Instant::now() + WAIT;
    loop {
        nudge();
        match expect_tcp(local, Some(remote), want, what) {
            Err(SetupError::Failed(_)) if Instant::now() < deadline => {
                thread::sleep(platform::POLL)
            }
            done => return done,
        }
    }
}

/// No nudge: wait for the kernel alone.
pub fn no_nudge() {}
