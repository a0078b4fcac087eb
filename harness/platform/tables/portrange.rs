//! Port ranges: the kernel's ephemeral range and excluded ranges, read from
//! what the platform reports, and the harness's choice of ports outside
//! them.

/// FreeBSD's and macOS's `net.inet.ip.portrange.first` / `.last`
/// (`sys/netinet/in_pcb.c`: `ipport_firstauto`, `ipport_lastauto`). The
/// kernel accepts them in either order and counts down when first > last,
/// so the range is the span between them. `None` for values outside 1-65535.
pub fn bsd_ephemeral(first: i32, last: i32) -> Option<(u16, u16)> {
    let first = u16::try_from(first).ok().filter(|&p| p > 0)?;
    let last = u16::try_from(last).ok().filter(|&p| p > 0)?;
    Some((first.min(last), first.max(last)))
}

/// The numbers that end `label : number` lines, in order. Only the digits
/// are read, so a localized Windows (other labels, another code page)
/// parses the same.
fn colon_numbers(text: &str) -> Vec<u32> {
    text.lines()
        .filter_map(|line| line.rsplit_once(':'))
        .filter_map(|(_, value)| value.trim().parse().ok())
        .collect()
}

/// `netsh int ipv4 show dynamicport tcp` (KB 929851):
///
/// ```text
/// Protocol tcp Dynamic Port Range
/// ---------------------------------
/// Start Port      : 49152
/// Number of Ports : 16384
/// ```
///
/// The two numbers are taken in order (start, count), whatever the labels.
/// `None` unless exactly two are found and they make a range within 1-65535.
pub fn parse_dynamic_port(text: &str) -> Option<(u16, u16)> {
    let [start, count] = colon_numbers(text)[..] else {
        return None;
    };
    let end = start.checked_add(count)?.checked_sub(1)?;
    Some((
        u16::try_from(start).ok().filter(|&s| s > 0)?,
        u16::try_from(end).ok()?,
    ))
    .filter(|(s, e)| s <= e)
}

/// One row of `netsh int ipv4 show excludedportrange protocol=tcp`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Excluded {
    pub start: u16,
    pub end: u16,
    /// Marked `*`: added by an administrator (`netsh ... add
    /// excludedportrange`), not by a service such as Hyper-V or WinNAT.
    /// Binding there is refused either way.
    pub administered: bool,
}

/// The rows of `netsh int ipv4 show excludedportrange protocol=tcp`:
///
/// ```text
/// Protocol tcp Port Exclusion Ranges
///
/// Start Port    End Port
/// ----------    --------
///       5357        5357
///      50000       50059     *
///
/// * - Administered port exclusions.
/// ```
///
/// A row is a line of two port numbers and an optional `*`; every other
/// line (headings, in any language) is skipped.
pub fn parse_excluded_ranges(text: &str) -> Vec<Excluded> {
    text.lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            let start = words.next()?.parse().ok()?;
            let end = words.next()?.parse().ok()?;
            let administered = match (words.next(), words.next()) {
                (None, _) => false,
                (Some("*"), None) => true,
                _ => return None,
            };
            (start <= end).then_some(Excluded {
                start,
                end,
                administered,
            })
        })
        .collect()
}

/// The ports a harness run uses, and why, when they are not the usual ones.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PortPlan {
    /// Inclusive ranges, ascending; never empty.
    pub segments: Vec<(u16, u16)>,
    /// Set when the pool is not "10000 and up, outside the ephemeral range":
    /// a line for the table header.
    pub note: Option<String>,
}

/// The lowest port of the usual pool: below are well-known services.
const POOL_FIRST: u16 = 10000;
/// A segment smaller than this is not worth a place in the pool.
const MIN_SEGMENT: u32 = 256;
/// Assumed when the platform does not say (Linux's widest default).
const DEFAULT_EPHEMERAL: (u16, u16) = (32768, 65535);

/// `within` minus every range in `holes`, keeping the parts of at least
/// MIN_SEGMENT ports.
fn subtract(within: (u16, u16), holes: &[(u16, u16)]) -> Vec<(u16, u16)> {
    let mut holes = holes.to_vec();
    holes.sort_unstable();
    let mut out = Vec::new();
    // u32, so that "the port after 65535" needs no special case.
    let mut next = u32::from(within.0);
    let mut keep = |a: u32, b: u32| {
        if b >= a && b - a + 1 >= MIN_SEGMENT {
            out.push((a as u16, b as u16));
        }
    };
    for (a, b) in holes {
        let (a, b) = (u32::from(a), u32::from(b));
        if b < next || a > u32::from(within.1) {
            continue;
        }
        if a > next {
            keep(next, a - 1);
        }
        next = next.max(b + 1);
    }
    keep(next, u32::from(within.1));
    out
}

/// The harness's ports: unprivileged ports from 10000 up, outside the
/// ephemeral range (where connect() and bind(port 0) take theirs) and
/// outside excluded ranges, in segments of at least 256 ports.
///
/// If the ephemeral range covers everything from 10000 up (FreeBSD's
/// default 10000-65535), the pool moves below it to 1024-9999 and says so;
/// if even that is taken, it shares the ephemeral range and says so.
pub fn choose_segments(ephemeral: Option<(u16, u16)>, excluded: &[(u16, u16)]) -> PortPlan {
    let (lo, hi) = ephemeral.unwrap_or(DEFAULT_EPHEMERAL);
    let mut taken = excluded.to_vec();
    taken.push((lo.min(hi), lo.max(hi)));
    let usual = subtract((POOL_FIRST, 65535), &taken);
    if !usual.is_empty() {
        return PortPlan {
            segments: usual,
            note: None,
        };
    }
    let below = subtract((1024, POOL_FIRST - 1), &taken);
    if !below.is_empty() {
        let note = format!(
            "the ephemeral range {lo}-{hi} leaves no ports from {POOL_FIRST} up: using {}, where well-known services may listen",
            describe(&below)
        );
        return PortPlan {
            segments: below,
            note: Some(note),
        };
    }
    let shared = subtract((POOL_FIRST, 65535), excluded);
    let segments = if shared.is_empty() {
        vec![(POOL_FIRST, 65535)]
    } else {
        shared
    };
    let note = format!(
        "the ephemeral range {lo}-{hi} leaves no free ports: using {}, shared with the kernel's own choices",
        describe(&segments)
    );
    PortPlan {
        segments,
        note: Some(note),
    }
}

/// `10000-32767, 61000-65535`
pub fn describe(segments: &[(u16, u16)]) -> String {
    let parts: Vec<String> = segments.iter().map(|(a, b)| format!("{a}-{b}")).collect();
    parts.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn linux_defaults_give_the_segments_they_always_gave() {
        let plan = choose_segments(Some((32768, 60999)), &[]);
        assert_eq!(plan.segments, [(10000, 32767), (61000, 65535)]);
        assert_eq!(plan.note, None);
        // Unknown: 32768-65535 assumed.
        assert_eq!(choose_segments(None, &[]).segments, [(10000, 32767)]);
    }

    #[test]
    fn the_iana_range_leaves_one_segment() {
        let plan = choose_segments(Some((49152, 65535)), &[]);
        assert_eq!(plan.segments, [(10000, 49151)]);
        assert_eq!(plan.note, None);
    }

    #[test]
    fn a_tail_of_fewer_than_256_ports_is_dropped() {
        let plan = choose_segments(Some((32768, 65300)), &[]);
        assert_eq!(plan.segments, [(10000, 32767)]);
        let plan = choose_segments(Some((32768, 65279)), &[]);
        assert_eq!(plan.segments, [(10000, 32767), (65280, 65535)]);
    }

    #[test]
    fn freebsds_default_moves_the_pool_below_10000_and_says_so() {
        let ephemeral = bsd_ephemeral(10000, 65535);
        assert_eq!(ephemeral, Some((10000, 65535)));
        let plan = choose_segments(ephemeral, &[]);
        assert_eq!(plan.segments, [(1024, 9999)]);
        let note = plan.note.unwrap();
        assert!(
            note.contains("10000-65535") && note.contains("1024-9999"),
            "{note}"
        );
    }

    #[test]
    fn an_ephemeral_range_over_everything_shares_it() {
        let plan = choose_segments(Some((1024, 65535)), &[(20000, 20099)]);
        assert_eq!(plan.segments, [(10000, 19999), (20100, 65535)]);
        assert!(plan.note.unwrap().contains("shared"));
    }

    #[test]
    fn excluded_ranges_are_cut_out() {
        // Hyper-V style reservations inside the pool; one leaves a sliver.
        let excluded = [
            (40000, 40099),
            (40200, 40299),
            (47001, 47001),
            (10000, 10099),
        ];
        let plan = choose_segments(Some((49152, 65535)), &excluded);
        assert_eq!(
            plan.segments,
            [(10100, 39999), (40300, 47000), (47002, 49151)]
        );
        assert_eq!(plan.note, None);
    }

    #[test]
    fn overlapping_and_unsorted_exclusions() {
        assert_eq!(
            subtract(
                (10000, 20000),
                &[(15000, 16000), (12000, 15500), (19900, 30000)]
            ),
            [(10000, 11999), (16001, 19899)]
        );
        assert_eq!(subtract((10000, 65535), &[(0, 65535)]), []);
        assert_eq!(subtract((65000, 65535), &[]), [(65000, 65535)]);
    }

    #[test]
    fn bsd_sysctl_values() {
        assert_eq!(bsd_ephemeral(49152, 65535), Some((49152, 65535)));
        // The kernel counts down when first > last.
        assert_eq!(bsd_ephemeral(65535, 49152), Some((49152, 65535)));
        assert_eq!(bsd_ephemeral(0, 65535), None);
        assert_eq!(bsd_ephemeral(49152, 65536), None);
        assert_eq!(bsd_ephemeral(-1, 5), None);
    }

    #[test]
    fn dynamic_port_output() {
        let english = "\r\nProtocol tcp Dynamic Port Range\r\n---------------------------------\r\nStart Port      : 49152\r\nNumber of Ports : 16384\r\n\r\n";
        assert_eq!(parse_dynamic_port(english), Some((49152, 65535)));
        // Another language (labels as a German Windows might print them).
        let german = "\nProtokoll tcp Dynamischer Portbereich\n---------------------------------\nStartport       : 10000\nAnzahl der Ports: 1000\n";
        assert_eq!(parse_dynamic_port(german), Some((10000, 10999)));
        // Not two numbers, or past 65535: no answer.
        assert_eq!(
            parse_dynamic_port("The requested operation requires elevation."),
            None
        );
        assert_eq!(
            parse_dynamic_port("Start Port : 60000\nNumber of Ports : 6000\n"),
            None
        );
        assert_eq!(parse_dynamic_port("Start Port : 49152\n"), None);
        assert_eq!(
            parse_dynamic_port("Start Port : 0\nNumber of Ports : 0\n"),
            None
        );
    }

    #[test]
    fn excluded_range_output() {
        let text = "\r\nProtocol tcp Port Exclusion Ranges\r\n\r\nStart Port    End Port\r\n----------    --------\r\n      5357        5357\r\n     49671       49770\r\n     50000       50059     *\r\n\r\n* - Administered port exclusions.\r\n\r\n";
        let row = |start, end, administered| Excluded {
            start,
            end,
            administered,
        };
        assert_eq!(
            parse_excluded_ranges(text),
            [
                row(5357, 5357, false),
                row(49671, 49770, false),
                row(50000, 50059, true)
            ]
        );
        assert_eq!(parse_excluded_ranges(""), []);
        // Malformed rows are skipped, not guessed.
        assert_eq!(
            parse_excluded_ranges("  70000  70001\n 5 4\n 1 2 3\n 1 2 x\n"),
            []
        );
    }
}
