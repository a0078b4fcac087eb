//! The one-case text grammar of `addrinuse probe`:
//!
//! ```text
//! PROTO STATE FIRST SECOND [HOLDER] [PEER]
//! socket := ADDRESS[/v6only|/dual][+OPTION...]
//! HOLDER := same-process (default) | other-process | other-user
//! PEER   := v4-peer | v6-peer   (a ::/dual first socket in a state with a
//!                                peer needs one; no other case takes one)
//! ```
//!
//! e.g. `tcp time-wait 0.0.0.0+reuseaddr 0.0.0.0+reuseaddr` or
//! `udp bound ::/dual 127.0.0.1+reuseport`. IPv6 addresses need `/v6only`
//! or `/dual` (IPV6_V6ONLY is always set explicitly); v4-mapped addresses
//! are always dual. Only loopback and wildcard addresses are accepted.

use std::net::IpAddr;

use crate::scenario::{
    is_loopback_or_wildcard, Case, Endpoint, Holder, Named, Options, Peer, Proto, SockOpt,
    SocketSpec, State,
};

pub const GRAMMAR: &str =
    "PROTO STATE FIRST SECOND [HOLDER] [PEER], socket = ADDRESS[/v6only|/dual][+OPTION...]";

/// Parse one socket: `::1/v6only+reuseaddr`.
pub fn parse_socket(text: &str) -> Result<SocketSpec, String> {
    let mut parts = text.split('+');
    let addr = parts.next().unwrap_or_default();
    let (ip_text, suffix) = match addr.split_once('/') {
        Some((ip, suffix)) => (ip, Some(suffix)),
        None => (addr, None),
    };
    let ip: IpAddr = ip_text
        .parse()
        .map_err(|_| format!("'{ip_text}' is not an IP address (in socket '{text}')"))?;
    if !is_loopback_or_wildcard(ip) {
        return Err(format!(
            "{ip} is not allowed: only loopback (127.0.0.0/8, ::1) and wildcard addresses are bound"
        ));
    }
    let v6only = match (ip, suffix) {
        (IpAddr::V4(_), None) => None,
        (IpAddr::V4(_), Some(s)) => {
            return Err(format!(
                "'/{s}' on {ip}: IPV6_V6ONLY applies to IPv6 addresses only"
            ))
        }
        (IpAddr::V6(_), Some("v6only")) => Some(true),
        (IpAddr::V6(_), Some("dual")) => Some(false),
        (IpAddr::V6(_), Some(s)) => {
            return Err(format!(
                "unknown suffix '/{s}' on {ip} (expected /v6only or /dual)"
            ))
        }
        (IpAddr::V6(v6), None) if v6.to_ipv4_mapped().is_some() => Some(false),
        (IpAddr::V6(_), None) => {
            return Err(format!(
                "{ip} needs /v6only or /dual: IPV6_V6ONLY is always set explicitly"
            ))
        }
    };
    let endpoint = Endpoint { ip, v6only };
    if let Some(why) = endpoint.invalid_reason() {
        return Err(format!("{text}: {why}"));
    }
    let mut options = Options::NONE;
    for word in parts {
        if word == "none" {
            continue;
        }
        let opt = SockOpt::from_short(word).ok_or_else(|| {
            let names: Vec<_> = SockOpt::ALL.iter().map(|o| o.short()).collect();
            format!(
                "unknown option '{word}' (expected one of: {})",
                names.join(", ")
            )
        })?;
        options = options.with(opt);
    }
    Ok(SocketSpec { endpoint, options })
}

/// Parse a whole case from its words.
pub fn parse(words: &[String]) -> Result<Case, String> {
    let words: Vec<&str> = words.iter().flat_map(|w| w.split_whitespace()).collect();
    let (proto, state, first, second, rest) = match words[..] {
        [p, s, a, b, ref rest @ ..] if rest.len() <= 2 => (p, s, a, b, rest),
        _ => {
            return Err(format!(
                "expected 4 to 6 words ({GRAMMAR}), got {}",
                words.len()
            ))
        }
    };
    let proto = Proto::parse_name(proto)?;
    let state = State::parse_name(state)?;
    // The optional words, in either order: a holder and a peer family.
    let mut holder = None;
    let mut peer = None;
    for &word in rest {
        if let Ok(p) = Peer::parse_name(word) {
            if peer.replace(p).is_some() {
                return Err(format!("two peer families: {}", rest.join(" ")));
            }
        } else if holder.replace(Holder::parse_name(word)?).is_some() {
            return Err(format!("two holders: {}", rest.join(" ")));
        }
    }
    let case = Case {
        proto,
        state,
        holder: holder.unwrap_or(Holder::SameProcess),
        first: parse_socket(first)?,
        second: parse_socket(second)?,
        peer,
    };
    match case.invalid_reason() {
        Some(why) => Err(why),
        None => Ok(case),
    }
}

/// The probe text of a case: `parse(format(case)) == case`.
pub fn format(case: &Case) -> String {
    let socket = |s: &SocketSpec| {
        let mut text = s.endpoint.to_string();
        for opt in s.options.iter() {
            text.push('+');
            text.push_str(opt.short());
        }
        text
    };
    let mut text = format!(
        "{} {} {} {}",
        case.proto.name(),
        case.state.name(),
        socket(&case.first),
        socket(&case.second)
    );
    if case.holder != Holder::SameProcess {
        text.push(' ');
        text.push_str(case.holder.name());
    }
    if let Some(peer) = case.peer {
        text.push(' ');
        text.push_str(peer.name());
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::matrix;

    fn words(text: &str) -> Vec<String> {
        vec![text.to_string()]
    }

    #[test]
    fn every_case_of_the_matrix_reads_back_from_its_text() {
        let cases = matrix();
        // 150,822 cases: half on another thread.
        let (first, second) = cases.split_at(cases.len() / 2);
        let check = |cases: &[Case]| {
            for case in cases {
                let text = format(case);
                assert_eq!(parse(&words(&text)), Ok(*case), "{text}");
            }
        };
        std::thread::scope(|s| {
            let other = s.spawn(|| check(second));
            check(first);
            other
                .join()
                .unwrap_or_else(|e| std::panic::resume_unwind(e));
        });
    }

    /// Each bad input and a piece of the one-line message it gets.
    const REJECTED: &[(&str, &str)] = &[
        ("tcp bound 127.0.0.1", "expected 4 to 6 words"),
        (
            "tcp established ::/dual 127.0.0.1",
            "say v4-peer or v6-peer",
        ),
        (
            "tcp established 0.0.0.0 127.0.0.1 v4-peer",
            "applies only to a dual-stack wildcard",
        ),
        (
            "tcp listening ::/dual 127.0.0.1 v6-peer",
            "applies only to a dual-stack wildcard",
        ),
        (
            "tcp established ::/dual ::/dual v4-peer v6-peer",
            "two peer families",
        ),
        (
            "tcp bound 127.0.0.1 127.0.0.1 other-user same-process",
            "two holders",
        ),
        (
            "tcp timewait 127.0.0.1 127.0.0.1",
            "unknown state 'timewait'",
        ),
        ("sctp bound 127.0.0.1 127.0.0.1", "unknown protocol 'sctp'"),
        (
            "tcp bound 127.0.0.1 127.0.0.1 root",
            "unknown holder 'root'",
        ),
        ("tcp bound ::ffff:127.0.0.1/v6only 127.0.0.1", "v4-mapped"),
        ("tcp bound ::1 ::1/dual", "/v6only or /dual"),
        ("tcp bound ::1/both ::1/dual", "unknown suffix '/both'"),
        ("tcp bound 127.0.0.1/dual ::1/dual", "IPv6 addresses only"),
        ("tcp bound 10.0.0.1 127.0.0.1", "not allowed"),
        ("tcp bound ::ffff:10.0.0.1 127.0.0.1", "not allowed"),
        ("tcp bound localhost 127.0.0.1", "not an IP address"),
        (
            "tcp bound 127.0.0.1+reuse 127.0.0.1",
            "unknown option 'reuse'",
        ),
        (
            "udp listening 127.0.0.1 127.0.0.1",
            "does not exist for udp",
        ),
        (
            "tcp connected 127.0.0.1 127.0.0.1",
            "does not exist for tcp",
        ),
    ];

    #[test]
    fn bad_cases_are_one_line_errors_naming_the_problem() {
        for (text, naming) in REJECTED {
            match parse(&words(text)) {
                Ok(case) => panic!("{text:?} parsed as {case:?}"),
                Err(msg) => {
                    assert!(msg.contains(naming), "{text:?}: {msg:?} lacks {naming:?}");
                    assert!(!msg.contains('\n'), "{text:?}: {msg:?}");
                }
            }
        }
    }

    #[test]
    fn the_peer_and_the_holder_may_come_in_either_order() {
        let a = parse(&words("tcp time-wait ::/dual 127.0.0.1 v4-peer other-user")).unwrap();
        let b = parse(&words("tcp time-wait ::/dual 127.0.0.1 other-user v4-peer")).unwrap();
        assert_eq!(a, b);
        assert_eq!((a.peer, a.holder), (Some(Peer::V4), Holder::OtherUser));
    }

    #[test]
    fn options_may_be_none_and_v4_mapped_addresses_are_dual() {
        let case = parse(&words(
            "udp bound ::ffff:127.0.0.1+none 127.0.0.1+reuseaddr+reuseport",
        ))
        .unwrap();
        assert_eq!(case.first.endpoint.v6only, Some(false));
        assert_eq!(case.first.options, Options::NONE);
        assert_eq!(case.second.options.to_string(), "reuseaddr+reuseport");
        assert_eq!(case.holder, Holder::SameProcess);
    }
}
