//! `addrinuse compare`: recorded platforms side by side.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use addrinuse::report::compare::{self, differences};
use addrinuse::report::{json, lab, Format};

use super::{Done, Failure};

/// `dir`, else ./snapshots, else the folder this binary was built from.
pub fn snapshots_dir(dir: Option<PathBuf>) -> PathBuf {
    dir.unwrap_or_else(|| {
        let here = PathBuf::from("snapshots");
        if here.is_dir() {
            here
        } else {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("snapshots")
        }
    })
}

pub fn exec(dir: Option<PathBuf>, format: Format, out: &mut dyn Write) -> Done {
    let dir = snapshots_dir(dir);
    let recorded = compare::load(&dir).map_err(|msg| Failure::Usage(format!("compare: {msg}")))?;
    let kernels = lab::load_list(&dir).map_err(|msg| Failure::Usage(format!("compare: {msg}")))?;
    match format {
        Format::Jsonl => {
            let platforms: Vec<&str> = recorded.keys().map(String::as_str).collect();
            for d in differences(&recorded) {
                writeln!(out, "{}", json::difference(&platforms, &d))?;
            }
        }
        Format::Table => write!(out, "{}", compare::report_text(&recorded, &kernels))?,
        Format::Markdown => write!(out, "{}", compare::report_markdown(&recorded, &kernels))?,
    }
    Ok(ExitCode::SUCCESS)
}
