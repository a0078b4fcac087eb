//! The whole matrix on this OS, compared with `snapshots/<os>/`: one test
//! per recorded table, generated from the library's own list, so a new
//! state or group needs no edit here.
//!
//! Linux kernel lines: `snapshots/linux/` is the reference, and a kernel
//! line that answers differently (`snapshots/linux-kernels.txt` says which
//! line the reference holds) keeps only its differing tables in
//! `snapshots/linux-<major.minor>/`. A table is compared with its kernel
//! line's snapshot where there is one, else with the reference; a new
//! difference leaves its pending snapshot in the line's folder.
//!
//! The tables come from one saved run of the whole suite: made here, when
//! the first table asks, by the `addrinuse` binary exactly as the kernel
//! lab's guest runs it (`--format jsonl --save DIR`); or, with
//! `ADDRINUSE_LAB_RUN=DIR`, a kernel lab run, compared for that run's
//! kernel: this is how `lab/record` checks and records kernels
//! (`ADDRINUSE_LAB_RECORD=line|reference`, lab/README.md). The runtimes
//! table, which a saved run leaves out, runs in this process.
//!
//! A table this machine cannot run (no IPv6, no 127.0.0.2, not root) is
//! reported as ignored with its reason, and counted in the summary; with
//! CI set it fails instead.

mod common;

use std::collections::BTreeSet;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::thread;
use std::time::Duration;

use addrinuse::platform::{self, OS};
use addrinuse::report::compare::parse_snapshot;
use addrinuse::report::lab::{self, Checked, SavedRun};
use addrinuse::report::{Recorded, Table};
use addrinuse::scenario::{self, Selection};
use addrinuse::stories::runtimes;
use addrinuse::{run, spawn};
use libtest_mimic::{Arguments, Completion, Failed, Trial};

fn snapshots() -> PathBuf {
    // Absolute, so that INSTA_PENDING_DIR can mirror it (no `..`).
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("snapshots")
}

/// The reference record of this OS: `snapshots/<os>/`.
fn snapshot_dir() -> PathBuf {
    snapshots().join(OS)
}

/// The kernel lab run whose tables are checked instead of running them.
fn lab_run() -> Option<&'static SavedRun> {
    static RUN: OnceLock<Option<SavedRun>> = OnceLock::new();
    RUN.get_or_init(|| {
        let dir = std::env::var_os("ADDRINUSE_LAB_RUN")?;
        match SavedRun::open(Path::new(&dir)) {
            Ok(run) => Some(run),
            Err(e) => {
                eprintln!("ADDRINUSE_LAB_RUN: {e}");
                std::process::exit(2);
            }
        }
    })
    .as_ref()
}

/// The whole suite, run once on this machine by the `addrinuse` binary as
/// the kernel lab's guest runs it: its saved tables, and how many JSON
/// lines it printed.
struct Here {
    run: SavedRun,
    jsonl_lines: usize,
}

/// The longest the whole suite may take here (it takes seconds).
const WHOLE_RUN_LIMIT: Duration = Duration::from_secs(15 * 60);

/// Where `Here` saves its run; removed when the tests end.
static HERE_DIR: OnceLock<tempfile::TempDir> = OnceLock::new();

/// This machine's run, made when the first table asks for it.
fn here() -> Result<&'static Here, Failed> {
    static HERE: OnceLock<Result<Here, String>> = OnceLock::new();
    HERE.get_or_init(|| {
        // The restart story in it times the old connections: not while the
        // runtimes story starts JVMs on the same cores.
        let _turn = timed_story();
        let dir = tempfile::tempdir().map_err(|e| format!("a temporary folder: {e}"))?;
        let saved = dir.path().join("saved");
        let mut command = Command::new(env!("CARGO_BIN_EXE_addrinuse"));
        command
            .args(["--format", "jsonl", "--save"])
            .arg(&saved)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = spawn::start(&mut command).map_err(|e| format!("addrinuse: {e}"))?;
        let stdout = child.stdout.take().expect("piped");
        let stderr = child.stderr.take().expect("piped");
        let lines = thread::spawn(move || newlines(stdout));
        let said = thread::spawn(move || io::read_to_string(stderr).unwrap_or_default());
        let status = spawn::wait_for(&mut child, WHOLE_RUN_LIMIT)
            .map_err(|e| format!("addrinuse --save: {e}"))?;
        let (jsonl_lines, said) = (lines.join().unwrap_or(0), said.join().unwrap_or_default());
        if !status.success() {
            return Err(format!("addrinuse --save failed ({status}): {said}"));
        }
        let run = SavedRun::open(&saved)?;
        let _ = HERE_DIR.set(dir);
        Ok(Here { run, jsonl_lines })
    })
    .as_ref()
    .map_err(|e| Failed::from(e.clone()))
}

/// How many lines `reader` gives (counted as bytes: 60 MB of JSON).
fn newlines(mut reader: impl Read) -> usize {
    let mut buf = vec![0u8; 1 << 16];
    let mut count = 0;
    loop {
        match reader.read(&mut buf) {
            Ok(0) => return count,
            Ok(n) => count += buf[..n].iter().filter(|&&b| b == b'\n').count(),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            // A short count fails the check that reads it.
            Err(_) => return count,
        }
    }
}

/// What lab/record asked for: `line` records a kernel line's differing
/// tables, `reference` re-records `snapshots/linux/` from the run.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Recording {
    No,
    Line,
    Reference,
}

fn recording() -> Recording {
    match std::env::var("ADDRINUSE_LAB_RECORD").as_deref() {
        Ok("line") => Recording::Line,
        Ok("reference") => Recording::Reference,
        Ok("") | Err(_) => Recording::No,
        Ok(other) => {
            eprintln!("ADDRINUSE_LAB_RECORD is line or reference, not {other:?}");
            std::process::exit(2);
        }
    }
}

/// `uname -r` of the kernel whose answers are checked.
fn release() -> String {
    match lab_run() {
        Some(run) => run.release(),
        None => platform::facts()
            .into_iter()
            .find(|(name, _)| *name == "kernel")
            .map(|(_, k)| k.split_once(' ').map_or(k.as_str(), |(_, r)| r).to_string())
            .unwrap_or_default(),
    }
}

/// This kernel's line when it is not the line the reference holds (Linux
/// only; without a reference row in the list every kernel is compared
/// with the reference).
fn kernel_line() -> Option<String> {
    if OS != "linux" || recording() == Recording::Reference {
        return None;
    }
    let line = lab::line(&release())?;
    let list = lab::load_list(&snapshots()).ok()?;
    match lab::reference_line(&list) {
        Some(reference) if reference != line => Some(line),
        _ => None,
    }
}

/// The reference's table `name` in the text form, if recorded.
fn reference_text(dir: &Path, name: &str) -> Option<String> {
    let text = std::fs::read_to_string(dir.join(format!("{name}.snap"))).ok()?;
    parse_snapshot(name, &text).ok().map(|t| t.to_text())
}

/// Where `name` is compared: the kernel line's folder when it holds the
/// table, or when the table differs from the reference (a new difference
/// leaves its pending snapshot there); else the reference.
fn record_dir(name: &str, table: &str) -> Result<PathBuf, Failed> {
    let Some(line) = kernel_line() else {
        if recording() == Recording::Line
            && reference_text(&snapshot_dir(), name).as_deref() != Some(table)
        {
            return Err(format!(
                "kernel {} is of the reference's line (or the list names no reference) \
                 and differs from snapshots/{OS}/: a line has one record \
                 (lab/record --reference re-records the reference)",
                release()
            )
            .into());
        }
        return Ok(snapshot_dir());
    };
    let line_dir = snapshots().join(lab::line_folder(OS, &line));
    let file = line_dir.join(format!("{name}.snap"));
    let same = reference_text(&snapshot_dir(), name).as_deref() == Some(table);
    if recording() == Recording::Line && same {
        // The line answers this table as the reference does now.
        if file.exists() {
            std::fs::remove_file(&file).map_err(|e| format!("{}: {e}", file.display()))?;
        }
        return Ok(snapshot_dir());
    }
    if file.exists() || !same {
        Ok(line_dir)
    } else {
        Ok(snapshot_dir())
    }
}

/// Compare `table` with `<dir>/<name>.snap`.
fn assert_recorded(dir: &Path, name: &str, table: &str) {
    let folder = dir.file_name().unwrap_or_default().to_string_lossy();
    let assert = || {
        insta::with_settings!({
            snapshot_path => dir,
            prepend_module_to_snapshot => false,
            omit_expression => true,
            description => format!("{name} as recorded on {folder}"),
        }, {
            insta::assert_snapshot!(name.to_string(), table);
        })
    };
    if snapshot_dir().is_dir() {
        assert();
    } else {
        // No record for this platform yet: `platform_is_recorded` fails once
        // with instructions; each table only leaves its pending snapshot.
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(assert));
    }
}

/// The restart story records the old connections as a restart meets them,
/// within the clients' delayed ACK (about 40 ms): it must not run while
/// the runtimes story builds programs and starts JVMs on the same cores.
fn timed_story() -> MutexGuard<'static, ()> {
    static TURN: Mutex<()> = Mutex::new(());
    TURN.lock().unwrap_or_else(|e| e.into_inner())
}

/// One recorded table of this machine: the runtimes table runs here, the
/// others come from the whole suite's run (`here`). `Err` ends its test
/// early: skipped for want of a capability, or failed.
fn run_here(recorded: Recorded) -> Result<Table, Result<Completion, Failed>> {
    match recorded {
        Recorded::Matrix(key) => {
            let cases = Selection::table(&key).cases();
            if cases.is_empty() {
                return Err(Err(format!("{} has no cases", key.name()).into()));
            }
            if let Some(skipped) = common::skip_for(common::lacks(&cases)) {
                return Err(skipped);
            }
        }
        Recorded::Runtimes => return runtimes_here(),
        Recorded::Restart | Recorded::UnixSockets => {}
    }
    let table = here().and_then(|here| Ok(here.run.table(&recorded)?));
    table.map_err(Err)
}

/// The runtimes story, run in this process (a saved run has no runtimes
/// table).
fn runtimes_here() -> Result<Table, Result<Completion, Failed>> {
    let fail = |why: String| Err(Err(Failed::from(why)));
    // A runtime that is missing is known at once: no story runs.
    let absent = runtimes::absent();
    if !absent.is_empty() {
        let why = absent.join("; ");
        if common::in_ci() {
            return fail(format!("this CI machine lacks a runtime: {why}"));
        }
        return Err(Ok(Completion::ignored_with(why)));
    }
    let stories = {
        let _turn = timed_story();
        runtimes::run_all(&mut |_| {})
    };
    // A runtime left out on purpose (ADDRINUSE_SKIP_RUNTIMES) is a
    // `skipped` row of the record; a missing one is a capability.
    let missing = runtimes::missing(&stories);
    if !missing.is_empty() {
        let why = missing.join("; ");
        if common::in_ci() {
            return fail(format!("this CI machine lacks a runtime: {why}"));
        }
        return Err(Ok(Completion::ignored_with(why)));
    }
    // The runtimes table and the matrix never contradict each other.
    let (compared, contradictions) = runtimes::contradictions(&stories);
    if !contradictions.is_empty() {
        return fail(contradictions.join("\n"));
    }
    if compared == 0 {
        return fail("no runtime's sockets could be mapped to matrix cases".into());
    }
    Ok(runtimes::table(&stories, false))
}

/// Run one recorded table (or read it from the lab run) and compare it
/// with its snapshot.
fn check(recorded: Recorded) -> Result<Completion, Failed> {
    let table = match lab_run() {
        // The lab's guest runs no language runtimes (lab/README.md).
        Some(run) if !run.has(&recorded) => {
            return Ok(Completion::ignored_with(format!(
                "{} is not in the lab run",
                recorded.name()
            )))
        }
        Some(run) => run.table(&recorded)?,
        None => match run_here(recorded) {
            Ok(table) => table,
            Err(done) => return done,
        },
    };
    let (name, text) = (recorded.name(), table.to_text());
    let dir = record_dir(&name, &text)?;
    assert_recorded(&dir, &name, &text);
    Ok(Completion::Completed)
}

/// lab/record: put the lab run's kernel in `snapshots/linux-kernels.txt`,
/// with how many of its tables differ from the reference.
fn list_kernel() -> Result<(), Failed> {
    let run = lab_run().ok_or("no ADDRINUSE_LAB_RUN")?;
    let release = run.release();
    let line = lab::line(&release).ok_or_else(|| format!("no kernel line in {release:?}"))?;
    let answers = if recording() == Recording::Reference {
        lab::REFERENCE.to_string()
    } else {
        let mut differing = 0;
        for recorded in Recorded::all().into_iter().filter(|r| run.has(r)) {
            let text = run.table(&recorded)?.to_text();
            if reference_text(&snapshot_dir(), &recorded.name()).as_deref() != Some(&text) {
                differing += 1;
            }
        }
        Checked::answers_for(differing)
    };
    let settings = match run.fact(lab::SETTINGS_FACT) {
        Some("none") => "defaults".to_string(),
        Some(changed) => changed.to_string(),
        None => "unknown".to_string(),
    };
    let row = Checked {
        release,
        line,
        date: lab::today(),
        settings,
        answers,
    };
    lab::update_list(&snapshots(), row).map_err(Failed::from)
}

/// The kernel lab's `--save DIR`, as this machine's run made it: every
/// recorded table but the runtimes one (a lab guest has no runtimes), the
/// facts lab/record reads back, and one JSON line per case on stdout.
fn a_saved_run_holds_every_table() -> Result<(), Failed> {
    let here = here()?;
    let mut problems = Vec::new();
    for fact in ["kernel", lab::SETTINGS_FACT] {
        if here.run.fact(fact).is_none() {
            problems.push(format!("no fact {fact:?}"));
        }
    }
    for recorded in Recorded::all() {
        let wanted = recorded != Recorded::Runtimes;
        if here.run.has(&recorded) != wanted {
            problems.push(format!("{}: saved {}", recorded.name(), !wanted));
        }
    }
    let cases = scenario::matrix().len();
    if here.jsonl_lines != cases {
        problems.push(format!("{} JSON lines for {cases} cases", here.jsonl_lines));
    }
    if problems.is_empty() {
        return Ok(());
    }
    Err(problems.join("; ").into())
}

/// One clear failure for a platform nobody has recorded yet, instead of
/// one opaque assertion per table.
fn platform_is_recorded() -> Result<(), Failed> {
    if snapshot_dir().is_dir() {
        return Ok(());
    }
    Err(format!(
        "no snapshots are recorded for {OS} yet (snapshots/{OS}/ is missing).\n\
         A platform is recorded from a real run on it (README, 'Recording a platform'): \
         push a branch so that CI runs it, download the artifact pending-snapshots-<runner> \
         into pending/, `cp -r pending/snapshots/. snapshots/`, review every table with \
         `cargo insta review`, refresh docs/platforms.md with \
         `cargo run -- compare --format markdown > docs/platforms.md`, then commit \
         snapshots/{OS}/. On a machine of your own, `cargo test` leaves the same \
         .snap.new files next to the snapshots."
    )
    .into())
}

/// The `.snap` file names in `dir`.
fn snap_files(dir: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut names: Vec<String> = entries
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".snap"))
        .collect();
    names.sort();
    names
}

/// The kernel line folders: (folder name, line).
fn line_folders() -> Vec<(String, String)> {
    let Ok(entries) = std::fs::read_dir(snapshots()) else {
        return Vec::new();
    };
    let mut out: Vec<(String, String)> = entries
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_dir())
        .filter_map(|e| {
            let folder = e.file_name().to_string_lossy().into_owned();
            let (os, line) = lab::folder_line(&folder)?;
            (os == OS).then(|| (folder.clone(), line.to_string()))
        })
        .collect();
    out.sort();
    out
}

/// Every snapshot in this OS's folder, and in its kernel lines' folders,
/// belongs to a recorded table: a file no test compares against is
/// stale. A kernel line's table must differ from the reference.
fn no_stale_snapshots() -> Result<(), Failed> {
    let expected: BTreeSet<String> = Recorded::all()
        .iter()
        .map(|r| format!("{}.snap", r.name()))
        .collect();
    let mut stale: Vec<String> = snap_files(&snapshot_dir())
        .into_iter()
        .filter(|name| !expected.contains(name))
        .map(|name| format!("{OS}/{name}"))
        .collect();
    for (folder, _) in line_folders() {
        for file in snap_files(&snapshots().join(&folder)) {
            let name = file.trim_end_matches(".snap");
            if !expected.contains(&file) {
                stale.push(format!("{folder}/{file}"));
                continue;
            }
            let text = std::fs::read_to_string(snapshots().join(&folder).join(&file))?;
            let table = parse_snapshot(name, &text).map_err(|e| format!("{folder}/{file}: {e}"))?;
            if reference_text(&snapshot_dir(), name) == Some(table.to_text()) {
                stale.push(format!("{folder}/{file} (the same as the reference)"));
            }
        }
    }
    if stale.is_empty() {
        return Ok(());
    }
    Err(
        format!("snapshots no test needs (delete them, or re-record with lab/record): {stale:?}")
            .into(),
    )
}

/// The list of kernels checked agrees with the kernel line folders: every
/// folder's line is listed, and every listed kernel of a line says as many
/// differing tables as its folder holds (none: "same as reference").
fn kernel_lines_match_the_list() -> Result<(), Failed> {
    let list = lab::load_list(&snapshots())?;
    let reference = lab::reference_line(&list);
    let mut problems = Vec::new();
    for (folder, line) in line_folders() {
        if !list.iter().any(|c| c.line == line) {
            problems.push(format!(
                "snapshots/{folder}/ has no kernel in {}",
                lab::LIST
            ));
        }
        if Some(line.as_str()) == reference {
            problems.push(format!(
                "snapshots/{folder}/ is the reference's own line (snapshots/{OS}/)"
            ));
        }
    }
    if OS == "linux" {
        for c in list.iter().filter(|c| c.answers != lab::REFERENCE) {
            let files = snap_files(&snapshots().join(lab::line_folder(OS, &c.line))).len();
            if c.differing() != files {
                problems.push(format!(
                    "{} ({}) {}, but snapshots/{}/ holds {files} tables",
                    c.release,
                    c.date,
                    c.answers,
                    lab::line_folder(OS, &c.line)
                ));
            }
        }
    }
    if problems.is_empty() {
        return Ok(());
    }
    Err(format!(
        "{} and the kernel line folders disagree (re-record with lab/record):\n  {}",
        lab::LIST,
        problems.join("\n  ")
    )
    .into())
}

/// Every case of the matrix lands in a recorded table.
fn every_case_has_a_table() -> Result<(), Failed> {
    let tables: BTreeSet<String> = Recorded::all().iter().map(Recorded::name).collect();
    match scenario::matrix()
        .iter()
        .find(|c| !tables.contains(&c.table().name()))
    {
        Some(case) => Err(format!("no recorded table holds {case:?}").into()),
        None => Ok(()),
    }
}

/// The runtimes table's check against the matrix does catch a row that
/// says the opposite of its matrix cases: a program listening on 0.0.0.0
/// without any option, whose second instance "started".
fn runtimes_contradictions_are_caught() -> Result<(), Failed> {
    use addrinuse::platform::ListenerOptions;
    use addrinuse::stories::runtimes::{Answer, Ran, Second, Story};
    let plain = ListenerOptions {
        addr: "0.0.0.0:1".parse().expect("an address"),
        reuseaddr: Some(false),
        reuseport: Some(false),
        v6only: None,
        exclusive: Some(false),
    };
    let ran = Ran {
        version: String::new(),
        old: vec![plain.clone()],
        new: vec![plain],
        disagreements: Vec::new(),
        outside: true,
        hard_kill: Ok(()),
        graceful: Ok(()),
        second: Second::Started {
            first: 6,
            second: 6,
        },
    };
    let story = Story {
        row: runtimes::rows()[0],
        answer: Answer::Ran(Box::new(ran)),
    };
    let (compared, found) = runtimes::contradictions(&[story]);
    if compared == 1 && found.iter().any(|line| line.contains("second instance")) {
        return Ok(());
    }
    Err(format!("not caught (compared {compared}): {found:?}").into())
}

fn main() {
    // Before any thread: the tables run in a network of their own (root).
    if lab_run().is_none() {
        run::isolate();
    }
    common::init();
    // Tables run side by side. Nothing in this process may start a child
    // outside the spawn lock while cases run: insta would, to find the
    // workspace, unless INSTA_WORKSPACE_ROOT is set (.cargo/config.toml).
    let args = Arguments::from_args();
    let mut trials = if recording() == Recording::No {
        vec![
            Trial::test("platform_is_recorded", platform_is_recorded),
            Trial::test("no_stale_snapshots", no_stale_snapshots),
            Trial::test("every_case_has_a_table", every_case_has_a_table),
            Trial::test("kernel_lines_match_the_list", kernel_lines_match_the_list),
            Trial::test(
                "runtimes_contradictions_are_caught",
                runtimes_contradictions_are_caught,
            ),
        ]
    } else {
        // Recording writes the folders and the list these tests read:
        // lab/record checks them in a run of its own afterwards.
        if lab_run().is_none() {
            eprintln!("ADDRINUSE_LAB_RECORD needs ADDRINUSE_LAB_RUN (lab/record sets both)");
            std::process::exit(2);
        }
        vec![Trial::test("list_kernel", list_kernel)]
    };
    if lab_run().is_none() {
        trials.push(Trial::test(
            "a_saved_run_holds_every_table",
            a_saved_run_holds_every_table,
        ));
    }
    trials.extend(Recorded::all().into_iter().map(|recorded| {
        Trial::ignorable_test(format!("table::{}", recorded.name()), move || {
            check(recorded)
        })
    }));
    let conclusion = libtest_mimic::run(&args, trials);
    if let Some(dir) = HERE_DIR.get() {
        let _ = std::fs::remove_dir_all(dir.path());
    }
    conclusion.exit();
}
