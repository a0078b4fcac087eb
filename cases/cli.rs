//! The `addrinuse` command as a user meets it: output formats, filters,
//! the probe grammar, and exit code 2 with a one-line error for bad input.

use std::process::{Command, Output};

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

#[test]
fn bad_input_is_one_line_and_exit_code_2() {
    rejects(&["--bogus"], "--bogus");
    rejects(&["--proto", "sctp"], "sctp");
    rejects(&["--state", "timewait"], "timewait");
    rejects(&["--threads", "0"], "0");
    rejects(
        &["--proto", "udp", "--state", "time-wait"],
        "no case matches",
    );
    rejects(&["probe"], "PROTO");
    rejects(
        &["probe", "tcp", "timewait", "127.0.0.1", "127.0.0.1"],
        "unknown state 'timewait'",
    );
    rejects(&["probe", "tcp bound 127.0.0.1"], "expected 4 or 5 words");
    rejects(
        &[
            "probe",
            "tcp",
            "bound",
            "::ffff:127.0.0.1/v6only",
            "127.0.0.1",
        ],
        "v4-mapped",
    );
    rejects(
        &["probe", "tcp", "bound", "::1", "::1/dual"],
        "/v6only or /dual",
    );
    rejects(
        &["probe", "tcp", "bound", "127.0.0.1/dual", "::1/dual"],
        "IPv6 addresses only",
    );
    rejects(
        &["probe", "tcp", "bound", "10.0.0.1", "127.0.0.1"],
        "not allowed",
    );
    rejects(
        &["probe", "tcp", "bound", "127.0.0.1+reuse", "127.0.0.1"],
        "unknown option 'reuse'",
    );
    rejects(
        &["probe", "udp", "listening", "127.0.0.1", "127.0.0.1"],
        "does not exist for udp",
    );
}

#[test]
fn jsonl_has_one_object_per_case_with_the_documented_fields() {
    let out = addrinuse(&words(
        "--format jsonl --proto udp --state bound --group v4 --holder other-process",
    ));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let lines: Vec<Value> = stdout(&out)
        .lines()
        .map(|l| serde_json::from_str(l).expect("each line is JSON"))
        .collect();
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
                || bind == "skipped"
                || bind == "setup-failed"
                || bind == "option-refused"
                || bind.starts_with('E'),
            "{v}"
        );
        assert!(v["listen"].is_null(), "UDP never listens: {v}");
    }
    let err = stderr(&out);
    assert!(
        err.contains("cases in") && err.contains(" s on "),
        "timing line missing: {err}"
    );
}

#[test]
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
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    for line in stdout(&out).lines() {
        let v: Value = serde_json::from_str(line).unwrap();
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
#[test]
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
    let rows: Vec<Value> = stdout(&matrix)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
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

#[test]
fn table_output_starts_with_facts_and_the_restart_question() {
    let out = addrinuse(&[
        "--proto",
        "tcp",
        "--state",
        "time-wait",
        "--state",
        "established",
        "--group",
        "v4",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    for fact in [
        "os ",
        "kernel",
        "127.0.0.2 usable",
        "::1 usable",
        "privileged",
        "state verification",
    ] {
        assert!(text.contains(fact), "header lacks {fact:?}:\n{text}");
    }
    let question = text
        .find("Can a restarted TCP server bind")
        .expect("restart summary shown");
    let first_table = text.find("tcp / first socket").expect("tables shown");
    assert!(
        question < first_table,
        "the restart answer comes before the tables"
    );
}

#[test]
fn help_documents_the_probe_grammar_and_formats() {
    let out = addrinuse(&["--help"]);
    assert_eq!(out.status.code(), Some(0));
    let text = stdout(&out);
    for word in [
        "probe", "--format", "jsonl", "markdown", "--proto", "--state", "--group", "--family",
        "/v6only",
    ] {
        assert!(text.contains(word), "--help lacks {word}");
    }
}

/// A copy of the recorded Linux tables as a second, made-up platform
/// "otheros" whose first cell of one row is changed: the fixture for the
/// compare view (in a temporary folder; the real records stay untouched).
fn two_platforms(changed_table: &str, changed_row: &str) -> tempfile::TempDir {
    let recorded = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("snapshots/linux");
    let tmp = tempfile::tempdir().unwrap();
    for os in ["linux", "otheros"] {
        let dir = tmp.path().join("snapshots").join(os);
        std::fs::create_dir_all(&dir).unwrap();
        for entry in std::fs::read_dir(&recorded).unwrap() {
            let entry = entry.unwrap();
            let mut text = std::fs::read_to_string(entry.path()).unwrap();
            if os == "otheros"
                && entry.file_name().to_string_lossy() == format!("{changed_table}.snap")
            {
                let line = text
                    .lines()
                    .find(|l| l.starts_with(changed_row))
                    .expect("row exists")
                    .to_string();
                let mut cols: Vec<&str> = line
                    .split("  ")
                    .map(str::trim)
                    .filter(|c| !c.is_empty())
                    .collect();
                cols[2] = "CHANGED";
                text = text.replacen(&line, &cols.join("    "), 1);
            }
            std::fs::write(dir.join(entry.file_name()), text).unwrap();
        }
    }
    tmp
}

#[test]
fn compare_shows_exactly_the_cells_that_differ() {
    let tmp = two_platforms(
        "tcp_time-wait_same-process_v4",
        "0.0.0.0 -> 0.0.0.0      none",
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

#[test]
fn compare_with_one_platform_names_those_not_recorded() {
    let out = addrinuse(&["compare"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("recorded: linux"), "{text}");
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    for os in ["macos", "windows", "freebsd"] {
        if !root.join("snapshots").join(os).is_dir() {
            assert!(
                text.contains("no record yet:") && text.contains(os),
                "{text}"
            );
        }
    }
    rejects(
        &["compare", "--snapshots", "/nonexistent/snapshots"],
        "cannot read",
    );
}

/// docs/platforms.md is the markdown compare view of the committed records:
/// regenerate it with `cargo run -- compare --format markdown > docs/platforms.md`.
#[test]
fn platforms_page_matches_the_records() {
    let out = addrinuse(&["compare", "--format", "markdown"]);
    let page = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/platforms.md");
    let committed = std::fs::read_to_string(&page).unwrap_or_default();
    assert!(
        committed == stdout(&out),
        "docs/platforms.md is stale: run `cargo run -- compare --format markdown > docs/platforms.md`"
    );
}

/// The restart story live: a timeline, then the new server's answer.
#[test]
fn restart_prints_a_timeline() {
    let out = addrinuse(&["restart", "--variant", "graceful"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    for step in [
        "old server listening",
        "clients connected",
        "closed its connections",
        "old connections, server side",
        "new server",
    ] {
        assert!(text.contains(step), "timeline lacks {step:?}:\n{text}");
    }
    rejects(&["restart", "--wait", "601"], "601");
    rejects(&["restart", "--variant", "nice"], "nice");
}

/// Without root, other-user cases are skipped with the reason, never run
/// as the same user. Needs root and `setpriv` to start the command as an
/// unprivileged user.
#[test]
fn other_user_cases_are_skipped_without_root() {
    let setpriv = std::path::Path::new("/usr/bin/setpriv");
    if !addrinuse::platform::privileged() || !setpriv.exists() {
        eprintln!(
            "SKIPPED other_user_cases_are_skipped_without_root: needs root and /usr/bin/setpriv"
        );
        return;
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
    let lines: Vec<Value> = stdout(&out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(!lines.is_empty());
    for v in lines {
        assert_eq!(v["bind"], "skipped", "{v}");
        let reason = v["reason"].as_str().unwrap();
        assert!(
            reason.contains("root") || reason.contains("does not exist"),
            "{v}"
        );
    }
}

/// `addrinuse | head -1`: a reader that goes away early ends the command
/// quietly, without a panic.
#[test]
fn a_closed_stdout_is_not_a_panic() {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;
    let mut child = Command::new(env!("CARGO_BIN_EXE_addrinuse"))
        .args(["--format", "jsonl", "--holder", "same-process"])
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
