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

use std::net::{Ipv4Addr, SocketAddr};
use std::thread;
use std::time::{Duration, Instant};

use socket2::Socket;

use super::server::{self, ServerAddr, ServerProcess, Started};
use crate::outcome::{Outcome, Side, Skip};
use crate::platform::{self, Observed, TcpState};
use crate::report::table::{Note, Table};
use crate::report::Recorded;
use crate::run::ports;
use crate::scenario::{value_enum, Named, Options, Proto, SockOpt};
use crate::spawn;

/// How the old server goes away.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Departure {
    HardKill,
    Graceful,
    ClientsCloseFirst,
}

impl Named for Departure {
    const WHAT: &'static str = "variant";
    const ALL: &'static [Departure] = &[
        Departure::HardKill,
        Departure::Graceful,
        Departure::ClientsCloseFirst,
    ];

    fn name(self) -> &'static str {
        match self {
            Departure::HardKill => "hard-kill",
            Departure::Graceful => "graceful",
            Departure::ClientsCloseFirst => "clients-close-first",
        }
    }
}

value_enum!(Departure);

/// The configurations a restarted server is tried with: none, SO_REUSEADDR,
/// and Windows' SO_EXCLUSIVEADDRUSE (`unsupported` elsewhere).
pub const RESTART_OPTIONS: &[Options] = &[
    Options::NONE,
    Options::of(&[SockOpt::ReuseAddr]),
    Options::of(&[SockOpt::ExclusiveAddrUse]),
];

/// Clients of the old server.
pub const CLIENTS: usize = 3;

/// The longest a state may take to settle after the old server went away.
const SETTLE: Duration = Duration::from_secs(1);

/// After a hard kill, the old ends are FIN_WAIT1 until the clients' delayed
/// ACKs of the FIN arrive: 40 ms at the earliest (Linux and FreeBSD's
/// minimum delayed-ACK time; macOS and Windows wait longer). States seen
/// within this bound of the kill are what an immediate restart meets; a
/// machine too busy to look that soon runs the story again.
const PROMPT: Duration = Duration::from_millis(30);

/// How often a story is run again because the states were seen too late.
const TRIES: usize = 5;

/// Why one run of a story did not give its answer.
enum Attempt {
    /// The old states were seen this long after the kill: too late to be
    /// sure they are what an immediate restart meets.
    Late(Duration),
    Failed(String),
}

impl From<String> for Attempt {
    fn from(why: String) -> Attempt {
        Attempt::Failed(why)
    }
}

/// What one story found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Story {
    pub departure: Departure,
    pub options: Options,
    /// The port both servers used (`None` when the story did not run).
    pub port: Option<u16>,
    /// The old connections' server sides when the new server binds, one
    /// per client (empty when the story did not get that far).
    pub old: Vec<Observed>,
    /// The new server's bind and listen.
    pub new_server: Outcome,
}

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

/// The server-side states of the old connections as a restart meets them:
/// right after the old server went away, with nobody hurrying the clients
/// (after a hard kill that is FIN_WAIT1, until the clients' delayed ACKs
/// come). Only LAST_ACK and CLOSING, which end on the next ACK, are given
/// a moment to settle, so that the table does not record a race.
fn old_states(port: u16, clients: &[SocketAddr]) -> Vec<Observed> {
    let server = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let settling = |s: &Observed| {
        matches!(
            s,
            Observed::State(TcpState::LastAck | TcpState::Closing)
                | Observed::Owned(TcpState::LastAck | TcpState::Closing, _)
                | Observed::MiniSocket(TcpState::LastAck | TcpState::Closing)
        )
    };
    let deadline = Instant::now() + SETTLE;
    loop {
        let seen: Vec<Observed> = clients
            .iter()
            .map(|c| platform::observe_tcp(server, Some(*c)).unwrap_or(Observed::Unknown))
            .collect();
        if !seen.iter().any(settling) || Instant::now() >= deadline {
            return seen;
        }
        thread::sleep(Duration::from_micros(200));
    }
}

/// `FIN_WAIT2 x3`, `gone x3`, `not verified x3`; `-` for none.
pub fn summary(old: &[Observed]) -> String {
    if old.is_empty() {
        return "-".into();
    }
    let mut counts: Vec<(String, usize)> = Vec::new();
    for s in old {
        let name = match *s {
            Observed::State(state) | Observed::Owned(state, _) | Observed::MiniSocket(state) => {
                state_name(state)
            }
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

/// Run one story; `log` receives the timeline as it happens.
pub fn run(departure: Departure, options: Options, log: &mut dyn FnMut(Duration, String)) -> Story {
    let mut story = Story {
        departure,
        options,
        port: None,
        old: Vec::new(),
        new_server: Outcome::SetupFailed(String::new()),
    };
    if let Some(opt) = options.iter().find(|&o| !platform::supports(o)) {
        story.new_server = Outcome::Skipped(Skip::Unsupported(opt));
        return story;
    }
    for _ in 0..TRIES {
        match run_checked(&mut story, log) {
            Ok(()) => return story,
            Err(Attempt::Late(after)) => log(
                after,
                format!(
                    "old states seen {} ms after the kill, later than {} ms: the story runs again",
                    after.as_millis(),
                    PROMPT.as_millis()
                ),
            ),
            Err(Attempt::Failed(why)) => {
                story.old.clear();
                story.new_server = Outcome::SetupFailed(why);
                return story;
            }
        }
    }
    story.old.clear();
    story.new_server = Outcome::SetupFailed(format!(
        "{TRIES} times the old states were seen later than {} ms after the kill (a busy machine)",
        PROMPT.as_millis()
    ));
    story
}

fn run_checked(story: &mut Story, log: &mut dyn FnMut(Duration, String)) -> Result<(), Attempt> {
    // The ports first: waiting for another run is not part of the timeline.
    ports::pool();
    let start = Instant::now();
    let mut say = |text: String| log(start.elapsed(), text);
    let options = story.options;
    let mut lease = ports::pool().take(Proto::Tcp)?;
    // Most departures leave the old connections in TIME_WAIT.
    lease.left_time_wait();
    let port = lease.port();
    story.port = Some(port);
    let place = ServerAddr::Tcp(SocketAddr::from((Ipv4Addr::UNSPECIFIED, port)));
    let (old, started) = ServerProcess::start(&place, options, false)?;
    if !started.is_listening() {
        return Err(format!(
            "the old server could not listen: {}",
            started.outcome(Side::First).answer()
        )
        .into());
    }
    say(format!(
        "old server listening on 0.0.0.0:{port} ({options})"
    ));

    let mut clients = server::connect_clients(port, CLIENTS)?;
    let client_addrs: Vec<SocketAddr> = clients
        .iter()
        .filter_map(|c| c.local_addr().ok()?.as_socket())
        .collect();
    say(format!("{CLIENTS} clients connected, each echoed a line"));

    // Closing client sockets is socket work like any other (see `spawn`).
    let close_clients = |clients: &mut Vec<Socket>| {
        let _quiet = spawn::sockets();
        clients.clear();
    };
    let departed = Instant::now();
    match story.departure {
        Departure::HardKill => {
            old.kill()?;
            say("old server killed hard while its clients are connected".into());
        }
        Departure::Graceful => {
            let mut old = old;
            old.close_connections()?;
            say("old server closed its connections".into());
            close_clients(&mut clients);
            say("clients saw the end of the stream and closed".into());
            old.exit()?;
            say("old server exited".into());
        }
        Departure::ClientsCloseFirst => {
            close_clients(&mut clients);
            say("clients closed".into());
            old.exit()?;
            say("old server exited".into());
        }
    }
    story.old = {
        let _quiet = spawn::sockets();
        old_states(port, &client_addrs)
    };
    let after = departed.elapsed();
    if story.departure == Departure::HardKill && after > PROMPT {
        return Err(Attempt::Late(after));
    }
    say(format!(
        "old connections, server side: {}",
        summary(&story.old)
    ));

    let (new, started) = ServerProcess::start(&place, options, true)?;
    drop(new);
    story.new_server = started.outcome(Side::Second);
    say(format!(
        "new server ({options}): bind/listen {}",
        story.new_server.answer()
    ));
    if !clients.is_empty() {
        // As real clients would once they notice: close. The old server's
        // ends then move on to TIME_WAIT, which `--wait` shows.
        close_clients(&mut clients);
        say("clients noticed the end of the stream and closed".into());
    }
    Ok(())
}

/// After a story, retry a plain bind of the new server every 100 ms until
/// it works or `limit` runs out: how long the port stayed blocked.
pub fn wait_until_free(options: Options, port: u16, limit: Duration) -> Result<Duration, Duration> {
    let start = Instant::now();
    let place = ServerAddr::Tcp(SocketAddr::from((Ipv4Addr::UNSPECIFIED, port)));
    loop {
        if let Ok((_, started)) = ServerProcess::start(&place, options, true) {
            if matches!(started, Started::Bound { bind: Ok(()), .. }) {
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
    for &departure in Departure::ALL {
        for &options in RESTART_OPTIONS {
            stories.push(run(departure, options, &mut |_, _| {}));
        }
    }
    stories
}

/// The stories as a table (the form stored in snapshots).
pub fn table(stories: &[Story]) -> Table {
    let heading = vec![
        format!(
            "restart story: an echo server on 0.0.0.0:port with {CLIENTS} connected clients goes away; \
             a new server process with the same options binds the same port at once"
        ),
        "old connections = the old server's ends of the connections right after it went away, \
         nobody hurrying the clients; new server = its bind()/listen()"
            .to_string(),
    ];
    let header = ["variant", "options", "old connections", "new server"].map(String::from);
    let mut table = Table::new(heading, Recorded::Restart.key_columns(), header.to_vec());
    for s in stories {
        table.rows.push(vec![
            s.departure.name().to_string(),
            s.options.to_string(),
            summary(&s.old),
            s.new_server.answer(),
        ]);
        if let Some(reason) = s.new_server.reason() {
            let line = format!("{} {}: {reason}", s.departure.name(), s.options);
            table.notes.push(Note::Text(line));
        }
    }
    table
}
