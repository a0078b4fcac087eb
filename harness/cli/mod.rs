//! The command line: clap types, and one small module per subcommand, each
//! writing to the `out` that `main` owns. Value lists and their names in
//! `--help` come from the library's own tables.

mod bench;
mod compare;
mod explain;
mod internal;
mod matrix;
mod probe;
mod restart;
mod runtimes;

use std::io::{self, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use addrinuse::report::Format;
use addrinuse::scenario::{Family, Group, Holder, Named, Proto, SockOpt, State};
use clap::{Parser, Subcommand};

/// Why a subcommand did not finish.
pub enum Failure {
    /// Bad input: one line, exit code 2.
    Usage(String),
    /// Writing the output failed (a closed pipe is not an error).
    Output(io::Error),
}

impl From<io::Error> for Failure {
    fn from(e: io::Error) -> Failure {
        Failure::Output(e)
    }
}

pub type Done = Result<ExitCode, Failure>;

/// clap's first line names the problem; the rest is usage. A value with a
/// line break in it is taken from the error's context, whole.
pub fn first_line_of(err: &clap::Error) -> String {
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    let context = |kind| match err.get(kind) {
        Some(ContextValue::String(s)) => Some(s.as_str()),
        _ => None,
    };
    match (err.kind(), context(ContextKind::InvalidArg)) {
        (ErrorKind::InvalidValue, Some(arg)) => {
            if let Some(value) = context(ContextKind::InvalidValue) {
                return format!("invalid value '{value}' for '{arg}'");
            }
        }
        (ErrorKind::UnknownArgument, Some(arg)) => {
            return format!("unexpected argument '{arg}' found");
        }
        _ => {}
    }
    let text = err.to_string();
    let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
    let mut first = lines.next().unwrap_or("bad arguments").to_string();
    if first.ends_with(':') {
        // "required arguments were not provided:" names them below.
        first = format!("{first} {}", lines.next().unwrap_or_default());
    }
    first.strip_prefix("error: ").unwrap_or(&first).to_string()
}

fn names<T: Named>() -> String {
    let names: Vec<&str> = T::ALL.iter().map(|v| v.name()).collect();
    names.join(", ")
}

fn after_help() -> String {
    let options: Vec<&str> = SockOpt::ALL.iter().map(|o| o.short()).collect();
    format!(
        "\
On a terminal, without filters, the command prints one or two screens: the
header, the restart question, where the options matter, and the two stories;
--full prints every table instead. A filter, --format or a pipe gets every
table of the selection (without filters, followed by the restart story and
the Unix-domain socket table). A summary line with counts and timing goes to
stderr.

Cells: ok, an error name (EADDRINUSE, ...), bind/listen for TCP (ok/EADDRINUSE: the bind worked,
listen() failed), first-bind:E..., first-connect:E... or first-listen:E... (the kernel refused the
first socket),
skipped[n] or setup-failed[n] with the reason in note n, unsupported (the option does not exist on
this OS), a trailing ? when the first socket's state could not be verified. After a second
socket that took the port, while the first still receives, a mark says who received new traffic
to an address both share: ok/ok→1 (the first socket), →2 (the second), →1+2 (both, balanced),
→∅ (neither). --takeovers lists the cases where another process's or user's second socket
received traffic meant for the first.

Probe grammar: {grammar}
  addrinuse probe tcp time-wait 0.0.0.0+reuseaddr 0.0.0.0+reuseaddr
  addrinuse probe udp bound ::/dual 127.0.0.1+reuseport other-user
  addrinuse probe tcp established ::/dual 127.0.0.1 v4-peer
  addrinuse explain tcp time-wait 0.0.0.0 0.0.0.0+reuseaddr   (why, per platform)
IPv6 addresses need /v6only or /dual; options: {options};
holders: {holders} (the first is the default; other-user needs root).
Exit codes: 0 done, 1 the output could not be written, 2 bad input.",
        grammar = addrinuse::probe::GRAMMAR,
        options = options.join(", "),
        holders = names::<Holder>(),
    )
}

#[derive(Parser)]
#[command(
    name = "addrinuse",
    version,
    about = "What this OS answers when a program binds a port that is already taken",
    after_help = after_help(),
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Subcommand)]
enum Command {
    /// Run one case written as text, e.g. `tcp time-wait 0.0.0.0+reuseaddr 0.0.0.0`.
    Probe {
        /// PROTO STATE FIRST SECOND [HOLDER] [PEER] (as separate words or one quoted string).
        #[arg(required = true, num_args = 1.., value_name = "PROTO STATE FIRST SECOND [HOLDER] [PEER]")]
        case: Vec<String>,
        /// Output format.
        #[arg(long, value_enum, default_value = "table")]
        format: Format,
    },
    /// Run one case here and show why each platform answers as it does (models, records).
    Explain {
        /// PROTO STATE FIRST SECOND [HOLDER] (as separate words or one quoted string).
        #[arg(required = true, num_args = 1.., value_name = "PROTO STATE FIRST SECOND [HOLDER]")]
        case: Vec<String>,
    },
    /// Read every snapshots/<os>/ folder and show only the cells where the
    /// recorded platforms disagree, side by side.
    Compare {
        /// The snapshots folder (default: ./snapshots, else the one this
        /// binary was built from).
        #[arg(long, value_name = "DIR")]
        snapshots: Option<PathBuf>,
        /// Output format (markdown writes the page docs/platforms.md holds).
        #[arg(long, value_enum, default_value = "table")]
        format: Format,
    },
    /// The restart story live: an echo server with connected clients goes
    /// away and a new server process binds the same port at once.
    Restart(restart::Args),
    /// The servers people write, one per runtime (runtimes/): the options
    /// their listen call really sets, and whether they restart.
    Runtimes(runtimes::Args),
    /// Echo server mode for the restart story (internal).
    #[command(hide = true)]
    Serve(internal::ServeArgs),
    /// Holder mode: hold first sockets for a parent addrinuse (internal).
    #[command(hide = true)]
    Hold {
        /// Switch to this unprivileged user before creating any socket.
        #[arg(long)]
        as_user: Option<String>,
        /// Bind second sockets for the parent instead of holding first ones.
        #[arg(long)]
        second: bool,
    },
    /// Measure the whole matrix against its floor: a bare socket2 loop per state and per kind of traffic.
    Bench {
        /// Cases per state and per side, and messages per kind of traffic.
        #[arg(long, default_value_t = 2000, value_parser = clap::value_parser!(u32).range(1..=100_000))]
        iterations: u32,
    },
}

#[derive(clap::Args)]
struct RunArgs {
    /// Only this protocol (repeatable).
    #[arg(long, value_enum)]
    proto: Vec<Proto>,
    /// Only this state of the first socket (repeatable; UDP has only bound
    /// and connected).
    #[arg(long, value_enum)]
    state: Vec<State>,
    /// Only this address group (repeatable).
    #[arg(long, value_enum)]
    group: Vec<Group>,
    /// Only this holder of the first socket (repeatable).
    #[arg(long, value_enum)]
    holder: Vec<Holder>,
    /// Only cases where either socket has this address family (repeatable).
    #[arg(long, value_enum)]
    family: Vec<Family>,
    /// Output format.
    #[arg(long, value_enum, default_value = "table")]
    format: Format,
    /// On a terminal, print every table instead of the first screen (a
    /// filter, a format or a pipe always gets every table).
    #[arg(long)]
    full: bool,
    /// Print only the port takeovers of the selection: cases where a second
    /// socket of another process or user receives traffic meant for a live
    /// first socket, in probe grammar.
    #[arg(long, conflicts_with_all = ["format", "full"])]
    takeovers: bool,
    /// Worker threads (default: one per core).
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..=256))]
    threads: Option<u16>,
    /// Before every second bind, list the whole port in the socket table:
    /// exactly the sockets the state means and nothing else (slow: every
    /// TIME_WAIT socket of the run is walked each time). By default TCP
    /// states are checked by exact lookups and UDP ports are listed.
    #[arg(long)]
    census: bool,
    /// Also write every recorded table and the header facts to this folder
    /// (the kernel lab; needs the whole matrix, no filter).
    #[arg(long, value_name = "DIR", hide = true)]
    save: Option<PathBuf>,
}

impl Cli {
    /// Whether the command runs cases (and so wants a clean network of its
    /// own); the internal modes run in their parent's.
    pub fn runs_cases(&self) -> bool {
        !matches!(
            self.command,
            Some(Command::Serve(_) | Command::Hold { .. } | Command::Compare { .. })
        )
    }
}

/// Run the command line's subcommand, writing its output to `out`.
pub fn exec(cli: Cli, out: &mut dyn Write) -> Done {
    match cli.command {
        None => matrix::exec(cli.run, out),
        Some(Command::Probe { case, format }) => probe::exec(&case, format, out),
        Some(Command::Explain { case }) => explain::exec(&case, out),
        Some(Command::Compare { snapshots, format }) => compare::exec(snapshots, format, out),
        Some(Command::Restart(args)) => restart::exec(args, out),
        Some(Command::Runtimes(args)) => runtimes::exec(args, out),
        Some(Command::Serve(args)) => internal::serve(args),
        Some(Command::Hold { as_user, second }) => internal::hold(as_user, second),
        Some(Command::Bench { iterations }) => bench::exec(iterations, out),
    }
}
