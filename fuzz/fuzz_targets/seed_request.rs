//! `POST /chat/message` request parsing: arbitrary content type, body bytes and limits.
//!
//! Invariants: never panics; an accepted text is not blank and within the character limit (and
//! the body within the byte limit); a refusal is only 400, 413 or 415.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // Layout: [selector][max_chars lo][max_chars hi][body limit lo][body limit hi][ct len][ct...][body...]
    if data.len() < 6 {
        return;
    }
    let selector = data[0];
    let max_chars = usize::from(u16::from_le_bytes([data[1], data[2]]));
    let max_body = usize::from(u16::from_le_bytes([data[3], data[4]]));
    let ct_len = usize::from(data[5]).min(data.len() - 6);
    let (ct_bytes, body) = data[6..].split_at(ct_len);
    let raw_ct = String::from_utf8_lossy(ct_bytes);
    // Bias towards content types that pass the check so the JSON path gets most of the time.
    let content_type: Option<&str> = match selector % 4 {
        0 => None,
        1 => Some("application/json"),
        2 => Some("application/json; charset=utf-8"),
        _ => Some(raw_ct.as_ref()),
    };

    match api_actix::parse_seed_message(content_type, body, max_body, max_chars) {
        Ok(text) => {
            assert!(!text.trim().is_empty(), "accepted a blank message: {text:?}");
            assert!(
                text.chars().count() <= max_chars,
                "accepted {} chars over the limit of {max_chars}",
                text.chars().count()
            );
            assert!(body.len() <= max_body, "accepted a body over the byte limit");
        }
        Err(status) => assert!(
            matches!(status, 400 | 413 | 415),
            "unexpected status {status}"
        ),
    }
});
