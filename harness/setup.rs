//! Bringing the first socket into its state, and checking that it is
//! really there before the second socket binds.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::thread;
use std::time::{Duration, Instant};

use socket2::{Domain, SockAddr, Socket, Type};

use crate::outcome::{OsError, Verified, Which};
use crate::platform::{self, Observed, OptionError, TcpState};
use crate::scenario::{Case, Proto, SockOpt, SocketSpec, State};

/// Listen backlog for every listener of the harness.
pub const BACKLOG: i32 = 128;

/// The longest any single wait of a setup may take (connect, accept, a
/// state transition). Loopback needs microseconds; this bound only stops
/// a broken kernel or an overloaded machine from hanging the run.
pub const WAIT: Duration = Duration::from_secs(2);

/// Why the first socket could not be brought into its state.
#[derive(Debug)]
pub enum SetupError {
    /// The platform lacks an option the case asks for.
    Unsupported(SockOpt),
    /// The OS refused an option: a real answer, recorded as such.
    Refused(Which, SockOpt, OsError),
    /// Anything else: the case is `setup-failed` with this reason.
    Failed(String),
}

fn failed(what: &str, err: io::Error) -> SetupError {
    SetupError::Failed(format!("{what}: {}", OsError::of(&err)))
}

/// The first socket in its state, with whatever keeps it there (the peer of
/// a connection, say). Dropping it tears everything down so that nothing
/// of the case remains bound (TIME_WAIT aside, which is the point).
pub struct Held {
    sockets: Vec<Socket>,
    /// Open TCP connections: aborted with RST on drop, so neither side
    /// lingers in TIME_WAIT afterwards.
    connections: Vec<Socket>,
    pub verified: Verified,
}

impl Drop for Held {
    fn drop(&mut self) {
        for conn in &self.connections {
            let _ = conn.set_linger(Some(Duration::ZERO));
        }
    }
}

impl Held {
    /// `bound-then-listen`: the first socket listens now (after the second
    /// socket bound), verified by SO_ACCEPTCONN.
    pub fn first_listens(&self) -> Result<(), String> {
        let first = self.sockets.first().ok_or("no first socket is held")?;
        let describe = |e: SetupError| match e {
            SetupError::Failed(why) => why,
            other => format!("{other:?}"),
        };
        listen(first).map_err(describe)?;
        expect_listening(first).map_err(describe)
    }
}

/// A socket for `spec` with IPV6_V6ONLY and the options set, not bound.
pub fn open(proto: Proto, spec: &SocketSpec, which: Which) -> Result<Socket, SetupError> {
    let domain = Domain::for_address(SocketAddr::new(spec.endpoint.ip, 0));
    let socket = Socket::new(domain, sock_type(proto), None)
        .map_err(|e| failed(&format!("socket() for the {} socket", which.name()), e))?;
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
                return Err(SetupError::Refused(which, opt, OsError::of(&e)))
            }
        }
    }
    Ok(socket)
}

pub fn sock_type(proto: Proto) -> Type {
    match proto {
        Proto::Tcp => Type::STREAM,
        Proto::Udp => Type::DGRAM,
    }
}

fn bind_first(case: &Case, port: u16) -> Result<Socket, SetupError> {
    let socket = open(case.proto, &case.first, Which::First)?;
    let addr = SocketAddr::new(case.first.endpoint.ip, port);
    socket
        .bind(&addr.into())
        .map_err(|e| failed("bind() of the first socket", e))?;
    match socket.local_addr().ok().and_then(|a| a.as_socket()) {
        Some(local) if local.port() == port => Ok(socket),
        other => Err(SetupError::Failed(format!(
            "the first socket reports local address {other:?}, not port {port}"
        ))),
    }
}

fn listen(socket: &Socket) -> Result<(), SetupError> {
    socket
        .listen(BACKLOG)
        .map_err(|e| failed("listen() of the first socket", e))
}

/// An address of `socket`'s family for `ip` (v4-mapped for an IPv6 socket).
fn in_family_of(socket: &SocketAddr, ip: IpAddr) -> IpAddr {
    match (socket, ip) {
        (SocketAddr::V6(_), IpAddr::V4(v4)) => v4.to_ipv6_mapped().into(),
        _ => ip,
    }
}

fn addr_of(sock: &Socket, what: &str) -> Result<SocketAddr, SetupError> {
    sock.local_addr()
        .map_err(|e| failed(&format!("getsockname() of {what}"), e))?
        .as_socket()
        .ok_or_else(|| SetupError::Failed(format!("{what} has no IP address")))
}

/// Accept on a non-blocking listener, retrying for at most `WAIT`.
fn accept_bounded(listener: &Socket) -> Result<Socket, SetupError> {
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
fn connect_client(target: SocketAddr) -> Result<Socket, SetupError> {
    let client = Socket::new(Domain::for_address(target), Type::STREAM, None)
        .map_err(|e| failed("socket() for the client", e))?;
    client
        .connect_timeout(&target.into(), WAIT)
        .map_err(|e| failed("connect() to the listener", e))?;
    Ok(client)
}

/// The first socket listening, and a loopback client connected to it
/// (completed, not yet accepted).
fn listen_and_connect(case: &Case, port: u16) -> Result<(Socket, Socket), SetupError> {
    let listener = bind_first(case, port)?;
    listen(&listener)?;
    let client = connect_client(SocketAddr::new(case.first.endpoint.peer_ip(), port))?;
    Ok((listener, client))
}

/// An established loopback connection to the first socket's listener:
/// (listener, accepted server side, client, the connection's address pair
/// as the server sees it).
fn connect_pair(case: &Case, port: u16) -> Result<Connection, SetupError> {
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

struct Connection {
    listener: Socket,
    server: Socket,
    client: Socket,
    /// The server side's local address (the first socket's port).
    local: SocketAddr,
    /// The client's address.
    remote: SocketAddr,
}

/// What the kernel says about a TCP socket, compared with what the case
/// needs; `Unknown` (no way to look on this platform) passes as unverified.
fn expect_tcp(
    local: SocketAddr,
    remote: Option<SocketAddr>,
    want: Observed,
    what: &str,
) -> Result<Verified, SetupError> {
    match platform::observe_tcp(local, remote) {
        Ok(Observed::Unknown) => Ok(Verified::NotVerified),
        Ok(seen) if seen == want => Ok(Verified::Yes),
        Ok(seen) => Err(SetupError::Failed(format!(
            "{what}: expected {want:?}, the kernel reports {seen:?}"
        ))),
        Err(e) => Err(failed(&format!("{what}: socket-table query"), e)),
    }
}

/// The kernel's own word (SO_ACCEPTCONN) that the socket listens: every
/// platform has it, and it costs one syscall.
fn expect_listening(listener: &Socket) -> Result<(), SetupError> {
    match platform::is_listening(listener) {
        Ok(true) => Ok(()),
        Ok(false) => Err(SetupError::Failed(
            "the listener does not listen (SO_ACCEPTCONN is off)".into(),
        )),
        Err(e) => Err(failed("getsockopt(SO_ACCEPTCONN)", e)),
    }
}

/// Poll the kernel until the connection is in `want`, for at most `WAIT`.
fn await_tcp(
    local: SocketAddr,
    remote: SocketAddr,
    want: TcpState,
    what: &str,
) -> Result<Verified, SetupError> {
    await_tcp_nudged(local, remote, want, what, &|| {})
}

/// As `await_tcp`, calling `nudge` between polls (to hurry the peer).
fn await_tcp_nudged(
    local: SocketAddr,
    remote: SocketAddr,
    want: TcpState,
    what: &str,
    nudge: &dyn Fn(),
) -> Result<Verified, SetupError> {
    let deadline = Instant::now() + WAIT;
    loop {
        nudge();
        match expect_tcp(local, Some(remote), Observed::State(want), what) {
            Err(SetupError::Failed(_)) if Instant::now() < deadline => {
                thread::sleep(Duration::from_micros(20))
            }
            done => return done,
        }
    }
}

/// Bring the first socket of `case` into its state on `port` and verify it.
pub fn hold(case: &Case, port: u16) -> Result<Held, SetupError> {
    let mut held = Held {
        sockets: Vec::new(),
        connections: Vec::new(),
        verified: Verified::Yes,
    };
    match (case.proto, case.state) {
        (_, State::Bound) | (Proto::Tcp, State::BoundThenListen) => {
            held.sockets.push(bind_first(case, port)?)
        }
        (Proto::Tcp, State::Listening) => {
            let listener = bind_first(case, port)?;
            listen(&listener)?;
            expect_listening(&listener)?;
            held.sockets.push(listener);
        }
        (Proto::Tcp, State::ListeningWithBacklog) => {
            let (listener, client) = listen_and_connect(case, port)?;
            let reach = SocketAddr::new(case.first.endpoint.peer_ip(), port);
            let remote = addr_of(&client, "the client")?;
            expect_listening(&listener)?;
            held.sockets.push(listener);
            held.connections.push(client);
            // The completed, unaccepted connection waits in the queue.
            held.verified = await_tcp(reach, remote, TcpState::Established, "queued connection")?;
        }
        (Proto::Tcp, State::Established) => {
            let c = connect_pair(case, port)?;
            drop(c.listener);
            held.connections.extend([c.server, c.client]);
            held.verified = expect_tcp(
                c.local,
                Some(c.remote),
                Observed::State(TcpState::Established),
                "accepted connection",
            )?;
            // The restart story needs the listener really gone.
            let reach = SocketAddr::new(case.first.endpoint.peer_ip(), port);
            expect_tcp(reach, None, Observed::Absent, "closed listener")?;
        }
        (Proto::Tcp, State::CloseWait) => {
            let c = connect_pair(case, port)?;
            drop(c.listener);
            // The peer closes; the holder keeps its end open.
            drop(c.client);
            held.connections.push(c.server);
            held.verified = await_tcp(
                c.local,
                c.remote,
                TcpState::CloseWait,
                "accepted connection",
            )?;
        }
        (Proto::Tcp, State::FinWait2) => {
            let c = connect_pair(case, port)?;
            drop(c.listener);
            // The holder closes; the peer acknowledges and stays silent.
            // Its ACK of the FIN may be delayed (Linux enters "pingpong"
            // mode on a FIN): nudge it out until the holder's end is in
            // FIN_WAIT_2.
            drop(c.server);
            let client = &c.client;
            held.verified = await_tcp_nudged(
                c.local,
                c.remote,
                TcpState::FinWait2,
                "closed connection",
                &|| {
                    let _ = platform::flush_ack(client);
                },
            )?;
            held.connections.push(c.client);
        }
        (Proto::Tcp, State::TimeWait) => {
            let c = connect_pair(case, port)?;
            // Server side closes first (active close), then the peer, then
            // the listener: the server's end of the connection, on the
            // first socket's port, enters TIME_WAIT.
            drop(c.server);
            drop(c.client);
            drop(c.listener);
            held.verified = await_tcp(
                c.local,
                c.remote,
                TcpState::TimeWait,
                "server side of the connection",
            )?;
        }
        (Proto::Tcp, State::TimeWaitClient) => {
            // A loopback listener on a port the kernel picks; the first
            // socket is the client, bound to the case's port before connect.
            let server_ip = case.first.endpoint.peer_ip();
            let listener = Socket::new(
                Domain::for_address(SocketAddr::new(server_ip, 0)),
                Type::STREAM,
                None,
            )
            .and_then(|l| {
                l.bind(&SocketAddr::new(server_ip, 0).into())?;
                l.listen(BACKLOG)?;
                Ok(l)
            })
            .map_err(|e| failed("the loopback listener for the client", e))?;
            let target = addr_of(&listener, "the loopback listener")?;
            let client = bind_first(case, port)?;
            let local_family = addr_of(&client, "the first socket")?;
            let target = SocketAddr::new(in_family_of(&local_family, target.ip()), target.port());
            client
                .connect_timeout(&target.into(), WAIT)
                .map_err(|e| failed("connect() of the first socket", e))?;
            let server = accept_bounded(&listener)?;
            let (local, remote) = (
                addr_of(&client, "the first socket")?,
                addr_of(&server, "the accepted socket")?,
            );
            // The client closes first: its end, on the case's port, enters
            // TIME_WAIT once the server closes too.
            drop(client);
            drop(server);
            drop(listener);
            held.verified = await_tcp(
                local,
                remote,
                TcpState::TimeWait,
                "client side of the connection",
            )?;
        }
        // close() of a socket that never connected is synchronous: once it
        // returns, the port is free (the port was checked free before).
        (Proto::Tcp, State::Closed) => drop(bind_first(case, port)?),
        (Proto::Udp, State::Connected) => {
            let socket = bind_first(case, port)?;
            let peer_ip = case.first.endpoint.peer_ip();
            let peer = Socket::new(
                Domain::for_address(SocketAddr::new(peer_ip, 0)),
                Type::DGRAM,
                None,
            )
            .and_then(|p| p.bind(&SocketAddr::new(peer_ip, 0).into()).map(|_| p))
            .map_err(|e| failed("bind() of the UDP peer", e))?;
            let peer_addr = addr_of(&peer, "the UDP peer")?;
            let local = addr_of(&socket, "the first socket")?;
            let target = SocketAddr::new(in_family_of(&local, peer_addr.ip()), peer_addr.port());
            socket
                .connect(&SockAddr::from(target))
                .map_err(|e| failed("connect() of the first socket", e))?;
            match socket.peer_addr().ok().and_then(|a| a.as_socket()) {
                Some(p) if p == target => {}
                other => {
                    return Err(SetupError::Failed(format!(
                        "the first socket reports peer {other:?}, not {target}"
                    )))
                }
            }
            held.sockets.extend([socket, peer]);
        }
        (proto, state) => {
            return Err(SetupError::Failed(format!(
                "state {} does not exist for {}",
                state.name(),
                proto.name()
            )))
        }
    }
    Ok(held)
}
