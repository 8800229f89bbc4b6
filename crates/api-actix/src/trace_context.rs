//! The W3C Trace Context `traceparent` header (<https://www.w3.org/TR/trace-context/>), so a
//! request's span can continue the caller's trace. Only the header's syntax lives here; exporting
//! traces is the server's business.

/// A valid `traceparent`: `{version}-{trace-id}-{parent-id}-{flags}` in lowercase hex.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceParent {
    pub trace_id: u128,
    /// The caller's span, the parent of ours.
    pub parent_id: u64,
    /// Whether the caller records this trace (flag bit 0).
    pub sampled: bool,
}

impl TraceParent {
    /// The length of a version 00 header, and of the part that later versions must share.
    pub const LENGTH: usize = 55;

    /// Reads a header value; `None` for what the specification says to ignore: a wrong length,
    /// uppercase or other non-hex digits, version `ff`, an all-zero trace or parent id.
    pub fn parse(header: &str) -> Option<Self> {
        let bytes = header.as_bytes();
        let shared = bytes.get(..Self::LENGTH)?;
        if shared[2] != b'-' || shared[35] != b'-' || shared[52] != b'-' {
            return None;
        }
        let version = lowercase_hex(&shared[..2])?;
        let fits_version = match version {
            0xff => false,
            0 => bytes.len() == Self::LENGTH,
            // A later version may append fields, after another dash.
            _ => bytes.get(Self::LENGTH).is_none_or(|&next| next == b'-'),
        };
        let trace_id = lowercase_hex(&shared[3..35]).filter(|&id| id != 0)?;
        let parent_id = lowercase_hex(&shared[36..52]).filter(|&id| id != 0)?;
        let flags = lowercase_hex(&shared[53..55])?;
        fits_version.then_some(Self {
            trace_id,
            parent_id: u64::try_from(parent_id).ok()?,
            sampled: flags & 1 == 1,
        })
    }
}

/// Up to 32 digits `0-9a-f`; uppercase is not allowed in `traceparent`.
fn lowercase_hex(digits: &[u8]) -> Option<u128> {
    digits.iter().try_fold(0u128, |value, &digit| {
        let nibble = match digit {
            b'0'..=b'9' => digit - b'0',
            b'a'..=b'f' => digit - b'a' + 10,
            _ => return None,
        };
        Some(value << 4 | u128::from(nibble))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALID: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn a_valid_header_gives_its_ids_and_sampled_flag() {
        assert_eq!(
            TraceParent::parse(VALID),
            Some(TraceParent {
                trace_id: 0x4bf92f3577b34da6a3ce929d0e0e4736,
                parent_id: 0x00f067aa0ba902b7,
                sampled: true,
            })
        );
        let not_sampled = VALID.replace("-01", "-00");
        assert_eq!(
            TraceParent::parse(&not_sampled).map(|t| t.sampled),
            Some(false)
        );
        // Only bit 0 means sampled; other flags may be set along with it.
        let more_flags = VALID.replace("-01", "-03");
        assert_eq!(
            TraceParent::parse(&more_flags).map(|t| t.sampled),
            Some(true)
        );
    }

    #[test]
    fn later_versions_are_read_by_their_shared_part() {
        let later = VALID.replacen("00", "cc", 1);
        assert!(TraceParent::parse(&later).is_some());
        assert!(TraceParent::parse(&format!("{later}-what-comes-next")).is_some());
        assert!(TraceParent::parse(&format!("{later}x")).is_none());
    }

    #[test]
    fn malformed_headers_are_ignored() {
        for bad in [
            "",
            "00",
            // Version ff is forbidden.
            &VALID.replacen("00", "ff", 1),
            // All-zero ids.
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            // Wrong lengths: of the whole, of each id, and version 00 with something after it.
            &VALID[..54],
            &format!("{VALID}-"),
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7a-01",
            "00-4bf92f3577b34da6a3ce929d0e0e47366-00f067aa0ba902b-01",
            "0-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-011",
            // Uppercase hex.
            &VALID.to_uppercase(),
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            // Not hex, other separators.
            "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01",
            "00_4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7_01",
            "00-+bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ] {
            assert_eq!(TraceParent::parse(bad), None, "{bad:?}");
        }
    }
}
