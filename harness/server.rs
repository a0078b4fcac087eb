//! The small echo server process of the restart story and the Unix-domain
//! socket cases: the suite's own binary in server mode (`addrinuse serve`).
//!
//! It binds with the options it is given, says how that went on stdout
//! (`BIND ok|<code>`, then for a listener `LISTEN ok|<code>`, then
//! `SERVING`), echoes every line its clients send, and obeys stdin:
//! `CLOSE` shuts down every connection (the server closes first) and
//! answers `CLOSED`; `EXIT` or the end of stdin ends the process.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use socket2::{Domain, SockAddr, Socket, Type};

use crate::outcome::OsError;
use crate::platform::{self, OptionError};
use crate::scenario::Options;

/// Where a server binds.
#[derive(Clone, Debug)]
pub enum Place {
    Tcp(SocketAddr),
    Unix(PathBuf),
}

/// Server mode: bind, listen, report, echo, obey stdin.
pub fn serve(place: &Place, options: Options, report_only: bool) -> io::Result<()> {
    let mut out = io::stdout().lock();
    let (socket, addr) = match place {
        Place::Tcp(addr) => (
            Socket::new(Domain::for_address(*addr), Type::STREAM, None)?,
            SockAddr::from(*addr),
        ),
        Place::Unix(path) => (
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
    let listen = step(socket.listen(128));
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

/// A server process run by the parent, killed and reaped on drop.
pub struct ServerProcess {
    child: Child,
    stdin: ChildStdin,
    lines: Receiver<String>,
}

/// How a server process's bind went.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Started {
    pub bind: Result<(), OsError>,
    /// `None` when the bind failed.
    pub listen: Option<Result<(), OsError>>,
}

const WAIT: Duration = Duration::from_secs(10);

impl ServerProcess {
    /// Start `addrinuse serve` for `place`; returns once it reported its
    /// bind and listen results (bounded).
    pub fn start(
        place: &Place,
        options: Options,
        report_only: bool,
    ) -> Result<(ServerProcess, Started), String> {
        let mut command = Command::new(crate::holder::program()?);
        command.arg("serve");
        match place {
            Place::Tcp(addr) => command.args(["--tcp", &addr.to_string()]),
            Place::Unix(path) => command.arg("--unix").arg(path),
        };
        for opt in options.iter() {
            command.args(["--option", opt.short()]);
        }
        if report_only {
            command.arg("--report-only");
        }
        command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        let mut child = crate::spawn::start(&mut command)
            .map_err(|e| format!("starting the server process: {e}"))?;
        let stdin = child.stdin.take().expect("piped");
        let stdout = child.stdout.take().expect("piped");
        let (tx, lines) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut server = ServerProcess {
            child,
            stdin,
            lines,
        };
        let word = |line: &str, key: &str| -> Result<Result<(), OsError>, String> {
            match line.strip_prefix(key).map(str::trim) {
                Some("ok") => Ok(Ok(())),
                Some(code) => code
                    .parse()
                    .map(|code| Err(OsError { code }))
                    .map_err(|_| format!("the server process said: {line}")),
                None => Err(format!("the server process said: {line}")),
            }
        };
        let bind = word(&server.line()?, "BIND ")?;
        let listen = match bind {
            Ok(()) => Some(word(&server.line()?, "LISTEN ")?),
            Err(_) => None,
        };
        if !report_only && listen == Some(Ok(())) {
            let serving = server.line()?;
            if serving != "SERVING" {
                return Err(format!("the server process said: {serving}"));
            }
        }
        Ok((server, Started { bind, listen }))
    }

    fn line(&mut self) -> Result<String, String> {
        self.lines
            .recv_timeout(WAIT)
            .map_err(|_| "the server process did not answer".to_string())
    }

    /// Ask the server to close its connections first; returns once it did.
    pub fn close_connections(&mut self) -> Result<(), String> {
        writeln!(self.stdin, "CLOSE").map_err(|e| e.to_string())?;
        match self.line()?.as_str() {
            "CLOSED" => Ok(()),
            other => Err(format!("the server process said: {other}")),
        }
    }

    /// Let the server end by itself (EXIT), and reap it.
    pub fn exit(mut self) -> Result<(), String> {
        let _ = writeln!(self.stdin, "EXIT");
        self.reap()
    }

    /// Kill the server hard (SIGKILL; TerminateProcess on Windows) and reap
    /// it: when this returns, the kernel has closed its sockets.
    pub fn kill(mut self) -> Result<(), String> {
        self.child.kill().map_err(|e| format!("kill: {e}"))?;
        self.reap()
    }

    fn reap(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + WAIT;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return Ok(());
            }
            thread::sleep(Duration::from_millis(1));
        }
        Err("the server process did not exit".into())
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A client's bounded exchange with an echo server.
pub fn exchange(client: &Socket, message: &[u8]) -> io::Result<()> {
    client.set_read_timeout(Some(WAIT))?;
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
