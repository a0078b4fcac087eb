//! Child processes of the suite's own binary (holders and echo servers),
//! started without disturbing the sockets of cases that run beside them.
//!
//! Between fork and exec a child holds a copy of every descriptor of this
//! process. A socket that a case closes in that window stays open until the
//! child execs, so a listener outlives its close() and a connection closes
//! in the wrong order: the case would record a state it did not ask for.
//! So socket work takes a shared lock (`sockets`), and starting a child
//! takes it exclusively (`start`), until the child has exec'ed.

use std::io::{self, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::{Mutex, OnceLock, RwLock, RwLockReadGuard};
use std::thread;
use std::time::{Duration, Instant};

use crate::platform::{self, LineError};

static LOCK: RwLock<()> = RwLock::new(());

/// Held while a case opens, changes or closes sockets. Not reentrant: take
/// it once, around the whole piece of socket work.
pub fn sockets() -> RwLockReadGuard<'static, ()> {
    LOCK.read().unwrap_or_else(|e| e.into_inner())
}

/// Start `command`; returns once the child has exec'ed (std waits for
/// that), so it holds none of this process's sockets any more.
pub fn start(command: &mut Command) -> io::Result<Child> {
    let _exclusive = LOCK.write().unwrap_or_else(|e| e.into_inner());
    command.spawn()
}

/// Wait until `child` exits, `limit` at most; past that it is killed and
/// reaped, and the answer says how long it was given.
pub fn wait_for(child: &mut Child, limit: Duration) -> Result<ExitStatus, String> {
    let deadline = Instant::now() + limit;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Ok(status),
            Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(20)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("no result within {} s", limit.as_secs()));
            }
            Err(e) => return Err(format!("waiting: {e}")),
        }
    }
}

static PROGRAM: OnceLock<PathBuf> = OnceLock::new();

/// Use `path` (an `addrinuse` binary) for child processes. Test binaries
/// must call this (with `env!("CARGO_BIN_EXE_addrinuse")`); the `addrinuse`
/// command uses itself.
pub fn set_program(path: impl Into<PathBuf>) {
    let _ = PROGRAM.set(path.into());
}

/// The `addrinuse` binary that child processes run.
pub fn program() -> Result<PathBuf, String> {
    if let Some(p) = PROGRAM.get() {
        return Ok(p.clone());
    }
    // Only re-run ourselves if we are the addrinuse command: re-running a
    // test binary would run the test suite again.
    let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
    match exe.file_stem().and_then(|s| s.to_str()) {
        Some("addrinuse") => Ok(exe),
        _ => Err("no addrinuse program for child processes: call spawn::set_program first".into()),
    }
}

/// A child that speaks a line protocol on its stdin and stdout. Every read
/// is bounded; the child is killed and reaped on drop, never left behind.
pub struct ChildProcess {
    child: Child,
    /// `None` once closed (`close_stdin`).
    stdin: Option<ChildStdin>,
    lines: platform::ChildLines,
    /// `the holder process`: how errors name it.
    what: &'static str,
}

impl ChildProcess {
    pub fn start(command: &mut Command, what: &'static str) -> Result<ChildProcess, String> {
        command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        // A start that fails is retried a few times: Wine now and then fails
        // CreateProcess with "Internal error" (1359) under load.
        let mut tries = 0;
        let mut child = loop {
            match start(command) {
                Ok(child) => break child,
                Err(_) if tries < 3 => {
                    tries += 1;
                    thread::sleep(Duration::from_millis(50 * tries));
                }
                Err(e) => return Err(format!("starting {what}: {e}")),
            }
        };
        let stdin = child.stdin.take().expect("piped");
        let stdout = child.stdout.take().expect("piped");
        Ok(ChildProcess {
            child,
            stdin: Some(stdin),
            lines: platform::ChildLines::new(stdout),
            what,
        })
    }

    /// The child's next line, waiting until `deadline` at most.
    pub fn line(&mut self, deadline: Instant) -> Result<String, String> {
        self.lines.next(deadline).map_err(|e| match e {
            LineError::Timeout => format!("{} did not answer in time", self.what),
            LineError::Closed => format!("{} exited early", self.what),
        })
    }

    pub fn send(&mut self, text: &str) -> Result<(), String> {
        let Some(stdin) = self.stdin.as_mut() else {
            return Err(format!("writing to {}: its stdin is closed", self.what));
        };
        stdin
            .write_all(text.as_bytes())
            .and_then(|()| stdin.flush())
            .map_err(|e| format!("writing to {}: {e}", self.what))
    }

    /// Close the child's stdin: the end of its input.
    pub fn close_stdin(&mut self) {
        self.stdin = None;
    }

    /// The child's process id.
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// Kill the child hard (SIGKILL; TerminateProcess on Windows) and reap
    /// it: when this returns, the kernel has closed its sockets.
    pub fn kill(&mut self) -> Result<(), String> {
        self.child.kill().map_err(|e| format!("kill: {e}"))?;
        self.reap(Duration::from_secs(10))
    }

    /// Wait, bounded, until the child has exited.
    pub fn reap(&mut self, limit: Duration) -> Result<(), String> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return Ok(());
            }
            thread::sleep(Duration::from_millis(1));
        }
        Err(format!("{} did not exit", self.what))
    }
}

impl Drop for ChildProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Children that ended a conversation cleanly, kept for the next one: a
/// process start costs more than a whole batch of cases. They outlive the
/// threads and runs that started them; when this process exits, their
/// stdin closes and they leave.
static IDLE: Mutex<Vec<(&'static str, ChildProcess)>> = Mutex::new(Vec::new());

/// An idle child of `kind`, if any.
pub fn reuse(kind: &'static str) -> Option<ChildProcess> {
    let mut idle = IDLE.lock().unwrap_or_else(|e| e.into_inner());
    let at = idle.iter().position(|(k, _)| *k == kind)?;
    Some(idle.swap_remove(at).1)
}

/// Keep `process`, which is ready for a new conversation, for `reuse`.
pub fn keep(kind: &'static str, process: ChildProcess) {
    IDLE.lock()
        .unwrap_or_else(|e| e.into_inner())
        .push((kind, process));
}

/// The first words of a child process of the suite: switch to `as_user`
/// (if asked) before any socket exists, then say `hello`. Returns false,
/// after saying why on `out`, when the switch failed; the parent reads
/// that line instead of the hello and gives up on the child.
pub fn greet(out: &mut impl Write, as_user: Option<&str>, hello: &str) -> io::Result<bool> {
    if let Some(user) = as_user {
        if let Err(e) = crate::platform::become_user(user) {
            writeln!(out, "FATAL cannot switch to user {user}: {e}")?;
            return Ok(false);
        }
    }
    writeln!(out, "{hello}")?;
    out.flush()?;
    Ok(true)
}
