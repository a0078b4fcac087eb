//! Stories beyond the bind matrix, with real server processes: a server
//! restart, and the same problem on Unix-domain socket paths.

pub mod restart;
pub mod server;
pub mod unix_sockets;
