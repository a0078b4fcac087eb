//! The matrix's tables: one `Table` per (protocol, state, holder, address
//! group), and the restart question answered from the records.
//!
//! Each line names its own row (address pair and first socket's options),
//! so a snapshot diff after a kernel change points at the exact cells that
//! moved.

use std::collections::BTreeMap;
use std::fmt::Write;

use super::table::{cell, Note, Table};
use crate::outcome::{Outcome, Record, Skip, StateCheck};
use crate::platform;
use crate::scenario::{Endpoint, Holder, Named, Options, Peer, Proto, SockOpt, State, TableKey};

/// Matrix tables name a row by address pair and first socket's options.
pub const KEY_COLUMNS: usize = 2;

/// A row's first key column: `0.0.0.0 -> 127.0.0.1`, and for a dual-stack
/// first socket with a peer `::/dual v4-peer -> 127.0.0.1`.
pub fn pair_label(first: &Endpoint, peer: Option<Peer>, second: &Endpoint) -> String {
    let mut label = String::new();
    push_pair_label(&mut label, first, peer, second);
    label
}

/// `pair_label` appended to `out`, so that a loop over every case of the
/// matrix (the model's check of the records) can reuse one buffer.
pub fn push_pair_label(out: &mut String, first: &Endpoint, peer: Option<Peer>, second: &Endpoint) {
    write!(out, "{first}").unwrap();
    if let Some(p) = peer {
        write!(out, " {}", p.name()).unwrap();
    }
    write!(out, " -> {second}").unwrap();
}

/// Records sorted into their tables, in report order.
pub fn tables(records: &[Record]) -> BTreeMap<TableKey, Vec<&Record>> {
    let mut map: BTreeMap<TableKey, Vec<&Record>> = BTreeMap::new();
    for r in records {
        map.entry(r.case.table()).or_default().push(r);
    }
    map
}

fn title(key: &TableKey) -> String {
    format!(
        "{} / first socket {}, held by {} / {} addresses",
        key.proto.name(),
        key.state.name(),
        key.holder.name(),
        key.group.name()
    )
}

fn legend(key: &TableKey) -> Vec<String> {
    let what = if key.proto == Proto::Tcp {
        "cell = second socket's bind()/listen() result (listen only tried after a bind that worked)"
    } else {
        "cell = second socket's bind() result"
    };
    let mut lines = vec![format!(
        "{what}; rows = address pair and first socket's options; columns = second socket's options"
    )];
    if key.state.receives(key.proto) {
        lines.push(DELIVERY_LEGEND.to_string());
    }
    lines
}

/// What a delivery mark says, under the title of every table that has them.
const DELIVERY_LEGEND: &str = "→1, →2, →1+2, →∅ = who received new traffic to an address both \
sockets share: the first socket, the second, both (balanced), neither";

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

/// One table of the matrix. Rows and columns keep the matrix order; an
/// option set the platform lacks entirely (every cell `unsupported`) is
/// left out and named once below the grid instead of filling it.
pub fn table(key: &TableKey, records: &[&Record]) -> Table {
    let mut columns: Vec<Options> = Vec::new();
    let mut rows: Vec<(Endpoint, Option<Peer>, Endpoint, Options)> = Vec::new();
    let mut cells: BTreeMap<(usize, usize), &Outcome> = BTreeMap::new();
    for r in records {
        let col = position(&mut columns, r.case.second.options);
        let row = position(
            &mut rows,
            (
                r.case.first.endpoint,
                r.case.peer,
                r.case.second.endpoint,
                r.case.first.options,
            ),
        );
        cells.insert((row, col), &r.outcome);
    }
    let all_unsupported = |pick: &dyn Fn(usize, usize) -> bool| {
        (cells.iter())
            .filter(|((r, c), _)| pick(*r, *c))
            .all(|(_, o)| o.is_unsupported())
    };
    let keep_col: Vec<bool> = (0..columns.len())
        .map(|c| !all_unsupported(&|_, cc| cc == c))
        .collect();
    let keep_row: Vec<bool> = (0..rows.len())
        .map(|r| !all_unsupported(&|rr, _| rows[rr].3 == rows[r].3))
        .collect();
    let mut dropped: Vec<Options> = Vec::new();
    for (c, _) in keep_col.iter().enumerate().filter(|(_, keep)| !**keep) {
        position(&mut dropped, columns[c]);
    }
    for (r, _) in keep_row.iter().enumerate().filter(|(_, keep)| !**keep) {
        position(&mut dropped, rows[r].3);
    }

    let mut header = vec!["first -> second".to_string(), "first options".to_string()];
    header.extend(
        (columns.iter().zip(&keep_col))
            .filter(|(_, keep)| **keep)
            .map(|(c, _)| c.to_string()),
    );
    let mut heading = vec![title(key)];
    heading.extend(legend(key));
    // Absent at the defaults, so records made at the defaults stay as they are.
    let changed = platform::changed_settings();
    if !changed.is_empty() {
        heading.push(format!(
            "recorded under non-default settings: {}",
            changed.join(", ")
        ));
    }
    let mut table = Table::new(heading, KEY_COLUMNS, header);
    let mut unverified = false;
    for (ri, (a, peer, b, opts)) in rows.iter().enumerate().filter(|(ri, _)| keep_row[*ri]) {
        let mut line = vec![pair_label(a, *peer, b), opts.to_string()];
        for ci in (0..columns.len()).filter(|ci| keep_col[*ci]) {
            let Some(outcome) = cells.get(&(ri, ci)) else {
                line.push("-".to_string());
                continue;
            };
            let mut cell = cell(outcome);
            unverified |= matches!(
                outcome,
                Outcome::Ran {
                    check: StateCheck::Unverified,
                    ..
                }
            );
            if let Some(reason) = outcome.reason().filter(|_| !outcome.is_unsupported()) {
                write!(cell, "[{}]", table.footnote(reason)).unwrap();
            }
            line.push(cell);
        }
        table.rows.push(line);
    }

    // Why the platform lacks what some cases ask for (other than options).
    let mut not_here: Vec<&'static str> = Vec::new();
    for outcome in cells.values() {
        if let Outcome::Skipped(Skip::NotOnPlatform(why)) = outcome {
            position(&mut not_here, *why);
        }
    }
    for why in not_here {
        let line = format!("unsupported on {}: {why}", platform::OS);
        table.notes.push(Note::Text(line));
    }
    // A table the platform cannot run at all needs no list of option sets.
    if !dropped.is_empty() && !table.rows.is_empty() {
        table.notes.push(Note::NotRun {
            os: platform::OS.to_string(),
            left_out: dropped.iter().map(Options::to_string).collect(),
        });
    }
    if unverified {
        table.notes.push(Note::Text(
            "? = the first socket's state could not be verified on this platform".into(),
        ));
    }
    table
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
            let answer = find(state, old, new).map_or("not run".into(), |r| cell(&r.outcome));
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

/// The option sets the first screen compares: the same set on both sockets.
const DIGEST_OPTIONS: &[(&str, &[SockOpt])] = &[
    ("none", &[]),
    ("reuseaddr", &[SockOpt::ReuseAddr]),
    ("reuseport", &[SockOpt::ReusePort]),
    ("both", &[SockOpt::ReuseAddr, SockOpt::ReusePort]),
];

/// Where the options matter on this machine, on one screen: for each
/// state, the second socket's answer on 0.0.0.0 -> 0.0.0.0 (the first
/// socket held by another process) with the same options on both sockets.
pub fn digest(records: &[Record]) -> Table {
    let any = Endpoint {
        ip: std::net::Ipv4Addr::UNSPECIFIED.into(),
        v6only: None,
    };
    let heading = vec![
        "Where the options matter: 0.0.0.0 -> 0.0.0.0, the first socket held by another"
            .to_string(),
        "process, both sockets with the options of the column (every table: --full)".to_string(),
    ];
    let mut header = vec!["first socket".to_string()];
    header.extend(DIGEST_OPTIONS.iter().map(|(name, _)| name.to_string()));
    let mut table = Table::new(heading, 1, header);
    for (proto, state) in State::all() {
        let mut row = vec![format!("{} {}", proto.name(), state.name())];
        for (_, opts) in DIGEST_OPTIONS {
            let options = Options::of(opts);
            let cell = records
                .iter()
                .find(|r| {
                    let c = &r.case;
                    (c.holder, c.proto, c.state) == (Holder::OtherProcess, proto, state)
                        && (c.first.endpoint, c.second.endpoint) == (any, any)
                        && (c.first.options, c.second.options) == (options, options)
                })
                .map_or("-".to_string(), |r| cell(&r.outcome));
            row.push(cell);
        }
        table.rows.push(row);
    }
    table
}

/// How many cells answer differently for two holders, over the cases both
/// ran: `other-user` against `other-process` shows the same-owner rules.
pub fn holders_differ(records: &[Record], a: Holder, b: Holder) -> (usize, usize) {
    let mut of_b = std::collections::HashMap::new();
    for r in records.iter().filter(|r| r.case.holder == b) {
        let mut case = r.case;
        case.holder = a;
        of_b.insert(case, &r.outcome);
    }
    let mut compared = 0;
    let mut differ = 0;
    for r in records.iter().filter(|r| r.case.holder == a) {
        if let Some(other) = of_b.get(&r.case) {
            if matches!(r.outcome, Outcome::Ran { .. }) && matches!(other, Outcome::Ran { .. }) {
                compared += 1;
                differ += usize::from(cell(&r.outcome) != cell(other));
            }
        }
    }
    (differ, compared)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outcome::OsError;
    use crate::scenario::{Selection, TableKey};

    fn key() -> TableKey {
        TableKey::all()[0]
    }

    /// Records for every case of the first table, answered by `answer`.
    fn records(answer: impl Fn(&crate::scenario::Case) -> Outcome) -> Vec<Record> {
        Selection::table(&key())
            .cases()
            .into_iter()
            .map(|case| Record {
                outcome: answer(&case),
                case,
                port: None,
                delivery: None,
            })
            .collect()
    }

    fn ran() -> Outcome {
        Outcome::Ran {
            bind: Err(OsError { code: 98 }),
            listen: None,
            check: StateCheck::Verified,
            delivery: None,
        }
    }

    #[test]
    fn option_sets_the_platform_lacks_are_left_out_and_named() {
        let records = records(|c| {
            match c
                .second
                .options
                .iter()
                .chain(c.first.options.iter())
                .find(|o| *o == SockOpt::ReusePortLb)
            {
                Some(opt) => Outcome::Skipped(Skip::Unsupported(opt)),
                None => ran(),
            }
        });
        let rows: Vec<&Record> = records.iter().collect();
        let t = table(&key(), &rows);
        assert!(
            !t.header.contains(&"reuseport_lb".to_string()),
            "{:?}",
            t.header
        );
        assert!(t.rows.iter().all(|r| r[1] != "reuseport_lb"));
        assert_eq!(
            t.notes,
            [Note::NotRun {
                os: platform::OS.into(),
                left_out: vec!["reuseport_lb".into()]
            }]
        );
    }

    #[test]
    fn a_table_the_platform_cannot_run_has_no_rows_and_says_why() {
        let records = records(|_| Outcome::Skipped(Skip::NotOnPlatform("no such holder here")));
        let rows: Vec<&Record> = records.iter().collect();
        let t = table(&key(), &rows);
        assert!(t.rows.is_empty());
        assert_eq!(
            t.notes,
            [Note::Text(format!(
                "unsupported on {}: no such holder here",
                platform::OS
            ))]
        );
    }

    #[test]
    fn reasons_become_numbered_footnotes_and_unverified_cells_are_marked() {
        let records = records(|c| {
            if c.second.options == Options::NONE {
                Outcome::SetupFailed("accept(): ETIMEDOUT".into())
            } else {
                Outcome::Ran {
                    bind: Ok(()),
                    listen: None,
                    check: StateCheck::Unverified,
                    delivery: None,
                }
            }
        });
        let rows: Vec<&Record> = records.iter().collect();
        let t = table(&key(), &rows);
        assert_eq!(t.footnotes, ["accept(): ETIMEDOUT"]);
        assert_eq!(t.rows[0][2], "setup-failed[1]");
        assert_eq!(t.rows[0][3], "ok?");
        assert!(t.notes.contains(&Note::Text(
            "? = the first socket's state could not be verified on this platform".into()
        )));
    }
}
