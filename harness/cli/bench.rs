//! `addrinuse bench`: the harness's cost next to the bare syscalls.

use std::io::Write;
use std::process::ExitCode;

use super::Done;

pub fn exec(iterations: u32, out: &mut dyn Write) -> Done {
    write!(out, "{}", addrinuse::bench::report(iterations))?;
    Ok(ExitCode::SUCCESS)
}
