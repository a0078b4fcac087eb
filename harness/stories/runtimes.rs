//! The runtimes story: the servers people actually write. One small echo
//! server per runtime lives in `runtimes/` (runtimes/README.md), written
//! the way its documentation shows it; this module builds them, runs them
//! as child processes, and records what their listening sockets really
//! have and what a restart or a second instance of them meets.
//!
//! Each program speaks one line protocol on stdout: `ready VERSION SOCKET...`
//! (each socket `ADDR:PORT,reuseaddr=V,reuseport=V,v6only=V,exclusive=V`,
//! V = 1, 0, `?` unreadable, `-` does not apply) or `failed NAME message`,
//! then `accepted` per connection; it exits at the end of its stdin.

use std::ffi::OsString;
use std::io::{Read, Seek};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

use socket2::Socket;

use super::server;
use crate::outcome::Outcome;
use crate::platform::{self, ListenerOptions};
use crate::probe;
use crate::report::table::{Note, Table};
use crate::report::Recorded;
use crate::run::{self, ports, setup::WAIT};
use crate::scenario::{Case, Holder, Named, Peer, Proto, SockOpt, State};
use crate::spawn::{self, ChildProcess};

/// A runtime: the tool it needs on PATH, and how its program is built.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Runtime {
    Python,
    Go,
    Node,
    Java,
    Dotnet,
    Rust,
}

impl Runtime {
    pub const ALL: &'static [Runtime] = &[
        Runtime::Python,
        Runtime::Go,
        Runtime::Node,
        Runtime::Java,
        Runtime::Dotnet,
        Runtime::Rust,
    ];

    /// Its name for `ADDRINUSE_SKIP_RUNTIMES` and the reasons.
    pub fn name(self) -> &'static str {
        match self {
            Runtime::Python => "python",
            Runtime::Go => "go",
            Runtime::Node => "node",
            Runtime::Java => "java",
            Runtime::Dotnet => "dotnet",
            Runtime::Rust => "rust",
        }
    }

    /// Whether its program reads every option and address of its own
    /// sockets. Node has no getsockopt; Java reads neither IPV6_V6ONLY nor
    /// SO_EXCLUSIVEADDRUSE and reports its IPv6 sockets as IPv4 addresses.
    /// Without a look from outside, their rows are not compared with the
    /// matrix.
    pub fn reads_itself(self) -> bool {
        !matches!(self, Runtime::Node | Runtime::Java)
    }

    /// The commands it needs, each with the names it may have on PATH
    /// (the first one found is used).
    fn tools(self) -> &'static [&'static [&'static str]] {
        match self {
            Runtime::Python => &[platform::PYTHON],
            Runtime::Go => &[&["go"]],
            Runtime::Node => &[&["node"]],
            Runtime::Java => &[&["java"], &["javac"]],
            Runtime::Dotnet => &[&["dotnet"]],
            Runtime::Rust => &[&["cargo"]],
        }
    }
}

/// One program of `runtimes/`, run with one argument that picks it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Program {
    /// The table's name for it.
    pub name: &'static str,
    pub runtime: Runtime,
    /// Python: the script; Go and Rust: the variant; others: none.
    arg: &'static str,
    /// Also run on 127.0.0.1: its wildcard is one dual-stack socket.
    pub loopback: bool,
}

const fn program(
    name: &'static str,
    runtime: Runtime,
    arg: &'static str,
    loopback: bool,
) -> Program {
    Program {
        name,
        runtime,
        arg,
        loopback,
    }
}

/// Every program, in table order.
pub const PROGRAMS: &[Program] = &[
    program(
        "python socket tutorial",
        Runtime::Python,
        "tutorial.py",
        false,
    ),
    program(
        "python tutorial+SO_REUSEADDR",
        Runtime::Python,
        "tutorial_reuseaddr.py",
        false,
    ),
    program(
        "python create_server",
        Runtime::Python,
        "create_server.py",
        false,
    ),
    program(
        "python socketserver",
        Runtime::Python,
        "socketserver_tcp.py",
        false,
    ),
    program(
        "python http.server",
        Runtime::Python,
        "http_server.py",
        false,
    ),
    program(
        "python asyncio",
        Runtime::Python,
        "asyncio_server.py",
        false,
    ),
    program("go net.Listen", Runtime::Go, "listen", true),
    program(
        "go ListenConfig+SO_REUSEADDR",
        Runtime::Go,
        "listenconfig-reuseaddr",
        true,
    ),
    program("node net.createServer", Runtime::Node, "", true),
    program("java ServerSocket", Runtime::Java, "", true),
    program(".NET TcpListener", Runtime::Dotnet, "", true),
    program("rust std TcpListener", Runtime::Rust, "std", false),
    program("rust tokio TcpListener", Runtime::Rust, "tokio", false),
    program("rust tokio TcpSocket", Runtime::Rust, "tokio-socket", false),
    program(
        "rust TcpSocket+set_reuseaddr",
        Runtime::Rust,
        "tokio-socket-reuseaddr",
        false,
    ),
];

/// A restart after a code fix: the old program set nothing, the new one
/// adds SO_REUSEADDR. (Rust std sets SO_REUSEADDR itself on Unix and
/// offers no way to set it on Windows: tokio's TcpSocket is where a Rust
/// program chooses.)
pub const FIXES: &[(&str, &str, &str)] = &[
    (
        "python socket tutorial",
        "python tutorial+SO_REUSEADDR",
        "python tutorial, fixed: +SO_REUSEADDR",
    ),
    (
        "go net.Listen",
        "go ListenConfig+SO_REUSEADDR",
        "go net.Listen, fixed: ListenConfig",
    ),
    (
        "rust tokio TcpSocket",
        "rust TcpSocket+set_reuseaddr",
        "rust TcpSocket, fixed: +set_reuseaddr",
    ),
];

fn find(name: &str) -> Program {
    *PROGRAMS
        .iter()
        .find(|p| p.name == name)
        .expect("FIXES names programs of PROGRAMS")
}

/// Where a program listens.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ListenOn {
    /// All interfaces, written the way the runtime's docs write it.
    Any,
    /// 127.0.0.1.
    Loopback,
}

impl ListenOn {
    fn arg(self) -> &'static str {
        match self {
            ListenOn::Any => "any",
            ListenOn::Loopback => "loopback",
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            ListenOn::Any => "all interfaces",
            ListenOn::Loopback => "127.0.0.1",
        }
    }
}

/// One row: an old program, the new one that replaces it (the same one
/// but for a code fix), and where both listen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Row {
    pub old: Program,
    pub new: Program,
    pub listen_on: ListenOn,
    /// The fix's name, for a row whose programs differ.
    fix: Option<&'static str>,
}

impl Row {
    pub fn name(&self) -> &'static str {
        self.fix.unwrap_or(self.new.name)
    }
}

/// Every row of the table: each program on all interfaces (and on
/// 127.0.0.1 where its wildcard is dual-stack), then the fixes.
pub fn rows() -> Vec<Row> {
    let mut rows = Vec::new();
    for &p in PROGRAMS {
        let row = |listen_on| Row {
            old: p,
            new: p,
            listen_on,
            fix: None,
        };
        rows.push(row(ListenOn::Any));
        if p.loopback {
            rows.push(row(ListenOn::Loopback));
        }
    }
    for &(old, new, fix) in FIXES {
        rows.push(Row {
            old: find(old),
            new: find(new),
            listen_on: ListenOn::Any,
            fix: Some(fix),
        });
    }
    rows
}

// ---- finding and building the programs -------------------------------------

/// Runtimes to leave out even where installed (comma-separated names): a
/// machine whose recorded table was made without them, e.g. a Linux
/// runner with .NET when the Linux snapshot was recorded on Debian.
pub const SKIP_VAR: &str = "ADDRINUSE_SKIP_RUNTIMES";

/// The `runtimes/` folder: ./runtimes, else the one this binary was built
/// from.
pub fn sources() -> Option<PathBuf> {
    let here = PathBuf::from("runtimes");
    if here.join("README.md").is_file() {
        return Some(here);
    }
    let built = Path::new(env!("CARGO_MANIFEST_DIR")).join("runtimes");
    built.join("README.md").is_file().then_some(built)
}

/// The first of `names` on PATH.
fn on_path(names: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    let exe = std::env::consts::EXE_SUFFIX;
    names.iter().find_map(|name| {
        std::env::split_paths(&path)
            .map(|dir| dir.join(format!("{name}{exe}")))
            .find(|p| p.is_file())
    })
}

/// How to start one runtime's programs: an executable and the arguments
/// before the program's own.
#[derive(Clone, Debug)]
pub struct Launcher {
    exe: PathBuf,
    args: Vec<OsString>,
    /// Python's scripts live here.
    scripts: PathBuf,
}

impl Launcher {
    fn command(&self, program: &Program, port: u16, listen_on: ListenOn) -> Command {
        let mut command = Command::new(&self.exe);
        command.args(&self.args);
        match program.runtime {
            Runtime::Python => {
                command.arg(self.scripts.join(program.arg));
            }
            Runtime::Go | Runtime::Rust => {
                command.arg(program.arg);
            }
            Runtime::Node | Runtime::Java | Runtime::Dotnet => {}
        }
        command.arg(port.to_string()).arg(listen_on.arg());
        command
    }
}

/// How long one build may take (the first Rust build compiles tokio).
const BUILD_LIMIT: Duration = Duration::from_secs(900);

/// Run a build command, bounded; its stderr is kept for the reason.
fn build(command: &mut Command, what: &str) -> Result<(), String> {
    // A build may fetch packages: not from the run's private network.
    platform::in_machine_network(command);
    let mut log = tempfile::tempfile().map_err(|e| format!("{what}: {e}"))?;
    let err = log.try_clone().map_err(|e| format!("{what}: {e}"))?;
    command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(err);
    let mut child = spawn::start(command).map_err(|e| format!("{what}: {e}"))?;
    let status = spawn::wait_for(&mut child, BUILD_LIMIT).map_err(|e| format!("{what}: {e}"))?;
    if status.success() {
        return Ok(());
    }
    let mut text = String::new();
    let _ = log.rewind();
    let _ = log.read_to_string(&mut text);
    let last = text
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("");
    Err(format!("{what} failed ({status}): {}", last.trim()))
}

/// Whether `SKIP_VAR` leaves `runtime` out.
pub fn listed(runtime: Runtime) -> bool {
    std::env::var(SKIP_VAR).is_ok_and(|list| list.split(',').any(|n| n.trim() == runtime.name()))
}

/// The runtimes that are neither on PATH nor left out on purpose, each with
/// why: known before any program is built or run.
pub fn absent() -> Vec<String> {
    let mut out = Vec::new();
    for &runtime in Runtime::ALL {
        if listed(runtime) {
            continue;
        }
        if let Some(names) = runtime
            .tools()
            .iter()
            .find(|names| on_path(names).is_none())
        {
            out.push(format!("{} not found on PATH", names[0]));
        }
    }
    out
}

/// Why a runtime's rows do not run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NotReady {
    /// Not installed, or left out on purpose: skipped.
    Absent(String),
    /// Installed, but its program did not build: setup-failed.
    BuildFailed(String),
}

/// Find a runtime's tools and build its program into `cache` (Go and
/// cargo rebuild only what changed there, javac only an outdated class).
pub fn prepare(runtime: Runtime, sources: &Path, cache: &Path) -> Result<Launcher, NotReady> {
    if listed(runtime) {
        return Err(NotReady::Absent(format!(
            "{} is listed in {SKIP_VAR}",
            runtime.name()
        )));
    }
    let mut tools = Vec::new();
    for names in runtime.tools() {
        let tool = on_path(names)
            .ok_or_else(|| NotReady::Absent(format!("{} not found on PATH", names[0])))?;
        tools.push(tool);
    }
    prepare_with(runtime, &tools, sources, cache).map_err(NotReady::BuildFailed)
}

fn prepare_with(
    runtime: Runtime,
    tools: &[PathBuf],
    sources: &Path,
    cache: &Path,
) -> Result<Launcher, String> {
    let exe = std::env::consts::EXE_SUFFIX;
    let dir = cache.join(runtime.name());
    let absolute = |p: &Path| std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
    let sources = absolute(sources);
    let dir = absolute(&dir);
    let launcher = |exe: PathBuf, args: Vec<OsString>| Launcher {
        exe,
        args,
        scripts: sources.join("python"),
    };
    Ok(match runtime {
        Runtime::Python => launcher(interpreter(&tools[0]), vec![]),
        Runtime::Node => launcher(tools[0].clone(), vec![sources.join("node/echo.js").into()]),
        Runtime::Go => {
            let out = dir.join(format!("echo-go{exe}"));
            build(
                Command::new(&tools[0])
                    .args(["build", "-o"])
                    .arg(&out)
                    .arg(".")
                    .current_dir(sources.join("go")),
                "go build",
            )?;
            launcher(out, vec![])
        }
        Runtime::Java => {
            let source = sources.join("java/Echo.java");
            // javac has no cache of its own: a second a run otherwise.
            if !newer(&dir.join("Echo.class"), &source) {
                build(
                    Command::new(&tools[1]).arg("-d").arg(&dir).arg(&source),
                    "javac",
                )?;
            }
            launcher(
                tools[0].clone(),
                vec!["-cp".into(), dir.into(), "Echo".into()],
            )
        }
        Runtime::Dotnet => {
            build(
                Command::new(&tools[0])
                    .args(["build", "-c", "Release", "--nologo", "-o"])
                    .arg(&dir)
                    .arg(sources.join("dotnet/Echo.csproj")),
                "dotnet build",
            )?;
            launcher(tools[0].clone(), vec![dir.join("Echo.dll").into()])
        }
        Runtime::Rust => {
            build(
                Command::new(&tools[0])
                    .args(["build", "--release", "--locked", "--manifest-path"])
                    .arg(sources.join("rust/Cargo.toml"))
                    .arg("--target-dir")
                    .arg(&dir),
                "cargo build (runtimes/rust)",
            )?;
            launcher(dir.join(format!("release/echo-rust{exe}")), vec![])
        }
    })
}

/// Python's interpreter itself, as it names itself (`sys.executable`):
/// PATH may hold a version manager's shim instead (pyenv's costs 0.2 s a
/// start, and a row starts its program six times). `tool` where it does not
/// answer.
fn interpreter(tool: &Path) -> PathBuf {
    let asked = || -> Option<PathBuf> {
        let mut command = Command::new(tool);
        command
            .args(["-c", "import sys; sys.stdout.write(sys.executable)"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        let mut child = spawn::start(&mut command).ok()?;
        let status = spawn::wait_for(&mut child, Duration::from_secs(30)).ok()?;
        let mut path = String::new();
        child.stdout.take()?.read_to_string(&mut path).ok()?;
        let path = PathBuf::from(path);
        (status.success() && path.is_file()).then_some(path)
    };
    asked().unwrap_or_else(|| tool.to_path_buf())
}

/// Whether `built` exists and is newer than `source`.
fn newer(built: &Path, source: &Path) -> bool {
    let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    matches!((modified(built), modified(source)), (Some(b), Some(s)) if b > s)
}

// ---- what a program says ------------------------------------------------

/// The value of one `key=V` field: `-` does not apply and `?` could not
/// be read are both `None`.
fn field(value: &str) -> Result<Option<bool>, String> {
    match value {
        "1" => Ok(Some(true)),
        "0" => Ok(Some(false)),
        "?" | "-" => Ok(None),
        other => Err(format!("bad option value '{other}'")),
    }
}

/// One socket of a ready line.
pub fn parse_socket(text: &str) -> Result<ListenerOptions, String> {
    let mut parts = text.split(',');
    let addr: SocketAddr = parts
        .next()
        .unwrap_or_default()
        .parse()
        .map_err(|_| format!("bad address in '{text}'"))?;
    let mut listener = ListenerOptions {
        addr,
        reuseaddr: None,
        reuseport: None,
        v6only: None,
        exclusive: None,
    };
    for part in parts {
        let (key, value) = part
            .split_once('=')
            .ok_or_else(|| format!("bad field '{part}'"))?;
        let value = field(value)?;
        match key {
            "reuseaddr" => listener.reuseaddr = value,
            "reuseport" => listener.reuseport = value,
            "v6only" => listener.v6only = value,
            "exclusive" => listener.exclusive = value,
            other => return Err(format!("unknown field '{other}'")),
        }
    }
    Ok(listener)
}

/// How a program's start went.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Start {
    /// It listens: its version and sockets.
    Ready(String, Vec<ListenerOptions>),
    /// It said `failed NAME ...`: the error as the runtime names it.
    Failed(String),
}

pub fn parse_start(line: &str) -> Result<Start, String> {
    let mut words = line.split(' ');
    match words.next() {
        Some("ready") => {
            let version = words.next().ok_or("a ready line without a version")?;
            let sockets = words.map(parse_socket).collect::<Result<Vec<_>, _>>()?;
            if sockets.is_empty() {
                return Err("a ready line without sockets".into());
            }
            Ok(Start::Ready(version.to_string(), sockets))
        }
        Some("failed") => Ok(Start::Failed(words.next().unwrap_or("error").to_string())),
        _ => Err(format!("the program said: {line}")),
    }
}

/// How long a program may take to say `ready` (a JVM on a busy machine).
const START_WAIT: Duration = Duration::from_secs(30);

/// A running program, killed and reaped on drop.
struct Running {
    process: ChildProcess,
}

fn start(
    launcher: &Launcher,
    program: &Program,
    port: u16,
    listen_on: ListenOn,
) -> Result<(Option<Running>, Start), String> {
    let mut command = launcher.command(program, port, listen_on);
    let mut process = ChildProcess::start(&mut command, "the runtime's program")?;
    let line = process.line(Instant::now() + START_WAIT)?;
    let start = parse_start(&line)?;
    let running = matches!(start, Start::Ready(..)).then_some(Running { process });
    Ok((running, start))
}

impl Running {
    fn kill(mut self) -> Result<(), String> {
        self.process.kill()
    }

    /// `accepted` lines until `deadline` or `want` of them.
    fn accepted(&mut self, want: usize, deadline: Instant) -> usize {
        let mut n = 0;
        while n < want {
            match self.process.line(deadline) {
                Ok(line) if line == "accepted" => n += 1,
                Ok(_) => {}
                Err(_) => break,
            }
        }
        n
    }
}

fn close(clients: &mut Vec<Socket>) {
    let _quiet = spawn::sockets();
    clients.clear();
}

// ---- the story ------------------------------------------------------------

/// Clients of the old server in the restarts.
pub const CLIENTS: usize = 3;
/// Connections made while two instances listen.
pub const PROBES: usize = 12;

/// What the second instance did while the first was alive.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Second {
    Failed(String),
    /// It started: how many of `PROBES` new connections each one accepted.
    Started {
        first: usize,
        second: usize,
    },
}

/// What a row found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ran {
    /// The new program's version.
    pub version: String,
    /// The old program's sockets, as the table shows them: read from
    /// outside where the platform can, else as the program read them.
    pub old: Vec<ListenerOptions>,
    /// The new program's sockets (the same program: `old`).
    pub new: Vec<ListenerOptions>,
    /// Where the program's own reading and the outside one differ.
    pub disagreements: Vec<String>,
    /// Whether the sockets were read from outside too.
    pub outside: bool,
    pub hard_kill: Result<(), String>,
    pub graceful: Result<(), String>,
    pub second: Second,
}

/// A row's answer: it ran, or why not.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Answer {
    Ran(Box<Ran>),
    /// The runtime is not here (the reason).
    Skipped(String),
    /// The row could not be run to the end (the reason).
    SetupFailed(String),
}

/// One row's result.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Story {
    pub row: Row,
    pub answer: Answer,
}

/// The sockets of a ready program, cross-checked from outside.
fn seen(
    running: &Running,
    port: u16,
    inside: &[ListenerOptions],
    name: &str,
) -> (Vec<ListenerOptions>, Vec<String>, bool) {
    let outside = match platform::listeners_of(running.process.id(), port) {
        Ok(Some(found)) => found,
        Ok(None) => return (inside.to_vec(), Vec::new(), false),
        Err(e) => {
            let why = format!("{name}: its sockets could not be read from outside: {e}");
            return (inside.to_vec(), vec![why], false);
        }
    };
    let mut notes = Vec::new();
    if outside.len() != inside.len() {
        notes.push(format!(
            "{name}: says {} listening socket(s), the kernel has {}",
            inside.len(),
            outside.len()
        ));
    }
    for own in inside {
        let Some(theirs) = outside.iter().find(|o| o.addr == own.addr) else {
            notes.push(format!(
                "{name}: reports {}, the kernel has {}",
                endpoint(own),
                outside.iter().map(endpoint).collect::<Vec<_>>().join(" ")
            ));
            continue;
        };
        for (what, a, b) in [
            ("SO_REUSEADDR", own.reuseaddr, theirs.reuseaddr),
            ("SO_REUSEPORT", own.reuseport, theirs.reuseport),
            ("IPV6_V6ONLY", own.v6only, theirs.v6only),
        ] {
            if let (Some(a), Some(b)) = (a, b) {
                if a != b {
                    notes.push(format!("{name}: reads {what} {a}, the kernel has {b}"));
                }
            }
        }
    }
    let mut sorted = outside;
    sorted.sort_by_key(|l| (l.addr.is_ipv6(), l.addr));
    (sorted, notes, true)
}

fn run_row(
    row: &Row,
    old_launcher: &Launcher,
    new_launcher: &Launcher,
    say: &(dyn Fn(String) + Sync),
) -> Result<Ran, String> {
    let name = row.name();
    let listen_on = row.listen_on;
    // 1. The sockets, and a second instance beside the first.
    let lease = ports::pool().take(Proto::Tcp)?;
    let port = lease.port();
    let (first, started) = start(old_launcher, &row.old, port, listen_on)?;
    let (Some(mut first), Start::Ready(version, inside)) = (first, started.clone()) else {
        return Err(format!("the first instance did not start: {started:?}"));
    };
    let (old, mut disagreements, outside) = seen(&first, port, &inside, row.old.name);
    let (second, started) = start(new_launcher, &row.new, port, listen_on)?;
    let second_instance = match (second, started) {
        (Some(mut second), Start::Ready(..)) => {
            let mut clients = server::connect_clients(port, PROBES)?;
            // Each accepted before it echoed: the lines are on their way.
            let deadline = Instant::now() + Duration::from_secs(5);
            let (mut a, mut b) = (0, 0);
            while a + b < PROBES && Instant::now() < deadline {
                let step = (Instant::now() + Duration::from_millis(20)).min(deadline);
                a += first.accepted(PROBES - a - b, step);
                b += second.accepted(PROBES - a - b, step);
            }
            close(&mut clients);
            Second::Started {
                first: a,
                second: b,
            }
        }
        (_, Start::Failed(word)) => Second::Failed(word),
        (None, Start::Ready(..)) => unreachable!("a ready start runs"),
    };
    drop(first);

    // The new program alone: its version and sockets.
    let (version, new) = if row.old == row.new {
        (version, old.clone())
    } else {
        let lease = ports::pool().take(Proto::Tcp)?;
        let (running, started) = start(new_launcher, &row.new, lease.port(), listen_on)?;
        let (Some(running), Start::Ready(version, inside)) = (running, started.clone()) else {
            return Err(format!("the new program did not start alone: {started:?}"));
        };
        let (new, notes, _) = seen(&running, lease.port(), &inside, row.new.name);
        disagreements.extend(notes);
        (version, new)
    };

    // 2. Restarts: old killed hard with clients connected, or exiting at
    // the end of its stdin; the new program starts at once.
    let restart = |graceful: bool| -> Result<Result<(), String>, String> {
        let mut lease = ports::pool().take(Proto::Tcp)?;
        lease.left_time_wait();
        let port = lease.port();
        let (old, started) = start(old_launcher, &row.old, port, listen_on)?;
        let Some(mut old) = old else {
            return Err(format!("the old server did not start: {started:?}"));
        };
        let mut clients = server::connect_clients(port, CLIENTS)?;
        if graceful {
            old.process.close_stdin();
            old.process.reap(Duration::from_secs(10))?;
            // The clients see the end of the stream and close.
            for client in &clients {
                let _ = client.set_read_timeout(Some(WAIT));
                let mut reader = client;
                let _ = reader.read(&mut [0u8; 1]);
            }
            close(&mut clients);
        } else {
            old.kill()?;
        }
        let (new, started) = start(new_launcher, &row.new, port, listen_on)?;
        drop(new);
        close(&mut clients);
        Ok(match started {
            Start::Ready(..) => Ok(()),
            Start::Failed(word) => Err(word),
        })
    };
    let hard_kill = restart(false)?;
    let graceful = restart(true)?;
    say(format!(
        "{name} ({}): after hard kill {}, after graceful exit {}, second instance {}",
        listen_on.name(),
        start_cell(&hard_kill),
        start_cell(&graceful),
        second_cell(&second_instance)
    ));
    Ok(Ran {
        version,
        old,
        new,
        disagreements,
        outside,
        hard_kill,
        graceful,
        second: second_instance,
    })
}

/// Rows that run at once. A row is mostly program starts (an interpreter,
/// a JVM) and waits for them; each row has ports of its own, and no answer
/// depends on how fast a program starts (the restarts meet states that
/// last a minute), so rows do not change each other's answers.
const ROWS_AT_ONCE: usize = 2;

/// Run every row; `say` gets progress lines. Runtimes are prepared once
/// (a skip reason is kept for all of its rows).
pub fn run_all(say: &mut (dyn FnMut(String) + Send)) -> Vec<Story> {
    let Some(sources) = sources() else {
        return rows()
            .into_iter()
            .map(|row| Story {
                row,
                answer: Answer::SetupFailed(
                    "no runtimes/ folder here or where this binary was built".into(),
                ),
            })
            .collect();
    };
    let cache = cache_dir(&sources);
    let mut launchers: Vec<(Runtime, Result<Launcher, NotReady>)> = Vec::new();
    say(format!(
        "finding the runtimes, building their programs into {} (the first Rust build compiles tokio: a minute or more)",
        cache.display()
    ));
    for &runtime in Runtime::ALL {
        launchers.push((runtime, prepare(runtime, &sources, &cache)));
    }
    let launcher = |r: Runtime| {
        &launchers
            .iter()
            .find(|(x, _)| *x == r)
            .expect("every runtime")
            .1
    };
    // The ports first: waiting for another run is not part of the story.
    ports::pool();
    let say = Mutex::new(say);
    let say = |line: String| (say.lock().unwrap_or_else(|e| e.into_inner()))(line);
    let story = |row: Row| {
        let answer = match (launcher(row.old.runtime), launcher(row.new.runtime)) {
            (Ok(old), Ok(new)) => match run_row(&row, old, new, &say) {
                Ok(ran) => Answer::Ran(Box::new(ran)),
                Err(why) => Answer::SetupFailed(why),
            },
            (Err(NotReady::Absent(why)), _) | (_, Err(NotReady::Absent(why))) => {
                Answer::Skipped(why.clone())
            }
            (Err(NotReady::BuildFailed(why)), _) | (_, Err(NotReady::BuildFailed(why))) => {
                Answer::SetupFailed(why.clone())
            }
        };
        Story { row, answer }
    };
    run::in_order(&rows(), ROWS_AT_ONCE, |&row| story(row))
}

/// Where built programs are kept between runs: `runtimes/` in cargo's
/// target folder (CARGO_TARGET_DIR, else `target/` beside the sources).
pub fn cache_dir(sources: &Path) -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| sources.parent().unwrap_or(Path::new(".")).join("target"));
    target.join("runtimes")
}

/// After a hard kill that blocked the new program: start it again every
/// 250 ms until it comes up or `limit` runs out.
pub fn wait_until_up(row: &Row, limit: Duration) -> Result<Duration, String> {
    let sources = sources().ok_or("no runtimes/ folder")?;
    let cache = cache_dir(&sources);
    let why = |e: NotReady| match e {
        NotReady::Absent(why) | NotReady::BuildFailed(why) => why,
    };
    let old_launcher = prepare(row.old.runtime, &sources, &cache).map_err(why)?;
    let new_launcher = prepare(row.new.runtime, &sources, &cache).map_err(why)?;
    let mut lease = ports::pool().take(Proto::Tcp)?;
    lease.left_time_wait();
    let port = lease.port();
    let (old, _) = start(&old_launcher, &row.old, port, row.listen_on)?;
    let old = old.ok_or("the old server did not start")?;
    let mut clients = server::connect_clients(port, CLIENTS)?;
    old.kill()?;
    // As real clients would once they notice: close.
    close(&mut clients);
    let begin = Instant::now();
    loop {
        let (new, started) = start(&new_launcher, &row.new, port, row.listen_on)?;
        drop(new);
        if matches!(started, Start::Ready(..)) {
            return Ok(begin.elapsed());
        }
        if begin.elapsed() >= limit {
            return Err(format!(
                "still blocked after {:.1} s",
                begin.elapsed().as_secs_f64()
            ));
        }
        thread::sleep(Duration::from_millis(250));
    }
}

// ---- the table ------------------------------------------------------------

/// A socket in the probe grammar: `0.0.0.0+reuseaddr`, `::/dual`; an option
/// that could not be read gets a `?`.
pub fn endpoint(l: &ListenerOptions) -> String {
    let mut text = match (l.addr.ip(), l.v6only) {
        (IpAddr::V4(ip), _) => ip.to_string(),
        (IpAddr::V6(ip), Some(true)) => format!("{ip}/v6only"),
        (IpAddr::V6(ip), Some(false)) => format!("{ip}/dual"),
        (IpAddr::V6(ip), None) => format!("{ip}/?"),
    };
    for (name, value, applies) in [
        ("reuseaddr", l.reuseaddr, true),
        (
            "reuseport",
            l.reuseport,
            platform::supports(SockOpt::ReusePort),
        ),
        (
            "exclusive",
            l.exclusive,
            platform::supports(SockOpt::ExclusiveAddrUse),
        ),
    ] {
        match value {
            Some(true) => text.push_str(&format!("+{name}")),
            None if applies => text.push_str(&format!("+{name}?")),
            _ => {}
        }
    }
    text
}

fn sockets_cell(sockets: &[ListenerOptions]) -> String {
    sockets.iter().map(endpoint).collect::<Vec<_>>().join(" ")
}

fn start_cell(result: &Result<(), String>) -> String {
    match result {
        Ok(()) => "up".into(),
        Err(word) => word.clone(),
    }
}

fn second_cell(second: &Second) -> String {
    match second {
        Second::Failed(word) => word.clone(),
        Second::Started { first, second } => {
            format!("starts: new connections {first} old, {second} new")
        }
    }
}

/// The stories as a table; `versions` adds the version column (left out
/// of snapshots, where it would churn) and the skip reasons.
pub fn table(stories: &[Story], versions: bool) -> Table {
    let heading = vec![
        "runtimes: each runtime's own echo server (runtimes/), started the way its docs show; \
         sockets = its listening sockets' options, read with getsockopt"
            .to_string(),
        format!(
            "after hard kill / graceful exit = the same program started again at once on the port \
             ({CLIENTS} clients were connected): up or the error it reported; \
             second instance = started again while the first listens ({PROBES} new connections counted)"
        ),
    ];
    let mut header = vec!["program", "listens on"];
    if versions {
        header.push("version");
    }
    header.extend([
        "sockets",
        "after hard kill",
        "after graceful exit",
        "second instance",
    ]);
    let header: Vec<String> = header.into_iter().map(String::from).collect();
    let mut table = Table::new(heading, Recorded::Runtimes.key_columns(), header);
    let mut outside = None;
    for story in stories {
        let mut row = vec![
            story.row.name().to_string(),
            story.row.listen_on.name().to_string(),
        ];
        let cells = match &story.answer {
            Answer::Ran(ran) => {
                outside = Some(outside.unwrap_or(false) || ran.outside);
                if versions {
                    row.push(ran.version.clone());
                }
                let sockets = if story.row.old == story.row.new {
                    sockets_cell(&ran.new)
                } else {
                    format!("{} -> {}", sockets_cell(&ran.old), sockets_cell(&ran.new))
                };
                for line in &ran.disagreements {
                    let note = Note::Text(line.clone());
                    if !table.notes.contains(&note) {
                        table.notes.push(note);
                    }
                }
                vec![
                    sockets,
                    start_cell(&ran.hard_kill),
                    start_cell(&ran.graceful),
                    second_cell(&ran.second),
                ]
            }
            Answer::Skipped(why) | Answer::SetupFailed(why) => {
                let word = match story.answer {
                    Answer::Skipped(_) => "skipped",
                    _ => "setup-failed",
                };
                if versions {
                    row.push("-".into());
                }
                let note = Note::Text(format!("{}: {word}: {why}", story.row.name()));
                let shown = versions || matches!(story.answer, Answer::SetupFailed(_));
                if shown && !table.notes.contains(&note) {
                    table.notes.push(note);
                }
                vec![word.to_string(); 4]
            }
        };
        row.extend(cells);
        table.rows.push(row);
    }
    table.notes.push(Note::Text(match outside {
        Some(true) => format!(
            "sockets: read inside each program and, on {}, from outside too ({}); they agree unless noted",
            platform::OS,
            OUTSIDE_CHECK
        ),
        _ => "sockets: as each program read them itself (`?`: the runtime offers no way to read it; \
              Java reports its IPv6 sockets as IPv4 addresses)"
            .into(),
    }));
    table
}

/// How the Linux cross-check reads a program's sockets.
pub const OUTSIDE_CHECK: &str = "pidfd_getfd and getsockopt";

// ---- the matrix says the same ----------------------------------------------

/// The matrix case a restart or a second instance meets: the old program's
/// socket `old` in `state`, the new one's `new` binding beside it.
fn case(state: State, old: &ListenerOptions, new: &ListenerOptions) -> Result<Case, String> {
    let spec = |l: &ListenerOptions| -> Result<String, String> {
        let text = endpoint(l);
        if text.contains('?') {
            return Err(format!("{text} has options that could not be read"));
        }
        Ok(text)
    };
    let words = vec![
        Proto::Tcp.name().to_string(),
        state.name().to_string(),
        spec(old)?,
        spec(new)?,
        Holder::OtherProcess.name().to_string(),
    ];
    // The story's clients connect to 127.0.0.1: a dual-stack server's
    // connections hold ::ffff:127.0.0.1, the matrix's v4-peer case. Only
    // such a first socket in a state with a peer takes the word.
    let with_peer = [words.clone(), vec![Peer::V4.name().to_string()]].concat();
    probe::parse(&with_peer).or_else(|_| probe::parse(&words))
}

fn ok(outcome: &Outcome) -> bool {
    outcome.answer() == "ok/ok"
}

/// Whether a connection to 127.0.0.1 reaches this socket (and so leaves
/// its old connections behind).
fn reached(l: &ListenerOptions) -> bool {
    match l.addr.ip() {
        IpAddr::V4(_) => true,
        IpAddr::V6(ip) => {
            ip.to_ipv4_mapped().is_some() || (ip.is_unspecified() && l.v6only == Some(false))
        }
    }
}

/// What the matrix answers for a row: for each question, whether the new
/// program comes up, from the cases its sockets map to (socket i of the
/// old program against socket i of the new one). Hard kill: the reached
/// socket's connections in fin-wait-2 (closed by the server, clients
/// silent); graceful: in time-wait; others closed. Second instance: every
/// socket listening.
pub fn matrix_says(ran: &Ran) -> Result<[bool; 3], String> {
    if ran.old.len() != ran.new.len() {
        return Err("the old and new programs open different numbers of sockets".into());
    }
    let mut cases: Vec<[Case; 3]> = Vec::new();
    for (o, n) in ran.old.iter().zip(&ran.new) {
        let after = |state| if reached(o) { state } else { State::Closed };
        cases.push([
            case(after(State::FinWait2), o, n)?,
            case(after(State::TimeWait), o, n)?,
            case(State::Listening, o, n)?,
        ]);
    }
    let mut answers = [true; 3];
    for three in &cases {
        for (i, c) in three.iter().enumerate() {
            answers[i] &= ok(&run::run_case(c).outcome);
        }
    }
    Ok(answers)
}

/// Rows whose answers contradict the matrix, and how many rows were
/// compared. A row whose options a program could not read itself is not
/// compared, unless the kernel was asked from outside: then every row must
/// map to matrix cases.
pub fn contradictions(stories: &[Story]) -> (usize, Vec<String>) {
    let mut compared = 0;
    let mut found = Vec::new();
    for story in stories {
        let Answer::Ran(ran) = &story.answer else {
            continue;
        };
        let trusted = story.row.old.runtime.reads_itself() && story.row.new.runtime.reads_itself();
        if !ran.outside && !trusted {
            continue;
        }
        let expected = match matrix_says(ran) {
            Ok(expected) => expected,
            Err(why) if ran.outside => {
                found.push(format!("{}: no matrix case: {why}", story.row.name()));
                continue;
            }
            Err(_) => continue,
        };
        compared += 1;
        let seen = [
            ran.hard_kill.is_ok(),
            ran.graceful.is_ok(),
            matches!(ran.second, Second::Started { .. }),
        ];
        for (i, what) in ["after hard kill", "after graceful exit", "second instance"]
            .iter()
            .enumerate()
        {
            if seen[i] != expected[i] {
                found.push(format!(
                    "{} ({}): {what}: the program {} but the matrix says the bind {}",
                    story.row.name(),
                    story.row.listen_on.name(),
                    if seen[i] { "came up" } else { "failed" },
                    if expected[i] { "works" } else { "fails" },
                ));
            }
        }
    }
    (compared, found)
}

/// The reasons of skipped rows whose runtimes `SKIP_VAR` does not list
/// (missing, not left out on purpose), one each.
pub fn missing(stories: &[Story]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for s in stories {
        if let Answer::Skipped(why) = &s.answer {
            let on_purpose = listed(s.row.old.runtime) || listed(s.row.new.runtime);
            if !on_purpose && !out.contains(why) {
                out.push(why.clone());
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_lines_are_read() {
        let start = parse_start(
            "ready 3.11.7 0.0.0.0:5000,reuseaddr=1,reuseport=0,v6only=-,exclusive=0 [::]:5000,reuseaddr=?,reuseport=0,v6only=1,exclusive=-",
        )
        .unwrap();
        let Start::Ready(version, sockets) = start else {
            panic!("{start:?}")
        };
        assert_eq!(version, "3.11.7");
        assert_eq!(endpoint(&sockets[0]), "0.0.0.0+reuseaddr");
        assert_eq!(sockets[1].reuseaddr, None);
        assert_eq!(sockets[1].v6only, Some(true));
        assert_eq!(
            parse_start("failed EADDRINUSE [Errno 98] Address already in use"),
            Ok(Start::Failed("EADDRINUSE".into()))
        );
        assert!(parse_start("ready 1.0").is_err());
        assert!(parse_start("ready 1.0 0.0.0.0:1,reuseaddr=yes").is_err());
        assert!(parse_start("hello").is_err());
    }

    #[test]
    fn every_fix_names_two_programs_of_one_runtime() {
        for &(old, new, _) in FIXES {
            assert_eq!(find(old).runtime, find(new).runtime);
        }
        let names: Vec<&str> = PROGRAMS.iter().map(|p| p.name).collect();
        for (i, n) in names.iter().enumerate() {
            assert!(!names[i + 1..].contains(n), "{n} twice");
            assert!(!n.contains("  "), "{n}: a cell holds no two spaces");
        }
    }
}
