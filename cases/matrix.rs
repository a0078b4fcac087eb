//! The whole matrix on this OS, compared with `snapshots/<os>/`: one
//! snapshot per (protocol, state, address group).

mod common;

use std::collections::BTreeSet;
use std::path::PathBuf;

use addrinuse::platform::OS;
use addrinuse::render::{self, TableKey};
use addrinuse::scenario::{matrix, Holder, Proto, State};
use addrinuse::{restart, run, unix_sockets};
use rstest::rstest;

fn snapshot_dir() -> PathBuf {
    // Absolute, so that INSTA_PENDING_DIR can mirror it (no `..`).
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("snapshots")
        .join(OS)
}

#[rstest]
#[case::tcp_bound(Proto::Tcp, State::Bound)]
#[case::tcp_bound_then_listen(Proto::Tcp, State::BoundThenListen)]
#[case::tcp_listening(Proto::Tcp, State::Listening)]
#[case::tcp_listening_with_backlog(Proto::Tcp, State::ListeningWithBacklog)]
#[case::tcp_established(Proto::Tcp, State::Established)]
#[case::tcp_close_wait(Proto::Tcp, State::CloseWait)]
#[case::tcp_fin_wait_2(Proto::Tcp, State::FinWait2)]
#[case::tcp_time_wait(Proto::Tcp, State::TimeWait)]
#[case::tcp_time_wait_client(Proto::Tcp, State::TimeWaitClient)]
#[case::tcp_closed(Proto::Tcp, State::Closed)]
#[case::udp_bound(Proto::Udp, State::Bound)]
#[case::udp_connected(Proto::Udp, State::Connected)]
fn table(
    #[case] proto: Proto,
    #[case] state: State,
    #[values(Holder::SameProcess, Holder::OtherProcess, Holder::OtherUser)] holder: Holder,
    #[values("v4", "v6", "mapped", "v4-v6", "v4-mapped", "v6-mapped")] group: &'static str,
) {
    common::init();
    let key = TableKey {
        proto,
        state,
        holder,
        group,
    };
    let cases: Vec<_> = matrix()
        .into_iter()
        .filter(|c| {
            c.proto == proto && c.state == state && c.holder == holder && c.group() == group
        })
        .collect();
    assert!(!cases.is_empty(), "{} has no cases", key.name());
    if !common::capable(&key.name(), &cases) {
        return;
    }
    let records = run::run_all(&cases, run::default_threads(), &|_| {});
    let rows: Vec<_> = records.iter().collect();
    let table = render::text_table(&key, &rows);

    assert_recorded(&key.name(), &table);
}

/// Compare `table` with `snapshots/<os>/<name>.snap`.
fn assert_recorded(name: &str, table: &str) {
    let mut settings = insta::Settings::clone_current();
    settings.set_snapshot_path(snapshot_dir());
    settings.set_prepend_module_to_snapshot(false);
    settings.set_omit_expression(true);
    settings.set_description(format!("{name} as recorded on {OS}"));
    let assert = || settings.bind(|| insta::assert_snapshot!(name.to_string(), table));
    if snapshot_dir().is_dir() {
        assert();
    } else {
        // No record for this platform yet: `platform_is_recorded` fails once
        // with instructions; each table only leaves its pending snapshot.
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(assert));
    }
}

/// The restart story with real server processes, one table per OS.
#[test]
fn restart_story() {
    common::init();
    let table = restart::table(&restart::all_stories());
    assert_recorded("restart", &table);
}

/// Unix-domain socket paths and names, one table per OS.
#[test]
fn unix_socket_paths() {
    common::init();
    let table = unix_sockets::table(&unix_sockets::run_all());
    assert_recorded("unix-sockets", &table);
}

/// Tables outside the bind matrix.
const STORIES: &[&str] = &["restart", "unix-sockets"];

/// One clear failure for a platform nobody has recorded yet, instead of
/// one opaque assertion per table.
#[test]
fn platform_is_recorded() {
    assert!(
        snapshot_dir().is_dir(),
        "no snapshots are recorded for {OS} yet (snapshots/{OS}/ is missing).\n\
         Record them: run `cargo insta test --accept` on a real {OS} machine (or download the \
         pending snapshots that CI uploads for this runner), review every table with \
         `cargo insta review`, then commit snapshots/{OS}/. See README, 'Recording a platform'."
    );
}

/// Every snapshot in this OS's folder belongs to a table of the matrix: a
/// file no test compares against is stale.
#[test]
fn no_stale_snapshots() {
    let Ok(dir) = std::fs::read_dir(snapshot_dir()) else {
        return; // platform_is_recorded reports the missing folder
    };
    let expected: BTreeSet<String> = TableKey::all()
        .iter()
        .map(|k| k.name())
        .chain(STORIES.iter().map(|s| s.to_string()))
        .map(|name| format!("{name}.snap"))
        .collect();
    let stale: Vec<String> = dir
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".snap") && !expected.contains(name))
        .collect();
    assert!(
        stale.is_empty(),
        "snapshots/{OS}/ holds snapshots no test references (delete them): {stale:?}"
    );
}

/// The tests above cover every table the matrix has.
#[test]
fn tests_cover_every_table() {
    let from_matrix: BTreeSet<String> = matrix()
        .iter()
        .map(|c| {
            TableKey {
                proto: c.proto,
                state: c.state,
                holder: c.holder,
                group: c.group(),
            }
            .name()
        })
        .collect();
    let from_keys: BTreeSet<String> = TableKey::all().iter().map(|k| k.name()).collect();
    assert_eq!(from_matrix, from_keys);
    assert_eq!(
        from_keys.len(),
        12 * 3 * 6,
        "update the #[case]/#[values] lists of `table`"
    );
}
