//! Starting child processes without disturbing the sockets of cases that
//! run beside them.
//!
//! Between fork and exec a child holds a copy of every descriptor of this
//! process. A socket that a case closes in that window stays open until the
//! child execs, so a listener outlives its close() and a connection closes
//! in the wrong order: the case would record a state it did not ask for.
//! So socket work takes a shared lock (`sockets`), and starting a child
//! takes it exclusively (`start`), until the child has exec'ed.

use std::io;
use std::process::{Child, Command};
use std::sync::{RwLock, RwLockReadGuard};

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
