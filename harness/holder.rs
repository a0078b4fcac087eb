//! First sockets held by another process: the suite's own binary, re-run in
//! holder mode (`addrinuse hold`), brings a whole batch of first sockets into
//! their states and reports over a pipe, so a batch costs one process start.
//!
//! The conversation, one line each way:
//!
//! ```text
//! child  -> ADDRINUSE-HOLDER 1               (after switching user, if asked)
//! parent -> CASE <index> <port> <probe text>  (one per case)
//! parent -> GO
//! child  -> HELD <index> verified|unverified | UNSUPPORTED <index> <option>
//!         | REFUSED <index> <which> <option> <code> | FAILED <index> <reason>
//! child  -> READY
//!           (the parent binds every second socket)
//! parent -> RELEASE                           (or closes the pipe)
//! child  -> RELEASED, then exits
//! ```
//!
//! Every wait of the parent is bounded; a child that dies or hangs makes its
//! cases `setup-failed` and is killed, never left behind.

use std::io::{self, BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::OnceLock;
use std::thread;
use std::time::{Duration, Instant};

use crate::outcome::{OsError, Outcome, Skip, Verified, Which};
use crate::platform;
use crate::probe;
use crate::scenario::{Case, Holder, SockOpt};
use crate::setup::{self, SetupError};
use crate::spawn;

const HELLO: &str = "ADDRINUSE-HOLDER 1";

/// The unprivileged user an `other-user` holder switches to.
pub const OTHER_USER: &str = "nobody";

/// The longest a batch may take from spawn to READY.
const BATCH_DEADLINE: Duration = Duration::from_secs(60);

static PROGRAM: OnceLock<PathBuf> = OnceLock::new();

/// Use `path` (an `addrinuse` binary) as the holder program. Test binaries
/// must call this (with `env!("CARGO_BIN_EXE_addrinuse")`); the `addrinuse`
/// command uses itself.
pub fn set_program(path: impl Into<PathBuf>) {
    let _ = PROGRAM.set(path.into());
}

pub(crate) fn program() -> Result<PathBuf, String> {
    if let Some(p) = PROGRAM.get() {
        return Ok(p.clone());
    }
    // Only re-run ourselves if we are the addrinuse command: re-running a
    // test binary would run the test suite again.
    let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
    match exe.file_stem().and_then(|s| s.to_str()) {
        Some("addrinuse") => Ok(exe),
        _ => Err("no holder program: call addrinuse::holder::set_program first".into()),
    }
}

/// A child that is killed and reaped whatever happens.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// One line from the child, or why there is none.
fn next_line(lines: &Receiver<String>, deadline: Instant) -> Result<String, String> {
    let left = deadline.saturating_duration_since(Instant::now());
    match lines.recv_timeout(left) {
        Ok(line) => Ok(line),
        Err(RecvTimeoutError::Timeout) => Err(format!(
            "the holder process did not answer within {} s",
            BATCH_DEADLINE.as_secs()
        )),
        Err(RecvTimeoutError::Disconnected) => Err("the holder process exited early".into()),
    }
}

fn spawn(holder: Holder) -> Result<(Guard, ChildStdin, Receiver<String>), String> {
    let mut command = Command::new(program()?);
    command.arg("hold");
    if holder == Holder::OtherUser {
        command.args(["--as-user", OTHER_USER]);
    }
    command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let mut child =
        spawn::start(&mut command).map_err(|e| format!("starting the holder process: {e}"))?;
    let stdin = child.stdin.take().expect("piped");
    let stdout = child.stdout.take().expect("piped");
    let (tx, rx) = mpsc::channel();
    // Reads until the child's stdout closes, which it does when it exits or
    // is killed: the thread never outlives the child.
    thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    Ok((Guard(child), stdin, rx))
}

/// Run a batch of cases whose first sockets another process holds: the
/// child brings them all into their states, then this process binds every
/// second socket. Returns one outcome per case, in order.
pub fn run_batch(cases: &[(Case, u16)]) -> Vec<Outcome> {
    let mut outcomes: Vec<Option<Outcome>> = vec![None; cases.len()];
    if let Err(why) = converse(cases, &mut outcomes) {
        for o in outcomes.iter_mut().filter(|o| o.is_none()) {
            *o = Some(Outcome::SetupFailed(why.clone()));
        }
    }
    outcomes
        .into_iter()
        .map(|o| {
            o.unwrap_or_else(|| Outcome::SetupFailed("the holder process gave no answer".into()))
        })
        .collect()
}

fn converse(cases: &[(Case, u16)], outcomes: &mut [Option<Outcome>]) -> Result<(), String> {
    let Some((first, _)) = cases.first() else {
        return Ok(());
    };
    let deadline = Instant::now() + BATCH_DEADLINE;
    let (_guard, mut stdin, lines) = spawn(first.holder)?;
    let hello = next_line(&lines, deadline)?;
    if hello != HELLO {
        return Err(format!("the holder process failed to start: {hello}"));
    }
    let mut request = String::new();
    for (i, (case, port)) in cases.iter().enumerate() {
        let mut as_own = *case;
        as_own.holder = Holder::SameProcess;
        request.push_str(&format!("CASE {i} {port} {}\n", probe::format(&as_own)));
    }
    request.push_str("GO\n");
    stdin
        .write_all(request.as_bytes())
        .map_err(|e| format!("writing to the holder process: {e}"))?;
    let mut verified = vec![Verified::NotVerified; cases.len()];
    loop {
        let line = next_line(&lines, deadline)?;
        if line == "READY" {
            break;
        }
        let (i, outcome) = parse_reply(&line, cases.len())?;
        match outcome {
            Reply::Held(v) => verified[i] = v,
            Reply::Done(o) => outcomes[i] = Some(o),
        }
    }
    for (i, (case, port)) in cases.iter().enumerate() {
        if outcomes[i].is_none() {
            let _quiet = spawn::sockets();
            let mut first_listens = || {
                // bound-then-listen: the child makes the first socket listen
                // between this process's bind and listen.
                stdin
                    .write_all(format!("LISTEN {i}\n").as_bytes())
                    .map_err(|e| format!("writing to the holder process: {e}"))?;
                match next_line(&lines, deadline)?.split_once(' ') {
                    Some(("LISTENED", "ok")) => Ok(()),
                    Some(("LISTENED", why)) => Err(why.to_string()),
                    _ => Err("the holder process did not answer LISTEN".into()),
                }
            };
            outcomes[i] = Some(crate::run::second_bind(
                case,
                *port,
                verified[i],
                &mut first_listens,
            ));
        }
    }
    let _ = stdin.write_all(b"RELEASE\n");
    // Wait (bounded) for the child to let go, so that the ports are free
    // when this returns; the guard kills it otherwise.
    let _ = next_line(&lines, Instant::now() + Duration::from_secs(5));
    Ok(())
}

enum Reply {
    Held(Verified),
    Done(Outcome),
}

fn parse_reply(line: &str, n: usize) -> Result<(usize, Reply), String> {
    let bad = || format!("the holder process said something unexpected: {line}");
    let mut words = line.splitn(3, ' ');
    let kind = words.next().ok_or_else(bad)?;
    let index: usize = words
        .next()
        .and_then(|w| w.parse().ok())
        .filter(|&i| i < n)
        .ok_or_else(bad)?;
    let rest = words.next().unwrap_or_default();
    let option = |name: &str| SockOpt::from_short(name).ok_or_else(bad);
    let reply = match kind {
        "HELD" => Reply::Held(if rest == "verified" {
            Verified::Yes
        } else {
            Verified::NotVerified
        }),
        "UNSUPPORTED" => Reply::Done(Outcome::Skipped(Skip::Unsupported(option(rest)?))),
        "REFUSED" => {
            let parts: Vec<&str> = rest.split(' ').collect();
            let [which, opt, code] = parts[..] else {
                return Err(bad());
            };
            Reply::Done(Outcome::Refused {
                socket: if which == "first" {
                    Which::First
                } else {
                    Which::Second
                },
                option: option(opt)?,
                error: OsError {
                    code: code.parse().map_err(|_| bad())?,
                },
            })
        }
        "FAILED" => Reply::Done(Outcome::SetupFailed(rest.to_string())),
        _ => return Err(bad()),
    };
    Ok((index, reply))
}

/// Holder mode (`addrinuse hold`): speak the protocol above on stdin and
/// stdout. Returns when the parent releases the sockets or goes away.
pub fn serve(as_user: Option<&str>) -> io::Result<()> {
    let mut out = io::stdout().lock();
    if let Some(user) = as_user {
        if let Err(e) = platform::become_user(user) {
            writeln!(out, "FATAL cannot switch to user {user}: {e}")?;
            return Ok(());
        }
    }
    writeln!(out, "{HELLO}")?;
    out.flush()?;
    // Index in the request -> the held first socket.
    let mut held = std::collections::BTreeMap::new();
    let mut replies = String::new();
    let stdin = io::stdin();
    let mut lines = stdin.lock().lines();
    for line in lines.by_ref() {
        let line = line?;
        if line == "GO" {
            break;
        }
        let mut words = line.splitn(4, ' ');
        let (Some("CASE"), Some(index), Some(port), Some(text)) =
            (words.next(), words.next(), words.next(), words.next())
        else {
            replies.push_str(&format!("FAILED 0 bad request: {line}\n"));
            continue;
        };
        let words: Vec<String> = text.split(' ').map(String::from).collect();
        let reply = match (probe::parse(&words), port.parse::<u16>()) {
            (Ok(case), Ok(port)) => match setup::hold(&case, port) {
                Ok(h) => {
                    let v = if h.verified == Verified::Yes {
                        "verified"
                    } else {
                        "unverified"
                    };
                    held.insert(index.to_string(), h);
                    format!("HELD {index} {v}")
                }
                Err(SetupError::Unsupported(opt)) => format!("UNSUPPORTED {index} {}", opt.short()),
                Err(SetupError::Refused(which, opt, err)) => {
                    format!(
                        "REFUSED {index} {} {} {}",
                        which.name(),
                        opt.short(),
                        err.code
                    )
                }
                Err(SetupError::Failed(why)) => {
                    format!("FAILED {index} {}", why.replace('\n', " "))
                }
            },
            (Err(why), _) => format!("FAILED {index} bad case: {why}"),
            (_, Err(_)) => format!("FAILED {index} bad port {port}"),
        };
        replies.push_str(&reply);
        replies.push('\n');
    }
    replies.push_str("READY\n");
    out.write_all(replies.as_bytes())?;
    out.flush()?;
    // Hold everything until the parent says so (or its end of the pipe
    // closes, which also ends this loop).
    for line in lines {
        let line = line?;
        if line == "RELEASE" {
            break;
        }
        if let Some(index) = line.strip_prefix("LISTEN ") {
            let answer = match held.get(index) {
                Some(h) => h
                    .first_listens()
                    .map_or_else(|why| why.replace('\n', " "), |()| "ok".into()),
                None => format!("no first socket {index} is held"),
            };
            writeln!(out, "LISTENED {answer}")?;
            out.flush()?;
        }
    }
    drop(held);
    writeln!(out, "RELEASED")?;
    Ok(())
}
