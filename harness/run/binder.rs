//! The second socket bound by another process. In `other-user` cases a
//! child running as a second unprivileged user binds it, so that neither
//! socket belongs to root: the BSD kernels skip their cross-user check
//! when the binder is privileged, and a root binder would hide the rule.
//!
//! The conversation, one line each way, per case:
//!
//! ```text
//! child  -> ADDRINUSE-BINDER 1                (after switching user)
//! parent -> BIND <port> <probe text>
//! child  -> BOUND                             (bound-then-listen only:)
//! parent -> LISTEN | ABORT                    (after the first socket listened)
//! child  -> ANSWER <answer>                   (its socket already closed,
//!                                               unless traffic follows:)
//! parent -> DRAIN                             (delivery, as often as needed)
//! child  -> DRAINED <count> | DRAINED failed <reason>
//! parent -> DONE
//! child  -> CLOSED
//! ```
//!
//! A child serves case after case, for any thread of the parent, until the
//! parent closes the pipe.

use std::fmt;
use std::io::{self, BufRead, Write};
use std::process::Command;
use std::time::{Duration, Instant};

use socket2::Socket;

use super::{delivery, second};
use crate::outcome::{OsError, Outcome, SetupError, Side, Skip, StateCheck};
use crate::probe;
use crate::scenario::{Case, SockOpt, SECOND_USER};
use crate::spawn::{self, ChildProcess};

const HELLO: &str = "ADDRINUSE-BINDER 1";

/// The kind of child, for `spawn::reuse`.
const KIND: &str = "binder";

/// The longest one case's bind may take, answer included.
const CASE_DEADLINE: Duration = Duration::from_secs(10);

/// Who binds the second socket of a case. When the case gets the delivery
/// step (`delivery::applies`) the socket stays open until `release`.
pub trait Binding {
    fn bind(
        &mut self,
        case: &Case,
        port: u16,
        check: StateCheck,
        first_listens: &mut dyn FnMut() -> Result<(), SetupError>,
    ) -> Outcome;
    /// Count (and take) what waits on the second socket.
    fn drain(&mut self) -> Result<u32, String>;
    /// The case is done: close the second socket.
    fn release(&mut self);
}

/// This process binds it.
#[derive(Default)]
pub struct Here {
    socket: Option<Socket>,
}

impl Binding for Here {
    fn bind(
        &mut self,
        case: &Case,
        port: u16,
        check: StateCheck,
        first_listens: &mut dyn FnMut() -> Result<(), SetupError>,
    ) -> Outcome {
        let (outcome, socket) = second::bind(case, port, check, first_listens);
        if delivery::applies(case, &outcome) {
            self.socket = socket;
        }
        outcome
    }

    fn drain(&mut self) -> Result<u32, String> {
        let socket = (self.socket.as_ref()).ok_or("no second socket is open")?;
        delivery::drain(socket, None).map_err(|e| format!("the second socket: {e}"))
    }

    fn release(&mut self) {
        self.socket = None;
    }
}

/// The second socket's answer on the wire (the parent adds the state
/// check, which is the holder's word).
#[derive(Debug, PartialEq, Eq)]
struct Answer(Outcome);

fn step(result: &Result<(), OsError>) -> String {
    match result {
        Ok(()) => "ok".into(),
        Err(e) => e.code.to_string(),
    }
}

impl fmt::Display for Answer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Outcome::Ran { bind, listen, .. } => {
                let listen = listen.as_ref().map_or("-".into(), step);
                write!(f, "ran {} {listen}", step(bind))
            }
            Outcome::Refused {
                socket,
                option,
                error,
            } => write!(
                f,
                "refused {} {} {}",
                socket.name(),
                option.short(),
                error.code
            ),
            Outcome::Skipped(Skip::Unsupported(opt)) => write!(f, "unsupported {}", opt.short()),
            Outcome::Skipped(skip) => write!(f, "failed {}", skip.reason()),
            // The second socket's side never reports the first's refusal.
            Outcome::FirstRefused { .. } => write!(f, "failed {}", self.0.answer()),
            Outcome::SetupFailed(why) => write!(f, "failed {}", why.replace(['\n', '\r'], " ")),
        }
    }
}

impl Answer {
    fn parse(text: &str, check: StateCheck) -> Result<Outcome, String> {
        let bad = || format!("the binder process said something unexpected: {text}");
        let result = |word: &str| -> Result<Result<(), OsError>, String> {
            match word {
                "ok" => Ok(Ok(())),
                code => Ok(Err(OsError {
                    code: code.parse().map_err(|_| bad())?,
                })),
            }
        };
        let option = |name: &str| SockOpt::from_short(name).ok_or_else(bad);
        let (kind, rest) = text.split_once(' ').ok_or_else(bad)?;
        let words: Vec<&str> = rest.split(' ').collect();
        Ok(match (kind, &words[..]) {
            ("ran", [bind, listen]) => Outcome::Ran {
                bind: result(bind)?,
                listen: match *listen {
                    "-" => None,
                    word => Some(result(word)?),
                },
                check,
                delivery: None,
            },
            ("refused", [side, opt, code]) => Outcome::Refused {
                socket: if *side == "first" {
                    Side::First
                } else {
                    Side::Second
                },
                option: option(opt)?,
                error: OsError {
                    code: code.parse().map_err(|_| bad())?,
                },
            },
            ("unsupported", [opt]) => Outcome::Skipped(Skip::Unsupported(option(opt)?)),
            ("failed", _) => Outcome::SetupFailed(rest.to_string()),
            _ => return Err(bad()),
        })
    }
}

/// A child process, running as `SECOND_USER`, that binds second sockets.
pub struct Child {
    process: Result<ChildProcess, String>,
    /// The child keeps the current case's socket open for the delivery step.
    keeps: bool,
}

impl Child {
    pub fn start() -> Child {
        if let Some(process) = spawn::reuse(KIND) {
            return Child {
                process: Ok(process),
                keeps: false,
            };
        }
        let process = (|| {
            let mut command = Command::new(spawn::program()?);
            command.args(["hold", "--second", "--as-user", SECOND_USER]);
            let mut process = ChildProcess::start(&mut command, "the binder process")?;
            match process.line(Instant::now() + CASE_DEADLINE)? {
                hello if hello == HELLO => Ok(process),
                other => Err(format!("the binder process failed to start: {other}")),
            }
        })();
        Child {
            process,
            keeps: false,
        }
    }

    fn ask(&mut self, request: &str) -> Result<String, String> {
        let process = self.process.as_mut().map_err(|why| why.clone())?;
        process.send(request)?;
        process.line(Instant::now() + CASE_DEADLINE)
    }

    fn converse(
        &mut self,
        case: &Case,
        port: u16,
        check: StateCheck,
        first_listens: &mut dyn FnMut() -> Result<(), SetupError>,
    ) -> Result<Outcome, String> {
        let process = self.process.as_mut().map_err(|why| why.clone())?;
        let deadline = Instant::now() + CASE_DEADLINE;
        process.send(&format!("BIND {port} {}\n", probe::format(case)))?;
        let mut aborted = None;
        loop {
            let line = process.line(deadline)?;
            if line == "BOUND" {
                match first_listens() {
                    Ok(()) => process.send("LISTEN\n")?,
                    Err(e) => {
                        process.send("ABORT\n")?;
                        aborted = Some(e);
                    }
                }
                continue;
            }
            let answer = line
                .strip_prefix("ANSWER ")
                .ok_or_else(|| format!("the binder process said something unexpected: {line}"))?;
            return match aborted {
                Some(e) => Ok(e.into()),
                None => Answer::parse(answer, check),
            };
        }
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        // Each case ends with its answer, after the socket closed (or, after
        // traffic, with CLOSED): a child that never broke is ready for the
        // next unit.
        if let Ok(process) = std::mem::replace(&mut self.process, Err(String::new())) {
            spawn::keep(KIND, process);
        }
    }
}

impl Binding for Child {
    fn bind(
        &mut self,
        case: &Case,
        port: u16,
        check: StateCheck,
        first_listens: &mut dyn FnMut() -> Result<(), SetupError>,
    ) -> Outcome {
        match self.converse(case, port, check, first_listens) {
            Ok(outcome) => {
                self.keeps = delivery::applies(case, &outcome);
                outcome
            }
            Err(why) => {
                // A child that broke once answers no more.
                self.process = Err(why.clone());
                Outcome::SetupFailed(why)
            }
        }
    }

    fn drain(&mut self) -> Result<u32, String> {
        let line = self.ask("DRAIN\n")?;
        let bad = || format!("the binder process said something unexpected: {line}");
        match line.strip_prefix("DRAINED ").ok_or_else(bad)? {
            count if count.starts_with("failed ") => Err(count.to_string()),
            count => count.parse().map_err(|_| bad()),
        }
    }

    fn release(&mut self) {
        if std::mem::take(&mut self.keeps) {
            if let Err(why) = self.ask("DONE\n").and_then(|line| {
                (line == "CLOSED")
                    .then_some(())
                    .ok_or(format!("the binder process did not close: {line}"))
            }) {
                self.process = Err(why);
            }
        }
    }
}

/// Binder mode (`addrinuse hold --second`): bind second sockets as the
/// parent asks, until its end of the pipe closes.
pub fn serve(as_user: Option<&str>) -> io::Result<()> {
    let mut out = io::stdout().lock();
    if !spawn::greet(&mut out, as_user, HELLO)? {
        return Ok(());
    }
    let stdin = io::stdin();
    let mut lines = stdin.lock().lines();
    // The second socket of the current case, while traffic is counted.
    let mut kept: Option<Socket> = None;
    while let Some(line) = lines.next() {
        let line = line?;
        match line.as_str() {
            "DRAIN" => {
                let count = match kept.as_ref() {
                    Some(socket) => delivery::drain(socket, None)
                        .map_or_else(|e| format!("failed {e}"), |n| n.to_string()),
                    None => "failed no second socket is open".into(),
                };
                writeln!(out, "DRAINED {count}")?;
                out.flush()?;
                continue;
            }
            "DONE" => {
                kept = None;
                writeln!(out, "CLOSED")?;
                out.flush()?;
                continue;
            }
            _ => {}
        }
        kept = None;
        let Some((port, text)) = line.strip_prefix("BIND ").and_then(|r| r.split_once(' ')) else {
            continue;
        };
        let words = vec![text.to_string()];
        let outcome = match (port.parse::<u16>(), probe::parse(&words)) {
            (Ok(port), Ok(case)) => {
                let mut go_ahead = || -> Result<(), SetupError> {
                    let told = writeln!(out, "BOUND").and_then(|()| out.flush());
                    match (told, lines.next()) {
                        (Ok(()), Some(Ok(word))) if word == "LISTEN" => Ok(()),
                        _ => Err(SetupError::Failed("aborted by the parent".into())),
                    }
                };
                let (outcome, socket) =
                    second::bind(&case, port, StateCheck::Verified, &mut go_ahead);
                if delivery::applies(&case, &outcome) {
                    kept = socket;
                }
                outcome
            }
            (Err(_), _) => Outcome::SetupFailed(format!("bad port {port}")),
            (_, Err(why)) => Outcome::SetupFailed(format!("bad case: {why}")),
        };
        writeln!(out, "ANSWER {}", Answer(outcome))?;
        out.flush()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_answer_reads_back_as_written() {
        let check = StateCheck::Unverified;
        let answers = [
            Outcome::Ran {
                bind: Ok(()),
                listen: Some(Err(OsError { code: 98 })),
                check,
                delivery: None,
            },
            Outcome::Ran {
                bind: Err(OsError { code: 98 }),
                listen: None,
                check,
                delivery: None,
            },
            Outcome::Refused {
                socket: Side::Second,
                option: SockOpt::ExclusiveAddrUse,
                error: OsError { code: 10022 },
            },
            Outcome::Skipped(Skip::Unsupported(SockOpt::ReusePortLb)),
            Outcome::SetupFailed("bind() of the first socket: EADDRINUSE".into()),
        ];
        for outcome in answers {
            let text = Answer(outcome.clone()).to_string();
            assert_eq!(Answer::parse(&text, check), Ok(outcome), "{text}");
        }
        assert!(Answer::parse("ran maybe -", check).is_err());
        assert!(Answer::parse("nonsense", check).is_err());
    }
}
