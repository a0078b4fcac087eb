//! JSON lines for machines: one object per case, one per difference.

use serde::Serialize;
use serde_json::{json, Map, Value};

use super::compare::Difference;
use crate::outcome::{Delivery, Outcome, Record, StateCheck};
use crate::platform;
use crate::scenario::{Named, SockOpt, SocketSpec};

/// One case as a JSON object (one line of `--format jsonl`). The fields
/// stand in alphabetical order, as they always have (serde_json's maps
/// sort their keys); a struct writes them without building a map, which
/// matters at 150,000 lines a run.
#[derive(Serialize)]
struct RecordLine {
    bind: String,
    bind_code: Option<i32>,
    delivery: Option<DeliveryObject>,
    first: SocketObject,
    group: &'static str,
    holder: &'static str,
    listen: Option<String>,
    listen_code: Option<i32>,
    os: &'static str,
    /// The family of the first socket's peer, in the states that have one.
    peer: Option<&'static str>,
    proto: &'static str,
    reason: Option<String>,
    second: SocketObject,
    state: &'static str,
    state_verified: Option<bool>,
}

#[derive(Serialize)]
struct SocketObject {
    addr: String,
    exclusiveaddruse: bool,
    reuseaddr: bool,
    reuseport: bool,
    reuseport_lb: bool,
    v6only: Option<bool>,
}

/// Who received the traffic: the verdict, and each address's counts (the
/// split of a balancing kernel differs from run to run).
#[derive(Serialize)]
struct DeliveryObject {
    probes: Vec<ProbeObject>,
    verdict: &'static str,
}

#[derive(Serialize)]
struct ProbeObject {
    first: u32,
    lost: u32,
    refused: u32,
    second: u32,
    sender: &'static str,
    sent: u32,
    to: String,
}

fn socket(spec: &SocketSpec) -> SocketObject {
    SocketObject {
        addr: spec.endpoint.ip.to_string(),
        exclusiveaddruse: spec.options.has(SockOpt::ExclusiveAddrUse),
        reuseaddr: spec.options.has(SockOpt::ReuseAddr),
        reuseport: spec.options.has(SockOpt::ReusePort),
        reuseport_lb: spec.options.has(SockOpt::ReusePortLb),
        v6only: spec.endpoint.v6only,
    }
}

fn delivery(d: &Delivery) -> DeliveryObject {
    DeliveryObject {
        probes: (d.probes.iter())
            .map(|p| ProbeObject {
                first: p.first,
                lost: p.lost,
                refused: p.refused,
                second: p.second,
                sender: p.sender.name(),
                sent: p.sent,
                to: p.to.to_string(),
            })
            .collect(),
        verdict: d.verdict().name(),
    }
}

/// One case as one line of JSON (`--format jsonl`).
pub fn record(record: &Record) -> String {
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
    let line = RecordLine {
        bind: record.outcome.bind_word(),
        bind_code,
        delivery: record.delivery.as_ref().map(delivery),
        first: socket(&case.first),
        group: case.group().name(),
        holder: case.holder.name(),
        listen: record.outcome.listen_word(),
        listen_code,
        os: platform::OS,
        peer: (case.state.connects()).then(|| if case.peer_ip().is_ipv4() { "v4" } else { "v6" }),
        proto: case.proto.name(),
        reason: record.outcome.reason(),
        second: socket(&case.second),
        state: case.state.name(),
        state_verified: verified,
    };
    serde_json::to_string(&line).expect("a record serializes")
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
