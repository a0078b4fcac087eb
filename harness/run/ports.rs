//! Which port each case uses.
//!
//! Every case binds its own port, so cases can run in parallel without
//! seeing each other. Ports come from a range the kernel never picks by
//! itself (outside the ephemeral range, where connect() and bind(port 0)
//! take theirs), and each is checked free before use: a port still held
//! by anyone, including a TIME_WAIT left by an earlier run, is passed over.
//! A port is leased to one case at a time, so two cases of this process
//! never share one even when the search wraps around the range.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::OnceLock;
use std::thread;
use std::time::{Duration, Instant};

use socket2::{Domain, Socket, Type};

use crate::host;
use crate::platform;
use crate::platform::tables::portrange::{self, PortPlan};
use crate::scenario::{Case, Named, Proto};
use crate::spawn;

/// The ports the harness may use and, for each, until when it is known to
/// be busy (milliseconds since the pool was made; `LEASED` while a case of
/// this process uses it).
pub struct PortPool {
    /// Held for the life of the process (see `lock_ports`).
    _lock: Option<PortLock>,
    segments: Vec<(u16, u16)>,
    busy_until: Vec<AtomicU32>,
    /// In a network namespace of this run's own, the ports no case has
    /// leased yet: nothing can hold them (the namespace began empty, and
    /// connect() and bind(port 0) take ports outside the pool), so their
    /// first lease skips the free-port check. Empty in a shared network.
    untouched: Vec<AtomicBool>,
    next: AtomicU32,
    epoch: Instant,
}

const LEASED: u32 = u32::MAX;

/// How long a port found busy is passed over before it is checked again.
const RECHECK_MS: u32 = 2_000;

/// How long `take` waits for a port when every one is busy: TIME_WAIT
/// lasts 60 s on Linux and up to 240 s elsewhere; a few full runs within a
/// minute can fill the range with it.
const WAIT_FOR_PORTS: Duration = Duration::from_secs(120);

/// A port leased to one case; the port goes back to the pool on drop.
pub struct Lease {
    port: u16,
    index: usize,
    /// Keep the port out of use this long after the lease ends.
    quarantine: Duration,
}

impl Lease {
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The port will be left in TIME_WAIT: keep it out of use until that
    /// is surely gone, without relying on the free-port check (which cannot
    /// see every TIME_WAIT everywhere: under Wine every host socket has
    /// SO_REUSEADDR and binds straight over it).
    pub fn left_time_wait(&mut self) {
        self.quarantine = platform::TIME_WAIT;
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        let pool = pool();
        let until = pool
            .now_ms()
            .saturating_add(self.quarantine.as_millis() as u32);
        pool.busy_until[self.index].store(until.min(LEASED - 1), Ordering::Relaxed);
    }
}

/// How long a run waits for another addrinuse process to finish with the
/// ports.
const WAIT_FOR_OTHER_RUN: Duration = Duration::from_secs(600);

/// What keeps other addrinuse runs off this run's ports while it lives.
#[allow(dead_code)] // held for its Drop, never read
enum PortLock {
    /// Linux: an abstract Unix socket name. Abstract names belong to the
    /// network namespace, exactly like the ports they guard: every run in
    /// this namespace finds it, whatever its TMPDIR. The kernel drops it
    /// when the process dies, however it dies.
    Name(Socket),
    /// Elsewhere: a lock file in the temporary folder.
    File(std::fs::File),
}

/// Take the lock on the harness's ports for the rest of this process's
/// life: two addrinuse processes choosing ports at once could pick the same
/// port between the free-port check and the bind, and change each other's
/// answers. A run in a network namespace of its own needs none. A second
/// run waits for the first (bounded, and said on stderr).
fn lock_ports() -> Option<PortLock> {
    match platform::abstract_unix_addr("addrinuse-ports-lock") {
        Some(name) => lock_by_name(&name).map(PortLock::Name),
        None => lock_file().map(PortLock::File),
    }
}

fn announce_wait(what: &str) {
    eprintln!(
        "addrinuse: waiting up to {} s for another addrinuse run {what} to finish",
        WAIT_FOR_OTHER_RUN.as_secs()
    );
}

fn lock_by_name(name: &socket2::SockAddr) -> Option<Socket> {
    let start = Instant::now();
    let mut told = false;
    loop {
        // CLOEXEC (socket2's default): children never inherit it.
        let socket = Socket::new(Domain::UNIX, Type::STREAM, None).ok()?;
        match socket.bind(name) {
            Ok(()) => return Some(socket),
            Err(e)
                if e.kind() == std::io::ErrorKind::AddrInUse
                    && start.elapsed() < WAIT_FOR_OTHER_RUN =>
            {
                if !told && start.elapsed() > Duration::from_secs(1) {
                    announce_wait("in this network namespace");
                    told = true;
                }
                thread::sleep(Duration::from_millis(20));
            }
            Err(e) => {
                eprintln!("addrinuse: going on without the ports' lock: {e}");
                return None;
            }
        }
    }
}

fn lock_file() -> Option<std::fs::File> {
    let path = std::env::temp_dir().join("addrinuse-ports.lock");
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .or_else(|_| std::fs::File::open(&path))
        .ok()?;
    let start = Instant::now();
    let mut told = false;
    loop {
        match file.try_lock() {
            Ok(()) => return Some(file),
            Err(std::fs::TryLockError::WouldBlock) if start.elapsed() < WAIT_FOR_OTHER_RUN => {
                if !told && start.elapsed() > Duration::from_secs(1) {
                    announce_wait(&format!("({})", path.display()));
                    told = true;
                }
                thread::sleep(Duration::from_millis(20));
            }
            // No lock to be had (a file system without locks, or waited
            // too long): go on without it rather than never run.
            Err(_) => {
                eprintln!(
                    "addrinuse: going on without the ports' lock ({})",
                    path.display()
                );
                return None;
            }
        }
    }
}

pub fn pool() -> &'static PortPool {
    static POOL: OnceLock<PortPool> = OnceLock::new();
    POOL.get_or_init(|| {
        let private = super::network().starts_with("private");
        let lock = if private { None } else { lock_ports() };
        let segments = segments().segments;
        let len: usize = segments.iter().map(|(a, b)| usize::from(b - a) + 1).sum();
        // A random starting point, so that two processes running at once
        // rarely start on the same ports.
        let mut h = RandomState::new().build_hasher();
        h.write_u32(std::process::id());
        PortPool {
            _lock: lock,
            segments,
            busy_until: (0..len).map(|_| AtomicU32::new(0)).collect(),
            untouched: (0..if private { len } else { 0 })
                .map(|_| AtomicBool::new(true))
                .collect(),
            next: AtomicU32::new((h.finish() % len as u64) as u32),
            epoch: Instant::now(),
        }
    })
}

/// The port ranges the harness takes its ports from on this machine:
/// unprivileged ports outside the kernel's ephemeral range and outside any
/// range the system reserves (`platform::tables::portrange`), with a note
/// when that left nothing from 10000 up.
pub fn segments() -> PortPlan {
    portrange::choose_segments(platform::ephemeral_ports(), &platform::excluded_ports())
}

/// `10000-32767, 61000-65535`
pub fn describe(segments: &[(u16, u16)]) -> String {
    portrange::describe(segments)
}

impl PortPool {
    fn now_ms(&self) -> u32 {
        self.epoch.elapsed().as_millis().min(u128::from(LEASED - 1)) as u32
    }

    fn port_at(&self, mut index: usize) -> u16 {
        for (a, b) in &self.segments {
            let width = usize::from(b - a) + 1;
            if index < width {
                return a + index as u16;
            }
            index -= width;
        }
        unreachable!("index within the pool")
    }

    /// A port for `case`, kept out of use after the case when its state
    /// outlives it (TIME_WAIT).
    pub fn lease_for(&self, case: &Case) -> Result<Lease, String> {
        let mut lease = self.take(case.proto)?;
        if case.state.lingers() {
            lease.left_time_wait();
        }
        Ok(lease)
    }

    /// A port nothing holds for `proto` right now, leased to the caller.
    /// Ports that earlier runs left in TIME_WAIT are passed over; when every
    /// port is busy it waits (bounded) for them to come free.
    pub fn take(&self, proto: Proto) -> Result<Lease, String> {
        let len = self.busy_until.len();
        let deadline = Instant::now() + WAIT_FOR_PORTS;
        loop {
            for _ in 0..len {
                let index = self.next.fetch_add(1, Ordering::Relaxed) as usize % len;
                let slot = &self.busy_until[index];
                let now = self.now_ms();
                let seen = slot.load(Ordering::Relaxed);
                if seen > now
                    || slot
                        .compare_exchange(seen, LEASED, Ordering::AcqRel, Ordering::Relaxed)
                        .is_err()
                {
                    continue;
                }
                let port = self.port_at(index);
                let untouched =
                    (self.untouched.get(index)).is_some_and(|u| u.swap(false, Ordering::Relaxed));
                if untouched || is_free(proto, port) {
                    return Ok(Lease {
                        port,
                        index,
                        quarantine: Duration::ZERO,
                    });
                }
                slot.store(now + RECHECK_MS, Ordering::Relaxed);
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "no free {} port in {} for {} s (TIME_WAIT left by earlier runs?)",
                    proto.name(),
                    describe(&self.segments),
                    WAIT_FOR_PORTS.as_secs()
                ));
            }
            // Said once per process: every port is busy, mostly with
            // TIME_WAIT that earlier runs in this network left.
            static TOLD: std::sync::Once = std::sync::Once::new();
            TOLD.call_once(|| {
                eprintln!(
                    "\naddrinuse: waiting up to {} s for ports to leave TIME_WAIT: all {len} ports \
                     of {} are in use (earlier runs in this network; as root each run gets a \
                     network of its own)",
                    WAIT_FOR_PORTS.as_secs(),
                    describe(&self.segments)
                );
            });
            thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Whether nothing at all holds `port`: a wildcard bind without any reuse
/// option conflicts with every socket on the port, whatever its address
/// or state (TIME_WAIT included). On Linux a dual-stack `[::]` covers both
/// families at once; on the BSDs it can bind beside an IPv4 socket, so
/// `0.0.0.0` is tried too; on Windows a plain bind goes over TIME_WAIT, so
/// the probe asks for SO_EXCLUSIVEADDRUSE (`platform::prepare_free_probe`).
pub fn is_free(proto: Proto, port: u16) -> bool {
    let ty = Type::from(proto);
    // A child started right now must not keep the check's socket bound.
    let _quiet = spawn::sockets();
    let attempt = |addr: SocketAddr, dual: bool| {
        Socket::new(Domain::for_address(addr), ty, None)
            .and_then(|s| {
                platform::prepare_free_probe(&s);
                if dual && host::v6only_by_default() {
                    s.set_only_v6(false)?;
                }
                // Both probes bound at once: each must find the port free.
                s.bind(&addr.into()).map(|()| s)
            })
            .ok()
    };
    let v4 = || attempt((Ipv4Addr::UNSPECIFIED, port).into(), false);
    if !host::capabilities().ipv6 {
        return v4().is_some();
    }
    let Some(_dual) = attempt((Ipv6Addr::UNSPECIFIED, port).into(), true) else {
        return false;
    };
    !platform::DUAL_STACK_PROBE_MISSES_V4 || v4().is_some()
}
