//! Cursor decoding and page limits on hostile input.
//!
//! Invariants: decoding never panics; a token that decodes re-encodes to exactly the same token
//! (one cursor, one spelling); `PageLimit::new` accepts exactly 1..=MAX.
#![no_main]

use domain::{ConversationCursor, MessageCursor, PageLimit};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if data.len() >= 8 {
        let raw = i64::from_le_bytes(data[..8].try_into().expect("eight bytes"));
        match PageLimit::new(raw) {
            Ok(limit) => {
                assert!((1..=i64::from(PageLimit::MAX)).contains(&raw));
                assert_eq!(i64::from(limit.get()), raw);
            }
            Err(_) => assert!(!(1..=i64::from(PageLimit::MAX)).contains(&raw)),
        }
    }

    let Ok(token) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(cursor) = MessageCursor::decode(token) {
        assert!(cursor.position >= 0);
        assert_eq!(cursor.encode(), token, "message cursor has two spellings");
        assert_eq!(MessageCursor::decode(&cursor.encode()), Ok(cursor));
    }
    if let Ok(cursor) = ConversationCursor::decode(token) {
        assert_eq!(cursor.encode(), token, "conversation cursor has two spellings");
        assert_eq!(ConversationCursor::decode(&cursor.encode()), Ok(cursor));
    }
});
