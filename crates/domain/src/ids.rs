use std::fmt;
use std::str::FromStr;

use uuid::Uuid;

macro_rules! uuid_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(Uuid);

        impl $name {
            /// A new id. UUID v7 ids sort by creation time, which keeps index inserts append-only.
            pub fn generate() -> Self {
                Self(Uuid::now_v7())
            }

            pub fn from_uuid(uuid: Uuid) -> Self {
                Self(uuid)
            }

            pub fn as_uuid(&self) -> Uuid {
                self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }

        impl FromStr for $name {
            type Err = uuid::Error;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Uuid::parse_str(s).map(Self)
            }
        }
    };
}

uuid_id!(
    /// Identifies a conversation.
    ConversationId
);
uuid_id!(
    /// Identifies one message.
    MessageId
);
uuid_id!(
    /// Identifies one streamed reply, from its start to its end.
    GenerationId
);

impl ConversationId {
    /// The conversation the seed API (`/chat/history`, `/chat/message`) reads and writes. A fixed id
    /// so that every replica and every restart agree on it.
    pub const DEFAULT: ConversationId =
        ConversationId(Uuid::from_u128(0x0000_0000_0000_7000_8000_0000_0000_0000));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_ids_sort_by_creation() {
        let first = MessageId::generate();
        let second = MessageId::generate();
        assert!(first < second);
    }

    #[test]
    fn ids_round_trip_through_text() {
        let id = ConversationId::generate();
        assert_eq!(id.to_string().parse::<ConversationId>().unwrap(), id);
        assert_eq!(
            ConversationId::DEFAULT.to_string(),
            "00000000-0000-7000-8000-000000000000"
        );
    }

    #[test]
    fn malformed_ids_are_rejected() {
        assert!("not-a-uuid".parse::<ConversationId>().is_err());
    }
}
