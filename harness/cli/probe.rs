//! `addrinuse probe`: one case written as text.

use std::io::Write;
use std::process::ExitCode;

use addrinuse::report::{self, json, Format};
use addrinuse::{probe, run};

use super::{Done, Failure};

pub fn exec(words: &[String], format: Format, out: &mut dyn Write) -> Done {
    let case = probe::parse(words).map_err(|msg| Failure::Usage(format!("probe: {msg}")))?;
    let record = run::run_case(&case);
    match format {
        Format::Jsonl => writeln!(out, "{}", json::record(&record))?,
        Format::Table | Format::Markdown => write!(out, "{}", report::probe_text(&record))?,
    }
    Ok(ExitCode::SUCCESS)
}
