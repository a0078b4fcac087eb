//! `Table`: everything that becomes a snapshot, and the only place the
//! snapshot format lives. Every table the suite prints or records is built
//! as a `Table`, written with `to_text` (snapshots, terminals) or
//! `to_markdown`, and read back with `parse` (`compare`).
//!
//! The text form:
//!
//! ```text
//! heading line(s)
//!
//! header   cells, two or more spaces apart (no cell holds two spaces)
//! row      ...
//!
//! note line(s), then [n] footnotes
//! ```
//!
//! A table without rows has no header either (a platform that runs none
//! of its cases); its notes say why.
//!
//! A matrix cell is the answer (`ok/ok`, `EADDRINUSE`, `ok/ok?`), then, when
//! traffic was sent to the shared port, a mark saying who received it:
//! `ok/ok→1` (the first socket), `→2` (the second), `→1+2` (both), `→∅`
//! (neither). `cell` writes it and `split_cell` reads it back.

use std::fmt::Write;

use crate::outcome::{Outcome, Verdict};

/// Between a cell's answer and its delivery mark.
const ARROW: char = '→';

/// Who received the traffic, as a cell's mark shows it.
fn mark(verdict: Verdict) -> &'static str {
    match verdict {
        Verdict::First => "1",
        Verdict::Second => "2",
        Verdict::Both => "1+2",
        Verdict::None => "∅",
    }
}

/// A matrix cell: the answer and, after delivery, its mark.
pub fn cell(outcome: &Outcome) -> String {
    let mut cell = outcome.answer();
    if let Some(verdict) = outcome.delivery() {
        write!(cell, "{ARROW}{}", mark(verdict)).unwrap();
    }
    cell
}

/// A cell read back: its answer (with any `?` and `[n]`) and its delivery
/// verdict, if it has a mark.
pub fn split_cell(cell: &str) -> Result<(&str, Option<Verdict>), String> {
    let Some((answer, marked)) = cell.split_once(ARROW) else {
        return Ok((cell, None));
    };
    let verdict = (Verdict::ALL.iter().copied())
        .find(|v| mark(*v) == marked)
        .ok_or_else(|| format!("unknown delivery mark '{marked}' in cell '{cell}'"))?;
    Ok((answer, Some(verdict)))
}

/// Whether two or more platforms' cells disagree: on the answer (a `?`,
/// state not verified, does not count), or on who received the traffic
/// where both say. A cell without a mark where another has one was
/// recorded before traffic was counted (a kernel line's older folder): its
/// traffic is unknown, not different.
pub fn disagree(cells: &[&str]) -> bool {
    // Most cells compared read the same everywhere: no need to split them.
    if cells.iter().all(|c| c == &cells[0]) {
        return false;
    }
    let parts: Vec<(&str, Option<Verdict>)> = (cells.iter())
        .map(|c| match split_cell(c) {
            Ok((answer, verdict)) => (answer.trim_end_matches('?'), verdict),
            Err(_) => (*c, None),
        })
        .collect();
    let answers: std::collections::BTreeSet<&str> = parts.iter().map(|p| p.0).collect();
    let marks: std::collections::BTreeSet<Verdict> = parts.iter().filter_map(|p| p.1).collect();
    answers.len() > 1 || marks.len() > 1
}

/// One table: a heading, a grid of cells, and notes below it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Table {
    /// What the table is and how to read a cell.
    pub heading: Vec<String>,
    /// How many leading columns name a row; the rest hold answers.
    pub key_columns: usize,
    pub header: Vec<String>,
    pub rows: Vec<Vec<String>>,
    /// Lines below the grid.
    pub notes: Vec<Note>,
    /// Reasons that cells point to with `[n]`, numbered from 1.
    pub footnotes: Vec<String>,
}

/// A line below the grid.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Note {
    /// Values of the key columns the platform lacks entirely, left out of
    /// the grid: `unsupported on linux (not run): exclusive, reuseport_lb`.
    /// `compare` reads them back as `unsupported` cells.
    NotRun {
        os: String,
        left_out: Vec<String>,
    },
    Text(String),
}

const NOT_RUN: &str = " (not run): ";

impl Note {
    fn to_line(&self) -> String {
        match self {
            Note::NotRun { os, left_out } => {
                format!("unsupported on {os}{NOT_RUN}{}", left_out.join(", "))
            }
            Note::Text(text) => text.clone(),
        }
    }

    fn parse(line: &str) -> Note {
        line.strip_prefix("unsupported on ")
            .and_then(|rest| rest.split_once(NOT_RUN))
            .filter(|(os, _)| !os.contains(' '))
            .map_or_else(
                || Note::Text(line.to_string()),
                |(os, list)| Note::NotRun {
                    os: os.to_string(),
                    left_out: list.split(", ").map(String::from).collect(),
                },
            )
    }
}

impl Table {
    pub fn new(heading: Vec<String>, key_columns: usize, header: Vec<String>) -> Table {
        Table {
            heading,
            key_columns,
            header,
            ..Table::default()
        }
    }

    /// The number of footnote `reason` (numbered on first use): cells
    /// append it as `[n]`.
    pub fn footnote(&mut self, reason: String) -> usize {
        match self.footnotes.iter().position(|f| *f == reason) {
            Some(i) => i + 1,
            None => {
                self.footnotes.push(reason);
                self.footnotes.len()
            }
        }
    }

    fn trailer(&self) -> Vec<String> {
        let notes = self.notes.iter().map(Note::to_line);
        let footnotes =
            (self.footnotes.iter().enumerate()).map(|(i, f)| format!("[{}] {f}", i + 1));
        notes.chain(footnotes).collect()
    }

    /// The text form: what snapshots hold and terminals show.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        for line in &self.heading {
            writeln!(out, "{line}").unwrap();
        }
        writeln!(out).unwrap();
        if !self.rows.is_empty() {
            let grid: Vec<Vec<String>> = std::iter::once(self.header.clone())
                .chain(self.rows.iter().cloned())
                .collect();
            out.push_str(&aligned(&grid, ""));
        }
        let trailer = self.trailer();
        if !trailer.is_empty() {
            writeln!(out).unwrap();
            for line in trailer {
                writeln!(out, "{line}").unwrap();
            }
        }
        out
    }

    /// The markdown form, for a page or an issue.
    pub fn to_markdown(&self) -> String {
        let mut out = String::new();
        let mut heading = self.heading.iter();
        if let Some(title) = heading.next() {
            writeln!(out, "### {title}\n").unwrap();
        }
        for line in heading {
            writeln!(out, "{line}\n").unwrap();
        }
        if !self.rows.is_empty() {
            let header: Vec<String> = self.header.iter().map(|h| h.replace("->", "→")).collect();
            writeln!(out, "| {} |", header.join(" | ")).unwrap();
            writeln!(out, "|{}", "---|".repeat(header.len())).unwrap();
            for row in &self.rows {
                let cells: Vec<String> = (row.iter().enumerate())
                    .map(|(i, c)| if i == 0 { format!("`{c}`") } else { c.clone() })
                    .collect();
                writeln!(out, "| {} |", cells.join(" | ")).unwrap();
            }
        }
        let trailer = self.trailer();
        if !trailer.is_empty() {
            writeln!(out).unwrap();
            for line in trailer {
                writeln!(out, "- {line}").unwrap();
            }
        }
        out
    }

    /// Read a table back from its text form (a snapshot's body). CRLF line
    /// ends (a Windows checkout) read like LF.
    pub fn parse(text: &str, key_columns: usize) -> Result<Table, String> {
        let text = text.replace("\r\n", "\n");
        let heading: Vec<String> = lines(text.split("\n\n").next().unwrap_or_default());
        if heading.is_empty() {
            return Err("the table has no heading".into());
        }
        let rest: Vec<&str> = text
            .split_once("\n\n")
            .map_or("", |(_, rest)| rest)
            .split('\n')
            .collect();
        // The grid runs up to the next blank line; it is empty when the
        // table has no rows.
        let grid_end = rest.iter().position(|l| l.is_empty()).unwrap_or(rest.len());
        let mut grid = rest[..grid_end].iter().map(|l| columns(l));
        let mut table = Table::new(heading, key_columns, grid.next().unwrap_or_default());
        for row in grid {
            if row.len() != table.header.len() {
                return Err(format!(
                    "a row has {} columns, the header {}: {}",
                    row.len(),
                    table.header.len(),
                    row.join("  ")
                ));
            }
            table.rows.push(row);
        }
        if !table.rows.is_empty() && table.header.len() <= key_columns {
            return Err("the header row has no answer columns".into());
        }
        for line in rest[grid_end..].iter().filter(|l| !l.is_empty()) {
            match footnote(line) {
                Some((n, text)) if n == table.footnotes.len() + 1 => {
                    table.footnotes.push(text.to_string())
                }
                Some(_) => return Err(format!("footnote out of order: {line}")),
                None if table.footnotes.is_empty() => table.notes.push(Note::parse(line)),
                None => return Err(format!("a note after the footnotes: {line}")),
            }
        }
        Ok(table)
    }
}

fn lines(block: &str) -> Vec<String> {
    block.lines().map(String::from).collect()
}

/// `[3] reason` -> (3, "reason").
fn footnote(line: &str) -> Option<(usize, &str)> {
    let (n, text) = line.strip_prefix('[')?.split_once("] ")?;
    Some((n.parse().ok()?, text))
}

/// Split a grid line into its cells (two or more spaces apart).
fn columns(line: &str) -> Vec<String> {
    line.split("  ")
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .map(String::from)
        .collect()
}

/// Rows of cells as aligned text, columns two spaces apart (no cell holds
/// two spaces in a row, which is how `parse` reads them back), each line
/// starting with `indent`.
pub fn aligned(rows: &[Vec<String>], indent: &str) -> String {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|i| {
            rows.iter()
                .filter_map(|r| r.get(i))
                .map(|c| c.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in rows {
        let cells: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        writeln!(out, "{indent}{}", cells.join("  ").trim_end()).unwrap();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Table {
        let mut t = Table::new(
            vec!["tcp / a title".into(), "cell = what a cell means".into()],
            2,
            ["first -> second", "first options", "none", "reuseaddr"]
                .map(String::from)
                .to_vec(),
        );
        let note = t.footnote("accept(): ETIMEDOUT".into());
        t.rows.push(
            ["0.0.0.0 -> 0.0.0.0", "none", "EADDRINUSE", "ok/ok"]
                .map(String::from)
                .to_vec(),
        );
        t.rows.push(vec![
            "::/dual -> ::1/v6only".into(),
            "reuseaddr".into(),
            format!("setup-failed[{note}]"),
            "ok/EADDRINUSE?".into(),
        ]);
        t.notes.push(Note::NotRun {
            os: "linux".into(),
            left_out: vec!["exclusive".into(), "reuseport_lb".into()],
        });
        t.notes
            .push(Note::Text("? = the state could not be verified".into()));
        t
    }

    #[test]
    fn text_reads_back_as_the_same_table() {
        let t = sample();
        assert_eq!(Table::parse(&t.to_text(), 2), Ok(t));
    }

    #[test]
    fn a_table_without_rows_reads_back_too() {
        let mut t = Table::new(vec!["title".into()], 2, Vec::new());
        t.notes.push(Note::Text(
            "unsupported on windows: other-user holders are not implemented".into(),
        ));
        assert_eq!(
            t.to_text(),
            "title\n\n\nunsupported on windows: other-user holders are not implemented\n"
        );
        assert_eq!(Table::parse(&t.to_text(), 2), Ok(t));
    }

    #[test]
    fn crlf_reads_like_lf() {
        let t = sample();
        let crlf = t.to_text().replace('\n', "\r\n");
        assert_eq!(Table::parse(&crlf, 2), Ok(t));
    }

    #[test]
    fn the_text_form_is_aligned_on_two_spaces() {
        let text = sample().to_text();
        assert!(
            text.contains("\n0.0.0.0 -> 0.0.0.0     none           EADDRINUSE       ok/ok\n"),
            "{text}"
        );
        assert!(text.ends_with("\n[1] accept(): ETIMEDOUT\n"), "{text}");
    }

    #[test]
    fn footnotes_are_numbered_once_per_reason() {
        let mut t = Table::default();
        assert_eq!(t.footnote("a".into()), 1);
        assert_eq!(t.footnote("b".into()), 2);
        assert_eq!(t.footnote("a".into()), 1);
    }

    #[test]
    fn broken_tables_are_errors() {
        assert!(Table::parse("", 2).is_err());
        assert!(Table::parse("title\n\na  b  c\nx  y\n", 2).is_err());
        assert!(Table::parse("title\n\nkey  opts\nx  y\n", 2).is_err());
        assert!(Table::parse("title\n\na  b  c\nx  y  z\n\n[2] out of order\n", 2).is_err());
    }

    #[test]
    fn every_delivery_mark_reads_back() {
        for &verdict in Verdict::ALL {
            for check in [
                crate::outcome::StateCheck::Verified,
                crate::outcome::StateCheck::Unverified,
            ] {
                let outcome = Outcome::Ran {
                    bind: Ok(()),
                    listen: Some(Ok(())),
                    check,
                    delivery: Some(verdict),
                };
                let text = cell(&outcome);
                assert_eq!(
                    split_cell(&text),
                    Ok((outcome.answer().as_str(), Some(verdict)))
                );
                assert!(text.starts_with(&outcome.answer()), "{text}");
            }
        }
        assert_eq!(split_cell("EADDRINUSE"), Ok(("EADDRINUSE", None)));
        assert!(split_cell("ok→3").is_err());
        assert_eq!(cell(&Outcome::SetupFailed("x".into())), "setup-failed");
    }

    #[test]
    fn cells_disagree_on_the_answer_or_on_known_traffic_only() {
        assert!(!disagree(&["ok/ok→2", "ok/ok?→2"]));
        assert!(!disagree(&["ok/ok→1+2", "ok/ok"]));
        assert!(!disagree(&["ok/ok→1", "ok/ok→1"]));
        assert!(disagree(&["ok/ok→1", "ok/ok→2"]));
        assert!(disagree(&["ok/ok→1", "ok/EADDRINUSE"]));
        assert!(disagree(&["EADDRINUSE", "ok/ok", "ok/ok→1"]));
    }

    #[test]
    fn a_marked_row_reads_back_as_the_same_table() {
        let mut t = sample();
        t.rows.push(
            ["0.0.0.0 -> 127.0.0.1", "reuseport", "ok/ok→2", "ok/ok?→1+2"]
                .map(String::from)
                .to_vec(),
        );
        assert_eq!(Table::parse(&t.to_text(), 2), Ok(t));
    }

    #[test]
    fn markdown_has_one_line_per_row() {
        let md = sample().to_markdown();
        assert!(
            md.starts_with("### tcp / a title\n\ncell = what a cell means\n\n| first → second |"),
            "{md}"
        );
        assert!(
            md.contains("| `0.0.0.0 -> 0.0.0.0` | none | EADDRINUSE | ok/ok |"),
            "{md}"
        );
        assert!(md.contains("- [1] accept(): ETIMEDOUT"), "{md}");
    }
}
