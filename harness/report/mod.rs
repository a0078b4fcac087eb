//! What people and machines read: tables (the snapshot format), the page
//! header, JSON lines, and platforms side by side.

pub mod compare;
pub mod header;
pub mod json;
pub mod lab;
pub mod matrix;
pub mod table;

pub use table::Table;

use std::time::Duration;

use crate::outcome::{Outcome, Record, Skip, StateCheck};
use crate::platform;
use crate::probe;
use crate::scenario::{Holder, Named, TableKey};

/// Output formats of the `addrinuse` command.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Aligned text tables.
    Table,
    /// Markdown tables (for a page or an issue).
    Markdown,
    /// One JSON object per case.
    Jsonl,
}

impl Format {
    pub fn write(self, table: &Table) -> String {
        match self {
            Format::Markdown => table.to_markdown(),
            _ => table.to_text(),
        }
    }
}

/// Every table a platform records in `snapshots/<os>/`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Recorded {
    Matrix(TableKey),
    Restart,
    UnixSockets,
    Runtimes,
}

impl Recorded {
    /// Every recorded table, matrix tables first.
    pub fn all() -> Vec<Recorded> {
        let mut all: Vec<Recorded> = TableKey::all().into_iter().map(Recorded::Matrix).collect();
        all.extend([Recorded::Restart, Recorded::UnixSockets, Recorded::Runtimes]);
        all
    }

    /// The snapshot's file name without `.snap`.
    pub fn name(&self) -> String {
        match self {
            Recorded::Matrix(key) => key.name(),
            Recorded::Restart => "restart".into(),
            Recorded::UnixSockets => "unix-sockets".into(),
            Recorded::Runtimes => "runtimes".into(),
        }
    }

    pub fn from_name(name: &str) -> Option<Recorded> {
        Recorded::all().into_iter().find(|r| r.name() == name)
    }

    /// How many leading columns of the table name a row.
    pub fn key_columns(&self) -> usize {
        match self {
            // Address pair and first socket's options.
            Recorded::Matrix(_) => matrix::KEY_COLUMNS,
            // Departure and options.
            Recorded::Restart => 2,
            // The situation.
            Recorded::UnixSockets => 1,
            // Program and where it listens.
            Recorded::Runtimes => 2,
        }
    }
}

/// One case as `addrinuse probe` prints it.
pub fn probe_text(record: &Record) -> String {
    let case = &record.case;
    let o = &record.outcome;
    let mut out = format!(
        "{}\n  second socket: bind {}",
        probe::format(case),
        o.bind_word()
    );
    if let Some(listen) = o.listen_word() {
        out.push_str(&format!(", listen {listen}"));
    }
    out.push('\n');
    if let Some(reason) = o.reason() {
        out.push_str(&format!("  reason: {reason}\n"));
    }
    if let Outcome::Ran { check, .. } = o {
        let how = match check {
            StateCheck::Verified => format!("verified ({})", platform::STATE_CHECK),
            StateCheck::Unverified => format!("not verified ({})", platform::STATE_CHECK),
        };
        out.push_str(&format!("  first socket {}: {how}\n", case.state.name()));
    }
    if let Some(delivery) = &record.delivery {
        for p in &delivery.probes {
            out.push_str(&format!(
                "  traffic to {} from {} senders: {} sent, first socket {}, second socket {}, \
                 refused {}, lost {}\n",
                p.to,
                p.sender.name(),
                p.sent,
                p.first,
                p.second,
                p.refused,
                p.lost
            ));
        }
        let takeover = if record.is_takeover() {
            " (a port takeover)"
        } else {
            ""
        };
        out.push_str(&format!(
            "  received by: {}{takeover}\n",
            delivery.verdict().name()
        ));
    }
    out
}

/// The port takeovers among `records`, one line each in probe grammar with
/// who received the traffic, under a heading; `None` without any.
pub fn takeovers(records: &[Record]) -> Option<String> {
    let found: Vec<&Record> = records.iter().filter(|r| r.is_takeover()).collect();
    if found.is_empty() {
        return None;
    }
    let mut out = format!(
        "Port takeovers: {} cases where a second socket of another process or user receives \
         traffic meant for a live first socket\n",
        found.len()
    );
    let rows: Vec<Vec<String>> = (found.iter())
        .map(|r| {
            let verdict = r.outcome.delivery().map_or("", |v| v.name());
            vec![probe::format(&r.case), format!("-> {verdict}")]
        })
        .collect();
    out.push_str(&table::aligned(&rows, "  "));
    Some(out)
}

/// How many takeovers there are, per holder, in one line.
pub fn takeover_count(records: &[Record]) -> String {
    let count = |h: Holder| {
        (records.iter())
            .filter(|r| r.case.holder == h && r.is_takeover())
            .count()
    };
    format!(
        "Port takeovers: {} by another user, {} by another process of the same user \
         (its second socket receives traffic meant for a live first socket; list: --takeovers).",
        count(Holder::OtherUser),
        count(Holder::OtherProcess)
    )
}

/// `9072 ran, 18711 unsupported, 0 skipped, 0 setup-failed: 27783 cases in 0.21 s on 2 threads`,
/// counting every answer shown: the matrix's `cases` and the stories'
/// cells (`extra`). A line of advice follows when setups ran out of file
/// descriptors.
pub fn summary(cases: &[Outcome], extra: &[Outcome], elapsed: Duration, threads: usize) -> String {
    let all = || cases.iter().chain(extra);
    let count = |f: &dyn Fn(&Outcome) -> bool| all().filter(|o| f(o)).count();
    let mut line = format!(
        "{} ran, {} unsupported, {} skipped, {} setup-failed: {} cases",
        count(&|o| {
            matches!(
                o,
                Outcome::Ran { .. } | Outcome::Refused { .. } | Outcome::FirstRefused { .. }
            )
        }),
        count(&|o| o.is_unsupported()),
        count(&|o| matches!(o, Outcome::Skipped(Skip::Unavailable(_)))),
        count(&|o| matches!(o, Outcome::SetupFailed(_))),
        cases.len(),
    );
    if !extra.is_empty() {
        line.push_str(&format!(" and {} story cells", extra.len()));
    }
    line.push_str(&format!(
        " in {:.2} s on {threads} threads",
        elapsed.as_secs_f64()
    ));
    let emfile = count(&|o| matches!(o, Outcome::SetupFailed(why) if why.contains("EMFILE")));
    if emfile > 0 {
        line.push_str(&format!(
            "\n{emfile} setups ran out of file descriptors (EMFILE): raise the limit, e.g. `ulimit -n 4096`, and run again"
        ));
    }
    line
}

/// `text` in lines of at most 80 columns, broken at spaces (a longer word
/// stays whole): the first line after `first`, the others after `rest`.
pub fn wrap(text: &str, first: &str, rest: &str) -> String {
    const WIDTH: usize = 80;
    let mut out = String::new();
    let mut line = first.to_string();
    let mut empty = true;
    for word in text.split_whitespace() {
        if !empty && line.chars().count() + 1 + word.chars().count() > WIDTH {
            out.push_str(&line);
            out.push('\n');
            line = rest.to_string();
            empty = true;
        }
        if !empty {
            line.push(' ');
        }
        line.push_str(word);
        empty = false;
    }
    out.push_str(&line);
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrapped_text_fits_a_terminal() {
        let text = "a ".repeat(100);
        let wrapped = wrap(&text, "  ", "    ");
        assert!(
            wrapped.lines().all(|l| l.chars().count() <= 80),
            "{wrapped}"
        );
        assert_eq!(wrapped.split_whitespace().count(), 100);
        assert!(wrapped.starts_with("  a") && wrapped.lines().nth(1).unwrap().starts_with("    a"));
    }
}
