//! The models against the records: every recorded cell of every platform
//! folder the model knows (`snapshots/linux/`, kernel-line folders such as
//! `snapshots/linux-6.1/`, and any platform recorded later), random cases
//! run for real on this machine, and for platforms not recorded yet, the
//! facts their own projects' tests and documentation establish.

#[macro_use]
mod common;

use std::path::Path;

use addrinuse::model::{self, Platform};
use addrinuse::probe;
use addrinuse::report::compare;
use addrinuse::run;
use addrinuse::scenario::{matrix, Case};
use libtest_mimic::{Arguments, Completion, Failed, Trial};
use proptest::prelude::*;
use proptest::sample::select;

fn recorded() -> compare::RecordedTables {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("snapshots");
    compare::load(&dir).unwrap_or_else(|e| panic!("cannot read the records: {e}"))
}

/// A recorded folder, its platform and how that platform's model fares
/// against it (`None` for a folder no model knows).
type FolderAgreement<'a> = (&'a str, Option<(Platform, model::Agreement)>);

/// Every recorded folder's agreement, in folder order: one pass over the
/// matrix for all the folders (a kernel line shares most of its cells with
/// the reference), half of the matrix on each of two threads.
fn agreements(all: &compare::RecordedTables) -> Vec<FolderAgreement<'_>> {
    let known: Vec<(Platform, &compare::PlatformTables)> = (all.iter())
        .filter_map(|(folder, tables)| Some((Platform::from_folder(folder)?, tables)))
        .collect();
    let cases = matrix();
    let (first, second) = cases.split_at(cases.len() / 2);
    let mut found = std::thread::scope(|s| {
        let other = s.spawn(|| model::agreements(&known, second));
        let mut found = model::agreements(&known, first);
        let rest = other
            .join()
            .unwrap_or_else(|e| std::panic::resume_unwind(e));
        for (mine, theirs) in found.iter_mut().zip(rest) {
            mine.merge(theirs);
        }
        found
    })
    .into_iter();
    (all.keys())
        .map(|folder| {
            let platform = Platform::from_folder(folder);
            let agreement = platform.map(|p| (p, found.next().expect("one per known folder")));
            (folder.as_str(), agreement)
        })
        .collect()
}

/// Every recorded folder the model knows agrees with the model in every
/// cell; a disagreement is listed in probe grammar.
fn every_recorded_cell_agrees_with_its_platform_model() {
    let all = recorded();
    let mut failures = Vec::new();
    let mut checked = 0;
    for (folder, agreement) in agreements(&all) {
        let Some((platform, agreement)) = agreement else {
            failures.push(format!(
                "snapshots/{folder}/ names no platform the model knows"
            ));
            continue;
        };
        checked += 1;
        eprintln!("{folder}: {}", agreement.summary(platform));
        let never = agreement.never_fired(platform);
        if !never.is_empty() {
            eprintln!("{folder}: rules no record fired: {}", never.join(", "));
        }
        if agreement.ran == 0 {
            failures.push(format!("{folder}: no cell was compared"));
        }
        for (case, predicted, recorded) in agreement.disagree.iter().take(40) {
            failures.push(format!(
                "{folder}: {}  recorded {recorded}, model {predicted}",
                probe::format(case)
            ));
        }
        if agreement.disagree.len() > 40 {
            failures.push(format!(
                "{folder}: ... {} more",
                agreement.disagree.len() - 40
            ));
        }
    }
    assert!(checked > 0, "no platform folder under snapshots/");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The platforms with no record yet pass the facts their own tests and
/// documentation establish (and Linux passes Go's, which name it too).
fn every_model_passes_its_source_facts() {
    let go = model::freebsd::GO_FACTS;
    let tables = [
        (Platform::FreeBsd, model::freebsd::FACTS),
        (Platform::FreeBsd, go),
        (Platform::MacOs, model::darwin::FACTS),
        (Platform::MacOs, go),
        (Platform::Windows, model::windows::FACTS),
        // Go's tables hold on Linux too: the reference model must agree.
        (Platform::Linux(model::LinuxLine::Reference), go),
    ];
    let mut failures = Vec::new();
    for (platform, facts) in tables {
        assert!(!facts.is_empty(), "{platform} has no facts");
        for fact in facts {
            let case = probe::parse(&[fact.case.to_string()])
                .unwrap_or_else(|e| panic!("{platform}: fact {:?}: {e}", fact.case));
            let predicted = platform.predict(&case).answer.cell();
            if predicted != fact.cell {
                failures.push(format!(
                    "{platform}: {}  {} says {}, model {predicted}",
                    fact.case, fact.source, fact.cell
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// This machine's platform model, the kernel line chosen by its release.
fn here() -> Option<Platform> {
    let kernel = (addrinuse::platform::facts().into_iter())
        .find(|(name, _)| *name == "kernel")
        .map(|(_, release)| release)
        .unwrap_or_default();
    Platform::of_machine(addrinuse::platform::OS, &kernel)
}

/// Random cases of the whole matrix, run on this machine, agree with this
/// platform's model, where that model is held to a record (elsewhere it is
/// a prediction: ignored, with the reason).
fn random_cases_run_here_agree_with_the_model() -> Result<Completion, Failed> {
    let Some(here) = here() else {
        return Ok(Completion::ignored_with(format!(
            "no model for {}",
            addrinuse::platform::OS
        )));
    };
    // Whether the model is held to a record: its folder is there (reading
    // every record would cost more than the cases).
    let folder = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("snapshots")
        .join(here.folder());
    if !folder.is_dir() {
        return Ok(Completion::ignored_with(format!(
            "snapshots/{}/ is not recorded: the {here} model is a prediction",
            here.folder()
        )));
    }
    let drawable: Vec<Case> = (matrix().into_iter())
        .filter(|c| !run::precheck(c).is_some_and(|s| s.is_unsupported()))
        .collect();
    if let Some(skip) = common::skip_for(common::lacks(&drawable)) {
        return skip;
    }
    let config = ProptestConfig {
        // Each case really runs (a holder process, a port): keep it cheap.
        cases: 32,
        failure_persistence: None,
        ..ProptestConfig::default()
    };
    proptest::test_runner::TestRunner::new(config)
        .run(&select(drawable), |case| {
            let real = run::run_case(&case).outcome.answer();
            let predicted = here.predict(&case).answer.cell();
            prop_assert_eq!(
                model::answer_part(&real),
                predicted,
                "{}",
                probe::format(&case)
            );
            Ok(())
        })
        .map_err(|e| Failed::from(e.to_string()))?;
    Ok(Completion::Completed)
}

/// Plain functions listed here, not `#[test]`s: this binary has its own
/// harness (libtest-mimic), so that what a machine cannot run is counted as
/// ignored, with its reason, in the summary.
fn main() {
    // Before any thread: the real cases run in a network of their own (root).
    run::isolate();
    common::init();
    let args = Arguments::from_args();
    let mut trials = trials![
        every_recorded_cell_agrees_with_its_platform_model,
        every_model_passes_its_source_facts,
    ];
    trials.push(Trial::ignorable_test(
        "random_cases_run_here_agree_with_the_model",
        random_cases_run_here_agree_with_the_model,
    ));
    libtest_mimic::run(&args, trials).exit();
}
