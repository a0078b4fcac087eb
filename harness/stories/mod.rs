//! Stories beyond the bind matrix, with real server processes: a server
//! restart, the same problem on Unix-domain socket paths, and the servers
//! of the runtimes people use.

pub mod restart;
pub mod runtimes;
pub mod server;
pub mod unix_sockets;
