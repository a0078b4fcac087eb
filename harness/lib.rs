//! addrinuse: what every operating system answers when a program binds a
//! port that is already taken.
//!
//! A case flows through five stages, one module each:
//! [`scenario`] (what a case is: the tables the matrix crosses) →
//! [`run`] (the first socket held, the second bound, on a leased port) →
//! [`outcome`] (what the kernel answered) →
//! [`report`] (tables, the snapshot format, JSON lines, compare).
//! [`platform`] is the one seam where operating systems differ; the
//! README's file map has the rest.

pub mod bench;
pub mod host;
pub mod model;
pub mod outcome;
pub mod platform;
pub mod probe;
pub mod report;
pub mod run;
pub mod scenario;
pub mod spawn;
pub mod stories;
