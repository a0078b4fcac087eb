//! addrinuse: what every operating system answers when a program binds a
//! port that is already taken.
//!
//! One concept per module:
//! - [`scenario`]: the case tables (protocols, states, addresses, options),
//! - [`setup`]: bringing the first socket into its state and verifying it,
//! - [`outcome`]: what the kernel answered,
//! - [`run`]: running one case, or many in parallel,
//! - [`holder`]: first sockets held by a child process (another user),
//! - [`render`]: tables, markdown and JSON lines,
//! - [`probe`]: the one-case text grammar of `addrinuse probe`,
//! - [`restart`]: the restart story with real server processes ([`server`]),
//! - [`unix_sockets`]: the same problem on a Unix-domain socket path,
//! - [`compare`]: recorded platforms side by side, from `snapshots/<os>/`,
//! - [`host`]: this machine's capabilities and facts,
//! - [`ports`]: a fresh, verified-free port for every case,
//! - [`spawn`]: starting child processes without leaking case sockets,
//! - [`platform`]: the one seam where operating systems differ.

pub mod bench;
pub mod compare;
pub mod holder;
pub mod host;
pub mod outcome;
pub mod platform;
pub mod ports;
pub mod probe;
pub mod render;
pub mod restart;
pub mod run;
pub mod scenario;
pub mod server;
pub mod setup;
pub mod spawn;
pub mod unix_sockets;
