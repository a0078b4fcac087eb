//! The one-case text grammar of `addrinuse probe`:
//!
//! ```text
//! PROTO STATE FIRST SECOND [HOLDER]
//! socket := ADDRESS[/v6only|/dual][+OPTION...]
//! HOLDER := same-process (default) | other-process | other-user
//! ```
//!
//! e.g. `tcp time-wait 0.0.0.0+reuseaddr 0.0.0.0+reuseaddr` or
//! `udp bound ::/dual 127.0.0.1+reuseport`. IPv6 addresses need `/v6only`
//! or `/dual` (IPV6_V6ONLY is always set explicitly); v4-mapped addresses
//! are always dual. Only loopback and wildcard addresses are accepted.

use std::net::IpAddr;

use crate::scenario::{Case, Endpoint, Holder, Options, Proto, SockOpt, SocketSpec, State};

pub const GRAMMAR: &str =
    "PROTO STATE FIRST SECOND [HOLDER], socket = ADDRESS[/v6only|/dual][+OPTION...]";

fn one_of<T: Copy>(
    what: &str,
    word: &str,
    all: &[T],
    name: impl Fn(T) -> &'static str,
) -> Result<T, String> {
    all.iter()
        .copied()
        .find(|&x| name(x) == word)
        .ok_or_else(|| {
            let names: Vec<_> = all.iter().map(|&x| name(x)).collect();
            format!(
                "unknown {what} '{word}' (expected one of: {})",
                names.join(", ")
            )
        })
}

/// Whether the harness may bind `ip`: loopback, wildcard, or their
/// v4-mapped forms. Nothing else is ever bound or connected to.
pub fn is_allowed(ip: IpAddr) -> bool {
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    };
    ip.is_loopback() || ip.is_unspecified()
}

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
    if !is_allowed(ip) {
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
    let (proto, state, first, second, holder) = match words[..] {
        [p, s, a, b] => (p, s, a, b, Holder::SameProcess.name()),
        [p, s, a, b, h] => (p, s, a, b, h),
        _ => {
            return Err(format!(
                "expected 4 or 5 words ({GRAMMAR}), got {}",
                words.len()
            ))
        }
    };
    let proto = one_of("protocol", proto, Proto::ALL, Proto::name)?;
    let state = one_of("state", state, State::ALL, State::name)?;
    let holder = one_of("holder", holder, Holder::ALL, Holder::name)?;
    let case = Case {
        proto,
        state,
        holder,
        first: parse_socket(first)?,
        second: parse_socket(second)?,
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
    text
}
