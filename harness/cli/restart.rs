//! `addrinuse restart`: the restart story live, as a timeline.

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use addrinuse::scenario::{Named, Options, SockOpt};
use addrinuse::stories::restart::{self, Departure};

use super::Done;

#[derive(clap::Args)]
pub struct Args {
    /// How the old server goes away.
    #[arg(long, value_enum, default_value = "hard-kill")]
    variant: Departure,
    /// Old and new server set SO_REUSEADDR.
    #[arg(long)]
    reuseaddr: bool,
    /// Old and new server set SO_EXCLUSIVEADDRUSE (Windows).
    #[arg(long)]
    exclusive: bool,
    /// Afterwards, retry the new server's bind every 100 ms for up to
    /// this many seconds and report how long the port stayed blocked.
    #[arg(long, value_name = "SECONDS", value_parser = clap::value_parser!(u16).range(0..=600), default_value_t = 0)]
    wait: u16,
}

pub fn exec(args: Args, out: &mut dyn Write) -> Done {
    let mut options = Options::NONE;
    if args.reuseaddr {
        options = options.with(SockOpt::ReuseAddr);
    }
    if args.exclusive {
        options = options.with(SockOpt::ExclusiveAddrUse);
    }
    writeln!(out, "restart story: {} ({options})", args.variant.name())?;
    // The timeline as it happens; a write error is kept for after the story.
    let mut written = Ok(());
    let story = restart::run(args.variant, options, &mut |at, text| {
        if written.is_ok() {
            written = writeln!(out, "  +{:>7.1} ms  {text}", at.as_secs_f64() * 1e3);
        }
    });
    written?;
    if let Some(reason) = story.new_server.reason() {
        writeln!(out, "  {}: {reason}", story.new_server.answer())?;
        return Ok(ExitCode::SUCCESS);
    }
    let blocked = story.new_server.bind_word() != "ok";
    match (story.port, blocked) {
        (Some(port), true) if args.wait > 0 => {
            let wait = args.wait;
            writeln!(
                out,
                "  waiting up to {wait} s for port {port} to bind without error (retry every 100 ms)..."
            )?;
            out.flush()?;
            let limit = Duration::from_secs(wait.into());
            match restart::wait_until_free(options, port, limit) {
                Ok(after) => writeln!(
                    out,
                    "  the port bound again after {:.1} s",
                    after.as_secs_f64()
                )?,
                Err(after) => writeln!(out, "  still blocked after {:.1} s", after.as_secs_f64())?,
            }
        }
        (_, true) => writeln!(
            out,
            "  (add --wait SECONDS to see how long the port stays blocked)"
        )?,
        _ => {}
    }
    Ok(ExitCode::SUCCESS)
}
