//! The default command: the selected cases of the matrix, as tables or
//! JSON lines, with the header, the restart question and the stories.

use std::io::{self, IsTerminal, Write};
use std::process::ExitCode;
use std::time::Instant;

use addrinuse::report::{self, header, json, matrix, Format};
use addrinuse::run;
use addrinuse::scenario::Selection;
use addrinuse::stories::{restart, unix_sockets};

use super::{Done, Failure, RunArgs};

pub fn exec(args: RunArgs, out: &mut dyn Write) -> Done {
    let selection = Selection {
        protos: args.proto,
        states: args.state,
        holders: args.holder,
        groups: args.group,
        families: args.family,
    };
    let cases = selection.cases();
    if cases.is_empty() {
        return Err(Failure::Usage(
            "no case matches these filters (UDP has only the states bound and connected)".into(),
        ));
    }
    let threads = args.threads.map_or_else(run::default_threads, usize::from);
    let progress_shown = io::stderr().is_terminal();
    let total = cases.len();
    let step = (total / 10).max(1);
    let progress = move |done: usize| {
        if progress_shown && done % step < 32 {
            let _ = write!(io::stderr(), "\r{done}/{total} cases");
        }
    };
    let start = Instant::now();
    let records = run::run_all(&cases, threads, &progress);
    let elapsed = start.elapsed();
    if progress_shown {
        let _ = write!(io::stderr(), "\r");
    }

    match args.format {
        Format::Jsonl => {
            for r in &records {
                writeln!(out, "{}", json::record(r))?;
            }
        }
        Format::Table | Format::Markdown => {
            writeln!(out, "{}", header::text())?;
            if let Some(summary) = matrix::restart_summary(&records) {
                writeln!(
                    out,
                    "{summary}  (ok/ok: bind and listen both work; EADDRINUSE: the bind fails)\n"
                )?;
            }
            for (key, rows) in matrix::tables(&records) {
                writeln!(out, "{}", args.format.write(&matrix::table(&key, &rows)))?;
            }
            if selection.is_everything() {
                // The two stories beyond the matrix: real server processes,
                // and Unix-domain socket paths.
                let stories = restart::table(&restart::all_stories());
                writeln!(out, "{}", args.format.write(&stories))?;
                let unix = unix_sockets::table(&unix_sockets::run_all());
                writeln!(out, "{}", args.format.write(&unix))?;
            }
        }
    }
    let _ = writeln!(
        io::stderr(),
        "{}",
        report::summary(&records, elapsed, threads)
    );
    Ok(ExitCode::SUCCESS)
}
