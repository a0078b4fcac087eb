//! How answers read: one table per (protocol, state, address group), the
//! restart summary a newcomer sees first, and JSON lines for machines.
//!
//! Tables are what the snapshots hold, so each line names its own row
//! (address pair and first socket's options): a diff after a kernel change
//! points at the exact cells that moved.

use std::collections::BTreeMap;
use std::fmt::Write;

use serde_json::{json, Value};

use crate::outcome::{Outcome, Skip};

use crate::platform;
use crate::run::Record;
use crate::scenario::{Endpoint, Holder, Options, Proto, SockOpt, SocketSpec, State, GROUPS};

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

/// The identity of one table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TableKey {
    pub proto: Proto,
    pub state: State,
    pub holder: Holder,
    pub group: &'static str,
}

impl Ord for TableKey {
    /// Report order: protocol, state, then groups in `GROUPS` order.
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        let rank = |k: &TableKey| {
            let group = GROUPS.iter().position(|g| *g == k.group);
            (k.proto, k.state, k.holder, group)
        };
        rank(self).cmp(&rank(other))
    }
}

impl PartialOrd for TableKey {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl TableKey {
    /// The snapshot name: `tcp_time-wait_other-process_v4-v6` (no
    /// characters a Windows file name cannot hold).
    pub fn name(&self) -> String {
        format!(
            "{}_{}_{}_{}",
            self.proto.name(),
            self.state.name(),
            self.holder.name(),
            self.group
        )
    }

    fn title(&self) -> String {
        format!(
            "{} / first socket {}, held by {} / {} addresses",
            self.proto.name(),
            self.state.name(),
            self.holder.name(),
            self.group
        )
    }

    /// Every table of the matrix, in report order.
    pub fn all() -> Vec<TableKey> {
        let mut keys = Vec::new();
        for (proto, state) in State::all() {
            for &holder in Holder::ALL {
                for &group in GROUPS {
                    keys.push(TableKey {
                        proto,
                        state,
                        holder,
                        group,
                    });
                }
            }
        }
        keys
    }

    pub fn of(record: &Record) -> TableKey {
        TableKey {
            proto: record.case.proto,
            state: record.case.state,
            holder: record.case.holder,
            group: record.case.group(),
        }
    }
}

/// Records sorted into their tables, in report order.
pub fn tables(records: &[Record]) -> BTreeMap<TableKey, Vec<&Record>> {
    let mut map: BTreeMap<TableKey, Vec<&Record>> = BTreeMap::new();
    for r in records {
        map.entry(TableKey::of(r)).or_default().push(r);
    }
    map
}

fn is_unsupported(o: &Outcome) -> bool {
    o.is_unsupported()
}

/// Rows and columns of one table, with footnotes for cells that carry a
/// reason instead of an answer.
struct Grid {
    columns: Vec<Options>,
    /// (pair label, first options, cells)
    rows: Vec<(String, Options, Vec<String>)>,
    notes: Vec<String>,
    /// Option sets left out because every cell of them is `unsupported`.
    dropped: Vec<Options>,
    /// Why the platform lacks what some cases ask for (other than options).
    not_here: Vec<&'static str>,
    unverified: bool,
}

fn pair_label(first: &Endpoint, second: &Endpoint) -> String {
    format!("{first} -> {second}")
}

fn grid(records: &[&Record]) -> Grid {
    // Columns and rows in first-appearance order (the matrix order).
    let mut columns: Vec<Options> = Vec::new();
    let mut rows: Vec<(Endpoint, Endpoint, Options)> = Vec::new();
    let mut cells: BTreeMap<(usize, usize), &Outcome> = BTreeMap::new();
    for r in records {
        let col = position(&mut columns, r.case.second.options);
        let row = position(
            &mut rows,
            (
                r.case.first.endpoint,
                r.case.second.endpoint,
                r.case.first.options,
            ),
        );
        cells.insert((row, col), &r.outcome);
    }
    // A column (second options) or row part (first options) the platform
    // lacks entirely is not run: say so once instead of filling the table.
    let all_unsupported = |pick: &dyn Fn(usize, usize) -> bool| {
        cells
            .iter()
            .filter(|((r, c), _)| pick(*r, *c))
            .all(|(_, o)| is_unsupported(o))
    };
    let keep_col: Vec<bool> = (0..columns.len())
        .map(|c| !all_unsupported(&|_, cc| cc == c))
        .collect();
    let first_opts: Vec<Options> = rows.iter().map(|r| r.2).collect();
    let keep_row: Vec<bool> = (0..rows.len())
        .map(|r| !all_unsupported(&|rr, _| first_opts[rr] == first_opts[r]))
        .collect();
    let mut dropped: Vec<Options> = Vec::new();
    for (c, &keep) in keep_col.iter().enumerate() {
        if !keep {
            position(&mut dropped, columns[c]);
        }
    }
    for (r, &keep) in keep_row.iter().enumerate() {
        if !keep {
            position(&mut dropped, first_opts[r]);
        }
    }

    let mut not_here: Vec<&'static str> = Vec::new();
    for outcome in cells.values() {
        if let Outcome::Skipped(Skip::NotOnPlatform(why)) = outcome {
            position(&mut not_here, *why);
        }
    }
    let mut notes: Vec<String> = Vec::new();
    let mut unverified = false;
    let mut out_rows = Vec::new();
    for (ri, (a, b, opts)) in rows.iter().enumerate() {
        if !keep_row[ri] {
            continue;
        }
        let mut line = Vec::new();
        for (ci, _) in columns.iter().enumerate() {
            if !keep_col[ci] {
                continue;
            }
            let Some(outcome) = cells.get(&(ri, ci)) else {
                line.push("-".to_string());
                continue;
            };
            let mut cell = outcome.cell();
            unverified |= matches!(
                outcome,
                Outcome::Ran {
                    verified: crate::outcome::Verified::NotVerified,
                    ..
                }
            );
            if let Some(reason) = outcome.reason().filter(|_| !is_unsupported(outcome)) {
                let n = position(&mut notes, reason) + 1;
                write!(cell, "[{n}]").unwrap();
            }
            line.push(cell);
        }
        out_rows.push((pair_label(a, b), *opts, line));
    }
    Grid {
        columns: columns
            .iter()
            .zip(&keep_col)
            .filter(|(_, &k)| k)
            .map(|(c, _)| *c)
            .collect(),
        rows: out_rows,
        notes,
        dropped,
        not_here,
        unverified,
    }
}

/// Index of `item` in `list`, appending it if new.
fn position<T: PartialEq>(list: &mut Vec<T>, item: T) -> usize {
    match list.iter().position(|x| *x == item) {
        Some(i) => i,
        None => {
            list.push(item);
            list.len() - 1
        }
    }
}

fn legend(key: &TableKey) -> String {
    let what = if key.proto == Proto::Tcp {
        "cell = second socket's bind()/listen() result (listen only tried after a bind that worked)"
    } else {
        "cell = second socket's bind() result"
    };
    format!(
        "{what}; rows = address pair and first socket's options; columns = second socket's options"
    )
}

fn trailer(grid: &Grid) -> Vec<String> {
    let mut lines = Vec::new();
    for why in &grid.not_here {
        lines.push(format!("unsupported on {}: {why}", platform::OS));
    }
    // A table the platform cannot run at all needs no list of option sets.
    if !grid.dropped.is_empty() && !grid.rows.is_empty() {
        let names: Vec<String> = grid.dropped.iter().map(|o| o.to_string()).collect();
        lines.push(format!(
            "unsupported on {} (not run): {}",
            platform::OS,
            names.join(", ")
        ));
    }
    if grid.unverified {
        lines.push("? = the first socket's state could not be verified on this platform".into());
    }
    for (i, note) in grid.notes.iter().enumerate() {
        lines.push(format!("[{}] {note}", i + 1));
    }
    lines
}

/// Rows of cells as aligned text, columns two spaces apart (no cell holds
/// two spaces in a row, which is how `compare` reads them back), each line
/// starting with `indent`.
pub fn aligned(rows: &[Vec<String>], indent: &str) -> String {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|i| {
            rows.iter()
                .filter_map(|r| r.get(i))
                .map(String::len)
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

/// One table as aligned text: the form stored in snapshots.
pub fn text_table(key: &TableKey, records: &[&Record]) -> String {
    let g = grid(records);
    let mut header = vec!["first -> second".to_string(), "first options".to_string()];
    header.extend(g.columns.iter().map(|c| c.to_string()));
    let body: Vec<Vec<String>> = g
        .rows
        .iter()
        .map(|(pair, opts, cells)| {
            let mut line = vec![pair.clone(), opts.to_string()];
            line.extend(cells.iter().cloned());
            line
        })
        .collect();
    let mut out = String::new();
    writeln!(out, "{}", key.title()).unwrap();
    writeln!(out, "{}", legend(key)).unwrap();
    writeln!(out).unwrap();
    if !body.is_empty() {
        let rows: Vec<Vec<String>> = std::iter::once(header).chain(body).collect();
        out.push_str(&aligned(&rows, ""));
    }
    let trailer = trailer(&g);
    if !trailer.is_empty() {
        writeln!(out).unwrap();
        for line in trailer {
            writeln!(out, "{line}").unwrap();
        }
    }
    out
}

/// One table as markdown.
pub fn markdown_table(key: &TableKey, records: &[&Record]) -> String {
    let g = grid(records);
    let mut out = String::new();
    writeln!(out, "### {}\n\n{}\n", key.title(), legend(key)).unwrap();
    let mut header = vec!["first → second".to_string(), "first options".to_string()];
    header.extend(g.columns.iter().map(|c| c.to_string()));
    writeln!(out, "| {} |", header.join(" | ")).unwrap();
    writeln!(out, "|{}", "---|".repeat(header.len())).unwrap();
    for (pair, opts, cells) in &g.rows {
        writeln!(out, "| `{pair}` | {opts} | {} |", cells.join(" | ")).unwrap();
    }
    let trailer = trailer(&g);
    if !trailer.is_empty() {
        writeln!(out).unwrap();
        for line in trailer {
            writeln!(out, "- {line}").unwrap();
        }
    }
    out
}

fn socket_json(spec: &SocketSpec) -> Value {
    json!({
        "addr": spec.endpoint.ip.to_string(),
        "v6only": spec.endpoint.v6only,
        "reuseaddr": spec.options.has(SockOpt::ReuseAddr),
        "reuseport": spec.options.has(SockOpt::ReusePort),
        "exclusiveaddruse": spec.options.has(SockOpt::ExclusiveAddrUse),
        "reuseport_lb": spec.options.has(SockOpt::ReusePortLb),
    })
}

/// One case as a JSON object (one line of `--format jsonl`).
pub fn json_record(record: &Record) -> Value {
    let case = &record.case;
    let (bind_code, listen_code, verified) = match &record.outcome {
        Outcome::Ran {
            bind,
            listen,
            verified,
        } => (
            bind.err().map(|e| e.code),
            listen.and_then(|l| l.err()).map(|e| e.code),
            Some(*verified == crate::outcome::Verified::Yes),
        ),
        Outcome::Refused { error, .. } => (Some(error.code), None, None),
        _ => (None, None, None),
    };
    json!({
        "os": platform::OS,
        "proto": case.proto.name(),
        "state": case.state.name(),
        "holder": case.holder.name(),
        "group": case.group(),
        "first": socket_json(&case.first),
        "second": socket_json(&case.second),
        "bind": record.outcome.bind_word(),
        "listen": record.outcome.listen_word(),
        "bind_code": bind_code,
        "listen_code": listen_code,
        "state_verified": verified,
        "reason": record.outcome.reason(),
    })
}

/// The question everyone arrives with, answered from the records: can a
/// restarted server bind while old connections sit in TIME_WAIT (or are
/// still open), and which side must set SO_REUSEADDR?
pub fn restart_summary(records: &[Record]) -> Option<String> {
    let any = Endpoint {
        ip: std::net::Ipv4Addr::UNSPECIFIED.into(),
        v6only: None,
    };
    let plain = Options::NONE;
    let reuse = Options::NONE.with(SockOpt::ReuseAddr);
    // A restarted server is another process than the old one; fall back to
    // same-process cases when other holders were filtered out.
    let holder = if records
        .iter()
        .any(|r| r.case.holder == Holder::OtherProcess)
    {
        Holder::OtherProcess
    } else {
        Holder::SameProcess
    };
    let find = |state: State, old: Options, new: Options| {
        records.iter().find(|r| {
            r.case.holder == holder
                && r.case.proto == Proto::Tcp
                && r.case.state == state
                && r.case.first.endpoint == any
                && r.case.second.endpoint == any
                && r.case.first.options == old
                && r.case.second.options == new
        })
    };
    let mut out = String::new();
    for (state, what) in [
        (State::TimeWait, "old connections sit in TIME_WAIT"),
        (
            State::Established,
            "old connections are still open (ESTABLISHED)",
        ),
    ] {
        if find(state, plain, plain).is_none() {
            continue;
        }
        if !out.is_empty() {
            out.push('\n');
        }
        writeln!(
            out,
            "Can a restarted TCP server bind 0.0.0.0:port while {what}?"
        )
        .unwrap();
        for (old, new) in [
            (plain, plain),
            (plain, reuse),
            (reuse, plain),
            (reuse, reuse),
        ] {
            let answer = find(state, old, new).map_or("not run".into(), |r| r.outcome.cell());
            writeln!(
                out,
                "  old server {:<9}  new server {:<9}  -> {answer}",
                old.to_string(),
                new.to_string()
            )
            .unwrap();
        }
    }
    (!out.is_empty()).then_some(out)
}
