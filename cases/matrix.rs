//! The whole matrix on this OS, compared with `snapshots/<os>/`: one test
//! per recorded table, generated from the library's own list, so a new
//! state or group needs no edit here.
//!
//! A table this machine cannot run (no IPv6, no 127.0.0.2, not root) is
//! reported as ignored with its reason, and counted in the summary; with
//! CI set it fails instead.

mod common;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard};

use addrinuse::platform::OS;
use addrinuse::report::{matrix, Recorded};
use addrinuse::run;
use addrinuse::scenario::{self, Selection};
use addrinuse::stories::{restart, runtimes, unix_sockets};
use libtest_mimic::{Arguments, Completion, Failed, Trial};

fn snapshot_dir() -> PathBuf {
    // Absolute, so that INSTA_PENDING_DIR can mirror it (no `..`).
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("snapshots")
        .join(OS)
}

/// Compare `table` with `snapshots/<os>/<name>.snap`.
fn assert_recorded(name: &str, table: &str) {
    let assert = || {
        insta::with_settings!({
            snapshot_path => snapshot_dir(),
            prepend_module_to_snapshot => false,
            omit_expression => true,
            description => format!("{name} as recorded on {OS}"),
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

/// Run one recorded table and compare it with its snapshot.
fn check(recorded: Recorded) -> Result<Completion, Failed> {
    let table = match recorded {
        Recorded::Matrix(key) => {
            let cases = Selection::table(&key).cases();
            if cases.is_empty() {
                return Err(format!("{} has no cases", key.name()).into());
            }
            if let Some(skipped) = common::skip_for(common::lacks(&cases)) {
                return skipped;
            }
            let records = run::run_all(&cases, run::default_threads(), &|_| {});
            let rows: Vec<_> = records.iter().collect();
            matrix::table(&key, &rows)
        }
        Recorded::Restart => {
            let _turn = timed_story();
            restart::table(&restart::all_stories())
        }
        Recorded::UnixSockets => unix_sockets::table(&unix_sockets::run_all()),
        Recorded::Runtimes => {
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
                    return Err(format!("this CI machine lacks a runtime: {why}").into());
                }
                return Ok(Completion::ignored_with(why));
            }
            // The runtimes table and the matrix never contradict each other.
            let (compared, contradictions) = runtimes::contradictions(&stories);
            if !contradictions.is_empty() {
                return Err(contradictions.join("\n").into());
            }
            if compared == 0 {
                return Err("no runtime's sockets could be mapped to matrix cases".into());
            }
            runtimes::table(&stories, false)
        }
    };
    assert_recorded(&recorded.name(), &table.to_text());
    Ok(Completion::Completed)
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

/// Every snapshot in this OS's folder belongs to a recorded table: a file
/// no test compares against is stale.
fn no_stale_snapshots() -> Result<(), Failed> {
    let Ok(dir) = std::fs::read_dir(snapshot_dir()) else {
        return Ok(()); // platform_is_recorded reports the missing folder
    };
    let expected: BTreeSet<String> = Recorded::all()
        .iter()
        .map(|r| format!("{}.snap", r.name()))
        .collect();
    let stale: Vec<String> = dir
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".snap") && !expected.contains(name))
        .collect();
    if stale.is_empty() {
        return Ok(());
    }
    Err(
        format!("snapshots/{OS}/ holds snapshots no test references (delete them): {stale:?}")
            .into(),
    )
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
    run::isolate();
    common::init();
    // Tables run side by side. Nothing in this process may start a child
    // outside the spawn lock while cases run: insta would, to find the
    // workspace, unless INSTA_WORKSPACE_ROOT is set (.cargo/config.toml).
    let args = Arguments::from_args();
    let mut trials = vec![
        Trial::test("platform_is_recorded", platform_is_recorded),
        Trial::test("no_stale_snapshots", no_stale_snapshots),
        Trial::test("every_case_has_a_table", every_case_has_a_table),
        Trial::test(
            "runtimes_contradictions_are_caught",
            runtimes_contradictions_are_caught,
        ),
    ];
    trials.extend(Recorded::all().into_iter().map(|recorded| {
        Trial::ignorable_test(format!("table::{}", recorded.name()), move || {
            check(recorded)
        })
    }));
    libtest_mimic::run(&args, trials).exit();
}
