//! The default command: the selected cases of the matrix, as tables or
//! JSON lines, with the header, the restart question and the stories.

use std::io::{self, IsTerminal, Write};
use std::path::Path;
use std::process::ExitCode;
use std::time::Instant;

use addrinuse::outcome::{Outcome, Record};
use addrinuse::platform;
use addrinuse::report::{self, header, json, lab, matrix, Format, Recorded, Table};
use addrinuse::run;
use addrinuse::scenario::{Holder, Selection};
use addrinuse::stories::{restart, unix_sockets};

use super::{Done, Failure, RunArgs};

pub fn exec(args: RunArgs, out: &mut dyn Write) -> Done {
    let selection = Selection {
        protos: args.proto.clone(),
        states: args.state.clone(),
        holders: args.holder.clone(),
        groups: args.group.clone(),
        families: args.family.clone(),
    };
    if args.save.is_some() && !selection.is_everything() {
        return Err(Failure::Usage(
            "--save writes every recorded table: it takes no filter".into(),
        ));
    }
    let cases = selection.cases();
    if cases.is_empty() {
        return Err(Failure::Usage(
            "no case matches these filters (UDP has only the states bound and connected)".into(),
        ));
    }
    if args.census {
        // Before any thread or child starts: holders inherit it.
        std::env::set_var(run::CENSUS_VAR, "full");
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
    // The ports first: waiting for another run is not this run's time.
    run::ports::pool();
    let start = Instant::now();
    let records = run::run_all(&cases, threads, &progress);
    if progress_shown {
        // Blank the progress line out before the output starts there.
        let _ = write!(io::stderr(), "\r{:30}\r", "");
    }

    // The two stories beyond the matrix (real server processes, and
    // Unix-domain socket paths) go with every table of a full run, and
    // into a saved run.
    let with_stories =
        selection.is_everything() && (args.format != Format::Jsonl || args.save.is_some());
    let stories = with_stories.then(restart::all_stories).unwrap_or_default();
    let unix = with_stories.then(unix_sockets::run_all).unwrap_or_default();

    // A saved run's tables are built while the output is written: both
    // take a while for the whole matrix, and neither needs the other.
    let ran = Ran {
        records: &records,
        stories: &stories,
        unix: &unix,
    };
    std::thread::scope(|scope| {
        let saving = (args.save.as_deref()).map(|dir| scope.spawn(move || save(dir, &ran)));
        let printed = print(&args, &selection, with_stories, &ran, out);
        let saved = saving.map_or(Ok(()), |saving| {
            saving
                .join()
                .unwrap_or_else(|e| std::panic::resume_unwind(e))
        });
        printed.and(saved)
    })?;
    let mut story_cells: Vec<_> = stories.into_iter().map(|s| s.new_server).collect();
    story_cells.extend(unix.into_iter().map(|(_, o)| o));
    let elapsed = start.elapsed();
    let outcomes: Vec<_> = records.into_iter().map(|r| r.outcome).collect();
    let summary = report::summary(&outcomes, &story_cells, elapsed, threads);
    let _ = writeln!(io::stderr(), "{summary}");
    Ok(ExitCode::SUCCESS)
}

/// What one run found: the matrix's records and the stories.
#[derive(Clone, Copy)]
struct Ran<'a> {
    records: &'a [Record],
    stories: &'a [restart::Story],
    unix: &'a [(unix_sockets::Situation, Outcome)],
}

/// The run on stdout, as the format and the selection ask.
fn print(
    args: &RunArgs,
    selection: &Selection,
    with_stories: bool,
    ran: &Ran,
    out: &mut dyn Write,
) -> Result<(), Failure> {
    // A person at a terminal who asked for nothing in particular gets one
    // or two screens; scripts and filters get the full data.
    let first_screen = args.format == Format::Table
        && selection.is_everything()
        && !args.full
        && io::stdout().is_terminal();
    match args.format {
        _ if args.takeovers => match report::takeovers(ran.records) {
            Some(list) => write!(out, "{list}")?,
            None => {
                let tried = ran.records.iter().filter(|r| r.delivery.is_some()).count();
                writeln!(
                    out,
                    "No port takeovers: in none of the {tried} cases where traffic was sent \
                     did another process's or user's second socket receive any."
                )?
            }
        },
        Format::Jsonl => {
            // The whole matrix is 150,822 lines (75 MB): the second half is
            // written into memory on another thread while the first goes
            // out, one write per 8 KB rather than per line.
            let (first, second) = ran.records.split_at(ran.records.len() / 2);
            let lines = |records: &[Record], to: &mut dyn Write| -> io::Result<()> {
                for r in records {
                    writeln!(to, "{}", json::record(r))?;
                }
                Ok(())
            };
            std::thread::scope(|scope| -> Result<(), Failure> {
                let later = scope.spawn(|| {
                    let mut buf = Vec::new();
                    lines(second, &mut buf).map(|()| buf)
                });
                let mut out = io::BufWriter::new(&mut *out);
                lines(first, &mut out)?;
                let buf = later
                    .join()
                    .unwrap_or_else(|e| std::panic::resume_unwind(e))?;
                out.write_all(&buf)?;
                out.flush()?;
                Ok(())
            })?;
        }
        Format::Table if first_screen => {
            writeln!(out, "{}", header::text())?;
            if let Some(summary) = matrix::restart_summary(ran.records) {
                writeln!(out, "{summary}")?;
            }
            writeln!(out, "{}", matrix::digest(ran.records).to_text())?;
            for (a, b, why) in [
                (
                    Holder::SameProcess,
                    Holder::OtherProcess,
                    "the same process or another",
                ),
                (
                    Holder::OtherUser,
                    Holder::OtherProcess,
                    "another user or the same one",
                ),
            ] {
                let (differ, of) = matrix::holders_differ(ran.records, a, b);
                if of > 0 {
                    writeln!(
                        out,
                        "Whether the first socket's holder is {why}: {differ} of {of} cells differ."
                    )?;
                }
            }
            writeln!(out, "{}", report::takeover_count(ran.records))?;
            writeln!(out)?;
            writeln!(out, "{}", restart::table(ran.stories).to_text())?;
            writeln!(out, "{}", unix_sockets::table(ran.unix).to_text())?;
            let tables = matrix::tables(ran.records).len();
            writeln!(
                out,
                "Every table ({tables} of them, with every address pair and option set): \
                 addrinuse --full,\nor choose: --proto, --state, --holder, --group, --family \
                 (see --help)."
            )?;
        }
        Format::Table | Format::Markdown => {
            writeln!(out, "{}", header::text())?;
            if let Some(summary) = matrix::restart_summary(ran.records) {
                writeln!(
                    out,
                    "{summary}  (ok/ok: bind and listen both work; EADDRINUSE: the bind fails)\n"
                )?;
            }
            for (key, rows) in matrix::tables(ran.records) {
                writeln!(out, "{}", args.format.write(&matrix::table(&key, &rows)))?;
            }
            if with_stories {
                writeln!(out, "{}", args.format.write(&restart::table(ran.stories)))?;
                writeln!(out, "{}", args.format.write(&unix_sockets::table(ran.unix)))?;
            }
        }
    }
    Ok(())
}

/// Every recorded table of this run (the runtimes table aside), as
/// `cargo test` would compare it, and
/// the header facts, into `dir` (lab/record reads them back on the host).
fn save(dir: &Path, ran: &Ran) -> Result<(), Failure> {
    let by_table = matrix::tables(ran.records);
    let tables: Vec<(Recorded, Table)> = Recorded::all()
        .into_iter()
        .filter_map(|recorded| {
            let table = match recorded {
                Recorded::Matrix(key) => {
                    matrix::table(&key, by_table.get(&key).map_or(&[][..], Vec::as_slice))
                }
                Recorded::Restart => restart::table(ran.stories),
                Recorded::UnixSockets => unix_sockets::table(ran.unix),
                // Language runtimes are the host's business: a kernel lab
                // guest has none, and the test suite skips the table.
                Recorded::Runtimes => return None,
            };
            Some((recorded, table))
        })
        .collect();
    let mut facts = header::facts();
    let changed = platform::changed_settings();
    facts.push((
        lab::SETTINGS_FACT,
        if changed.is_empty() {
            "none".into()
        } else {
            changed.join(", ")
        },
    ));
    lab::save(dir, &tables, &facts).map_err(|e| {
        Failure::Output(io::Error::new(
            e.kind(),
            format!("--save {}: {e}", dir.display()),
        ))
    })
}
