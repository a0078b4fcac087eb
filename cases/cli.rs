//! The `addrinuse` command as a user meets it: output formats, filters,
//! the probe grammar, and exit code 2 with a one-line error for bad input.

#[macro_use]
mod common;

use std::path::Path;
use std::process::{Command, Output};

use addrinuse::report::compare::parse_snapshot;
use libtest_mimic::Arguments;
use serde_json::Value;

fn addrinuse(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_addrinuse"))
        .args(args)
        .output()
        .expect("the addrinuse binary runs")
}

/// `"--proto udp --state bound"` as separate arguments.
fn words(text: &str) -> Vec<&str> {
    text.split_whitespace().collect()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Each line of JSON output, parsed.
fn jsonl(out: &Output) -> Vec<Value> {
    stdout(out)
        .lines()
        .map(|l| serde_json::from_str(l).expect("each line is JSON"))
        .collect()
}

/// Bad input: exit code 2, one line on stderr naming the problem, no panic.
#[track_caller]
fn rejects(args: &[&str], naming: &str) {
    let out = addrinuse(args);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
    assert_eq!(
        err.trim_end().lines().count(),
        1,
        "{args:?}: not one line: {err}"
    );
    assert!(
        err.contains(naming),
        "{args:?}: {err:?} does not name {naming:?}"
    );
    assert!(!err.contains("panicked"), "{args:?}: {err}");
}

/// Every kind of bad input the command meets, and what its message names.
/// (The probe grammar's own rejections are unit tests in harness/probe.rs.)
const REJECTS: &[(&str, &str)] = &[
    ("--bogus", "--bogus"),
    ("--proto sctp", "sctp"),
    ("--state timewait", "timewait"),
    ("--group v5", "v5"),
    ("--holder root", "root"),
    ("--threads 0", "0"),
    ("--proto udp --state time-wait", "no case matches"),
    ("probe", "PROTO"),
    (
        "probe tcp timewait 127.0.0.1 127.0.0.1",
        "unknown state 'timewait'",
    ),
    ("probe tcp bound 10.0.0.1 127.0.0.1", "not allowed"),
    ("explain", "PROTO"),
    (
        "explain udp listening 127.0.0.1 127.0.0.1",
        "does not exist for udp",
    ),
    ("explain tcp bound 10.0.0.1 127.0.0.1", "not allowed"),
    ("compare --snapshots /nonexistent/snapshots", "cannot read"),
    ("restart --wait 601", "601"),
    ("restart --variant nice", "nice"),
    ("runtimes --wait 601", "601"),
    ("runtimes --format jsonl", "jsonl"),
    ("bench --iterations 0", "0"),
    ("--proto udp --save /nonexistent", "takes no filter"),
    ("serve --tcp 10.0.0.1:80", "LOOPBACK_OR_WILDCARD"),
];

fn bad_input_is_one_line_and_exit_code_2() {
    for (args, naming) in REJECTS {
        rejects(&words(args), naming);
    }
    // One quoted word that holds too few words.
    rejects(&["probe", "tcp bound 127.0.0.1"], "expected 4 to 6 words");
    // Control characters in the input do not split the message.
    rejects(&["--state", "time\nwait"], "time?wait");
}

/// What `--help` and a usage error say is the same everywhere: snapshots,
/// reviewed like the tables (the value lists come from the library's
/// tables).
fn help_and_usage_errors_are_as_reviewed() {
    let out = addrinuse(&["--help"]);
    assert_eq!(out.status.code(), Some(0));
    let usage = addrinuse(&["--state", "timewait"]);
    insta::with_settings!({
        snapshot_path => "snapshots-cli",
        prepend_module_to_snapshot => false,
        omit_expression => true,
    }, {
        insta::assert_snapshot!("help", stdout(&out));
        insta::assert_snapshot!("usage-error", stderr(&usage));
    });
}

fn jsonl_has_one_object_per_case_with_the_documented_fields() {
    let out = addrinuse(&words(
        "--format jsonl --proto udp --state bound --group v4 --holder other-process",
    ));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let lines = jsonl(&out);
    // 3 IPv4 addresses squared, 7 option sets squared.
    assert_eq!(lines.len(), 3 * 3 * 7 * 7);
    for v in &lines {
        assert_eq!(v["proto"], "udp");
        assert_eq!(v["state"], "bound");
        assert_eq!(v["holder"], "other-process");
        for side in ["first", "second"] {
            let s = &v[side];
            assert!(
                s["addr"]
                    .as_str()
                    .unwrap()
                    .parse::<std::net::IpAddr>()
                    .is_ok(),
                "{v}"
            );
            assert!(s["v6only"].is_null(), "IPv4 sockets have no v6only: {v}");
            assert!(
                s["reuseaddr"].is_boolean() && s["reuseport"].is_boolean(),
                "{v}"
            );
        }
        let bind = v["bind"].as_str().unwrap();
        assert!(
            bind == "ok"
                || bind == "unsupported"
                || bind == "skipped"
                || bind == "setup-failed"
                || bind == "option-refused"
                || bind.starts_with('E'),
            "{v}"
        );
        assert!(v["listen"].is_null(), "UDP never listens: {v}");
        // Traffic only after a bind that worked; every datagram accounted.
        let delivery = &v["delivery"];
        if !delivery.is_null() {
            assert_eq!(bind, "ok", "{v}");
            let verdict = delivery["verdict"].as_str().unwrap();
            assert!(
                ["first", "second", "both", "none"].contains(&verdict),
                "{v}"
            );
            for p in delivery["probes"].as_array().unwrap() {
                let n = |k: &str| p[k].as_u64().unwrap();
                let round = u64::from(addrinuse::run::delivery::ROUND);
                assert!(n("sent") >= round, "{v}");
                assert_eq!(
                    n("sent"),
                    n("first") + n("second") + n("refused") + n("lost"),
                    "{v}"
                );
            }
        }
    }
    assert!(
        lines.iter().any(|v| !v["delivery"].is_null()),
        "UDP sockets that share 127.0.0.1 get traffic"
    );
    let err = stderr(&out);
    assert!(
        err.contains("cases in") && err.contains(" s on "),
        "timing line missing: {err}"
    );
}

fn tcp_jsonl_reports_listen_only_after_a_successful_bind() {
    let out = addrinuse(&[
        "--format",
        "jsonl",
        "--proto",
        "tcp",
        "--state",
        "listening",
        "--group",
        "v6",
        "--holder",
        "same-process",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    for v in jsonl(&out) {
        assert!(
            v["first"]["v6only"].is_boolean(),
            "IPv6 sockets state v6only: {v}"
        );
        match v["bind"].as_str().unwrap() {
            "ok" => assert!(v["listen"].is_string(), "{v}"),
            _ => assert!(v["listen"].is_null(), "{v}"),
        }
    }
}

/// `probe` answers exactly what the matrix answers for the same case.
fn probe_agrees_with_the_matrix() {
    let matrix = addrinuse(&[
        "--format",
        "jsonl",
        "--proto",
        "tcp",
        "--state",
        "time-wait",
        "--group",
        "v4",
    ]);
    let rows = jsonl(&matrix);
    let row = rows
        .iter()
        .find(|v| {
            v["first"]["addr"] == "0.0.0.0"
                && v["second"]["addr"] == "0.0.0.0"
                && v["first"]["reuseaddr"] == true
                && v["first"]["reuseport"] == false
                && v["second"]["reuseaddr"] == true
                && v["second"]["reuseport"] == false
        })
        .expect("the restart case is in the matrix");
    let out = addrinuse(&[
        "probe",
        "--format",
        "jsonl",
        "tcp",
        "time-wait",
        "0.0.0.0+reuseaddr",
        "0.0.0.0+reuseaddr",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let probe: Value = serde_json::from_str(stdout(&out).trim()).unwrap();
    assert_eq!(probe["bind"], row["bind"]);
    assert_eq!(probe["listen"], row["listen"]);

    let text = addrinuse(&["probe", "tcp time-wait 0.0.0.0+reuseaddr 0.0.0.0+reuseaddr"]);
    assert!(
        stdout(&text).contains(&format!("bind {}", row["bind"].as_str().unwrap())),
        "{}",
        stdout(&text)
    );
}

/// `explain` runs the case here, and shows every platform model's answer
/// and rules, saying which platforms are recorded and which predicted.
fn explain_shows_the_answer_here_and_every_platform() {
    let out = addrinuse(&["explain", "tcp time-wait 0.0.0.0+reuseaddr 0.0.0.0"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.starts_with("tcp time-wait 0.0.0.0+reuseaddr 0.0.0.0\n  this machine ("),
        "{text}"
    );
    // snapshots/linux/ is committed: its cell is shown next to the model's.
    assert!(
        text.contains("  linux      recorded EADDRINUSE, model EADDRINUSE (agrees)"),
        "{text}"
    );
    for platform in ["freebsd", "macos", "windows"] {
        assert!(
            text.lines()
                .any(|l| l.starts_with(&format!("  {platform:<10} predicted "))
                    && l.ends_with("(no record)")
                    || l.contains(" <- here") && l.starts_with(&format!("  {platform}"))),
            "{platform}: {text}"
        );
    }
    assert!(
        text.contains("because: accepted-inherits, time-wait-keeps-options"),
        "{text}"
    );
    assert!(text.contains("\nrules:\n  accepted-inherits: "), "{text}");
}

/// Every takeover `--takeovers` lists is one `probe` calls a takeover too.
fn takeovers_are_cases_probe_confirms() {
    let out = addrinuse(&words(
        "--takeovers --proto udp --state bound --group v4 --holder other-process",
    ));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    if text.starts_with("No port takeovers") {
        // A platform where the first socket keeps its traffic.
        return;
    }
    assert!(text.starts_with("Port takeovers: "), "{text}");
    let listed: Vec<&str> = text.lines().skip(1).collect();
    assert!(!listed.is_empty(), "{text}");
    let case = listed[0].trim().split("  ").next().unwrap();
    let probe = addrinuse(&["probe", case]);
    assert!(
        stdout(&probe).contains("(a port takeover)"),
        "{case}: {}",
        stdout(&probe)
    );
}

fn table_output_starts_with_every_fact_then_the_restart_question() {
    let out = addrinuse(&words(
        "--proto tcp --state time-wait --state established --group v4",
    ));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    let mut lines = text.lines();
    assert!(lines
        .next()
        .unwrap()
        .starts_with("addrinuse: what this machine answers"));
    // The header names exactly the facts the library reports, in order.
    let shown: Vec<String> = lines
        .by_ref()
        .take_while(|l| !l.is_empty())
        .map(|l| l[2..32].trim_end().to_string())
        .collect();
    let facts: Vec<String> = addrinuse::report::header::facts()
        .into_iter()
        .map(|(name, _)| name.to_string())
        .collect();
    assert_eq!(shown, facts);
    let question = text
        .find("Can a restarted TCP server bind")
        .expect("restart summary shown");
    let first_table = text.find("tcp / first socket").expect("tables shown");
    assert!(
        question < first_table,
        "the restart answer comes before the tables"
    );
}

/// The recorded Linux tables the compare fixtures copy: a few of each kind
/// (a compare of all 219 is what docs/platforms.md and CI's CRLF step do).
const FIXTURE_TABLES: &[&str] = &[
    "tcp_time-wait_same-process_v4",
    "tcp_listening_other-user_v4-v6",
    "udp_connected_other-process_v4-mapped",
    "restart",
    "unix-sockets",
];

/// `FIXTURE_TABLES` copied into `snapshots/<os>/` of a temporary folder for
/// each of `oses`, each file's text passed through `edit(os, table, text)`
/// (the real records stay untouched).
fn fixture(oses: &[&str], edit: impl Fn(&str, &str, String) -> String) -> tempfile::TempDir {
    let recorded = Path::new(env!("CARGO_MANIFEST_DIR")).join("snapshots/linux");
    let tmp = tempfile::tempdir().unwrap();
    for os in oses {
        let dir = tmp.path().join("snapshots").join(os);
        std::fs::create_dir_all(&dir).unwrap();
        for table in FIXTURE_TABLES {
            let file = format!("{table}.snap");
            let text = std::fs::read_to_string(recorded.join(&file)).unwrap();
            std::fs::write(dir.join(file), edit(os, table, text)).unwrap();
        }
    }
    tmp
}

/// The fixture as linux and a second, made-up platform "otheros" where one
/// cell of one row is changed: the compare view's test. It reads and
/// writes the tables with the library's own `Table`.
fn two_platforms(changed_table: &str, changed_row: (&str, &str)) -> tempfile::TempDir {
    fixture(&["linux", "otheros"], |os, table, text| {
        if os != "otheros" || table != changed_table {
            return text;
        }
        let mut parsed = parse_snapshot(table, &text).unwrap();
        let row = (parsed.rows.iter_mut())
            .find(|r| r[0] == changed_row.0 && r[1] == changed_row.1)
            .expect("row exists");
        row[2] = "CHANGED".into();
        format!("---\nsource: a test fixture\n---\n{}", parsed.to_text())
    })
}

fn compare_shows_exactly_the_cells_that_differ() {
    let tmp = two_platforms(
        "tcp_time-wait_same-process_v4",
        ("0.0.0.0 -> 0.0.0.0", "none"),
    );
    let dir = tmp.path().join("snapshots");
    let out = addrinuse(&[
        "compare",
        "--snapshots",
        dir.to_str().unwrap(),
        "--format",
        "jsonl",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let lines: Vec<Value> = stdout(&out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 1, "{lines:?}");
    let d = &lines[0];
    assert_eq!(d["table"], "tcp_time-wait_same-process_v4");
    assert_eq!(d["pair"], "0.0.0.0 -> 0.0.0.0");
    assert_eq!(d["first_options"], "none");
    assert_eq!(d["second_options"], "none");
    assert_eq!(d["answers"]["otheros"], "CHANGED");
    assert_ne!(d["answers"]["linux"], "CHANGED");

    let text = stdout(&addrinuse(&[
        "compare",
        "--snapshots",
        dir.to_str().unwrap(),
    ]));
    assert!(
        text.contains("cells that differ between platforms: 1"),
        "{text}"
    );
    assert!(
        text.contains("no record yet: macos, windows, freebsd"),
        "{text}"
    );
}

fn compare_with_one_platform_names_those_not_recorded() {
    let out = addrinuse(&["compare"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("recorded: linux"), "{text}");
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for os in ["macos", "windows", "freebsd"] {
        if !root.join("snapshots").join(os).is_dir() {
            assert!(
                text.contains("no record yet:") && text.contains(os),
                "{text}"
            );
        }
    }
}

/// docs/platforms.md is the markdown compare view of the committed records:
/// regenerate it with `cargo run -- compare --format markdown > docs/platforms.md`.
fn platforms_page_matches_the_records() {
    let out = addrinuse(&["compare", "--format", "markdown"]);
    let page = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/platforms.md");
    let committed = std::fs::read_to_string(&page).unwrap_or_default();
    assert!(
        committed == stdout(&out),
        "docs/platforms.md is stale: run `cargo run -- compare --format markdown > docs/platforms.md`"
    );
}

/// The restart story live: a timeline in order, ending with the new
/// server's answer, which is the one this platform's restart table holds.
fn restart_prints_a_timeline() {
    let out = addrinuse(&["restart", "--variant", "graceful"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    let steps = [
        "old server listening",
        "clients connected",
        "old server closed its connections",
        "clients saw the end of the stream and closed",
        "old server exited",
        "old connections, server side",
        "new server (none): bind/listen ",
    ];
    let mut at = 0;
    for step in steps {
        let found = text[at..]
            .find(step)
            .unwrap_or_else(|| panic!("timeline lacks {step:?} after byte {at}:\n{text}"));
        at += found + step.len();
    }
    let answer = text[at..].lines().next().unwrap_or_default();
    let snapshot = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("snapshots")
        .join(addrinuse::platform::OS)
        .join("restart.snap");
    if let Ok(recorded) = std::fs::read_to_string(snapshot) {
        let table = parse_snapshot("restart", &recorded).unwrap();
        let row = table
            .rows
            .iter()
            .find(|r| r[0] == "graceful" && r[1] == "none")
            .expect("the recorded table has the row");
        assert_eq!(answer, row[3], "{text}");
    }
}

/// A runtime that is not used is a `skipped` row with its reason, counted
/// in the summary: never silently absent.
fn runtimes_not_used_are_skipped_with_the_reason() {
    use addrinuse::stories::runtimes::{rows, Runtime, SKIP_VAR};
    let all: Vec<&str> = Runtime::ALL.iter().map(|r| r.name()).collect();
    let out = Command::new(env!("CARGO_BIN_EXE_addrinuse"))
        .arg("runtimes")
        .env(SKIP_VAR, all.join(","))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    for row in rows() {
        let line = text
            .lines()
            .find(|l| l.starts_with(&format!("{}  ", row.name())))
            .unwrap_or_else(|| panic!("{} is missing:\n{text}", row.name()));
        assert!(line.contains("skipped"), "{line}");
        let reason = format!(
            "{}: skipped: {} is listed in {SKIP_VAR}",
            row.name(),
            row.new.runtime.name()
        );
        assert!(
            text.contains(&reason),
            "no reason for {}:\n{text}",
            row.name()
        );
    }
    let summary = format!("0 rows ran, {} skipped, 0 setup-failed", rows().len());
    assert!(stderr(&out).contains(&summary), "{}", stderr(&out));
}

/// Without root, other-user cases are skipped with the reason, never run
/// as the same user. Needs root and `setpriv` to start the command as an
/// unprivileged user.
#[cfg(target_os = "linux")]
fn other_user_cases_are_skipped_without_root(
) -> Result<libtest_mimic::Completion, libtest_mimic::Failed> {
    let setpriv = Path::new("/usr/bin/setpriv");
    let missing = (!addrinuse::platform::privileged() || !setpriv.exists())
        .then(|| "needs root and /usr/bin/setpriv".to_string());
    if let Some(skipped) = common::skip_for(missing) {
        return skipped;
    }
    let out = Command::new(setpriv)
        .args([
            "--reuid=nobody",
            "--regid=nogroup",
            "--clear-groups",
            env!("CARGO_BIN_EXE_addrinuse"),
        ])
        .args(words(
            "--format jsonl --holder other-user --proto udp --state bound --group v4",
        ))
        .current_dir(std::env::temp_dir())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let lines = jsonl(&out);
    assert!(!lines.is_empty());
    for v in lines {
        assert!(v["bind"] == "skipped" || v["bind"] == "unsupported", "{v}");
        let reason = v["reason"].as_str().unwrap();
        assert!(
            reason.contains("root") || reason.contains("does not exist"),
            "{v}"
        );
    }
    Ok(libtest_mimic::Completion::Completed)
}

/// `addrinuse | head -1`: a reader that goes away early ends the command
/// quietly, without a panic.
fn a_closed_stdout_is_not_a_panic() {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;
    let mut child = Command::new(env!("CARGO_BIN_EXE_addrinuse"))
        // About 220 KB of output: three times what a pipe holds, so the
        // writes after the reader left do fail.
        .args(words(
            "--format jsonl --proto udp --state bound --holder same-process --group v4",
        ))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    assert!(first.starts_with('{'), "{first}");
    // The reader is gone now (dropped above).
    let out = child.wait_with_output().unwrap();
    let err = stderr(&out);
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(out.status.code(), Some(0), "{err}");
}

/// A Windows checkout with `core.autocrlf` turns every snapshot into CRLF:
/// compare reads it like the LF original (no difference at all).
fn compare_reads_a_crlf_checkout() {
    let tmp = fixture(&["linux", "otheros"], |os, _, text| match os {
        "otheros" => text.replace('\n', "\r\n"),
        _ => text,
    });
    let dir = tmp.path().join("snapshots");
    let out = addrinuse(&["compare", "--snapshots", dir.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.contains("cells that differ between platforms: 0"),
        "{text}"
    );
}

/// Plain functions listed here, not `#[test]`s: this binary has its own
/// harness (libtest-mimic), so that a test a machine cannot run is counted
/// as ignored, with its reason, in the summary.
fn main() {
    let args = Arguments::from_args();
    #[allow(unused_mut)]
    let mut trials = trials![
        bad_input_is_one_line_and_exit_code_2,
        help_and_usage_errors_are_as_reviewed,
        jsonl_has_one_object_per_case_with_the_documented_fields,
        tcp_jsonl_reports_listen_only_after_a_successful_bind,
        probe_agrees_with_the_matrix,
        explain_shows_the_answer_here_and_every_platform,
        takeovers_are_cases_probe_confirms,
        table_output_starts_with_every_fact_then_the_restart_question,
        compare_shows_exactly_the_cells_that_differ,
        compare_with_one_platform_names_those_not_recorded,
        platforms_page_matches_the_records,
        restart_prints_a_timeline,
        runtimes_not_used_are_skipped_with_the_reason,
        a_closed_stdout_is_not_a_panic,
        compare_reads_a_crlf_checkout,
        no_test_is_silently_dropped,
    ];
    #[cfg(target_os = "linux")]
    trials.push(libtest_mimic::Trial::ignorable_test(
        "other_user_cases_are_skipped_without_root",
        other_user_cases_are_skipped_without_root,
    ));
    libtest_mimic::run(&args, trials).exit();
}

/// With `harness = false`, a `#[test]` function would compile to nothing
/// and never run: every test is listed in `main` instead.
fn no_test_is_silently_dropped() {
    for file in ["cases/cli.rs", "cases/properties.rs", "cases/model.rs"] {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(file);
        let text = std::fs::read_to_string(&path).unwrap();
        let dropped = text.lines().any(|line| line.trim() == "#[test]");
        assert!(!dropped, "{file} has a #[test] function that never runs");
    }
}
