//! Who receives the traffic when two sockets hold one port.
//!
//! After a second bind (and, for TCP, listen) that worked while the first
//! socket still receives (a listener, a bound UDP socket: the state row's
//! `receives`), real loopback traffic goes to every address both sockets
//! are reached at: new TCP connections, or UDP datagrams from new senders
//! and, for a connected UDP first socket, from its peer too. Each socket
//! counts what it got (accepted connections, datagrams), wherever it lives:
//! here, in a holder process or in the other user's binder process.
//!
//! A kernel that balances (SO_REUSEPORT) picks a socket by a hash of the
//! sender's address and port, so every connection comes from a fresh
//! socket, and every datagram of a probe from a port of its own (the
//! kernel picked it for one of the thread's UDP senders). `ROUND` of them
//! go first; when all of them reached one socket, `CONFIRM` more follow, so
//! that a balancing kernel looks one-sided by chance with odds of 2^-23
//! (about 350 balanced cases a run: once in 20,000 runs). A small first
//! round is enough to see a balancing kernel (it sends to both sockets
//! within 8 with odds 127 in 128); the odds come from all 24. The split
//! itself varies from run to run and is kept out of the answer.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::io;
use std::mem::MaybeUninit;
use std::net::{IpAddr, SocketAddr};
use std::thread;
use std::time::Instant;

use socket2::{Domain, Socket, Type};

use super::binder::Binding;
use super::setup::WAIT;
use super::Holding;
use crate::outcome::{Delivery, Outcome, Probe, Sender, Verdict};
use crate::scenario::{Case, Proto, State};

/// Connections or datagrams sent to each shared address.
pub const ROUND: u32 = 8;

/// More of them when the first `ROUND` all reached one socket.
pub const CONFIRM: u32 = 16;

/// Whether `case`, answered `outcome`, gets the delivery step: both sockets
/// took the port (and listen, for TCP), the first socket receives in its
/// state, and the two share at least one address.
pub fn applies(case: &Case, outcome: &Outcome) -> bool {
    let worked = match outcome {
        Outcome::Ran {
            bind: Ok(()),
            listen,
            ..
        } => match case.proto {
            Proto::Tcp => matches!(listen, Some(Ok(()))),
            Proto::Udp => true,
        },
        _ => false,
    };
    worked && case.state.receives(case.proto) && !targets(case).is_empty()
}

/// The addresses both sockets are reached at, in a fixed order. A
/// connected UDP first socket is reached only at the local address its
/// connect() chose: the loopback address its peer sits on.
pub fn targets(case: &Case) -> Vec<IpAddr> {
    let first = match case.state {
        State::Connected => vec![case.peer_ip()],
        _ => case.first.endpoint.reach(),
    };
    let second = case.second.endpoint.reach();
    first.into_iter().filter(|ip| second.contains(ip)).collect()
}

/// Send the traffic of `case` (run `i` of `holding`) to `port` and count who
/// received it. An `Err` says why the counting broke off (a child process
/// that went away).
pub(super) fn measure(
    case: &Case,
    port: u16,
    i: usize,
    holding: &mut dyn Holding,
    binding: &mut dyn Binding,
) -> Result<Delivery, String> {
    let mut delivery = Delivery::default();
    for ip in targets(case) {
        let to = SocketAddr::new(ip, port);
        // A connected UDP first socket takes only its peer's datagrams, and
        // those decide the verdict (`Delivery::verdict`); new senders show
        // where everybody else's go.
        let senders: &[(Sender, bool)] = match case.state {
            State::Connected => &[(Sender::New, false), (Sender::Peer, true)],
            _ => &[(Sender::New, true)],
        };
        for &(sender, decides) in senders {
            let mut probe = Probe {
                to: ip,
                sender,
                sent: 0,
                first: 0,
                second: 0,
                refused: 0,
                lost: 0,
            };
            let mut side = Sides {
                proto: case.proto,
                to,
                sender,
                i,
                holding: &mut *holding,
                binding: &mut *binding,
            };
            side.round(ROUND, &mut probe)?;
            // Only new senders can be balanced (the peer's port is fixed),
            // and only traffic that decides the verdict needs the odds.
            let one_sided = matches!(
                Verdict::of(probe.first, probe.second),
                Verdict::First | Verdict::Second
            );
            if decides && sender == Sender::New && one_sided {
                side.round(CONFIRM, &mut probe)?;
            }
            delivery.probes.push(probe);
        }
    }
    Ok(delivery)
}

/// One probe's traffic and the two sockets that count it.
struct Sides<'a> {
    proto: Proto,
    to: SocketAddr,
    sender: Sender,
    /// The case's index in `holding`.
    i: usize,
    holding: &'a mut dyn Holding,
    binding: &'a mut dyn Binding,
}

impl Sides<'_> {
    /// `n` connections or datagrams, then the count, bounded by `WAIT`.
    fn round(&mut self, n: u32, probe: &mut Probe) -> Result<(), String> {
        let (proto, to, i) = (self.proto, self.to, self.i);
        // Kept open until counted, so that no port is reused within a round.
        let mut clients: Vec<Socket> = Vec::new();
        let mut refused = 0;
        match self.sender {
            Sender::Peer => {
                let sent = self.holding.peer_sends(i, to, n)?;
                refused += n - sent.min(n);
            }
            Sender::New if proto == Proto::Udp => {
                clients = udp_senders(to.ip(), n as usize)
                    .map_err(|e| format!("UDP senders on {}: {e}", to.ip()))?;
                for sender in &clients {
                    if send_datagram(sender, to).is_err() {
                        refused += 1;
                    }
                }
            }
            Sender::New => {
                for _ in 0..n {
                    match tcp_client(to) {
                        Ok(client) => clients.push(client),
                        Err(_) => refused += 1,
                    }
                }
            }
        }
        let mut answered = vec![false; clients.len()];
        let (mut first, mut second) = (0, 0);
        let deadline = Instant::now() + WAIT;
        loop {
            first += self.holding.drain(i)?;
            second += self.binding.drain()?;
            if first + second + refused < n && proto == Proto::Udp {
                // Port unreachable came back: nobody took that datagram.
                for (client, done) in clients.iter().zip(answered.iter_mut()) {
                    if !*done && matches!(client.take_error(), Ok(Some(_))) {
                        *done = true;
                        refused += 1;
                    }
                }
            }
            if first + second + refused >= n || Instant::now() >= deadline {
                break;
            }
            thread::yield_now();
        }
        match proto {
            Proto::Udp => give_back_udp_senders(to.ip(), clients),
            Proto::Tcp => {
                for client in &clients {
                    // An RST, so that neither end lingers in TIME_WAIT.
                    let _ = client.set_linger(Some(std::time::Duration::ZERO));
                }
            }
        }
        probe.sent += n;
        probe.first += first;
        probe.second += second;
        probe.refused += refused;
        probe.lost += n.saturating_sub(first + second + refused);
        Ok(())
    }
}

/// A new TCP client of the shared port, connected.
fn tcp_client(to: SocketAddr) -> io::Result<Socket> {
    let socket = Socket::new(Domain::for_address(to), Type::STREAM, None)?;
    socket.connect_timeout(&to.into(), WAIT)?;
    Ok(socket)
}

thread_local! {
    /// This thread's UDP senders, by source address, oldest first.
    static UDP_SENDERS: RefCell<Vec<(IpAddr, VecDeque<Socket>)>> = const { RefCell::new(Vec::new()) };
}

/// `n` UDP senders on `ip` for a round: a new sender needs a source port of
/// its own, not a socket of its own. Each is bound once, to `ip` and a port
/// the kernel picks, and kept by this thread for later rounds; a round
/// takes the ones used longest ago, and a thread keeps at least
/// `ROUND + CONFIRM` per address, so the rounds of one probe never share a
/// port (a balancing kernel hashes the source port).
///
/// Bound before they connect: connect() on a socket bound to a wildcard
/// moves it to another chain of the kernel's UDP lookup table (Linux:
/// udp_lib_rehash), and a lookup walking that chain on another CPU at that
/// moment can miss a socket further down it. Then a datagram meant for a
/// specific address fell through to a wildcard socket of another case
/// (seen once in about 60 runs, with 256 chains in the private namespace).
fn udp_senders(ip: IpAddr, n: usize) -> io::Result<Vec<Socket>> {
    UDP_SENDERS.with_borrow_mut(|pools| {
        let at = match pools.iter().position(|(a, _)| *a == ip) {
            Some(at) => at,
            None => {
                pools.push((ip, VecDeque::new()));
                pools.len() - 1
            }
        };
        let pool = &mut pools[at].1;
        while pool.len() < n.max((ROUND + CONFIRM) as usize) {
            let socket = Socket::new(
                Domain::for_address(SocketAddr::new(ip, 0)),
                Type::DGRAM,
                None,
            )?;
            socket.bind(&SocketAddr::new(ip, 0).into())?;
            pool.push_back(socket);
        }
        Ok(pool.drain(..n).collect())
    })
}

/// Senders back to their pool, as the ones used last.
fn give_back_udp_senders(ip: IpAddr, senders: Vec<Socket>) {
    UDP_SENDERS.with_borrow_mut(|pools| {
        if let Some((_, pool)) = pools.iter_mut().find(|(a, _)| *a == ip) {
            pool.extend(senders);
        }
    });
}

/// One datagram from `sender`, connected to `to` first, so that a "port
/// unreachable" for it comes back to it (an error left from its last
/// target is cleared first).
fn send_datagram(sender: &Socket, to: SocketAddr) -> io::Result<()> {
    sender.take_error()?;
    sender.connect(&to.into())?;
    sender.send(b"x").map(|_| ())
}

/// Take everything waiting on a receiving socket without blocking: accept
/// (and abort) the connections of a listener, or read the datagrams of a
/// UDP socket. `skip` is a connection that was queued before the traffic
/// (`listening-with-backlog`): taken, not counted.
pub fn drain(socket: &Socket, skip: Option<SocketAddr>) -> io::Result<u32> {
    socket.set_nonblocking(true)?;
    let mut count = 0;
    if socket.r#type()? == Type::STREAM {
        loop {
            match socket.accept() {
                Ok((conn, from)) => {
                    let _ = conn.set_linger(Some(std::time::Duration::ZERO));
                    if from.as_socket().map(canonical) != skip.map(canonical) {
                        count += 1;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(count),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }
    let mut buf = [MaybeUninit::<u8>::uninit(); 16];
    loop {
        match socket.recv_from(&mut buf) {
            Ok(_) => count += 1,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(count),
            // An error queued on the socket (Windows reports a port
            // unreachable on the receiver too): not a datagram.
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::ConnectionRefused
                        | io::ErrorKind::ConnectionReset
                        | io::ErrorKind::Interrupted
                ) => {}
            Err(e) => return Err(e),
        }
    }
}

/// A v4-mapped address as the IPv4 address it stands for.
fn canonical(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(addr.ip().to_canonical(), addr.port())
}

/// `n` datagrams from `peer` to `to`: how many went out.
pub fn send_from(peer: &Socket, to: SocketAddr, n: u32) -> u32 {
    (0..n)
        .filter(|_| peer.send_to(b"x", &to.into()).is_ok())
        .count() as u32
}

/// The kinds of traffic the delivery step sends: TCP connections and UDP
/// datagrams from new clients, and datagrams from a connected UDP socket's
/// peer.
pub const TRAFFIC: [(Proto, Sender); 3] = [
    (Proto::Tcp, Sender::New),
    (Proto::Udp, Sender::New),
    (Proto::Udp, Sender::Peer),
];

/// The bench's floor of the delivery step: `n` messages of `sender`'s kind
/// as bare syscalls on one thread, each taken by a receiver on 127.0.0.1:
/// a new client's connection, accepted and aborted (TCP), or a datagram
/// from one of the thread's UDP senders, or one from a connected peer
/// (UDP), read.
pub fn floor(proto: Proto, sender: Sender, n: u32) -> io::Result<()> {
    let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
    let receiver = Socket::new(Domain::IPV4, proto.into(), None)?;
    receiver.bind(&loopback.into())?;
    let to = receiver
        .local_addr()?
        .as_socket()
        .ok_or(io::ErrorKind::InvalidData)?;
    let mut buf = [MaybeUninit::<u8>::uninit(); 16];
    match (proto, sender) {
        (Proto::Tcp, _) => {
            receiver.listen(128)?;
            receiver.set_read_timeout(Some(WAIT))?;
            for _ in 0..n {
                let client = tcp_client(to)?;
                let (conn, _) = receiver.accept()?;
                conn.set_linger(Some(std::time::Duration::ZERO))?;
                client.set_linger(Some(std::time::Duration::ZERO))?;
            }
        }
        (Proto::Udp, Sender::New) => {
            receiver.set_read_timeout(Some(WAIT))?;
            for _ in 0..n {
                let senders = udp_senders(to.ip(), 1)?;
                send_datagram(&senders[0], to)?;
                receiver.recv(&mut buf)?;
                give_back_udp_senders(to.ip(), senders);
            }
        }
        (Proto::Udp, Sender::Peer) => {
            receiver.set_read_timeout(Some(WAIT))?;
            let peer = Socket::new(Domain::IPV4, proto.into(), None)?;
            peer.bind(&loopback.into())?;
            for _ in 0..n {
                send_from(&peer, to, 1);
                receiver.recv(&mut buf)?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::probe;

    fn case(text: &str) -> Case {
        probe::parse(&[text.to_string()]).unwrap()
    }

    fn ips(list: &[&str]) -> Vec<IpAddr> {
        list.iter().map(|s| s.parse().unwrap()).collect()
    }

    /// The bench's floor sends and takes every kind of traffic (a receiver
    /// that got nothing would time out: an error, not a silent zero).
    #[test]
    fn the_bare_traffic_of_every_kind_arrives() {
        for (proto, sender) in TRAFFIC {
            let sent = floor(proto, sender, 4);
            assert!(sent.is_ok(), "{proto:?} {sender:?}: {sent:?}");
        }
    }

    /// The two rounds of a probe (`ROUND`, then `CONFIRM`) send from
    /// different ports: a balancing kernel must get fresh hashes.
    #[test]
    fn a_probes_rounds_send_from_different_ports() {
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        let port = |s: &Socket| s.local_addr().unwrap().as_socket().unwrap().port();
        let first = udp_senders(ip, ROUND as usize).unwrap();
        let ports: Vec<u16> = first.iter().map(port).collect();
        give_back_udp_senders(ip, first);
        let confirm = udp_senders(ip, CONFIRM as usize).unwrap();
        assert!(confirm.iter().all(|s| !ports.contains(&port(s))));
        let mut all: Vec<u16> = ports.into_iter().chain(confirm.iter().map(port)).collect();
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), (ROUND + CONFIRM) as usize);
        give_back_udp_senders(ip, confirm);
    }

    #[test]
    fn traffic_goes_to_the_addresses_both_sockets_are_reached_at() {
        for (text, want) in [
            ("tcp listening 0.0.0.0 127.0.0.1", &["127.0.0.1"][..]),
            ("tcp listening ::/dual ::/dual", &["127.0.0.1", "::1"]),
            ("tcp listening ::/dual ::/v6only", &["::1"]),
            ("tcp listening ::/v6only 0.0.0.0", &[]),
            ("tcp listening 127.0.0.1 127.0.0.2", &[]),
            ("udp bound ::ffff:0.0.0.0 ::/dual", &["127.0.0.1"]),
            ("udp bound ::1/dual 0.0.0.0", &[]),
            ("udp connected ::/dual ::/dual v6-peer", &["::1"]),
            ("udp connected ::/dual ::/dual v4-peer", &["127.0.0.1"]),
            ("udp connected ::/dual 0.0.0.0 v6-peer", &[]),
            ("udp connected 0.0.0.0 ::/dual", &["127.0.0.1"]),
        ] {
            assert_eq!(targets(&case(text)), ips(want), "{text}");
        }
    }

    #[test]
    fn only_receiving_states_that_took_the_port_get_traffic() {
        let ran = |listen| Outcome::Ran {
            bind: Ok(()),
            listen,
            check: crate::outcome::StateCheck::Verified,
            delivery: None,
        };
        let refused = Some(Err(crate::outcome::OsError { code: 98 }));
        let shared = "0.0.0.0 0.0.0.0";
        for (text, outcome, want) in [
            ("tcp listening", ran(Some(Ok(()))), true),
            ("tcp listening", ran(refused), false),
            ("tcp bound", ran(Some(Ok(()))), false),
            ("tcp time-wait", ran(Some(Ok(()))), false),
            ("udp bound", ran(None), true),
            ("udp connected", ran(None), true),
        ] {
            let c = case(&format!("{text} {shared}"));
            assert_eq!(applies(&c, &outcome), want, "{text}");
        }
    }
}
