//! The restart story, end to end with real processes: an echo server with
//! connected clients goes away, and a new server process binds the same
//! port at once.
//!
//! Each story runs one variant of "goes away" with one configuration that
//! the old and the new server share (a restart runs the same program):
//! - `hard-kill`: SIGKILL (TerminateProcess on Windows) while clients are
//!   connected and silent,
//! - `graceful`: the server closes its connections first, the clients
//!   close on EOF, then the server exits,
//! - `clients-close-first`: the clients close, then the server exits.

use std::fmt::Write;
use std::net::{Ipv4Addr, SocketAddr};
use std::thread;
use std::time::{Duration, Instant};

use socket2::{Domain, Socket, Type};

use crate::outcome::{OsError, Outcome, Skip, Verified};
use crate::platform::{self, Observed, TcpState};
use crate::ports;
use crate::scenario::{Options, Proto, SockOpt};
use crate::server::{self, Place, ServerProcess, Started};
use crate::spawn;

/// How the old server goes away.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Variant {
    HardKill,
    Graceful,
    ClientsCloseFirst,
}

impl Variant {
    pub const ALL: &'static [Variant] = &[
        Variant::HardKill,
        Variant::Graceful,
        Variant::ClientsCloseFirst,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Variant::HardKill => "hard-kill",
            Variant::Graceful => "graceful",
            Variant::ClientsCloseFirst => "clients-close-first",
        }
    }
}

/// The configurations a restarted server is tried with: none, SO_REUSEADDR,
/// and Windows' SO_EXCLUSIVEADDRUSE (`unsupported` elsewhere).
pub const CONFIGS: &[Options] = &[
    Options::NONE,
    Options::of(&[SockOpt::ReuseAddr]),
    Options::of(&[SockOpt::ExclusiveAddrUse]),
];

/// Clients of the old server.
pub const CLIENTS: usize = 3;

/// The longest a state may take to settle after the old server went away.
const SETTLE: Duration = Duration::from_secs(1);

/// What one story found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Story {
    pub variant: Variant,
    pub options: Options,
    /// The old connections' server sides when the new server binds, e.g.
    /// `FIN_WAIT2 x3`, `gone`, or `not verified` where the OS cannot tell.
    pub old_connections: String,
    /// The new server's bind and listen.
    pub new_server: Outcome,
}

/// One timeline line: time since the story began, and what happened.
pub type Timeline = Vec<(Duration, String)>;

fn state_name(state: TcpState) -> String {
    match state {
        TcpState::Established => "ESTABLISHED".into(),
        TcpState::SynSent => "SYN_SENT".into(),
        TcpState::SynRecv => "SYN_RECV".into(),
        TcpState::FinWait1 => "FIN_WAIT1".into(),
        TcpState::FinWait2 => "FIN_WAIT2".into(),
        TcpState::TimeWait => "TIME_WAIT".into(),
        TcpState::Close => "CLOSE".into(),
        TcpState::CloseWait => "CLOSE_WAIT".into(),
        TcpState::LastAck => "LAST_ACK".into(),
        TcpState::Listen => "LISTEN".into(),
        TcpState::Closing => "CLOSING".into(),
        TcpState::Other(code) => format!("state {code}"),
    }
}

/// The server-side states of the old connections, after they settled.
/// Clients still open are nudged to acknowledge a FIN at once (see
/// `platform::flush_ack`).
fn old_states(port: u16, clients: &[SocketAddr], open: &[Socket]) -> String {
    let server = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let transitional = |s: &Observed| {
        matches!(
            s,
            Observed::State(TcpState::FinWait1 | TcpState::LastAck | TcpState::Closing)
        )
    };
    let deadline = Instant::now() + SETTLE;
    let mut seen: Vec<Observed>;
    loop {
        for client in open {
            let _ = platform::flush_ack(client);
        }
        seen = clients
            .iter()
            .map(|c| platform::observe_tcp(server, Some(*c)).unwrap_or(Observed::Unknown))
            .collect();
        if !seen.iter().any(transitional) || Instant::now() >= deadline {
            break;
        }
        thread::sleep(Duration::from_micros(200));
    }
    let mut counts: Vec<(String, usize)> = Vec::new();
    for s in seen {
        let name = match s {
            Observed::State(state) => state_name(state),
            Observed::Absent => "gone".into(),
            Observed::Unknown => "not verified".into(),
        };
        match counts.iter_mut().find(|(n, _)| *n == name) {
            Some((_, k)) => *k += 1,
            None => counts.push((name, 1)),
        }
    }
    let parts: Vec<String> = counts
        .into_iter()
        .map(|(n, k)| format!("{n} x{k}"))
        .collect();
    parts.join(", ")
}

fn started_outcome(started: &Started) -> Outcome {
    Outcome::Ran {
        bind: started.bind,
        listen: started.listen,
        verified: Verified::Yes,
    }
}

/// Run one story; `log` receives the timeline as it happens.
pub fn run(variant: Variant, options: Options, log: &mut dyn FnMut(Duration, String)) -> Story {
    let story = |old_connections: String, new_server: Outcome| Story {
        variant,
        options,
        old_connections,
        new_server,
    };
    if let Some(opt) = options.iter().find(|&o| !platform::supports(o)) {
        return story("-".into(), Outcome::Skipped(Skip::Unsupported(opt)));
    }
    match run_checked(variant, options, log) {
        Ok((old, new)) => story(old, new),
        Err(why) => story("-".into(), Outcome::SetupFailed(why)),
    }
}

fn run_checked(
    variant: Variant,
    options: Options,
    log: &mut dyn FnMut(Duration, String),
) -> Result<(String, Outcome), String> {
    let start = Instant::now();
    let mut say = |text: String| log(start.elapsed(), text);
    let mut lease = ports::pool().take(Proto::Tcp)?;
    // Most variants leave the old connections in TIME_WAIT.
    lease.left_time_wait();
    let port = lease.port();
    let place = Place::Tcp(SocketAddr::from((Ipv4Addr::UNSPECIFIED, port)));
    let (old, started) = ServerProcess::start(&place, options, false)?;
    if started.bind.is_err() || started.listen != Some(Ok(())) {
        return Err(format!(
            "the old server could not listen: {}",
            started_outcome(&started).cell()
        ));
    }
    say(format!(
        "old server listening on 0.0.0.0:{port} ({options})"
    ));

    let target = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let mut clients = Vec::new();
    let quiet = spawn::sockets();
    for i in 0..CLIENTS {
        let client = Socket::new(Domain::IPV4, Type::STREAM, None).map_err(|e| e.to_string())?;
        client
            .connect_timeout(&target.into(), Duration::from_secs(2))
            .map_err(|e| format!("client {i}: connect: {}", OsError::of(&e)))?;
        server::exchange(&client, format!("hello {i}\n").as_bytes())
            .map_err(|e| format!("client {i}: echo: {e}"))?;
        clients.push(client);
    }
    let client_addrs: Vec<SocketAddr> = clients
        .iter()
        .filter_map(|c| c.local_addr().ok()?.as_socket())
        .collect();
    drop(quiet);
    say(format!("{CLIENTS} clients connected, each echoed a line"));

    match variant {
        Variant::HardKill => {
            old.kill()?;
            say("old server killed hard while its clients are connected".into());
        }
        Variant::Graceful => {
            let mut old = old;
            old.close_connections()?;
            say("old server closed its connections".into());
            let quiet = spawn::sockets();
            clients.clear();
            drop(quiet);
            say("clients saw the end of the stream and closed".into());
            old.exit()?;
            say("old server exited".into());
        }
        Variant::ClientsCloseFirst => {
            let quiet = spawn::sockets();
            clients.clear();
            drop(quiet);
            say("clients closed".into());
            old.exit()?;
            say("old server exited".into());
        }
    }
    let old_connections = {
        let _quiet = spawn::sockets();
        old_states(port, &client_addrs, &clients)
    };
    say(format!("old connections, server side: {old_connections}"));

    let (new, started) = ServerProcess::start(&place, options, true)?;
    drop(new);
    let outcome = started_outcome(&started);
    say(format!(
        "new server ({options}): bind/listen {}",
        outcome.cell()
    ));
    if !clients.is_empty() {
        // As real clients would once they notice: close. The old server's
        // ends then move on to TIME_WAIT, which `--wait` shows.
        let quiet = spawn::sockets();
        clients.clear();
        drop(quiet);
        say("clients noticed the end of the stream and closed".into());
    }
    Ok((old_connections, outcome))
}

/// After a story, retry a plain bind of the new server every 100 ms until
/// it works or `limit` runs out: how long the port stayed blocked.
pub fn wait_until_free(options: Options, port: u16, limit: Duration) -> Result<Duration, Duration> {
    let start = Instant::now();
    let place = Place::Tcp(SocketAddr::from((Ipv4Addr::UNSPECIFIED, port)));
    loop {
        if let Ok((_, started)) = ServerProcess::start(&place, options, true) {
            if started.bind.is_ok() {
                return Ok(start.elapsed());
            }
        }
        if start.elapsed() >= limit {
            return Err(start.elapsed());
        }
        thread::sleep(Duration::from_millis(100));
    }
}

/// Every story, as the snapshot table holds them.
pub fn all_stories() -> Vec<Story> {
    let mut stories = Vec::new();
    for &variant in Variant::ALL {
        for &options in CONFIGS {
            stories.push(run(variant, options, &mut |_, _| {}));
        }
    }
    stories
}

/// The stories as a table (the form stored in snapshots).
pub fn table(stories: &[Story]) -> String {
    let mut out = String::new();
    writeln!(
        out,
        "restart story: an echo server on 0.0.0.0:port with {CLIENTS} connected clients goes away; \
         a new server process with the same options binds the same port at once"
    )
    .unwrap();
    writeln!(
        out,
        "old connections = the old server's ends of the connections when the new server binds; \
         new server = its bind()/listen()"
    )
    .unwrap();
    writeln!(out).unwrap();
    let header = ["variant", "options", "old connections", "new server"].map(String::from);
    let rows: Vec<Vec<String>> = std::iter::once(header.to_vec())
        .chain(stories.iter().map(|s| {
            vec![
                s.variant.name().to_string(),
                s.options.to_string(),
                s.old_connections.clone(),
                s.new_server.cell(),
            ]
        }))
        .collect();
    out.push_str(&crate::render::aligned(&rows, ""));
    let notes: Vec<String> = stories
        .iter()
        .filter_map(|s| {
            let reason = s.new_server.reason()?;
            Some(format!("{} {}: {reason}", s.variant.name(), s.options))
        })
        .collect();
    if !notes.is_empty() {
        writeln!(out).unwrap();
        for n in notes {
            writeln!(out, "{n}").unwrap();
        }
    }
    out
}
