//! One recipe per first-socket state: how to build it, how to verify it
//! before the second bind, and its bare-syscall floor for the bench.
//!
//! `recipe` matches on every `State` without a wildcard, so a new state
//! does not compile until it has both.

use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use socket2::{Domain, SockAddr, Socket, Type};

use super::setup::*;
use crate::outcome::{OsError, SetupError, StateCheck};
use crate::platform::{self, Census, Observed, TcpState};
use crate::scenario::{Case, Proto, State};

/// How one state is built, checked and measured.
pub struct Recipe {
    /// Bring the first socket of a case into the state on `port`, put what
    /// keeps it there into `Held`, and verify it.
    pub hold: HoldFn,
    /// The same setup and the second bind as bare syscalls on 127.0.0.1,
    /// nothing else: what the harness's cost is measured against.
    pub floor: FloorFn,
    /// Every socket the port holds while the state is held, and nothing
    /// else: what the socket table must show before the second bind.
    pub port_holds: &'static [Holds],
}

/// One socket the port must hold (on the platform's socket table).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Holds {
    /// A socket of the holder (owned by its uid) in this state. A bound
    /// socket is `Close`, a connected UDP socket `Established`.
    Mine(TcpState),
    /// A socket in this state, whoever owns it: a connection nobody has
    /// accepted yet has no owner of its own.
    Any(TcpState),
    /// An ownerless mini-socket: TIME_WAIT, or the FIN_WAIT2 an orphan
    /// becomes.
    Mini(TcpState),
}

pub type HoldFn = fn(&Case, u16, &mut Held) -> Result<(), SetupError>;
pub type FloorFn = fn(Proto) -> io::Result<()>;

pub fn recipe(state: State) -> Recipe {
    use Holds::*;
    use TcpState::*;
    let (hold, floor, port_holds): (HoldFn, FloorFn, &[Holds]) = match state {
        State::Bound => (hold_bound, floor_bound, &[Mine(Close)]),
        State::BoundThenListen => (hold_bound, floor_bound_then_listen, &[Mine(Close)]),
        State::Listening => (hold_listening, floor_listening, &[Mine(Listen)]),
        State::ListeningWithBacklog => (
            hold_listening_with_backlog,
            floor_listening_with_backlog,
            &[Mine(Listen), Any(Established)],
        ),
        State::Established => (hold_established, floor_established, &[Mine(Established)]),
        State::CloseWait => (hold_close_wait, floor_close_wait, &[Mine(CloseWait)]),
        State::FinWait2 => (hold_fin_wait_2, floor_fin_wait_2, &[Mini(FinWait2)]),
        State::TimeWait => (hold_time_wait, floor_time_wait, &[Mini(TimeWait)]),
        State::TimeWaitClient => (
            hold_time_wait_client,
            floor_time_wait_client,
            &[Mini(TimeWait)],
        ),
        State::Closed => (hold_closed, floor_closed, &[]),
        State::Connected => (hold_connected, floor_connected, &[Mine(Established)]),
    };
    Recipe {
        hold,
        floor,
        port_holds,
    }
}

/// Bring the first socket of `case` into its state on `port` and verify it.
pub fn hold(case: &Case, port: u16) -> Result<Held, SetupError> {
    if let Some(why) = case.invalid_reason() {
        return Err(SetupError::Failed(why));
    }
    let recipe = recipe(case.state);
    let mut held = Held::new();
    (recipe.hold)(case, port, &mut held)?;
    expect_port_holds(case.proto, port, recipe.port_holds)?;
    Ok(held)
}

/// The socket table's census of the port: exactly the sockets the state
/// means and nothing else, with the holder's uid where a socket has an
/// owner. For every UDP case, and for TCP cases with `--census` (see
/// `full_census` for the cost). Platforms that cannot list a port (UDP on
/// the BSDs and Windows, Wine) keep the recipe's own checks, as
/// `platform::STATE_CHECK` says.
fn expect_port_holds(proto: Proto, port: u16, holds: &[Holds]) -> Result<(), SetupError> {
    if proto == Proto::Tcp && !super::full_census() {
        return Ok(());
    }
    let census = match platform::census(proto, port, true) {
        Ok(Some(census)) => census,
        Ok(None) => return Ok(()),
        Err(e) => return Err(SetupError::failed("socket-table census of the port", e)),
    };
    port_holds_exactly(holds, &census, platform::euid()).map_err(|seen| {
        SetupError::Failed(format!(
            "port {port} should hold exactly {holds:?}, the socket table lists [{seen}]"
        ))
    })
}

/// Whether `census` lists exactly `holds`, with `owner` as the owner of
/// the holder's sockets; otherwise what it lists.
fn port_holds_exactly(holds: &[Holds], census: &Census, owner: u32) -> Result<(), String> {
    let want = |h: &Holds| match *h {
        Holds::Mine(state) => Observed::Owned(state, owner),
        Holds::Any(state) => Observed::State(state),
        Holds::Mini(state) => Observed::MiniSocket(state),
    };
    let mut missing: Vec<Holds> = holds.to_vec();
    let mut extra = 0;
    for socket in &census.sockets {
        match missing.iter().position(|h| socket.seen.satisfies(want(h))) {
            Some(at) => {
                missing.remove(at);
            }
            None => extra += 1,
        }
    }
    // A table that does not list bound-only sockets cannot miss them
    // (getsockname in `bind_first` has shown the socket holds the port).
    if !census.lists_bound_only {
        missing.retain(|h| *h != Holds::Mine(TcpState::Close));
    }
    if missing.is_empty() && extra == 0 {
        return Ok(());
    }
    let seen: Vec<String> = (census.sockets.iter())
        .map(|s| format!("{:?} {}->{}", s.seen, s.local, s.remote))
        .collect();
    Err(seen.join(", "))
}

// ---- recipes -------------------------------------------------------------

/// `bound` and `bound-then-listen`: a bind is visible through the socket
/// itself; `bound-then-listen` listens later, at the second socket's word.
fn hold_bound(case: &Case, port: u16, held: &mut Held) -> Result<(), SetupError> {
    held.first = Some(bind_first(case, port)?);
    Ok(())
}

/// SO_ACCEPTCONN is the kernel's own word that the socket listens; the
/// socket table adds that a connection to its address would reach it, and
/// that it belongs to the holder's uid.
fn hold_listening(case: &Case, port: u16, held: &mut Held) -> Result<(), SetupError> {
    let listener = bind_first(case, port)?;
    listen(&listener)?;
    expect_listening(&listener)?;
    held.first = Some(listener);
    held.check = expect_listener(case, port)?;
    Ok(())
}

/// The listener a connection to the first socket's address reaches.
fn expect_listener(case: &Case, port: u16) -> Result<StateCheck, SetupError> {
    let reach = SocketAddr::new(case.first.endpoint.peer_ip(), port);
    expect_tcp(reach, None, owned(TcpState::Listen), "listener")
}

/// A completed connection waits in the accept queue: a busy server.
fn hold_listening_with_backlog(case: &Case, port: u16, held: &mut Held) -> Result<(), SetupError> {
    let (listener, client) = listen_and_connect(case, port)?;
    let reach = SocketAddr::new(case.peer_ip(), port);
    let remote = addr_of(&client, "the client")?;
    expect_listening(&listener)?;
    held.first = Some(listener);
    held.abort_on_drop.push(client);
    held.queued = Some(remote);
    expect_listener(case, port)?;
    // Its owner is not checked: a connection nobody accepted has no file,
    // and older kernels (6.1 here) report uid 0 for it.
    held.check = await_tcp(
        reach,
        remote,
        Observed::State(TcpState::Established),
        "queued connection",
        &no_nudge,
    )?;
    Ok(())
}

/// A restart while clients are connected: the listener is gone, the
/// accepted connection holds the port.
fn hold_established(case: &Case, port: u16, held: &mut Held) -> Result<(), SetupError> {
    let c = connect_pair(case, port)?;
    drop(c.listener);
    held.abort_on_drop.extend([c.server, c.client]);
    held.check = expect_tcp(
        c.local,
        Some(c.remote),
        owned(TcpState::Established),
        "accepted connection",
    )?;
    expect_listener_gone(case, port)
}

/// The states after a closed listener need it really gone: a restart
/// meets the old connections, not the old listener.
fn expect_listener_gone(case: &Case, port: u16) -> Result<(), SetupError> {
    let reach = SocketAddr::new(case.first.endpoint.peer_ip(), port);
    expect_tcp(reach, None, Observed::Absent, "closed listener").map(|_| ())
}

/// The peer closes; the holder keeps its end open (a server that leaks
/// sockets its clients left).
fn hold_close_wait(case: &Case, port: u16, held: &mut Held) -> Result<(), SetupError> {
    let c = connect_pair(case, port)?;
    drop(c.listener);
    drop(c.client);
    held.abort_on_drop.push(c.server);
    held.check = await_tcp(
        c.local,
        c.remote,
        owned(TcpState::CloseWait),
        "accepted connection",
        &no_nudge,
    )?;
    expect_listener_gone(case, port)
}

/// The holder closes; the peer acknowledges and stays silent. The state
/// means what a closed server's connection becomes once its silent peer
/// acknowledged the FIN: the FIN_WAIT2 mini-socket (an inet_timewait_sock
/// in substate FIN_WAIT2), which has no owner.
///
/// A plain close() gets there only by a race: when the peer's ACK lands
/// while the orphan is locked (tcp_rcv_state_process, sock_owned_by_user),
/// it stays a full socket, still owned by the holder's uid, and
/// SO_REUSEPORT's same-owner rule then applies to it. So half-close first:
/// the end reaches FIN_WAIT2 as a socket with a file, then close() finds
/// FIN_WAIT2 and makes the mini-socket at once (tcp_close, when
/// net.ipv4.tcp_fin_timeout <= 60 s; above that it stays a full socket,
/// and the check below says so instead of recording it).
fn hold_fin_wait_2(case: &Case, port: u16, held: &mut Held) -> Result<(), SetupError> {
    let c = connect_pair(case, port)?;
    drop(c.listener);
    c.server
        .shutdown(std::net::Shutdown::Write)
        .map_err(|e| SetupError::failed("shutdown(SHUT_WR) of the accepted socket", e))?;
    // The peer may delay its ACK of the FIN (Linux enters "pingpong" mode
    // on a FIN): nudge it out.
    let client = &c.client;
    await_tcp(
        c.local,
        c.remote,
        owned(TcpState::FinWait2),
        "half-closed connection",
        &|| {
            let _ = platform::flush_ack(client);
        },
    )?;
    drop(c.server);
    held.check = expect_tcp(
        c.local,
        Some(c.remote),
        Observed::MiniSocket(TcpState::FinWait2),
        "closed connection (the FIN_WAIT2 mini-socket)",
    )?;
    held.abort_on_drop.push(c.client);
    expect_listener_gone(case, port)
}

/// The server side closes first (active close), then the peer, then the
/// listener: the server's end of the connection, on the first socket's
/// port, enters TIME_WAIT.
fn hold_time_wait(case: &Case, port: u16, held: &mut Held) -> Result<(), SetupError> {
    let c = connect_pair(case, port)?;
    drop(c.server);
    drop(c.client);
    drop(c.listener);
    held.check = await_tcp(
        c.local,
        c.remote,
        Observed::MiniSocket(TcpState::TimeWait),
        "server side of the connection",
        &no_nudge,
    )?;
    Ok(())
}

/// The first socket is a client bound to the case's port, connected to a
/// loopback listener on a port the kernel picks; it closes first, so its
/// end enters TIME_WAIT once the server closes too.
fn hold_time_wait_client(case: &Case, port: u16, held: &mut Held) -> Result<(), SetupError> {
    let server_ip = case.peer_ip();
    let listener = bound_anywhere(server_ip, Type::STREAM, "the loopback listener")?;
    listener
        .listen(BACKLOG)
        .map_err(|e| SetupError::failed("listen() of the loopback listener", e))?;
    let target = addr_of(&listener, "the loopback listener")?;
    let client = bind_first(case, port)?;
    let local_family = addr_of(&client, "the first socket")?;
    let target = SocketAddr::new(in_family_of(&local_family, target.ip()), target.port());
    client
        .connect_timeout(&target.into(), WAIT)
        .map_err(|e| SetupError::FirstRefused("connect", OsError::of(&e)))?;
    let server = accept_bounded(&listener)?;
    let (local, remote) = (
        addr_of(&client, "the first socket")?,
        addr_of(&server, "the accepted socket")?,
    );
    drop(client);
    drop(server);
    drop(listener);
    held.check = await_tcp(
        local,
        remote,
        Observed::MiniSocket(TcpState::TimeWait),
        "client side of the connection",
        &no_nudge,
    )?;
    Ok(())
}

/// close() of a socket that never connected is synchronous: once it
/// returns, the port is free (the port was checked free before).
fn hold_closed(case: &Case, port: u16, _held: &mut Held) -> Result<(), SetupError> {
    drop(bind_first(case, port)?);
    Ok(())
}

/// A UDP socket connected to a loopback peer: on Linux, connect() narrows
/// a wildcard-bound socket to one local address.
fn hold_connected(case: &Case, port: u16, held: &mut Held) -> Result<(), SetupError> {
    let socket = bind_first(case, port)?;
    let peer = bound_anywhere(case.peer_ip(), Type::DGRAM, "the UDP peer")?;
    let peer_addr = addr_of(&peer, "the UDP peer")?;
    let local = addr_of(&socket, "the first socket")?;
    let target = SocketAddr::new(in_family_of(&local, peer_addr.ip()), peer_addr.port());
    socket
        .connect(&SockAddr::from(target))
        .map_err(|e| SetupError::FirstRefused("connect", OsError::of(&e)))?;
    match socket.peer_addr().ok().and_then(|a| a.as_socket()) {
        Some(p) if p == target => {}
        other => {
            return Err(SetupError::Failed(format!(
                "the first socket reports peer {other:?}, not {target}"
            )))
        }
    }
    held.first = Some(socket);
    held.peers.push(peer);
    Ok(())
}

// ---- floors --------------------------------------------------------------

const LOOPBACK: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::LOCALHOST), 0);

fn new(proto: Proto) -> io::Result<Socket> {
    Socket::new(Domain::IPV4, proto.into(), None)
}

fn listener() -> io::Result<Socket> {
    let l = new(Proto::Tcp)?;
    l.bind(&LOOPBACK.into())?;
    l.listen(BACKLOG)?;
    // Bounds accept() where the OS honours it (Linux).
    l.set_read_timeout(Some(WAIT))?;
    Ok(l)
}

fn client_of(listener: &Socket) -> io::Result<Socket> {
    let c = new(Proto::Tcp)?;
    c.connect_timeout(&listener.local_addr()?, WAIT)?;
    Ok(c)
}

fn abort(socket: &Socket) -> io::Result<()> {
    socket.set_linger(Some(Duration::ZERO))
}

/// The second socket's bind, and listen for TCP: the end of every floor.
fn second(proto: Proto, addr: &SockAddr) -> io::Result<()> {
    let second = new(proto)?;
    if second.bind(addr).is_ok() && proto == Proto::Tcp {
        let _ = second.listen(BACKLOG);
    }
    Ok(())
}

fn floor_bound(proto: Proto) -> io::Result<()> {
    let first = new(proto)?;
    first.bind(&LOOPBACK.into())?;
    second(proto, &first.local_addr()?)
}

fn floor_bound_then_listen(proto: Proto) -> io::Result<()> {
    let first = new(proto)?;
    first.bind(&LOOPBACK.into())?;
    let second = new(proto)?;
    let _ = second.bind(&first.local_addr()?);
    first.listen(BACKLOG)?;
    let _ = second.listen(BACKLOG);
    Ok(())
}

fn floor_listening(proto: Proto) -> io::Result<()> {
    let l = listener()?;
    second(proto, &l.local_addr()?)
}

fn floor_listening_with_backlog(proto: Proto) -> io::Result<()> {
    let l = listener()?;
    let c = client_of(&l)?;
    abort(&c)?;
    second(proto, &l.local_addr()?)
}

/// An accepted loopback connection whose listener is closed.
fn accepted() -> io::Result<(Socket, Socket, SockAddr)> {
    let l = listener()?;
    let addr = l.local_addr()?;
    let client = client_of(&l)?;
    let (server, _) = l.accept()?;
    Ok((server, client, addr))
}

fn floor_established(proto: Proto) -> io::Result<()> {
    let (server, client, addr) = accepted()?;
    abort(&server)?;
    abort(&client)?;
    second(proto, &addr)
}

fn floor_close_wait(proto: Proto) -> io::Result<()> {
    let (server, client, addr) = accepted()?;
    drop(client);
    abort(&server)?;
    second(proto, &addr)
}

fn floor_fin_wait_2(proto: Proto) -> io::Result<()> {
    let (server, client, addr) = accepted()?;
    drop(server);
    // The ACK of the FIN, as the harness needs it too.
    platform::flush_ack(&client)?;
    abort(&client)?;
    second(proto, &addr)
}

fn floor_time_wait(proto: Proto) -> io::Result<()> {
    let (server, client, addr) = accepted()?;
    drop((server, client));
    second(proto, &addr)
}

fn floor_time_wait_client(proto: Proto) -> io::Result<()> {
    let l = listener()?;
    let first = new(proto)?;
    first.bind(&LOOPBACK.into())?;
    first.connect_timeout(&l.local_addr()?, WAIT)?;
    let (server, _) = l.accept()?;
    let addr = first.local_addr()?;
    drop((first, server, l));
    second(proto, &addr)
}

fn floor_closed(proto: Proto) -> io::Result<()> {
    let first = new(proto)?;
    first.bind(&LOOPBACK.into())?;
    let addr = first.local_addr()?;
    drop(first);
    second(proto, &addr)
}

fn floor_connected(proto: Proto) -> io::Result<()> {
    let first = new(proto)?;
    first.bind(&LOOPBACK.into())?;
    let peer = new(proto)?;
    peer.bind(&LOOPBACK.into())?;
    first.connect(&peer.local_addr()?)?;
    second(proto, &first.local_addr()?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::platform::PortSocket;

    fn census(seen: &[Observed], lists_bound_only: bool) -> Census {
        let at = SocketAddr::from(([127, 0, 0, 1], 10000));
        let sockets = (seen.iter())
            .map(|&seen| PortSocket {
                local: at,
                remote: LOOPBACK,
                seen,
            })
            .collect();
        Census {
            sockets,
            lists_bound_only,
        }
    }

    #[test]
    fn a_port_holds_exactly_what_the_state_means() {
        use Observed::*;
        use TcpState::*;
        let backlog = recipe(crate::scenario::State::ListeningWithBacklog).port_holds;
        let cases: &[(&[Holds], &[Observed], bool, bool)] = &[
            (
                backlog,
                &[Owned(Listen, 65534), Owned(Established, 0)],
                true,
                true,
            ),
            // the closed listener is still there
            (
                recipe(crate::scenario::State::Established).port_holds,
                &[Owned(Established, 65534), Owned(Listen, 65534)],
                true,
                false,
            ),
            // another user's socket
            (
                recipe(crate::scenario::State::Bound).port_holds,
                &[Owned(Close, 0)],
                true,
                false,
            ),
            // the orphan is still a full socket, not the mini-socket
            (
                recipe(crate::scenario::State::FinWait2).port_holds,
                &[Owned(FinWait2, 65534)],
                true,
                false,
            ),
            (
                recipe(crate::scenario::State::Closed).port_holds,
                &[],
                true,
                true,
            ),
            (
                recipe(crate::scenario::State::Closed).port_holds,
                &[MiniSocket(TimeWait)],
                true,
                false,
            ),
            // a table without bound-only sockets cannot show the bound one
            (
                recipe(crate::scenario::State::Bound).port_holds,
                &[],
                false,
                true,
            ),
            (
                recipe(crate::scenario::State::Bound).port_holds,
                &[],
                true,
                false,
            ),
            // a table that reports states only (the BSDs, Windows)
            (
                recipe(crate::scenario::State::TimeWait).port_holds,
                &[Observed::State(TimeWait)],
                false,
                true,
            ),
        ];
        for (holds, seen, lists_bound_only, ok) in cases {
            let result = port_holds_exactly(holds, &census(seen, *lists_bound_only), 65534);
            assert_eq!(
                result.is_ok(),
                *ok,
                "{holds:?} against {seen:?}: {result:?}"
            );
        }
    }
}
