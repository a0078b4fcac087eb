//! Platforms side by side: read every `snapshots/<os>/` folder and keep
//! only the cells where the recorded platforms disagree.
//!
//! It reads the snapshot tables back as text (the form `render::text_table`
//! writes), so it compares exactly what reviewers accepted.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;
use std::fs;
use std::path::Path;

/// Platforms the project means to record (the GitHub Actions matrix).
pub const EXPECTED: &[&str] = &["linux", "macos", "windows", "freebsd"];

/// (address pair, first socket's options, second socket's options)
pub type CellKey = (String, String, String);

/// One recorded table: cell text by position.
pub type Table = BTreeMap<CellKey, String>;

/// Every platform's tables: os -> table name -> table.
pub type Records = BTreeMap<String, BTreeMap<String, Table>>;

/// Split a table line into columns (columns are separated by two or more
/// spaces; no cell or label contains two spaces in a row).
fn columns(line: &str) -> Vec<String> {
    line.split("  ")
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .map(String::from)
        .collect()
}

/// The header rows the snapshot tables start with, and how many of their
/// leading columns name a row (the rest are answers).
const HEADERS: &[(&str, usize)] = &[("first -> second", 2), ("variant", 2), ("situation", 1)];

/// Parse one snapshot file's table. `unsupported` option sets named in the
/// trailer of a matrix table become `unsupported` cells, so they compare
/// like any answer.
pub fn parse_table(snapshot: &str) -> Result<Table, String> {
    // insta's header sits between the first two `---` lines.
    let body = snapshot
        .splitn(3, "---\n")
        .nth(2)
        .ok_or("no insta header")?;
    let lines: Vec<&str> = body.lines().collect();
    let (header_at, keys) = lines
        .iter()
        .enumerate()
        .find_map(|(i, l)| {
            HEADERS
                .iter()
                .find(|(start, _)| l.starts_with(start))
                .map(|(_, keys)| (i, *keys))
        })
        .ok_or("no header row")?;
    let header = columns(lines[header_at]);
    if header.len() <= keys {
        return Err("header row has no answer columns".into());
    }
    let mut table = Table::new();
    let mut rows_opts = BTreeSet::new();
    let mut pairs = BTreeSet::new();
    let mut end = header_at + 1;
    for line in &lines[header_at + 1..] {
        if line.trim().is_empty() {
            break;
        }
        end += 1;
        let cols = columns(line);
        if cols.len() != header.len() {
            return Err(format!(
                "row has {} columns, header {}: {line}",
                cols.len(),
                header.len()
            ));
        }
        let second_key = if keys == 2 {
            cols[1].clone()
        } else {
            String::new()
        };
        pairs.insert(cols[0].clone());
        rows_opts.insert(second_key.clone());
        for (col, cell) in header[keys..].iter().zip(&cols[keys..]) {
            table.insert(
                (cols[0].clone(), second_key.clone(), col.clone()),
                strip_note(cell),
            );
        }
    }
    if header[0] != HEADERS[0].0 {
        return Ok(table);
    }
    let mut cols: BTreeSet<String> = header[keys..].iter().cloned().collect();
    for line in &lines[end..] {
        if let Some((_, list)) = line.split_once("(not run): ") {
            for opts in list.split(", ") {
                cols.insert(opts.to_string());
                rows_opts.insert(opts.to_string());
            }
        }
    }
    for pair in &pairs {
        for first in &rows_opts {
            for second in &cols {
                table
                    .entry((pair.clone(), first.clone(), second.clone()))
                    .or_insert_with(|| "unsupported".into());
            }
        }
    }
    Ok(table)
}

/// `skipped[2]` -> `skipped`: note numbers differ between platforms.
fn strip_note(cell: &str) -> String {
    match cell.find('[') {
        Some(i) => cell[..i].to_string(),
        None => cell.to_string(),
    }
}

/// Read `dir/<os>/*.snap` for every OS folder there.
pub fn load(dir: &Path) -> Result<Records, String> {
    let mut records = Records::new();
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
            let parsed = parse_table(&text).map_err(|e| format!("{os}/{name}: {e}"))?;
            tables.insert(table.to_string(), parsed);
        }
        if !tables.is_empty() {
            records.insert(os, tables);
        }
    }
    Ok(records)
}

/// One disagreement: a cell and each platform's answer ("-" where a
/// platform has no such cell).
pub struct Difference {
    pub table: String,
    pub cell: CellKey,
    pub answers: Vec<String>,
}

/// The cells where recorded platforms disagree. A trailing `?` (state not
/// verified) does not count as a different answer.
pub fn differences(records: &Records) -> Vec<Difference> {
    let table_names: BTreeSet<&String> = records.values().flat_map(|t| t.keys()).collect();
    let mut out = Vec::new();
    for name in table_names {
        let cells: BTreeSet<&CellKey> = records
            .values()
            .filter_map(|t| t.get(name))
            .flat_map(|t| t.keys())
            .collect();
        for cell in cells {
            let answers: Vec<String> = records
                .values()
                .map(|t| {
                    t.get(name)
                        .and_then(|t| t.get(cell))
                        .cloned()
                        .unwrap_or_else(|| "-".into())
                })
                .collect();
            let distinct: BTreeSet<&str> =
                answers.iter().map(|a| a.trim_end_matches('?')).collect();
            if distinct.len() > 1 {
                out.push(Difference {
                    table: name.clone(),
                    cell: cell.clone(),
                    answers,
                });
            }
        }
    }
    out
}

/// Platforms the project expects but nobody has recorded yet.
pub fn unrecorded(records: &Records) -> Vec<&'static str> {
    EXPECTED
        .iter()
        .copied()
        .filter(|os| !records.contains_key(*os))
        .collect()
}

/// The comparison as text (`markdown: false`) or as a markdown page.
pub fn report(records: &Records, markdown: bool) -> String {
    let mut out = String::new();
    let oses: Vec<&String> = records.keys().collect();
    let names: Vec<&str> = oses.iter().map(|s| s.as_str()).collect();
    // In markdown every status line is its own paragraph.
    let gap = if markdown { "\n" } else { "" };
    if markdown {
        writeln!(out, "# Where platforms disagree\n").unwrap();
        writeln!(
            out,
            "Generated by `addrinuse compare --format markdown` from the reviewed snapshots in \
             `snapshots/<os>/`; every answer is a recorded kernel answer, not a prediction.\n"
        )
        .unwrap();
    }
    let recorded = if names.is_empty() {
        "none".to_string()
    } else {
        names.join(", ")
    };
    writeln!(out, "recorded: {recorded}{gap}").unwrap();
    let missing = unrecorded(records);
    if !missing.is_empty() {
        writeln!(
            out,
            "no record yet: {} (see README, 'Recording a platform'){gap}",
            missing.join(", ")
        )
        .unwrap();
    }
    if records.len() < 2 {
        writeln!(
            out,
            "\nNothing to compare: at least two platforms must be recorded."
        )
        .unwrap();
        return out;
    }
    let diffs = differences(records);
    writeln!(
        out,
        "\ncells that differ between platforms: {}",
        diffs.len()
    )
    .unwrap();
    let mut by_table: BTreeMap<&str, Vec<&Difference>> = BTreeMap::new();
    for d in &diffs {
        by_table.entry(&d.table).or_default().push(d);
    }
    for (table, diffs) in by_table {
        writeln!(out).unwrap();
        if markdown {
            writeln!(out, "## {table}\n").unwrap();
            writeln!(
                out,
                "| first -> second | first options | second options | {} |",
                names.join(" | ")
            )
            .unwrap();
            writeln!(out, "|{}", "---|".repeat(3 + names.len())).unwrap();
            for d in diffs {
                let (pair, first, second) = &d.cell;
                writeln!(
                    out,
                    "| `{pair}` | {first} | {second} | {} |",
                    d.answers.join(" | ")
                )
                .unwrap();
            }
        } else {
            writeln!(out, "{table}").unwrap();
            let header: Vec<String> = ["first -> second", "first options", "second options"]
                .iter()
                .map(|s| s.to_string())
                .chain(names.iter().map(|s| s.to_string()))
                .collect();
            let rows: Vec<Vec<String>> = std::iter::once(header)
                .chain(diffs.iter().map(|d| {
                    let (pair, first, second) = d.cell.clone();
                    [pair, first, second]
                        .into_iter()
                        .chain(d.answers.iter().cloned())
                        .collect()
                }))
                .collect();
            out.push_str(&crate::render::aligned(&rows, "  "));
        }
    }
    out
}
