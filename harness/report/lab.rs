//! The kernel lab's records (lab/README.md): a run saved as table files,
//! kernel lines, and the list of kernels the lab has checked.
//!
//! `snapshots/linux/` is the reference. A kernel line (major.minor) that
//! answers differently keeps only the tables that differ, in
//! `snapshots/linux-<line>/`, in the snapshot format like any record.
//! `snapshots/linux-kernels.txt` lists every kernel checked, one row each,
//! as a `Table` in the same text format.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use super::table::Note;
use super::{Recorded, Table};

/// In a saved run: the tables, one `<name>.txt` each ...
const TABLES: &str = "tables";
/// ... and the header facts, one `name: value` line each.
const FACTS: &str = "facts.txt";
/// The fact that names the settings a run was made under.
pub const SETTINGS_FACT: &str = "non-default settings";

/// Write a run's tables and facts to `dir` (`addrinuse --save DIR`).
pub fn save(dir: &Path, tables: &[(Recorded, Table)], facts: &[(&str, String)]) -> io::Result<()> {
    let tables_dir = dir.join(TABLES);
    fs::create_dir_all(&tables_dir)?;
    for (recorded, table) in tables {
        let file = tables_dir.join(format!("{}.txt", recorded.name()));
        fs::write(file, table.to_text())?;
    }
    let facts: String = facts.iter().map(|(k, v)| format!("{k}: {v}\n")).collect();
    fs::write(dir.join(FACTS), facts)
}

/// A run saved with `--save`, read back on the host.
pub struct SavedRun {
    pub dir: PathBuf,
    facts: BTreeMap<String, String>,
}

impl SavedRun {
    pub fn open(dir: &Path) -> Result<SavedRun, String> {
        let path = dir.join(FACTS);
        let text = fs::read_to_string(&path)
            .map_err(|e| format!("{}: {e} (not a folder written by --save)", path.display()))?;
        let facts = text
            .lines()
            .filter_map(|l| l.split_once(": "))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Ok(SavedRun {
            dir: dir.to_path_buf(),
            facts,
        })
    }

    pub fn fact(&self, name: &str) -> Option<&str> {
        self.facts.get(name).map(String::as_str)
    }

    /// The kernel's `uname -r` (the `kernel` fact is `uname -sr`).
    pub fn release(&self) -> String {
        let kernel = self.fact("kernel").unwrap_or("unknown");
        kernel
            .split_once(' ')
            .map_or(kernel, |(_, r)| r)
            .to_string()
    }

    /// Whether the run saved the table `recorded` (a saved run has no
    /// runtimes table: the lab's guest runs no language runtimes).
    pub fn has(&self, recorded: &Recorded) -> bool {
        self.table_path(recorded).is_file()
    }

    fn table_path(&self, recorded: &Recorded) -> PathBuf {
        self.dir
            .join(TABLES)
            .join(format!("{}.txt", recorded.name()))
    }

    /// The run's table `recorded`, read back through the snapshot format.
    pub fn table(&self, recorded: &Recorded) -> Result<Table, String> {
        let path = self
            .dir
            .join(TABLES)
            .join(format!("{}.txt", recorded.name()));
        let text = fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        Table::parse(&text, recorded.key_columns()).map_err(|e| format!("{}: {e}", path.display()))
    }
}

/// A kernel's line, major.minor: `6.1.0-50-amd64` -> `6.1`.
pub fn line(release: &str) -> Option<String> {
    let mut parts = release.split(|c: char| !c.is_ascii_digit());
    let major = parts.next().filter(|p| !p.is_empty())?;
    let minor = parts.next().filter(|p| !p.is_empty())?;
    Some(format!("{major}.{minor}"))
}

/// The folder of a kernel line's own tables: `linux-6.1`.
pub fn line_folder(os: &str, line: &str) -> String {
    format!("{os}-{line}")
}

/// The kernel line a folder name holds: `linux-6.1` -> (`linux`, `6.1`).
pub fn folder_line(folder: &str) -> Option<(&str, &str)> {
    let (os, line) = folder.split_once('-')?;
    (self::line(line).as_deref() == Some(line)).then_some((os, line))
}

/// The committed list of kernels checked, next to the snapshot folders.
pub const LIST: &str = "linux-kernels.txt";
/// The `answers` of the kernel whose line `snapshots/linux/` holds.
pub const REFERENCE: &str = "reference";
const LIST_HEADER: [&str; 5] = ["uname -r", "line", "checked", "settings", "answers"];

/// One kernel checked: a row of the list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checked {
    pub release: String,
    pub line: String,
    /// The day of the check, `YYYY-MM-DD` (UTC).
    pub date: String,
    /// `defaults`, or the settings known to change answers that were not.
    pub settings: String,
    /// `reference`, `same as reference` or `differs in N tables`.
    pub answers: String,
}

impl Checked {
    /// How a kernel's tables compare with the reference.
    pub fn answers_for(differing: usize) -> String {
        match differing {
            0 => "same as reference".into(),
            1 => "differs in 1 table".into(),
            n => format!("differs in {n} tables"),
        }
    }

    /// How many tables the row says differ (0 for the reference).
    pub fn differing(&self) -> usize {
        (self.answers.strip_prefix("differs in "))
            .and_then(|rest| rest.split(' ').next()?.parse().ok())
            .unwrap_or(0)
    }
}

/// The list as a table: the form it is committed in and shown by `compare`.
pub fn list_table(rows: &[Checked]) -> Table {
    let mut t = Table::new(
        vec![
            "Linux kernels checked by the kernel lab (lab/record)".into(),
            "answers = how the kernel's tables compare with snapshots/linux/, the reference; \
             a line that differs keeps its own tables in snapshots/linux-<line>/"
                .into(),
        ],
        1,
        LIST_HEADER.map(String::from).to_vec(),
    );
    t.rows = rows
        .iter()
        .map(|c| {
            vec![
                c.release.clone(),
                c.line.clone(),
                c.date.clone(),
                c.settings.clone(),
                c.answers.clone(),
            ]
        })
        .collect();
    if rows.is_empty() {
        t.notes.push(Note::Text("no kernel checked yet".into()));
    }
    t
}

/// Read `snapshots/linux-kernels.txt` (none yet: an empty list).
pub fn load_list(snapshots: &Path) -> Result<Vec<Checked>, String> {
    let path = snapshots.join(LIST);
    let text = match fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(format!("{}: {e}", path.display())),
    };
    let table = Table::parse(&text, 1).map_err(|e| format!("{}: {e}", path.display()))?;
    if !table.rows.is_empty() && table.header != LIST_HEADER {
        return Err(format!(
            "{}: the columns are not {}",
            path.display(),
            LIST_HEADER.join(", ")
        ));
    }
    Ok(table
        .rows
        .into_iter()
        .map(|r| Checked {
            release: r[0].clone(),
            line: r[1].clone(),
            date: r[2].clone(),
            settings: r[3].clone(),
            answers: r[4].clone(),
        })
        .collect())
}

/// Put `row` in the list (replacing the row of the same kernel, and the
/// reference row when `row` is the reference), ordered by version.
pub fn update_list(snapshots: &Path, row: Checked) -> Result<(), String> {
    let mut rows = load_list(snapshots)?;
    rows.retain(|r| {
        r.release != row.release && !(row.answers == REFERENCE && r.answers == REFERENCE)
    });
    rows.push(row);
    rows.sort_by_key(|r| version_key(&r.release));
    let path = snapshots.join(LIST);
    fs::write(&path, list_table(&rows).to_text()).map_err(|e| format!("{}: {e}", path.display()))
}

/// The line `snapshots/linux/` holds, from the list's reference row.
pub fn reference_line(rows: &[Checked]) -> Option<&str> {
    rows.iter()
        .find(|r| r.answers == REFERENCE)
        .map(|r| r.line.as_str())
}

/// Numbers compare as numbers: 5.10 before 6.1 before 6.12.
fn version_key(release: &str) -> Vec<(u64, String)> {
    release
        .split(|c: char| !c.is_ascii_alphanumeric())
        .map(|p| (p.parse().unwrap_or(u64::MAX), p.to_string()))
        .collect()
}

/// Today's date (UTC), `YYYY-MM-DD`.
pub fn today() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    civil_date(secs / 86_400)
}

/// Days since 1970-01-01 -> `YYYY-MM-DD` (Howard Hinnant's civil_from_days).
fn civil_date(days: u64) -> String {
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_lines() {
        assert_eq!(line("6.1.0-50-amd64").as_deref(), Some("6.1"));
        assert_eq!(line("6.12.95+deb12-amd64").as_deref(), Some("6.12"));
        assert_eq!(line("7.3.4+deb13-amd64").as_deref(), Some("7.3"));
        assert_eq!(line("6.18.44-fc-v669").as_deref(), Some("6.18"));
        assert_eq!(line("unknown"), None);
        assert_eq!(folder_line("linux-6.1"), Some(("linux", "6.1")));
        assert_eq!(folder_line("linux"), None);
        assert_eq!(folder_line("linux-x"), None);
    }

    #[test]
    fn dates() {
        assert_eq!(civil_date(0), "1970-01-01");
        assert_eq!(civil_date(20_417), "2025-11-25");
        assert_eq!(civil_date(11_016), "2000-02-29");
    }

    #[test]
    fn versions_sort_as_numbers() {
        let mut v = ["6.12.95", "5.10.0", "6.1.0", "7.3.4", "6.18.44"];
        v.sort_by_key(|r| version_key(r));
        assert_eq!(v, ["5.10.0", "6.1.0", "6.12.95", "6.18.44", "7.3.4"]);
    }

    #[test]
    fn the_list_reads_back() {
        let rows = vec![Checked {
            release: "6.1.0-50-amd64".into(),
            line: "6.1".into(),
            date: "2026-11-25".into(),
            settings: "defaults".into(),
            answers: Checked::answers_for(8),
        }];
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(LIST), list_table(&rows).to_text()).unwrap();
        let back = load_list(dir.path()).unwrap();
        assert_eq!(back, rows);
        assert_eq!(back[0].differing(), 8);
        assert_eq!(reference_line(&back), None);
    }
}
