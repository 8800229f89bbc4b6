use crate::ids::{ConversationId, MessageId};
use crate::text::{ConversationTitle, MessageText};
use crate::time::Timestamp;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    User,
    Assistant,
}

impl Role {
    pub fn as_str(&self) -> &'static str {
        match self {
            Role::User => "user",
            Role::Assistant => "assistant",
        }
    }

    pub fn parse(value: &str) -> Option<Role> {
        match value {
            "user" => Some(Role::User),
            "assistant" => Some(Role::Assistant),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conversation {
    pub id: ConversationId,
    pub title: String,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

impl Conversation {
    pub fn new(id: ConversationId, title: ConversationTitle, now: Timestamp) -> Self {
        Self {
            id,
            title: title.as_str().to_owned(),
            created_at: now,
            updated_at: now,
        }
    }
}

/// A stored message. `position` is its place in the conversation (1, 2, 3, ...), assigned by the
/// repository when the exchange is stored; it defines the order and backs the page cursors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub id: MessageId,
    pub conversation_id: ConversationId,
    pub position: i64,
    pub role: Role,
    pub content: String,
    pub created_at: Timestamp,
}

/// A message not yet stored: everything but its position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewMessage {
    pub id: MessageId,
    pub content: String,
    pub created_at: Timestamp,
}

/// A user message and the assistant's reply, to be stored together or not at all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewExchange {
    pub conversation_id: ConversationId,
    pub user: NewMessage,
    pub assistant: NewMessage,
}

impl NewExchange {
    pub fn new(conversation_id: ConversationId, user_text: MessageText, reply: String) -> Self {
        let user = NewMessage {
            id: MessageId::generate(),
            content: user_text.into_string(),
            created_at: Timestamp::now(),
        };
        let assistant = NewMessage {
            id: MessageId::generate(),
            content: reply,
            created_at: Timestamp::now(),
        };
        Self {
            conversation_id,
            user,
            assistant,
        }
    }
}

/// A stored exchange: the user message directly followed by the assistant's reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exchange {
    pub user_message: Message,
    pub assistant_message: Message,
}
