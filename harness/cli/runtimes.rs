//! `addrinuse runtimes`: the runtimes story, as a table.

use std::io::{self, Write};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use addrinuse::report::Format;
use addrinuse::stories::runtimes::{self, Answer};

use super::{Done, Failure};

#[derive(clap::Args)]
pub struct Args {
    /// Afterwards, for each program that a hard kill kept from starting
    /// again, kill it hard again and start it every 250 ms for up to this
    /// many seconds: how long the port stayed blocked.
    #[arg(long, value_name = "SECONDS", value_parser = clap::value_parser!(u16).range(0..=600), default_value_t = 0)]
    wait: u16,
    /// Output format (table or markdown).
    #[arg(long, value_enum, default_value = "table")]
    format: Format,
}

pub fn exec(args: Args, out: &mut dyn Write) -> Done {
    if args.format == Format::Jsonl {
        return Err(Failure::Usage(
            "runtimes: --format jsonl is not offered (table or markdown)".into(),
        ));
    }
    let start = Instant::now();
    // Progress, builds included (the first Rust build compiles tokio).
    let stories = runtimes::run_all(&mut |line| {
        let _ = writeln!(io::stderr(), "  {line}");
    });
    let elapsed = start.elapsed();
    writeln!(
        out,
        "{}",
        args.format.write(&runtimes::table(&stories, true))
    )?;

    let blocked: Vec<_> = stories
        .iter()
        .filter(|s| matches!(&s.answer, Answer::Ran(ran) if ran.hard_kill.is_err()))
        .collect();
    if args.wait > 0 && !blocked.is_empty() {
        writeln!(
            out,
            "How long the port stays blocked after a hard kill (up to {} s each, {} programs):",
            args.wait,
            blocked.len()
        )?;
        out.flush()?;
        for story in blocked {
            let limit = Duration::from_secs(args.wait.into());
            let answer = match runtimes::wait_until_up(&story.row, limit) {
                Ok(after) => format!("up again after {:.1} s", after.as_secs_f64()),
                Err(why) => why,
            };
            writeln!(
                out,
                "  {} ({}): {answer}",
                story.row.name(),
                story.row.listen_on.name()
            )?;
            out.flush()?;
        }
    } else if !blocked.is_empty() {
        writeln!(
            out,
            "(add --wait SECONDS to see how long a hard kill keeps the port blocked)"
        )?;
    }

    let count = |f: &dyn Fn(&Answer) -> bool| stories.iter().filter(|s| f(&s.answer)).count();
    let _ = writeln!(
        io::stderr(),
        "{} rows ran, {} skipped, {} setup-failed in {:.1} s",
        count(&|a| matches!(a, Answer::Ran(_))),
        count(&|a| matches!(a, Answer::Skipped(_))),
        count(&|a| matches!(a, Answer::SetupFailed(_))),
        elapsed.as_secs_f64()
    );
    Ok(ExitCode::SUCCESS)
}
