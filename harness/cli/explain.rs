//! `addrinuse explain`: one case (probe grammar) run here, and every
//! platform model's prediction with the rules that decided it.

use std::collections::BTreeMap;
use std::io::Write;
use std::process::ExitCode;

use addrinuse::model::{self, Platform, Rule};
use addrinuse::report::{compare, wrap};
use addrinuse::{platform, probe, run};

use super::{Done, Failure};

pub fn exec(words: &[String], out: &mut dyn Write) -> Done {
    let case = probe::parse(words).map_err(|msg| Failure::Usage(format!("explain: {msg}")))?;
    // No records (an installed binary far from its source tree) is no
    // error: every platform is then predicted only.
    let recorded = compare::load(&super::compare::snapshots_dir(None)).unwrap_or_default();
    let record = run::run_case(&case);
    let facts: BTreeMap<&str, String> = platform::facts().into_iter().collect();
    let kernel = facts.get("kernel").cloned().unwrap_or_default();
    let here = Platform::of_machine(platform::OS, &kernel);
    writeln!(out, "{}", probe::format(&case))?;
    let mut answer = addrinuse::report::table::cell(&record.outcome);
    if let Some(reason) = record.outcome.reason() {
        answer.push_str(&format!(" ({reason})"));
    }
    let emulated = facts
        .get("emulation")
        .map_or(String::new(), |e| format!(", {e}"));
    writeln!(out, "  this machine ({kernel}{emulated}): {answer}")?;
    let mut used: Vec<&'static Rule> = Vec::new();
    for &p in Platform::ALL {
        let prediction = p.predict(&case);
        let predicted = prediction.answer.cell();
        let status = match model::records_of(&recorded, p)
            .and_then(|tables| model::recorded_cell(tables, &case))
        {
            Some(cell) => {
                let cell = model::answer_part(cell);
                let verdict = if cell == predicted {
                    "agrees"
                } else {
                    "DISAGREES"
                };
                format!("recorded {cell}, model {predicted} ({verdict})")
            }
            None => format!("predicted {predicted} (no record)"),
        };
        let mark = if Some(p) == here { " <- here" } else { "" };
        writeln!(out, "  {:<10} {status}{mark}", p.folder())?;
        let names: Vec<&str> = prediction.rules.iter().map(|r| r.name).collect();
        let because = format!("because: {}", names.join(", "));
        write!(out, "{}", wrap(&because, &" ".repeat(15), &" ".repeat(24)))?;
        for rule in prediction.rules {
            if !used.iter().any(|r| std::ptr::eq(*r, rule)) {
                used.push(rule);
            }
        }
    }
    writeln!(out, "rules:")?;
    for rule in used {
        let text = format!("{}: {}", rule.name, rule.says);
        write!(out, "{}", wrap(&text, "  ", "    "))?;
        write!(
            out,
            "{}",
            wrap(&format!("[{}]", rule.source), "    ", "    ")
        )?;
    }
    Ok(ExitCode::SUCCESS)
}
