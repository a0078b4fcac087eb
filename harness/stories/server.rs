//! The small echo server process of the restart story and the Unix-domain
//! socket cases: the suite's own binary in server mode (`addrinuse serve`).
//!
//! It sets the options it is given and says how that went on stdout, one
//! line each: `UNSUPPORTED <option>` or `REFUSED <option> <code>` (and
//! exits), else `BIND ok|<code>`, then for a bound socket
//! `LISTEN ok|<code>`, then `SERVING`. It echoes every line its clients
//! send, and obeys stdin: `CLOSE` shuts down every connection (the server
//! closes first) and answers `CLOSED`; `EXIT` or the end of stdin ends the
//! process.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use socket2::{Domain, SockAddr, Socket, Type};

use crate::outcome::{OsError, Outcome, Side, Skip, StateCheck};
use crate::platform::{self, OptionError};
use crate::run::setup::{BACKLOG, WAIT};
use crate::scenario::{Options, SockOpt};
use crate::spawn::{self, ChildProcess};

/// Where a server binds.
#[derive(Clone, Debug)]
pub enum ServerAddr {
    Tcp(SocketAddr),
    Unix(PathBuf),
}

/// Server mode: bind, listen, report, echo, obey stdin.
pub fn serve(place: &ServerAddr, options: Options, report_only: bool) -> io::Result<()> {
    let mut out = io::stdout().lock();
    let (socket, addr) = match place {
        ServerAddr::Tcp(addr) => (
            Socket::new(Domain::for_address(*addr), Type::STREAM, None)?,
            SockAddr::from(*addr),
        ),
        ServerAddr::Unix(path) => (
            Socket::new(Domain::UNIX, Type::STREAM, None)?,
            SockAddr::unix(path)?,
        ),
    };
    for opt in options.iter() {
        match platform::set_option(&socket, opt) {
            Ok(()) => {}
            Err(OptionError::Unsupported) => {
                writeln!(out, "UNSUPPORTED {}", opt.short())?;
                return Ok(());
            }
            Err(OptionError::Refused(e)) => {
                writeln!(out, "REFUSED {} {}", opt.short(), OsError::of(&e).code)?;
                return Ok(());
            }
        }
    }
    let step = |result: io::Result<()>| match result {
        Ok(()) => "ok".to_string(),
        Err(e) => OsError::of(&e).code.to_string(),
    };
    let bind = step(socket.bind(&addr));
    writeln!(out, "BIND {bind}")?;
    if bind != "ok" {
        return Ok(());
    }
    let listen = step(socket.listen(BACKLOG));
    writeln!(out, "LISTEN {listen}")?;
    if listen != "ok" || report_only {
        return Ok(());
    }
    writeln!(out, "SERVING")?;
    out.flush()?;

    let connections: Arc<Mutex<Vec<Socket>>> = Arc::default();
    let accepted = Arc::clone(&connections);
    // Accepts until the process ends (the listener lives as long as it).
    thread::spawn(move || {
        while let Ok((conn, _)) = socket.accept() {
            if let Ok(handle) = conn.try_clone() {
                accepted.lock().expect("not poisoned").push(handle);
            }
            thread::spawn(move || echo(conn));
        }
    });
    for line in io::stdin().lock().lines() {
        match line?.as_str() {
            "CLOSE" => {
                for conn in connections.lock().expect("not poisoned").drain(..) {
                    let _ = conn.shutdown(std::net::Shutdown::Both);
                }
                writeln!(out, "CLOSED")?;
                out.flush()?;
            }
            "EXIT" => break,
            _ => {}
        }
    }
    Ok(())
}

/// Echo lines back until the peer closes.
fn echo(conn: Socket) {
    let mut reader = BufReader::new(&conn);
    let mut line = String::new();
    while matches!(reader.read_line(&mut line), Ok(n) if n > 0) {
        if (&conn).write_all(line.as_bytes()).is_err() {
            break;
        }
        line.clear();
    }
}

/// How a server process's setup went.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Started {
    /// The options were set; the bind, and the listen after a bind that
    /// worked.
    Bound {
        bind: Result<(), OsError>,
        listen: Option<Result<(), OsError>>,
    },
    /// The platform has no such option.
    Unsupported(SockOpt),
    /// The OS refused the option.
    Refused(SockOpt, OsError),
}

impl Started {
    pub fn is_listening(&self) -> bool {
        matches!(
            self,
            Started::Bound {
                bind: Ok(()),
                listen: Some(Ok(()))
            }
        )
    }

    /// The answer, as a case's `side` socket.
    pub fn outcome(&self, side: Side) -> Outcome {
        match self {
            Started::Bound { bind, listen } => Outcome::Ran {
                bind: *bind,
                listen: *listen,
                check: StateCheck::Verified,
                delivery: None,
            },
            Started::Unsupported(opt) => Outcome::Skipped(Skip::Unsupported(*opt)),
            Started::Refused(option, error) => Outcome::Refused {
                socket: side,
                option: *option,
                error: *error,
            },
        }
    }
}

/// A server process run by the parent, killed and reaped on drop.
pub struct ServerProcess {
    process: ChildProcess,
}

/// How long the parent waits for any one answer of the server.
const ANSWER_WAIT: Duration = Duration::from_secs(10);

/// One `BIND`/`LISTEN` line's result.
fn result_of(line: &str, key: &str) -> Result<Result<(), OsError>, String> {
    match line.strip_prefix(key).map(str::trim) {
        Some("ok") => Ok(Ok(())),
        Some(code) => code
            .parse()
            .map(|code| Err(OsError { code }))
            .map_err(|_| format!("the server process said: {line}")),
        None => Err(format!("the server process said: {line}")),
    }
}

/// The first line of a server: its options' fate, or its bind.
fn first_line(line: &str) -> Result<Option<Started>, String> {
    let bad = || format!("the server process said: {line}");
    let option = |name: &str| SockOpt::from_short(name).ok_or_else(bad);
    let words: Vec<&str> = line.split(' ').collect();
    match words[..] {
        ["UNSUPPORTED", opt] => Ok(Some(Started::Unsupported(option(opt)?))),
        ["REFUSED", opt, code] => Ok(Some(Started::Refused(
            option(opt)?,
            OsError {
                code: code.parse().map_err(|_| bad())?,
            },
        ))),
        _ => Ok(None),
    }
}

impl ServerProcess {
    /// Start `addrinuse serve` for `place`; returns once it reported how
    /// its setup went (bounded).
    pub fn start(
        place: &ServerAddr,
        options: Options,
        report_only: bool,
    ) -> Result<(ServerProcess, Started), String> {
        let mut command = Command::new(spawn::program()?);
        command.arg("serve");
        match place {
            ServerAddr::Tcp(addr) => command.args(["--tcp", &addr.to_string()]),
            ServerAddr::Unix(path) => command.arg("--unix").arg(path),
        };
        for opt in options.iter() {
            command.args(["--option", opt.short()]);
        }
        if report_only {
            command.arg("--report-only");
        }
        let mut server = ServerProcess {
            process: ChildProcess::start(&mut command, "the server process")?,
        };
        let line = server.line()?;
        if let Some(started) = first_line(&line)? {
            return Ok((server, started));
        }
        let bind = result_of(&line, "BIND ")?;
        let listen = match bind {
            Ok(()) => Some(result_of(&server.line()?, "LISTEN ")?),
            Err(_) => None,
        };
        let started = Started::Bound { bind, listen };
        if !report_only && started.is_listening() {
            let serving = server.line()?;
            if serving != "SERVING" {
                return Err(format!("the server process said: {serving}"));
            }
        }
        Ok((server, started))
    }

    fn line(&mut self) -> Result<String, String> {
        self.process.line(Instant::now() + ANSWER_WAIT)
    }

    /// Ask the server to close its connections first; returns once it did.
    pub fn close_connections(&mut self) -> Result<(), String> {
        self.process.send("CLOSE\n")?;
        match self.line()?.as_str() {
            "CLOSED" => Ok(()),
            other => Err(format!("the server process said: {other}")),
        }
    }

    /// Let the server end by itself (EXIT), and reap it.
    pub fn exit(mut self) -> Result<(), String> {
        let _ = self.process.send("EXIT\n");
        self.process.reap(ANSWER_WAIT)
    }

    /// Kill the server hard (SIGKILL; TerminateProcess on Windows) and reap
    /// it: when this returns, the kernel has closed its sockets.
    pub fn kill(mut self) -> Result<(), String> {
        self.process.kill()
    }
}

/// A client's bounded exchange with an echo server.
pub fn exchange(client: &Socket, message: &[u8]) -> io::Result<()> {
    client.set_read_timeout(Some(ANSWER_WAIT))?;
    let mut writer = client;
    writer.write_all(message)?;
    let mut echoed = vec![0u8; message.len()];
    let mut reader = client;
    reader.read_exact(&mut echoed)?;
    if echoed == message {
        Ok(())
    } else {
        Err(io::Error::other("the echo differs"))
    }
}

/// Clients connected to 127.0.0.1:port, each having echoed a line.
pub fn connect_clients(port: u16, n: usize) -> Result<Vec<Socket>, String> {
    let target = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    // Opening sockets is socket work like any other (see `spawn`).
    let _quiet = spawn::sockets();
    let mut clients = Vec::new();
    for i in 0..n {
        let client = Socket::new(Domain::IPV4, Type::STREAM, None).map_err(|e| e.to_string())?;
        client
            .connect_timeout(&target.into(), WAIT)
            .map_err(|e| format!("client {i}: connect: {}", OsError::of(&e)))?;
        exchange(&client, format!("hello {i}\n").as_bytes())
            .map_err(|e| format!("client {i}: echo: {e}"))?;
        clients.push(client);
    }
    Ok(clients)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn option_lines_are_read_as_answers() {
        assert_eq!(
            first_line("UNSUPPORTED exclusive"),
            Ok(Some(Started::Unsupported(SockOpt::ExclusiveAddrUse)))
        );
        assert_eq!(
            first_line("REFUSED exclusive 10022"),
            Ok(Some(Started::Refused(
                SockOpt::ExclusiveAddrUse,
                OsError { code: 10022 }
            )))
        );
        assert_eq!(first_line("BIND ok"), Ok(None));
        assert!(first_line("UNSUPPORTED nonsense").is_err());
    }

    #[test]
    fn bind_and_listen_lines_carry_the_error_code() {
        assert_eq!(result_of("BIND ok", "BIND "), Ok(Ok(())));
        assert_eq!(result_of("BIND 98", "BIND "), Ok(Err(OsError { code: 98 })));
        assert!(result_of("LISTEN 98", "BIND ").is_err());
        assert!(result_of("BIND soon", "BIND ").is_err());
    }
}
