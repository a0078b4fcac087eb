//! The report header: every fact of this machine that changes the answers.

use crate::host::{capabilities, v6only_default};
use crate::platform;
use crate::run::ports;
use crate::scenario::{SockOpt, OTHER_USER, SECOND_USER};

fn yes_no(b: bool) -> String {
    if b { "yes" } else { "no" }.into()
}

/// The header: every fact that changes the answers, in display order.
pub fn facts() -> Vec<(&'static str, String)> {
    let caps = capabilities();
    let mut facts = vec![(
        "os",
        format!("{} ({})", platform::OS, std::env::consts::ARCH),
    )];
    facts.extend(platform::facts());
    let unsupported: Vec<_> = SockOpt::ALL
        .iter()
        .filter(|o| !platform::supports(**o))
        .map(|o| o.name())
        .collect();
    facts.extend([
        (
            "IPV6_V6ONLY default",
            match v6only_default() {
                Some(true) => "on".into(),
                Some(false) => "off".into(),
                None => "unknown".into(),
            },
        ),
        ("127.0.0.2 usable", yes_no(caps.loopback2)),
        ("::1 usable", yes_no(caps.ipv6)),
        ("privileged", yes_no(caps.privileged)),
        (
            "options not on this platform",
            if unsupported.is_empty() {
                "none".into()
            } else {
                unsupported.join(", ")
            },
        ),
        ("state verification", platform::STATE_CHECK.into()),
        ("network namespace", crate::run::network().into()),
        (
            "other-user holders",
            match platform::NO_SWITCH_USER {
                Some(_) => "unsupported on this platform".to_string(),
                None => format!("first socket {OTHER_USER}, second socket {SECOND_USER}"),
            },
        ),
        // Not `ports::pool()`: the header must not take the ports' lock.
        ("ports used by the harness", {
            let plan = ports::segments();
            match plan.note {
                Some(note) => format!("{} ({note})", ports::describe(&plan.segments)),
                None => ports::describe(&plan.segments),
            }
        }),
    ]);
    facts
}

/// The header as the command prints it above the tables.
pub fn text() -> String {
    let mut out = String::from(
        "addrinuse: what this machine answers when a second socket binds a port that is taken\n",
    );
    for (name, value) in facts() {
        out.push_str(&format!("  {name:<30} {value}\n"));
    }
    out
}
