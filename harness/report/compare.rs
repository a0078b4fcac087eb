//! Platforms side by side: read every `snapshots/<os>/` folder and keep
//! only the cells where the recorded platforms disagree.
//!
//! A kernel line's folder (`snapshots/linux-6.1/`, see `lab`) holds only
//! the tables in which that line differs from the reference
//! `snapshots/linux/`; it is shown as a platform of its own, whose other
//! tables are the reference's.
//!
//! It reads the snapshot tables back with `Table::parse`, so it compares
//! exactly what reviewers accepted.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs;
use std::path::Path;
use std::sync::Arc;

use super::lab::{self, Checked};
use super::table::{aligned, disagree, split_cell, Note, Table};
use super::Recorded;
use crate::scenario::Holder;

/// Platforms the project means to record (the GitHub Actions matrix).
pub const EXPECTED: &[&str] = &["linux", "macos", "windows", "freebsd"];

/// (first key column, second key column or "", answer column)
pub type CellKey = (String, String, String);

/// One recorded table's answers: the cells its rows hold, and the grid
/// the table stands for (its address pairs, row keys and columns, the
/// option sets named as not run included). A cell of the grid that no row
/// holds is `unsupported`, and is not stored: that is two thirds of a
/// Linux table. Hashed, not sorted: the model's check looks up every cell
/// of every folder (~150,000 each); `differences` sorts the few tables
/// that differ.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Answers {
    pub cells: HashMap<CellKey, String>,
    pairs: BTreeSet<String>,
    row_keys: BTreeSet<String>,
    cols: BTreeSet<String>,
    /// The platform ran none of the table's cases: every cell is
    /// `unsupported`, whichever cell another platform asks about.
    pub none_run: bool,
}

impl Answers {
    /// The recorded answer of `cell`, if the table has one.
    pub fn cell(&self, cell: &CellKey) -> Option<&str> {
        if let Some(answer) = self.cells.get(cell) {
            return Some(answer);
        }
        let (pair, first, second) = cell;
        let in_grid = self.pairs.contains(pair)
            && self.row_keys.contains(first)
            && self.cols.contains(second);
        (self.none_run || in_grid).then_some("unsupported")
    }

    /// The answer of `cell` as the comparison shows it: "-" where there is none.
    fn get(&self, cell: &CellKey) -> &str {
        self.cell(cell).unwrap_or("-")
    }

    /// Every cell of the table: the whole grid.
    fn keys(&self) -> impl Iterator<Item = CellKey> + '_ {
        (self.pairs.iter()).flat_map(move |pair| {
            (self.row_keys.iter()).flat_map(move |first| {
                (self.cols.iter()).map(move |second| (pair.clone(), first.clone(), second.clone()))
            })
        })
    }
}

/// One platform's tables: table name -> answers. Shared (`Arc`), so that a
/// kernel line's folder holds the reference's very answers, not a copy.
pub type PlatformTables = BTreeMap<String, Arc<Answers>>;

/// Every platform's tables: os -> table name -> answers.
pub type RecordedTables = BTreeMap<String, PlatformTables>;

/// A table's cells by position. Option sets named as not run widen the
/// grid: their cells are `unsupported`, and compare like any answer.
pub fn answers(table: &Table) -> Answers {
    let keys = table.key_columns;
    let second_key = |row: &[String]| {
        if keys == 2 {
            row[1].clone()
        } else {
            String::new()
        }
    };
    let mut out = Answers {
        none_run: table.rows.is_empty(),
        cols: table.header.iter().skip(keys).cloned().collect(),
        ..Answers::default()
    };
    for row in &table.rows {
        if !out.pairs.contains(&row[0]) {
            out.pairs.insert(row[0].clone());
        }
        let first = second_key(row);
        if !out.row_keys.contains(&first) {
            out.row_keys.insert(first.clone());
        }
        for (col, cell) in table.header[keys..].iter().zip(&row[keys..]) {
            let cell = cell.split('[').next().unwrap_or_default();
            out.cells
                .insert((row[0].clone(), first.clone(), col.clone()), cell.into());
        }
    }
    for note in &table.notes {
        if let Note::NotRun { left_out, .. } = note {
            out.cols.extend(left_out.iter().cloned());
            out.row_keys.extend(left_out.iter().cloned());
        }
    }
    out
}

/// The table in one snapshot file (insta's header, then the table).
pub fn parse_snapshot(name: &str, text: &str) -> Result<Table, String> {
    let recorded = Recorded::from_name(name)
        .ok_or_else(|| format!("{name} is not a table this version of addrinuse knows"))?;
    let text = text.replace("\r\n", "\n");
    // insta's header sits between the first two `---` lines.
    let body = text.splitn(3, "---\n").nth(2).ok_or("no insta header")?;
    Table::parse(body, recorded.key_columns())
}

/// Read `dir/<os>/*.snap` for every OS folder there.
pub fn load(dir: &Path) -> Result<RecordedTables, String> {
    let mut recorded = RecordedTables::new();
    let entries = fs::read_dir(dir).map_err(|e| format!("cannot read {}: {e}", dir.display()))?;
    for entry in entries.flatten() {
        if !entry.path().is_dir() {
            continue;
        }
        let os = entry.file_name().to_string_lossy().into_owned();
        let mut tables = BTreeMap::new();
        let files = fs::read_dir(entry.path()).map_err(|e| format!("{os}: {e}"))?;
        for file in files.flatten() {
            let name = file.file_name().to_string_lossy().into_owned();
            let Some(table) = name.strip_suffix(".snap") else {
                continue;
            };
            let text = fs::read_to_string(file.path()).map_err(|e| format!("{os}/{name}: {e}"))?;
            let parsed = parse_snapshot(table, &text).map_err(|e| format!("{os}/{name}: {e}"))?;
            tables.insert(table.to_string(), Arc::new(answers(&parsed)));
        }
        if !tables.is_empty() {
            recorded.insert(os, tables);
        }
    }
    // A kernel line answers as its reference wherever it has no table: the
    // reference's own answers, shared, not a copy of ~150,000 cells per line.
    let lines: Vec<(String, String)> = (recorded.keys())
        .filter_map(|f| Some((f.clone(), lab::folder_line(f)?.0.to_string())))
        .collect();
    for (folder, os) in lines {
        let reference = recorded
            .get(&os)
            .cloned()
            .ok_or_else(|| format!("{folder}: a kernel line without the reference {os}/"))?;
        let tables = recorded.entry(folder).or_default();
        for (name, answers) in reference {
            tables.entry(name).or_insert(answers);
        }
    }
    Ok(recorded)
}

/// One disagreement: a cell and each platform's answer ("-" where a
/// platform has no such cell).
pub struct Difference {
    pub table: String,
    pub cell: CellKey,
    pub answers: Vec<String>,
}

/// The cells where recorded platforms disagree (`table::disagree`: a `?`,
/// or a delivery mark one side lacks, is no difference).
pub fn differences(recorded: &RecordedTables) -> Vec<Difference> {
    let table_names: BTreeSet<&String> = recorded.values().flat_map(|t| t.keys()).collect();
    let mut out = Vec::new();
    for name in table_names {
        let tables: Vec<Option<&Answers>> = (recorded.values())
            .map(|t| t.get(name).map(Arc::as_ref))
            .collect();
        if same_answers_everywhere(&tables) {
            continue;
        }
        let cells: BTreeSet<CellKey> = (tables.iter().flatten()).flat_map(|t| t.keys()).collect();
        let mut answers: Vec<&str> = Vec::with_capacity(tables.len());
        for cell in cells {
            answers.clear();
            answers.extend(tables.iter().map(|t| t.map_or("-", |a| a.get(&cell))));
            if disagree(&answers) {
                out.push(Difference {
                    table: name.clone(),
                    cell,
                    answers: answers.iter().map(|a| a.to_string()).collect(),
                });
            }
        }
    }
    out
}

/// Whether every platform holds the same answers for a table: the very
/// same ones (a kernel line's folder where it has no table of its own) or
/// equal ones. Then no cell can differ, and one pass over the maps is far
/// cheaper than looking every cell up on every platform.
fn same_answers_everywhere(tables: &[Option<&Answers>]) -> bool {
    match tables {
        [Some(first), rest @ ..] => {
            (rest.iter()).all(|t| t.is_some_and(|t| std::ptr::eq(t, *first) || t == *first))
        }
        _ => false,
    }
}

/// Platforms the project expects but nobody has recorded yet.
pub fn unrecorded(recorded: &RecordedTables) -> Vec<&'static str> {
    EXPECTED
        .iter()
        .copied()
        .filter(|os| !recorded.contains_key(*os))
        .collect()
}

/// Port takeovers each platform recorded (cells of `other-user` and
/// `other-process` tables whose mark says the second socket received
/// traffic): (platform, by another user, by another process).
pub fn takeovers(recorded: &RecordedTables) -> Vec<(String, usize, usize)> {
    let mut out = Vec::new();
    // A kernel line's folder holds only the tables where it differs.
    let platforms = recorded
        .iter()
        .filter(|(os, _)| EXPECTED.contains(&os.as_str()));
    for (os, tables) in platforms {
        let (mut user, mut process) = (0, 0);
        for (name, answers) in tables {
            let Some(Recorded::Matrix(key)) = Recorded::from_name(name) else {
                continue;
            };
            let found = (answers.cells.values())
                .filter_map(|cell| split_cell(cell).ok()?.1)
                .filter(|v| v.is_takeover(key.holder))
                .count();
            match key.holder {
                Holder::OtherUser => user += found,
                _ => process += found,
            }
        }
        out.push((os.clone(), user, process));
    }
    out
}

/// The status lines above the differences: who is recorded, who is not,
/// each platform's port takeovers, and which kernels each Linux kernel line stands for.
fn status(recorded: &RecordedTables, kernels: &[Checked]) -> Vec<String> {
    let names: Vec<&str> = recorded.keys().map(String::as_str).collect();
    let mut lines = vec![format!(
        "recorded: {}",
        if names.is_empty() {
            "none".to_string()
        } else {
            names.join(", ")
        }
    )];
    let missing = unrecorded(recorded);
    if !missing.is_empty() {
        lines.push(format!(
            "no record yet: {} (see README, 'Recording a platform')",
            missing.join(", ")
        ));
    }
    for (os, user, process) in takeovers(recorded) {
        lines.push(format!(
            "port takeovers on {os}: {user} by another user, {process} by another process \
             (a second socket receives traffic meant for a live first socket)"
        ));
    }
    if !kernels.is_empty() {
        lines.push(kernel_lines(kernels));
    }
    lines
}

/// `linux = 5.10, 6.12, 6.18, 7.3 (5 kernels); linux-6.1 = 6.1 (1 kernel)`:
/// the kernel lines each column stands for (a line answers as the
/// reference unless it has a folder of its own).
fn kernel_lines(kernels: &[Checked]) -> String {
    let mut by_folder: BTreeMap<String, (Vec<&str>, usize)> = BTreeMap::new();
    for c in kernels {
        let folder = if c.differing() == 0 {
            "linux".to_string()
        } else {
            lab::line_folder("linux", &c.line)
        };
        let (lines, count) = by_folder.entry(folder).or_default();
        if !lines.contains(&c.line.as_str()) {
            lines.push(&c.line);
        }
        *count += 1;
    }
    let columns: Vec<String> = (by_folder.into_iter())
        .map(|(folder, (lines, count))| {
            let kernels = if count == 1 { "kernel" } else { "kernels" };
            format!("{folder} = {} ({count} {kernels})", lines.join(", "))
        })
        .collect();
    format!(
        "Linux kernel lines checked by the lab, by column: {}",
        columns.join("; ")
    )
}

/// One `Table` per matrix table with differences: a row per cell.
pub fn tables(recorded: &RecordedTables) -> Vec<Table> {
    let platforms: Vec<String> = recorded.keys().cloned().collect();
    let mut by_table: BTreeMap<String, Vec<Difference>> = BTreeMap::new();
    for d in differences(recorded) {
        by_table.entry(d.table.clone()).or_default().push(d);
    }
    by_table
        .into_iter()
        .map(|(name, diffs)| {
            let header = ["first -> second", "first options", "second options"]
                .iter()
                .map(|s| s.to_string())
                .chain(platforms.iter().cloned())
                .collect();
            let mut t = Table::new(vec![name], 3, header);
            t.rows = diffs
                .into_iter()
                .map(|d| {
                    let (pair, first, second) = d.cell;
                    [pair, first, second].into_iter().chain(d.answers).collect()
                })
                .collect();
            t
        })
        .collect()
}

/// The restart question as the models of the expected platforms with no
/// record yet answer it: predictions, in a table of their own, never
/// mixed with recorded answers. `None` when every platform is recorded.
pub fn predicted(recorded: &RecordedTables) -> Option<Table> {
    use crate::model::Platform;
    let platforms: Vec<Platform> = (unrecorded(recorded).into_iter())
        .filter_map(Platform::from_folder)
        .collect();
    if platforms.is_empty() {
        return None;
    }
    let mut table = Table::new(
        vec![
            "predicted, not recorded: the restart question (tcp time-wait, 0.0.0.0 -> 0.0.0.0, \
             first socket held by another process) as the models answer it"
                .into(),
            "from the rules in harness/model/, not from a kernel; `addrinuse explain <case>` \
             shows the rules and their sources"
                .into(),
        ],
        2,
        ["first options", "second options"]
            .into_iter()
            .map(String::from)
            .chain(platforms.iter().map(|p| p.folder().to_string()))
            .collect(),
    );
    for first in ["", "+reuseaddr"] {
        for second in ["", "+reuseaddr"] {
            let text = format!("tcp time-wait 0.0.0.0{first} 0.0.0.0{second} other-process");
            let case = crate::probe::parse(&[text]).expect("the restart question parses");
            let mut row = vec![
                case.first.options.to_string(),
                case.second.options.to_string(),
            ];
            row.extend(platforms.iter().map(|p| p.predict(&case).answer.cell()));
            table.rows.push(row);
        }
    }
    Some(table)
}

/// The differing tables and how many cells they hold, or why there is
/// nothing to compare.
fn compared(recorded: &RecordedTables) -> Result<(Vec<Table>, usize), &'static str> {
    if recorded.len() < 2 {
        return Err("Nothing to compare: at least two platforms must be recorded.");
    }
    let tables = tables(recorded);
    let count = tables.iter().map(|t| t.rows.len()).sum();
    Ok((tables, count))
}

/// The comparison as text.
pub fn report_text(recorded: &RecordedTables, kernels: &[Checked]) -> String {
    let mut out = status(recorded, kernels).join("\n") + "\n";
    if !kernels.is_empty() {
        out.push_str(&format!("\n{}", lab::list_table(kernels).to_text()));
    }
    match compared(recorded) {
        Err(nothing) => out.push_str(&format!("\n{nothing}\n")),
        Ok((tables, count)) => {
            out.push_str(&format!("\ncells that differ between platforms: {count}\n"));
            for t in tables {
                out.push_str(&format!("\n{}\n", t.heading[0]));
                let grid: Vec<Vec<String>> = std::iter::once(t.header).chain(t.rows).collect();
                out.push_str(&aligned(&grid, "  "));
            }
        }
    }
    if let Some(t) = predicted(recorded) {
        out.push_str(&format!("\n{}\n{}\n", t.heading[0], t.heading[1]));
        let grid: Vec<Vec<String>> = std::iter::once(t.header).chain(t.rows).collect();
        out.push_str(&aligned(&grid, "  "));
    }
    out
}

/// The comparison as the markdown page `docs/platforms.md` holds.
pub fn report_markdown(recorded: &RecordedTables, kernels: &[Checked]) -> String {
    let mut out = String::from(
        "# Where platforms disagree\n\n\
         Generated by `addrinuse compare --format markdown` from the reviewed snapshots in \
         `snapshots/<os>/`. Every answer is a recorded kernel answer; the models' predictions \
         for platforms with no record yet, if any, sit apart at the end, under \
         \"Predicted, not recorded\".\n\n",
    );
    for line in status(recorded, kernels) {
        out.push_str(&format!("{line}\n\n"));
    }
    if !kernels.is_empty() {
        let mut md = lab::list_table(kernels).to_markdown();
        md.replace_range(..3, "##");
        out.push_str(&md);
    }
    match compared(recorded) {
        Err(nothing) => out.push_str(&format!("\n{nothing}\n")),
        Ok((tables, count)) => {
            out.push_str(&format!("\ncells that differ between platforms: {count}\n"));
            for t in tables {
                let mut md = t.to_markdown();
                // A section per table: `## name`, not the `###` of a matrix table.
                md.replace_range(..3, "##");
                out.push_str(&format!("\n{md}"));
            }
        }
    }
    if let Some(t) = predicted(recorded) {
        out.push_str("\n## Predicted, not recorded\n\n");
        out.push_str(&t.to_markdown());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recorded(tables: &[(&str, &str, Table)]) -> RecordedTables {
        let mut out = RecordedTables::new();
        for (os, name, table) in tables {
            out.entry(os.to_string())
                .or_default()
                .insert(name.to_string(), Arc::new(answers(table)));
        }
        out
    }

    fn matrix_table(cell: &str) -> Table {
        let header = ["first -> second", "first options", "none"].map(String::from);
        let mut t = Table::new(vec!["title".into()], 2, header.to_vec());
        t.rows.push(
            ["0.0.0.0 -> 0.0.0.0", "none", cell]
                .map(String::from)
                .to_vec(),
        );
        t.notes.push(Note::NotRun {
            os: "linux".into(),
            left_out: vec!["exclusive".into()],
        });
        t
    }

    #[test]
    fn option_sets_not_run_compare_as_unsupported() {
        let a = answers(&matrix_table("ok"));
        let key = |second: &str| ("0.0.0.0 -> 0.0.0.0".into(), "none".into(), second.into());
        assert_eq!(a.get(&key("none")), "ok");
        assert_eq!(a.get(&key("exclusive")), "unsupported");
    }

    /// A cell of an option set one platform did not run is `unsupported`
    /// there, as a row or as a column, and differs from the answer of a
    /// platform that ran it.
    #[test]
    fn a_cell_not_run_differs_from_one_that_ran() {
        let header = ["first -> second", "first options", "none", "exclusive"].map(String::from);
        let mut ran = Table::new(vec!["title".into()], 2, header.to_vec());
        for (first, cells) in [("none", ["ok", "EACCES"]), ("exclusive", ["EACCES", "ok"])] {
            let row = ["0.0.0.0 -> 0.0.0.0", first, cells[0], cells[1]];
            ran.rows.push(row.map(String::from).to_vec());
        }
        let tables = recorded(&[("linux", "t", matrix_table("ok")), ("windows", "t", ran)]);
        let found: Vec<(String, String, Vec<String>)> = (differences(&tables).into_iter())
            .map(|d| (d.cell.1, d.cell.2, d.answers))
            .collect();
        let diff = |first: &str, second: &str, windows: &str| {
            let answers = vec!["unsupported".to_string(), windows.to_string()];
            (first.to_string(), second.to_string(), answers)
        };
        assert_eq!(
            found,
            [
                diff("exclusive", "exclusive", "ok"),
                diff("exclusive", "none", "EACCES"),
                diff("none", "exclusive", "EACCES"),
            ]
        );
    }

    /// A platform that runs none of a table's cases records it without rows
    /// (Windows' other-user tables): every cell of it is `unsupported`.
    #[test]
    fn a_table_without_rows_answers_unsupported_everywhere() {
        let mut none = Table::new(vec!["title".into()], 2, Vec::new());
        none.notes
            .push(Note::Text("unsupported on windows: no such holder".into()));
        let tables = recorded(&[
            ("linux", "t", matrix_table("EADDRINUSE")),
            ("windows", "t", none),
        ]);
        let diffs = differences(&tables);
        assert!(!diffs.is_empty());
        for d in diffs {
            assert_eq!(d.answers[1], "unsupported", "{:?}", d.cell);
        }
    }

    /// Predictions sit in their own table, for platforms with no record
    /// only: a recorded platform never gets a predicted column.
    #[test]
    fn predictions_are_only_for_platforms_without_a_record() {
        let some = recorded(&[
            ("linux", "t", matrix_table("ok/ok")),
            ("windows", "t", matrix_table("ok/ok")),
        ]);
        let table = predicted(&some).expect("macos and freebsd are predicted");
        assert_eq!(
            table.header[2..],
            ["macos".to_string(), "freebsd".to_string()]
        );
        assert!(table.heading[0].starts_with("predicted, not recorded"));
        assert!(report_text(&some, &[]).contains("\npredicted, not recorded"));
        let all = recorded(&[
            ("linux", "t", matrix_table("ok/ok")),
            ("windows", "t", matrix_table("ok/ok")),
            ("macos", "t", matrix_table("ok/ok")),
            ("freebsd", "t", matrix_table("ok/ok")),
        ]);
        assert!(predicted(&all).is_none());
        assert!(!report_markdown(&all, &[]).contains("Predicted, not recorded\n\n###"));
    }

    /// A kernel line's folder holds only the tables that differ; every
    /// other table is the reference's, so only real differences show.
    #[test]
    fn a_kernel_line_answers_as_the_reference_where_it_has_no_table() {
        let dir = tempfile::tempdir().unwrap();
        let snap = |folder: &str, name: &str, cell: &str| {
            let recorded = Recorded::from_name(name).unwrap();
            let mut t = Table::new(
                vec!["title".into()],
                recorded.key_columns(),
                ["situation", "options", "answer"]
                    .map(String::from)
                    .to_vec(),
            );
            t.rows.push(vec!["a".into(), "none".into(), cell.into()]);
            let path = dir.path().join(folder);
            fs::create_dir_all(&path).unwrap();
            let text = format!("---\nsource: test\n---\n{}", t.to_text());
            fs::write(path.join(format!("{name}.snap")), text).unwrap();
        };
        snap("linux", "unix-sockets", "EADDRINUSE");
        snap("linux", "restart", "ok");
        snap("linux-6.1", "unix-sockets", "ok");
        let recorded = load(dir.path()).unwrap();
        assert_eq!(recorded["linux-6.1"].len(), 2);
        let diffs = differences(&recorded);
        assert_eq!(diffs.len(), 1);
        assert_eq!(diffs[0].table, "unix-sockets");
        assert_eq!(diffs[0].answers, ["EADDRINUSE", "ok"]);
    }

    #[test]
    fn takeovers_are_counted_per_platform_from_marked_cells() {
        let table = |name: &str, cell: &str| {
            let mut t = matrix_table(cell);
            t.heading = vec![name.to_string()];
            t
        };
        let tables = recorded(&[
            ("linux", "udp_bound_other-user_v4", table("", "ok→2")),
            ("linux", "udp_bound_other-process_v4", table("", "ok→1+2")),
            ("linux", "udp_bound_same-process_v4", table("", "ok→2")),
            ("macos", "udp_bound_other-user_v4", table("", "ok→1")),
        ]);
        assert_eq!(
            takeovers(&tables),
            [("linux".into(), 1, 1), ("macos".into(), 0, 0)]
        );
    }

    #[test]
    fn an_unverified_mark_is_not_a_difference() {
        let tables = recorded(&[
            ("linux", "t", matrix_table("ok/ok")),
            ("macos", "t", matrix_table("ok/ok?")),
        ]);
        assert!(differences(&tables).is_empty());
    }
}
