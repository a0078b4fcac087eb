//! The `addrinuse` command: this machine's answers, one case, or the cost
//! of the harness.

use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::time::Instant;

use addrinuse::render::{self, Format};
use addrinuse::run::{self, Record};
use addrinuse::scenario::{self, Case, Family, Holder, Options, Proto, SockOpt, State, GROUPS};
use addrinuse::{bench, compare, holder, host, platform, probe, restart, server, unix_sockets};
use clap::{Parser, Subcommand};

/// Write to stdout; a closed stdout (`addrinuse | head`) ends the program
/// quietly instead of panicking.
fn out(args: std::fmt::Arguments) {
    let mut stdout = std::io::stdout().lock();
    if stdout
        .write_fmt(args)
        .and_then(|()| stdout.flush())
        .is_err()
    {
        std::process::exit(0);
    }
}

macro_rules! outp {
    ($($arg:tt)*) => { out(format_args!($($arg)*)) };
}

macro_rules! outln {
    () => { out(format_args!("\n")) };
    ($($arg:tt)*) => { out(format_args!("{}\n", format_args!($($arg)*))) };
}

const AFTER_HELP: &str = "\
Without filters, the matrix tables are followed by the restart story and the
Unix-domain socket table; a summary line with counts and timing goes to stderr.

Cells: ok, an error name (EADDRINUSE, ...), bind/listen for TCP (ok/EADDRINUSE: the bind worked,
listen() failed), skipped[n] or setup-failed[n] with the reason in note n, unsupported (the option
does not exist on this OS), a trailing ? when the first socket's state could not be verified.

Probe grammar: PROTO STATE FIRST SECOND [HOLDER], each socket ADDRESS[/v6only|/dual][+OPTION...]
  addrinuse probe tcp time-wait 0.0.0.0+reuseaddr 0.0.0.0+reuseaddr
  addrinuse probe udp bound ::/dual 127.0.0.1+reuseport other-user
IPv6 addresses need /v6only or /dual; options: reuseaddr, reuseport, exclusive, reuseport_lb;
holders: same-process (default), other-process, other-user (needs root).
Exit codes: 0 done, 2 bad input.";

#[derive(Parser)]
#[command(
    name = "addrinuse",
    version,
    about = "What this OS answers when a program binds a port that is already taken",
    after_help = AFTER_HELP,
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Subcommand)]
enum Command {
    /// Run one case written as text, e.g. `tcp time-wait 0.0.0.0+reuseaddr 0.0.0.0`.
    Probe {
        /// PROTO STATE FIRST SECOND [HOLDER] (as separate words or one quoted string).
        #[arg(required = true, num_args = 1.., value_name = "PROTO STATE FIRST SECOND [HOLDER]")]
        case: Vec<String>,
        /// Output format.
        #[arg(long, value_enum, default_value = "table")]
        format: Format,
    },
    /// Read every snapshots/<os>/ folder and show only the cells where the
    /// recorded platforms disagree, side by side.
    Compare {
        /// The snapshots folder (default: ./snapshots, else the one this
        /// binary was built from).
        #[arg(long, value_name = "DIR")]
        snapshots: Option<std::path::PathBuf>,
        /// Output format (markdown writes the page docs/platforms.md holds).
        #[arg(long, value_enum, default_value = "table")]
        format: Format,
    },
    /// The restart story live: an echo server with connected clients goes
    /// away and a new server process binds the same port at once.
    Restart {
        /// How the old server goes away.
        #[arg(long, value_enum, default_value = "hard-kill")]
        variant: VariantArg,
        /// Old and new server set SO_REUSEADDR.
        #[arg(long)]
        reuseaddr: bool,
        /// Old and new server set SO_EXCLUSIVEADDRUSE (Windows).
        #[arg(long)]
        exclusive: bool,
        /// Afterwards, retry the new server's bind every 100 ms for up to
        /// this many seconds and report how long the port stayed blocked.
        #[arg(long, value_name = "SECONDS", value_parser = clap::value_parser!(u16).range(0..=600), default_value_t = 0)]
        wait: u16,
    },
    /// Echo server mode for the restart story (internal).
    #[command(hide = true)]
    Serve {
        #[arg(long, conflicts_with = "unix")]
        tcp: Option<std::net::SocketAddr>,
        #[arg(long)]
        unix: Option<std::path::PathBuf>,
        #[arg(long = "option")]
        options: Vec<String>,
        #[arg(long)]
        report_only: bool,
    },
    /// Holder mode: hold first sockets for a parent addrinuse (internal).
    #[command(hide = true)]
    Hold {
        /// Switch to this unprivileged user before creating any socket.
        #[arg(long)]
        as_user: Option<String>,
    },
    /// Measure the harness against a bare socket2 loop, per state.
    Bench {
        /// Cases per state and per side.
        #[arg(long, default_value_t = 2000, value_parser = clap::value_parser!(u32).range(1..=100_000))]
        iterations: u32,
    },
}

#[derive(clap::Args)]
struct RunArgs {
    /// Only this protocol (repeatable).
    #[arg(long, value_enum)]
    proto: Vec<ProtoArg>,
    /// Only this state of the first socket (repeatable): bound,
    /// bound-then-listen, listening, listening-with-backlog, established, close-wait, fin-wait-2,
    /// time-wait, time-wait-client, closed (TCP); bound, connected (UDP).
    #[arg(long, value_parser = parse_state)]
    state: Vec<State>,
    /// Only this address group (repeatable): v4, v6, mapped, v4-v6, v4-mapped, v6-mapped.
    #[arg(long, value_parser = clap::builder::PossibleValuesParser::new(GROUPS))]
    group: Vec<String>,
    /// Only this holder of the first socket (repeatable): same-process,
    /// other-process, other-user.
    #[arg(long, value_enum)]
    holder: Vec<HolderArg>,
    /// Only cases where either socket has this address family (repeatable).
    #[arg(long, value_enum)]
    family: Vec<FamilyArg>,
    /// Output format.
    #[arg(long, value_enum, default_value = "table")]
    format: Format,
    /// Worker threads (default: one per core).
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..=256))]
    threads: Option<u16>,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum ProtoArg {
    Tcp,
    Udp,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum VariantArg {
    HardKill,
    Graceful,
    ClientsCloseFirst,
}

impl From<VariantArg> for restart::Variant {
    fn from(v: VariantArg) -> Self {
        match v {
            VariantArg::HardKill => restart::Variant::HardKill,
            VariantArg::Graceful => restart::Variant::Graceful,
            VariantArg::ClientsCloseFirst => restart::Variant::ClientsCloseFirst,
        }
    }
}

#[derive(Clone, Copy, PartialEq, clap::ValueEnum)]
enum HolderArg {
    SameProcess,
    OtherProcess,
    OtherUser,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum FamilyArg {
    V4,
    V6,
    Mapped,
}

impl HolderArg {
    fn matches(self, holder: Holder) -> bool {
        matches!(
            (self, holder),
            (HolderArg::SameProcess, Holder::SameProcess)
                | (HolderArg::OtherProcess, Holder::OtherProcess)
                | (HolderArg::OtherUser, Holder::OtherUser)
        )
    }
}

fn parse_state(text: &str) -> Result<State, String> {
    State::ALL
        .iter()
        .copied()
        .find(|s| s.name() == text)
        .ok_or_else(|| {
            let names: Vec<_> = State::ALL.iter().map(|s| s.name()).collect();
            format!("expected one of: {}", names.join(", "))
        })
}

/// Exit code 2 with a one-line message: bad input.
fn usage_error(msg: &str) -> ExitCode {
    eprintln!("addrinuse: {msg}");
    ExitCode::from(2)
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) if !err.use_stderr() => {
            // --help and --version
            let _ = err.print();
            return ExitCode::SUCCESS;
        }
        Err(err) => {
            // clap's first line names the problem; the rest is usage.
            let text = err.to_string();
            let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
            let mut first = lines.next().unwrap_or("bad arguments").to_string();
            if first.ends_with(':') {
                // "required arguments were not provided:" names them below.
                first = format!("{first} {}", lines.next().unwrap_or_default());
            }
            let first = first.strip_prefix("error: ").unwrap_or(&first);
            return usage_error(&format!("{first} (see --help)"));
        }
    };
    match cli.command {
        None => run_matrix(&cli.run),
        Some(Command::Probe { case, format }) => match probe::parse(&case) {
            Ok(case) => run_probe(&case, format),
            Err(msg) => usage_error(&format!("probe: {msg}")),
        },
        Some(Command::Compare { snapshots, format }) => run_compare(snapshots, format),
        Some(Command::Bench { iterations }) => run_bench(iterations),
        Some(Command::Restart {
            variant,
            reuseaddr,
            exclusive,
            wait,
        }) => run_restart(variant.into(), reuseaddr, exclusive, wait),
        Some(Command::Serve {
            tcp,
            unix,
            options,
            report_only,
        }) => run_serve(tcp, unix, &options, report_only),
        Some(Command::Hold { as_user }) => match holder::serve(as_user.as_deref()) {
            Ok(()) => ExitCode::SUCCESS,
            Err(_) => ExitCode::FAILURE,
        },
    }
}

impl RunArgs {
    fn is_unfiltered(&self) -> bool {
        self.proto.is_empty()
            && self.state.is_empty()
            && self.holder.is_empty()
            && self.group.is_empty()
            && self.family.is_empty()
    }
}

fn selected(args: &RunArgs) -> Vec<Case> {
    let protos: Vec<Proto> = args
        .proto
        .iter()
        .map(|p| match p {
            ProtoArg::Tcp => Proto::Tcp,
            ProtoArg::Udp => Proto::Udp,
        })
        .collect();
    let families: Vec<Family> = args
        .family
        .iter()
        .map(|f| match f {
            FamilyArg::V4 => Family::V4,
            FamilyArg::V6 => Family::V6,
            FamilyArg::Mapped => Family::Mapped,
        })
        .collect();
    scenario::matrix()
        .into_iter()
        .filter(|c| protos.is_empty() || protos.contains(&c.proto))
        .filter(|c| args.state.is_empty() || args.state.contains(&c.state))
        .filter(|c| args.holder.is_empty() || args.holder.iter().any(|h| h.matches(c.holder)))
        .filter(|c| args.group.is_empty() || args.group.iter().any(|g| g == c.group()))
        .filter(|c| {
            families.is_empty()
                || families.contains(&c.first.endpoint.family())
                || families.contains(&c.second.endpoint.family())
        })
        .collect()
}

fn print_header() {
    outln!("addrinuse: what this machine answers when a second socket binds a port that is taken");
    for (name, value) in host::facts() {
        outln!("  {name:<30} {value}");
    }
    outln!();
}

fn run_matrix(args: &RunArgs) -> ExitCode {
    let cases = selected(args);
    if cases.is_empty() {
        return usage_error(
            "no case matches these filters (UDP has only the states bound and connected)",
        );
    }
    let threads = args.threads.map_or_else(run::default_threads, usize::from);
    let progress_shown = std::io::stderr().is_terminal();
    let total = cases.len();
    let step = (total / 10).max(1);
    let progress = move |done: usize| {
        if progress_shown && done % step < 32 {
            eprint!("\r{done}/{total} cases");
        }
    };
    let start = Instant::now();
    let records = run::run_all(&cases, threads, &progress);
    let elapsed = start.elapsed();
    if progress_shown {
        eprint!("\r");
    }

    let mut out = std::io::stdout().lock();
    match args.format {
        Format::Jsonl => {
            for r in &records {
                if writeln!(out, "{}", render::json_record(r)).is_err() {
                    std::process::exit(0);
                }
            }
        }
        Format::Table | Format::Markdown => {
            drop(out);
            print_header();
            if let Some(summary) = render::restart_summary(&records) {
                outln!(
                    "{summary}  (ok/ok: bind and listen both work; EADDRINUSE: the bind fails)\n"
                );
            }
            for (key, rows) in render::tables(&records) {
                let text = match args.format {
                    Format::Markdown => render::markdown_table(&key, &rows),
                    _ => render::text_table(&key, &rows),
                };
                outln!("{text}");
            }
            if args.is_unfiltered() {
                // The two stories beyond the matrix: real server processes,
                // and Unix-domain socket paths.
                outln!("{}", restart::table(&restart::all_stories()));
                outln!("{}", unix_sockets::table(&unix_sockets::run_all()));
            }
        }
    }
    eprintln!("{}", run_summary(&records, elapsed, threads));
    ExitCode::SUCCESS
}

/// `9072 ran, 18711 unsupported, 0 skipped, 0 setup-failed: 27783 cases in 0.21 s on 2 threads`
fn run_summary(records: &[Record], elapsed: std::time::Duration, threads: usize) -> String {
    use addrinuse::outcome::{Outcome, Skip};
    let count = |f: &dyn Fn(&Outcome) -> bool| records.iter().filter(|r| f(&r.outcome)).count();
    format!(
        "{} ran, {} unsupported, {} skipped, {} setup-failed: {} cases in {:.2} s on {threads} threads",
        count(&|o| matches!(o, Outcome::Ran { .. } | Outcome::Refused { .. })),
        count(&|o| o.is_unsupported()),
        count(&|o| matches!(o, Outcome::Skipped(Skip::Unavailable(_)))),
        count(&|o| matches!(o, Outcome::SetupFailed(_))),
        records.len(),
        elapsed.as_secs_f64(),
    )
}

fn run_probe(case: &Case, format: Format) -> ExitCode {
    let record = run::run_case(case);
    match format {
        Format::Jsonl => outln!("{}", render::json_record(&record)),
        Format::Table | Format::Markdown => {
            outln!("{}", probe::format(case));
            let o = &record.outcome;
            outp!("  second socket: bind {}", o.bind_word());
            if let Some(listen) = o.listen_word() {
                outp!(", listen {listen}");
            }
            outln!();
            if let Some(reason) = o.reason() {
                outln!("  reason: {reason}");
            }
            if let addrinuse::outcome::Outcome::Ran { verified, .. } = o {
                let how = match verified {
                    addrinuse::outcome::Verified::Yes => "verified",
                    addrinuse::outcome::Verified::NotVerified => "not verified",
                };
                outln!(
                    "  first socket {}: {how} ({})",
                    case.state.name(),
                    platform::STATE_CHECK
                );
            }
        }
    }
    ExitCode::SUCCESS
}

fn run_restart(variant: restart::Variant, reuseaddr: bool, exclusive: bool, wait: u16) -> ExitCode {
    let mut options = Options::NONE;
    if reuseaddr {
        options = options.with(SockOpt::ReuseAddr);
    }
    if exclusive {
        options = options.with(SockOpt::ExclusiveAddrUse);
    }
    outln!("restart story: {} ({options})", variant.name());
    let mut port = None;
    let story = restart::run(variant, options, &mut |at, text| {
        if let Some(p) = text.strip_prefix("old server listening on 0.0.0.0:") {
            port = p.split(' ').next().and_then(|p| p.parse::<u16>().ok());
        }
        outln!("  +{:>7.1} ms  {text}", at.as_secs_f64() * 1e3);
    });
    if let Some(reason) = story.new_server.reason() {
        outln!("  {}: {reason}", story.new_server.cell());
        return ExitCode::SUCCESS;
    }
    let blocked = story.new_server.bind_word() != "ok";
    if wait > 0 && blocked {
        if let Some(port) = port {
            outln!("  waiting up to {wait} s for port {port} to bind without error (retry every 100 ms)...");
            match restart::wait_until_free(
                options,
                port,
                std::time::Duration::from_secs(wait.into()),
            ) {
                Ok(after) => outln!("  the port bound again after {:.1} s", after.as_secs_f64()),
                Err(after) => outln!("  still blocked after {:.1} s", after.as_secs_f64()),
            }
        }
    } else if blocked {
        outln!("  (add --wait SECONDS to see how long the port stays blocked)");
    }
    ExitCode::SUCCESS
}

fn run_serve(
    tcp: Option<std::net::SocketAddr>,
    unix: Option<std::path::PathBuf>,
    options: &[String],
    report_only: bool,
) -> ExitCode {
    let place = match (tcp, unix) {
        (Some(addr), None) if probe::is_allowed(addr.ip()) => server::Place::Tcp(addr),
        (None, Some(path)) => server::Place::Unix(path),
        _ => return usage_error("serve: give --tcp LOOPBACK_OR_WILDCARD:PORT or --unix PATH"),
    };
    let mut set = Options::NONE;
    for name in options {
        match SockOpt::from_short(name) {
            Some(opt) => set = set.with(opt),
            None => return usage_error(&format!("serve: unknown option '{name}'")),
        }
    }
    match server::serve(&place, set, report_only) {
        Ok(()) => ExitCode::SUCCESS,
        Err(_) => ExitCode::FAILURE,
    }
}

fn run_compare(dir: Option<std::path::PathBuf>, format: Format) -> ExitCode {
    let dir = dir.unwrap_or_else(|| {
        let here = std::path::PathBuf::from("snapshots");
        if here.is_dir() {
            here
        } else {
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("snapshots")
        }
    });
    let records = match compare::load(&dir) {
        Ok(records) => records,
        Err(msg) => return usage_error(&format!("compare: {msg}")),
    };
    match format {
        Format::Jsonl => {
            let oses: Vec<&String> = records.keys().collect();
            for d in compare::differences(&records) {
                let answers: serde_json::Map<String, serde_json::Value> = oses
                    .iter()
                    .zip(&d.answers)
                    .map(|(os, a)| (os.to_string(), a.clone().into()))
                    .collect();
                let (pair, first, second) = &d.cell;
                outln!(
                    "{}",
                    serde_json::json!({"table": d.table, "pair": pair, "first_options": first,
                        "second_options": second, "answers": answers})
                );
            }
        }
        Format::Table => outp!("{}", compare::report(&records, false)),
        Format::Markdown => outp!("{}", compare::report(&records, true)),
    }
    ExitCode::SUCCESS
}

fn run_bench(iterations: u32) -> ExitCode {
    outp!("{}", bench::report(iterations));
    ExitCode::SUCCESS
}
