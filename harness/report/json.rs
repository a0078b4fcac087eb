//! JSON lines for machines: one object per case, one per difference.

use serde_json::{json, Map, Value};

use super::compare::Difference;
use crate::outcome::{Delivery, Outcome, Record, StateCheck};
use crate::platform;
use crate::scenario::{Named, SockOpt, SocketSpec};

fn socket(spec: &SocketSpec) -> Value {
    json!({
        "addr": spec.endpoint.ip.to_string(),
        "v6only": spec.endpoint.v6only,
        "reuseaddr": spec.options.has(SockOpt::ReuseAddr),
        "reuseport": spec.options.has(SockOpt::ReusePort),
        "exclusiveaddruse": spec.options.has(SockOpt::ExclusiveAddrUse),
        "reuseport_lb": spec.options.has(SockOpt::ReusePortLb),
    })
}

/// One case as a JSON object (one line of `--format jsonl`).
pub fn record(record: &Record) -> Value {
    let case = &record.case;
    let (bind_code, listen_code, verified) = match &record.outcome {
        Outcome::Ran {
            bind,
            listen,
            check,
            ..
        } => (
            bind.err().map(|e| e.code),
            listen.and_then(|l| l.err()).map(|e| e.code),
            Some(*check == StateCheck::Verified),
        ),
        Outcome::Refused { error, .. } | Outcome::FirstRefused { error, .. } => {
            (Some(error.code), None, None)
        }
        _ => (None, None, None),
    };
    json!({
        "os": platform::OS,
        "proto": case.proto.name(),
        "state": case.state.name(),
        "holder": case.holder.name(),
        "group": case.group().name(),
        "first": socket(&case.first),
        "second": socket(&case.second),
        "bind": record.outcome.bind_word(),
        "listen": record.outcome.listen_word(),
        "bind_code": bind_code,
        "listen_code": listen_code,
        "state_verified": verified,
        "reason": record.outcome.reason(),
        "delivery": record.delivery.as_ref().map(delivery),
        // The family of the first socket's peer, in the states that have one.
        "peer": case.state.connects().then(|| if case.peer_ip().is_ipv4() { "v4" } else { "v6" }),
    })
}

/// Who received the traffic: the verdict, and each address's counts (the
/// split of a balancing kernel differs from run to run).
fn delivery(d: &Delivery) -> Value {
    let probes: Vec<Value> = (d.probes.iter())
        .map(|p| {
            json!({"to": p.to.to_string(), "sender": p.sender.name(), "sent": p.sent,
                "first": p.first, "second": p.second, "refused": p.refused, "lost": p.lost})
        })
        .collect();
    json!({"verdict": d.verdict().name(), "probes": probes})
}

/// One cell where recorded platforms disagree, with every platform's answer.
pub fn difference(platforms: &[&str], d: &Difference) -> Value {
    let answers: Map<String, Value> = (platforms.iter().zip(&d.answers))
        .map(|(os, a)| (os.to_string(), a.clone().into()))
        .collect();
    let (pair, first, second) = &d.cell;
    json!({"table": d.table, "pair": pair, "first_options": first,
        "second_options": second, "answers": answers})
}
