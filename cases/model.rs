//! The models against the records: every recorded cell of every platform
//! folder the model knows (`snapshots/linux/`, kernel-line folders such as
//! `snapshots/linux-6.1/`, and any platform recorded later), random cases
//! run for real on this machine, and for platforms not recorded yet, the
//! facts their own projects' tests and documentation establish.

mod common;

use std::path::Path;

use addrinuse::model::{self, Platform};
use addrinuse::probe;
use addrinuse::report::compare;

fn recorded() -> compare::RecordedTables {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("snapshots");
    compare::load(&dir).unwrap_or_else(|e| panic!("cannot read the records: {e}"))
}

/// Every recorded folder the model knows agrees with the model in every
/// cell; a disagreement is listed in probe grammar.
#[test]
fn every_recorded_cell_agrees_with_its_platform_model() {
    let all = recorded();
    let mut failures = Vec::new();
    let mut checked = 0;
    for folder in all.keys() {
        let Some(platform) = Platform::from_folder(folder) else {
            failures.push(format!(
                "snapshots/{folder}/ names no platform the model knows"
            ));
            continue;
        };
        checked += 1;
        let tables = model::records_of(&all, platform).expect("a recorded folder");
        let agreement = model::agreement(platform, &tables);
        eprintln!("{platform}: {}", agreement.summary(platform));
        let never = agreement.never_fired(platform);
        if !never.is_empty() {
            eprintln!("{platform}: rules no record fired: {}", never.join(", "));
        }
        if agreement.ran == 0 {
            failures.push(format!("{platform}: no cell was compared"));
        }
        for (case, predicted, recorded) in agreement.disagree.iter().take(40) {
            failures.push(format!(
                "{platform}: {}  recorded {recorded}, model {predicted}",
                probe::format(case)
            ));
        }
        if agreement.disagree.len() > 40 {
            failures.push(format!(
                "{platform}: ... {} more",
                agreement.disagree.len() - 40
            ));
        }
    }
    assert!(checked > 0, "no platform folder under snapshots/");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The platforms with no record yet pass the facts their own tests and
/// documentation establish (and Linux passes Go's, which name it too).
#[test]
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

mod real {
    use super::*;
    use addrinuse::model::LinuxLine;
    use addrinuse::run;
    use addrinuse::scenario::matrix;
    use proptest::prelude::*;

    proptest! {
        // Each case really runs (a holder process, a port): keep it cheap.
        #![proptest_config(ProptestConfig { cases: 24, failure_persistence: None, ..ProptestConfig::default() })]

        /// Random cases of the whole matrix, run on this machine, agree
        /// with this platform's model.
        #[test]
        fn random_cases_run_here_agree_with_the_model(index in 0..matrix().len()) {
            common::init();
            let Some(here) = Platform::from_folder(addrinuse::platform::OS) else {
                return Ok(());
            };
            let here = match here {
                Platform::Linux(_) => {
                    let kernel = addrinuse::platform::facts()
                        .into_iter()
                        .find(|(k, _)| *k == "kernel")
                        .map(|(_, v)| v)
                        .unwrap_or_default();
                    Platform::Linux(LinuxLine::of_release(&kernel))
                }
                other => other,
            };
            // Only Linux's model is checked against kernels today; the
            // others wait for their records (see the source facts).
            if !matches!(here, Platform::Linux(_)) {
                return Ok(());
            }
            let case = matrix()[index];
            let record = run::run_case(&case);
            let real = record.outcome.cell();
            let real = model::answer_part(&real);
            prop_assume!(real != "skipped", "this machine cannot run {}", probe::format(&case));
            prop_assert_eq!(real, here.predict(&case).answer.cell(), "{}", probe::format(&case));
        }
    }
}
