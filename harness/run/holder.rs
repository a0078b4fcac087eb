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
//!         | REFUSED <index> <side> <option> <code>
//!         | FIRST-REFUSED <index> bind|connect|listen <code>
//!         | FAILED <index> <reason>
//! child  -> READY
//!           (the parent binds every second socket; for bound-then-listen:)
//! parent -> LISTEN <index>
//! child  -> LISTENED <the same reply as for a held case>
//!           (delivery, after the second socket took the port:)
//! parent -> PEER-SEND <index> <address> <n>   (connected UDP: from its peer)
//! child  -> SENT <index> <how many went out> | SENT <index> failed <reason>
//! parent -> DRAIN <index>                     (as often as needed)
//! child  -> DRAINED <index> <count> | DRAINED <index> failed <reason>
//! parent -> RELEASE
//! child  -> RELEASED                          (and waits for the next CASE)
//! ```
//!
//! A child serves batch after batch, for any thread of the parent, until
//! the parent closes the pipe. Every wait of the parent is bounded; a child
//! that dies, hangs or says something unexpected makes its cases
//! `setup-failed` and is killed, never left behind or used again.

use std::collections::BTreeMap;
use std::fmt;
use std::io::{self, BufRead, Write};
use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant};

use super::state;
use crate::outcome::{OsError, SetupError, Side, StateCheck};
use crate::probe;
use crate::scenario::{Case, Holder, SockOpt, OTHER_USER};
use crate::spawn::{self, ChildProcess};

const HELLO: &str = "ADDRINUSE-HOLDER 1";

/// The longest a batch may take from spawn to READY.
const BATCH_DEADLINE: Duration = Duration::from_secs(60);

/// What the child says about one case of the batch.
#[derive(Debug, PartialEq, Eq)]
struct Held {
    index: usize,
    result: Result<StateCheck, SetupError>,
}

impl fmt::Display for Held {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let i = self.index;
        match &self.result {
            Ok(StateCheck::Verified) => write!(f, "HELD {i} verified"),
            Ok(StateCheck::Unverified) => write!(f, "HELD {i} unverified"),
            Err(SetupError::Unsupported(opt)) => write!(f, "UNSUPPORTED {i} {}", opt.short()),
            Err(SetupError::Refused(side, opt, err)) => {
                write!(
                    f,
                    "REFUSED {i} {} {} {}",
                    side.name(),
                    opt.short(),
                    err.code
                )
            }
            Err(SetupError::FirstRefused(call, err)) => {
                write!(f, "FIRST-REFUSED {i} {call} {}", err.code)
            }
            // One line per reply, whatever the reason says.
            Err(SetupError::Failed(why)) => write!(f, "FAILED {i} {}", one_line(why)),
        }
    }
}

impl std::str::FromStr for Held {
    type Err = String;

    fn from_str(line: &str) -> Result<Held, String> {
        let bad = || format!("the holder process said something unexpected: {line}");
        let mut words = line.splitn(3, ' ');
        let kind = words.next().ok_or_else(bad)?;
        let index: usize = words.next().and_then(|w| w.parse().ok()).ok_or_else(bad)?;
        let rest = words.next().unwrap_or_default();
        let option = |name: &str| SockOpt::from_short(name).ok_or_else(bad);
        let result = match (kind, rest) {
            ("HELD", "verified") => Ok(StateCheck::Verified),
            ("HELD", "unverified") => Ok(StateCheck::Unverified),
            ("UNSUPPORTED", opt) => Err(SetupError::Unsupported(option(opt)?)),
            ("REFUSED", rest) => {
                let parts: Vec<&str> = rest.split(' ').collect();
                let [side, opt, code] = parts[..] else {
                    return Err(bad());
                };
                let side = match side {
                    "first" => Side::First,
                    "second" => Side::Second,
                    _ => return Err(bad()),
                };
                let code = code.parse().map_err(|_| bad())?;
                Err(SetupError::Refused(side, option(opt)?, OsError { code }))
            }
            ("FIRST-REFUSED", rest) => {
                let (call, code) = rest.split_once(' ').ok_or_else(bad)?;
                let call = ["bind", "connect", "listen"]
                    .into_iter()
                    .find(|c| *c == call)
                    .ok_or_else(bad)?;
                let code = code.parse().map_err(|_| bad())?;
                Err(SetupError::FirstRefused(call, OsError { code }))
            }
            ("FAILED", why) => Err(SetupError::Failed(why.to_string())),
            _ => return Err(bad()),
        };
        Ok(Held { index, result })
    }
}

/// What the child counted for the delivery step: datagrams its peer sent
/// (`SENT`), or connections and datagrams its first socket took (`DRAINED`).
#[derive(Debug, PartialEq, Eq)]
struct Counted {
    kind: &'static str,
    index: usize,
    result: Result<u32, String>,
}

const COUNT_KINDS: [&str; 2] = ["SENT", "DRAINED"];

impl fmt::Display for Counted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (kind, i) = (self.kind, self.index);
        match &self.result {
            Ok(n) => write!(f, "{kind} {i} {n}"),
            Err(why) => write!(f, "{kind} {i} failed {}", one_line(why)),
        }
    }
}

impl std::str::FromStr for Counted {
    type Err = String;

    fn from_str(line: &str) -> Result<Counted, String> {
        let bad = || format!("the holder process said something unexpected: {line}");
        let mut words = line.splitn(3, ' ');
        let kind = words.next().ok_or_else(bad)?;
        let kind = COUNT_KINDS
            .into_iter()
            .find(|k| *k == kind)
            .ok_or_else(bad)?;
        let index: usize = words.next().and_then(|w| w.parse().ok()).ok_or_else(bad)?;
        let rest = words.next().ok_or_else(bad)?;
        let result = match rest.strip_prefix("failed ") {
            Some(why) => Err(why.to_string()),
            None => Ok(rest.parse().map_err(|_| bad())?),
        };
        Ok(Counted {
            kind,
            index,
            result,
        })
    }
}

fn one_line(text: &str) -> String {
    text.replace(['\n', '\r'], " ")
}

/// A batch of first sockets held by a child process, for the parent's run.
pub struct Child {
    /// The kind of child, for `spawn::keep`.
    kind: &'static str,
    /// `None` when the process never started.
    process: Option<ChildProcess>,
    results: Vec<Option<Result<StateCheck, SetupError>>>,
    /// Why a case has no result: the conversation broke off.
    broken: Option<String>,
    deadline: Instant,
}

impl Child {
    /// Start a holder for `cases` (all of one holder) and wait, bounded,
    /// until it holds every first socket it could.
    pub fn start(holder: Holder, cases: &[(Case, u16)]) -> Child {
        let mut child = Child {
            kind: match holder {
                Holder::OtherUser => "holder as other user",
                _ => "holder",
            },
            process: None,
            results: (0..cases.len()).map(|_| None).collect(),
            broken: None,
            deadline: Instant::now() + BATCH_DEADLINE,
        };
        if let Err(why) = child.converse(holder, cases) {
            child.broken = Some(why);
        }
        child
    }

    fn converse(&mut self, holder: Holder, cases: &[(Case, u16)]) -> Result<(), String> {
        let process = match spawn::reuse(self.kind) {
            Some(process) => self.process.insert(process),
            None => {
                let mut command = Command::new(spawn::program()?);
                command.arg("hold");
                if holder == Holder::OtherUser {
                    command.args(["--as-user", OTHER_USER]);
                }
                let process = self
                    .process
                    .insert(ChildProcess::start(&mut command, "the holder process")?);
                let hello = process.line(self.deadline)?;
                if hello != HELLO {
                    return Err(format!("the holder process failed to start: {hello}"));
                }
                process
            }
        };
        let mut request = String::new();
        for (i, (case, port)) in cases.iter().enumerate() {
            let mut as_own = *case;
            as_own.holder = Holder::SameProcess;
            request.push_str(&format!("CASE {i} {port} {}\n", probe::format(&as_own)));
        }
        request.push_str("GO\n");
        process.send(&request)?;
        loop {
            let line = process.line(self.deadline)?;
            if line == "READY" {
                return Ok(());
            }
            let held: Held = line.parse()?;
            let slot = self
                .results
                .get_mut(held.index)
                .ok_or_else(|| format!("the holder process answered for case {}", held.index))?;
            *slot = Some(held.result);
        }
    }
}

impl super::Holding for Child {
    fn hold(&mut self, i: usize) -> Result<StateCheck, SetupError> {
        match self.results.get_mut(i).and_then(Option::take) {
            Some(result) => result,
            None => {
                Err(SetupError::Failed(self.broken.clone().unwrap_or_else(
                    || "the holder process gave no answer".into(),
                )))
            }
        }
    }

    fn first_listens(&mut self, i: usize) -> Result<(), SetupError> {
        let failed = |why: String| SetupError::Failed(why);
        let process =
            (self.process.as_mut()).ok_or_else(|| failed("the holder process is gone".into()))?;
        process.send(&format!("LISTEN {i}\n")).map_err(failed)?;
        let line = process.line(self.deadline).map_err(failed)?;
        // `LISTENED <reply>`: the same reply a held case gets.
        let reply = (line.strip_prefix("LISTENED "))
            .ok_or_else(|| failed("the holder process did not answer LISTEN".into()))?;
        let held: Held = reply.parse().map_err(failed)?;
        held.result.map(|_| ())
    }

    fn release(&mut self, _i: usize) {
        // The child holds the whole batch until `Drop`.
    }

    fn drain(&mut self, i: usize) -> Result<u32, String> {
        self.count(&format!("DRAIN {i}\n"), "DRAINED", i)
    }

    fn peer_sends(&mut self, i: usize, to: SocketAddr, n: u32) -> Result<u32, String> {
        self.count(&format!("PEER-SEND {i} {to} {n}\n"), "SENT", i)
    }
}

impl Child {
    /// Ask the child for a count (`Counted`) about case `i`.
    fn count(&mut self, request: &str, kind: &str, i: usize) -> Result<u32, String> {
        let process = (self.process.as_mut()).ok_or("the holder process is gone")?;
        process.send(request)?;
        let counted: Counted = process.line(self.deadline)?.parse()?;
        if counted.kind != kind || counted.index != i {
            return Err(format!(
                "the holder process answered {counted} to {request}"
            ));
        }
        counted.result
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        let Some(mut process) = self.process.take() else {
            return;
        };
        // Wait (bounded) for the child to let go, so that the ports are
        // free when this returns. A child that let go cleanly serves the
        // next batch; any other is killed when `process` drops.
        let released = process.send("RELEASE\n").is_ok()
            && process.line(Instant::now() + Duration::from_secs(5)) == Ok("RELEASED".into());
        if released && self.broken.is_none() {
            spawn::keep(self.kind, process);
        }
    }
}

/// Holder mode (`addrinuse hold`): speak the protocol above on stdin and
/// stdout, batch after batch, until the parent goes away.
pub fn serve(as_user: Option<&str>) -> io::Result<()> {
    let mut out = io::stdout().lock();
    if !spawn::greet(&mut out, as_user, HELLO)? {
        return Ok(());
    }
    let stdin = io::stdin();
    let mut lines = stdin.lock().lines();
    while serve_batch(&mut lines, &mut out)? {}
    Ok(())
}

/// One batch: hold its first sockets until RELEASE. False when the
/// parent's end of the pipe closed instead.
fn serve_batch(
    lines: &mut impl Iterator<Item = io::Result<String>>,
    out: &mut impl Write,
) -> io::Result<bool> {
    // Index in the request -> the held first socket.
    let mut held = BTreeMap::new();
    let mut replies = String::new();
    let mut asked = false;
    for line in lines.by_ref() {
        let line = line?;
        if line == "GO" {
            asked = true;
            break;
        }
        let (index, result) = match parse_request(&line) {
            Ok((index, case, port)) => (
                index,
                state::hold(&case, port).map(|h| {
                    let check = h.check;
                    held.insert(index, h);
                    check
                }),
            ),
            Err((index, why)) => (index, Err(SetupError::Failed(why))),
        };
        replies.push_str(&format!("{}\n", Held { index, result }));
    }
    if !asked {
        return Ok(false);
    }
    replies.push_str("READY\n");
    out.write_all(replies.as_bytes())?;
    out.flush()?;
    // Hold everything until the parent says so.
    for line in lines.by_ref() {
        let line = line?;
        if line == "RELEASE" {
            drop(held);
            writeln!(out, "RELEASED")?;
            out.flush()?;
            return Ok(true);
        }
        if let Some(index) = line.strip_prefix("LISTEN ") {
            let index: usize = index.parse().unwrap_or(usize::MAX);
            let result = match held.get(&index) {
                Some(h) => h.first_listens().map(|()| StateCheck::Verified),
                None => Err(SetupError::Failed(format!(
                    "no first socket {index} is held"
                ))),
            };
            writeln!(out, "LISTENED {}", Held { index, result })?;
            out.flush()?;
        } else if let Some(counted) = count_request(&line, &held) {
            writeln!(out, "{counted}")?;
            out.flush()?;
        }
    }
    Ok(false)
}

/// The answer to `DRAIN <index>` or `PEER-SEND <index> <address> <n>`;
/// `None` for any other line.
fn count_request(line: &str, held: &BTreeMap<usize, super::setup::Held>) -> Option<Counted> {
    let (kind, rest) = match line.split_once(' ')? {
        ("DRAIN", rest) => ("DRAINED", rest),
        ("PEER-SEND", rest) => ("SENT", rest),
        _ => return None,
    };
    let mut words = rest.split(' ');
    let index: usize = words.next()?.parse().unwrap_or(usize::MAX);
    let result = match held.get(&index) {
        None => Err(format!("no first socket {index} is held")),
        Some(h) if kind == "DRAINED" => h.drain(),
        Some(h) => match (words.next().map(str::parse::<SocketAddr>), words.next()) {
            (Some(Ok(to)), Some(n)) => n
                .parse()
                .map_err(|_| format!("bad count {n}"))
                .and_then(|n| h.peer_sends(to, n)),
            _ => Err(format!("bad request: {line}")),
        },
    };
    Some(Counted {
        kind,
        index,
        result,
    })
}

/// `CASE <index> <port> <probe text>`, or the index and why not.
fn parse_request(line: &str) -> Result<(usize, Case, u16), (usize, String)> {
    let mut words = line.splitn(4, ' ');
    let (Some("CASE"), Some(index), Some(port), Some(text)) =
        (words.next(), words.next(), words.next(), words.next())
    else {
        return Err((0, format!("bad request: {line}")));
    };
    let index: usize = index
        .parse()
        .map_err(|_| (0, format!("bad request: {line}")))?;
    let port: u16 = port
        .parse()
        .map_err(|_| (index, format!("bad port {port}")))?;
    let words: Vec<String> = text.split(' ').map(String::from).collect();
    let case = probe::parse(&words).map_err(|why| (index, format!("bad case: {why}")))?;
    Ok((index, case, port))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::matrix;

    #[test]
    fn every_reply_reads_back_as_written() {
        let replies = [
            Ok(StateCheck::Verified),
            Ok(StateCheck::Unverified),
            Err(SetupError::Unsupported(SockOpt::ReusePortLb)),
            Err(SetupError::Refused(
                Side::Second,
                SockOpt::ExclusiveAddrUse,
                OsError { code: 10022 },
            )),
            Err(SetupError::FirstRefused("connect", OsError { code: 111 })),
            Err(SetupError::FirstRefused("listen", OsError { code: 98 })),
            Err(SetupError::FirstRefused("bind", OsError { code: 99 })),
            Err(SetupError::Failed("accept(): ETIMEDOUT".into())),
        ];
        for (index, result) in replies.into_iter().enumerate() {
            let held = Held { index, result };
            let line = held.to_string();
            assert_eq!(line.parse::<Held>(), Ok(held), "{line}");
        }
    }

    #[test]
    fn every_count_reads_back_as_written() {
        for kind in COUNT_KINDS {
            for result in [Ok(0), Ok(32), Err("the first socket: EBADF".to_string())] {
                let counted = Counted {
                    kind,
                    index: 5,
                    result,
                };
                let line = counted.to_string();
                assert_eq!(line.parse::<Counted>(), Ok(counted), "{line}");
            }
        }
        for line in [
            "DRAINED",
            "DRAINED 1",
            "DRAINED x 3",
            "SENT 1 many",
            "HELD 1 3",
        ] {
            assert!(line.parse::<Counted>().is_err(), "{line:?}");
        }
    }

    #[test]
    fn count_requests_for_cases_not_held_say_so() {
        let held = BTreeMap::new();
        let answer = count_request("DRAIN 4", &held).unwrap();
        assert_eq!(
            answer.to_string(),
            "DRAINED 4 failed no first socket 4 is held"
        );
        let answer = count_request("PEER-SEND 2 127.0.0.1:10000 16", &held).unwrap();
        assert_eq!(answer.kind, "SENT");
        assert!(count_request("RELEASE", &held).is_none());
    }

    #[test]
    fn a_reason_with_line_breaks_stays_one_reply() {
        let held = Held {
            index: 7,
            result: Err(SetupError::Failed("two\nlines".into())),
        };
        assert_eq!(held.to_string(), "FAILED 7 two lines");
    }

    #[test]
    fn garbled_replies_are_errors_not_panics() {
        for line in [
            "",
            "HELD",
            "HELD x verified",
            "HELD 1 maybe",
            "REFUSED 1 first",
            "NOPE 1",
        ] {
            assert!(line.parse::<Held>().is_err(), "{line:?}");
        }
    }

    #[test]
    fn requests_carry_any_case_of_the_matrix() {
        for case in matrix().into_iter().step_by(97) {
            let mut own = case;
            own.holder = Holder::SameProcess;
            let line = format!("CASE 3 10001 {}", probe::format(&own));
            assert_eq!(parse_request(&line), Ok((3, own, 10001)));
        }
        assert_eq!(
            parse_request("CASE 3 99999 tcp bound 127.0.0.1 127.0.0.1"),
            Err((3, "bad port 99999".into()))
        );
    }
}
