//! Keyset pagination: a cursor names the last row a client saw, so every page is an index range
//! scan whose cost does not depend on how far into the list the client is.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use thiserror::Error;

use crate::ids::ConversationId;
use crate::time::Timestamp;

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum CursorError {
    #[error("the cursor is not one this server issued")]
    Malformed,
    #[error("limit must be between 1 and {max}, got {got}")]
    LimitOutOfRange { got: i64, max: u32 },
}

/// How many items one page holds: 1 to [`PageLimit::MAX`], [`PageLimit::DEFAULT`] when not given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageLimit(u32);

impl PageLimit {
    pub const DEFAULT: PageLimit = PageLimit(50);
    pub const MAX: u32 = 200;

    pub fn new(limit: i64) -> Result<Self, CursorError> {
        match u32::try_from(limit) {
            Ok(value) if (1..=Self::MAX).contains(&value) => Ok(Self(value)),
            _ => Err(CursorError::LimitOutOfRange {
                got: limit,
                max: Self::MAX,
            }),
        }
    }

    pub fn get(&self) -> u32 {
        self.0
    }
}

impl Default for PageLimit {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// One page of a list and the cursor for the page after it (`None` when this is the last one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page<T, C> {
    pub items: Vec<T>,
    pub next_cursor: Option<C>,
}

/// Which slice of a conversation's messages to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageWindow {
    /// The newest messages; the next cursor leads to older ones.
    Latest,
    /// Messages older than the cursor; the next cursor leads to still older ones.
    Before(MessageCursor),
    /// Messages newer than the cursor; the next cursor leads to still newer ones.
    After(MessageCursor),
}

/// Position of a message in its conversation, as an opaque token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MessageCursor {
    pub position: i64,
}

/// Place in the seed history: the last position sent, in the default conversation as it was when
/// the history began (its `created_at`). The conversation can be deleted and created again, empty,
/// while a long history is sent; its positions start over then, and the history must not go on
/// in the new one as if nothing had happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistoryCursor {
    pub after: MessageCursor,
    pub incarnation: Timestamp,
}

/// Place in the list of conversations ordered by `(updated_at, id)` descending.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConversationCursor {
    pub updated_at: Timestamp,
    pub id: ConversationId,
}

const MESSAGE_TAG: &str = "m1";
const CONVERSATION_TAG: &str = "c1";

fn decode_fields(token: &str, tag: &str) -> Result<Vec<String>, CursorError> {
    // Tokens are short; refusing long input early keeps decoding cheap for hostile clients.
    if token.is_empty() || token.len() > 128 {
        return Err(CursorError::Malformed);
    }
    let bytes = URL_SAFE_NO_PAD
        .decode(token)
        .map_err(|_| CursorError::Malformed)?;
    let text = String::from_utf8(bytes).map_err(|_| CursorError::Malformed)?;
    let mut fields = text.split(':').map(str::to_owned);
    if fields.next().as_deref() != Some(tag) {
        return Err(CursorError::Malformed);
    }
    Ok(fields.collect())
}

/// Only the canonical spelling is accepted ("7", never "+7" or "007"), so that a cursor has exactly
/// one token.
fn parse_integer(field: &str) -> Result<i64, CursorError> {
    let value: i64 = field.parse().map_err(|_| CursorError::Malformed)?;
    if value.to_string() != field {
        return Err(CursorError::Malformed);
    }
    Ok(value)
}

impl MessageCursor {
    pub fn encode(&self) -> String {
        URL_SAFE_NO_PAD.encode(format!("{MESSAGE_TAG}:{}", self.position))
    }

    pub fn decode(token: &str) -> Result<Self, CursorError> {
        match decode_fields(token, MESSAGE_TAG)?.as_slice() {
            [position] => {
                let position = parse_integer(position)?;
                if position < 0 {
                    return Err(CursorError::Malformed);
                }
                Ok(Self { position })
            }
            _ => Err(CursorError::Malformed),
        }
    }
}

impl ConversationCursor {
    pub fn encode(&self) -> String {
        URL_SAFE_NO_PAD.encode(format!(
            "{CONVERSATION_TAG}:{}:{}",
            self.updated_at.unix_micros(),
            self.id
        ))
    }

    pub fn decode(token: &str) -> Result<Self, CursorError> {
        match decode_fields(token, CONVERSATION_TAG)?.as_slice() {
            [micros, id_field] => {
                let updated_at = Timestamp::from_unix_micros(parse_integer(micros)?);
                let id: ConversationId = id_field.parse().map_err(|_| CursorError::Malformed)?;
                // The UUID parser also takes upper case, braces and URNs; only our own spelling
                // is a cursor, so that every cursor has exactly one token.
                if id.to_string() != *id_field {
                    return Err(CursorError::Malformed);
                }
                Ok(Self { updated_at, id })
            }
            _ => Err(CursorError::Malformed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use uuid::Uuid;

    #[test]
    fn limits_outside_the_range_are_rejected() {
        assert!(PageLimit::new(0).is_err());
        assert!(PageLimit::new(-1).is_err());
        assert!(PageLimit::new(201).is_err());
        assert_eq!(PageLimit::new(200).unwrap().get(), 200);
        assert_eq!(PageLimit::default().get(), 50);
    }

    #[test]
    fn cursors_of_one_kind_are_not_accepted_as_the_other() {
        let message = MessageCursor { position: 7 }.encode();
        assert_eq!(
            ConversationCursor::decode(&message),
            Err(CursorError::Malformed)
        );
        let conversation = ConversationCursor {
            updated_at: Timestamp::from_unix_micros(1),
            id: ConversationId::generate(),
        }
        .encode();
        assert_eq!(
            MessageCursor::decode(&conversation),
            Err(CursorError::Malformed)
        );
    }

    #[test]
    fn only_the_canonical_uuid_spelling_is_a_cursor() {
        let id = ConversationId::generate();
        let upper = URL_SAFE_NO_PAD.encode(format!("c1:5:{}", id.to_string().to_uppercase()));
        assert_eq!(
            ConversationCursor::decode(&upper),
            Err(CursorError::Malformed)
        );
        let canonical = URL_SAFE_NO_PAD.encode(format!("c1:5:{id}"));
        assert!(ConversationCursor::decode(&canonical).is_ok());
    }

    proptest! {
        #[test]
        fn message_cursors_round_trip(position in 0i64..=i64::MAX) {
            let cursor = MessageCursor { position };
            prop_assert_eq!(MessageCursor::decode(&cursor.encode()), Ok(cursor));
        }

        #[test]
        fn conversation_cursors_round_trip(micros in any::<i64>(), raw in any::<u128>()) {
            let cursor = ConversationCursor {
                updated_at: Timestamp::from_unix_micros(micros),
                id: ConversationId::from_uuid(Uuid::from_u128(raw)),
            };
            prop_assert_eq!(ConversationCursor::decode(&cursor.encode()), Ok(cursor));
        }

        #[test]
        fn arbitrary_tokens_never_panic(token in any::<String>()) {
            let _ = MessageCursor::decode(&token);
            let _ = ConversationCursor::decode(&token);
        }

        #[test]
        fn decoded_cursors_encode_back_to_the_same_token(token in "[A-Za-z0-9_-]{0,40}") {
            if let Ok(cursor) = MessageCursor::decode(&token) {
                prop_assert_eq!(cursor.encode(), token.clone());
            }
            if let Ok(cursor) = ConversationCursor::decode(&token) {
                prop_assert_eq!(cursor.encode(), token);
            }
        }
    }
}
