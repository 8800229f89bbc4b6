//! Request and response bodies, exactly as they appear on the wire and in the OpenAPI document.

use domain::{
    Conversation, ConversationCursor, Exchange, Message, MessageCursor, Page, Role, Timestamp,
};
use serde::{Deserialize, Serialize};
use time::format_description::FormatItem;
use time::macros::format_description;
use time::OffsetDateTime;
use utoipa::{IntoParams, ToSchema};

/// RFC 3339 in UTC, always with six fractional digits so timestamps sort as strings.
const RFC3339_MICROS: &[FormatItem<'static>] =
    format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:6]Z");

/// E.g. `2026-11-23T10:15:30.123456Z`.
fn rfc3339(timestamp: Timestamp) -> String {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(timestamp.unix_micros()) * 1000)
        .ok()
        .and_then(|time| time.format(RFC3339_MICROS).ok())
        .unwrap_or_default()
}

// ---- seed API ----

#[derive(Debug, Deserialize, ToSchema)]
pub(crate) struct SeedSendRequest {
    /// The user's message; not blank.
    #[schema(min_length = 1)]
    pub message: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct SeedSendResponse {
    /// Always `Success`.
    #[schema(example = "Success")]
    pub status: &'static str,
    /// The assistant's reply.
    pub response: String,
}

/// One exchange of the default conversation.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct SeedHistoryEntry {
    pub user: String,
    #[serde(rename = "AI")]
    #[schema(rename = "AI")]
    pub ai: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct SeedHistoryError {
    #[schema(example = "Failed to fetch chat history.")]
    pub message: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct SeedErrorResponse {
    #[schema(example = "error")]
    pub status: String,
    pub message: String,
}

// ---- product API ----

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ErrorResponse {
    #[schema(example = "error")]
    pub status: String,
    /// A sentence for people.
    pub message: String,
    /// A stable snake_case code for programs, e.g. `conversation_not_found`.
    pub code: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ConversationDto {
    #[schema(format = Uuid)]
    pub id: String,
    pub title: String,
    #[schema(format = DateTime)]
    pub created_at: String,
    #[schema(format = DateTime)]
    pub updated_at: String,
}

impl From<Conversation> for ConversationDto {
    fn from(conversation: Conversation) -> Self {
        Self {
            id: conversation.id.to_string(),
            title: conversation.title,
            created_at: rfc3339(conversation.created_at),
            updated_at: rfc3339(conversation.updated_at),
        }
    }
}

#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub(crate) enum RoleDto {
    User,
    Assistant,
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct MessageDto {
    #[schema(format = Uuid)]
    pub id: String,
    #[schema(format = Uuid)]
    pub conversation_id: String,
    pub role: RoleDto,
    pub content: String,
    #[schema(format = DateTime)]
    pub created_at: String,
}

impl From<Message> for MessageDto {
    fn from(message: Message) -> Self {
        Self {
            id: message.id.to_string(),
            conversation_id: message.conversation_id.to_string(),
            role: match message.role {
                Role::User => RoleDto::User,
                Role::Assistant => RoleDto::Assistant,
            },
            content: message.content,
            created_at: rfc3339(message.created_at),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ConversationPage {
    pub items: Vec<ConversationDto>,
    /// Pass as `cursor` for the next page; null on the last page.
    pub next_cursor: Option<String>,
}

impl From<Page<Conversation, ConversationCursor>> for ConversationPage {
    fn from(page: Page<Conversation, ConversationCursor>) -> Self {
        Self {
            items: page.items.into_iter().map(Into::into).collect(),
            next_cursor: page.next_cursor.map(|cursor| cursor.encode()),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct MessagePage {
    /// Oldest first.
    pub items: Vec<MessageDto>,
    /// Pass as `before` for the next older page; null when there is none.
    pub next_cursor: Option<String>,
}

impl From<Page<Message, MessageCursor>> for MessagePage {
    fn from(page: Page<Message, MessageCursor>) -> Self {
        Self {
            items: page.items.into_iter().map(Into::into).collect(),
            next_cursor: page.next_cursor.map(|cursor| cursor.encode()),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ExchangeDto {
    pub user_message: MessageDto,
    pub assistant_message: MessageDto,
}

impl From<Exchange> for ExchangeDto {
    fn from(exchange: Exchange) -> Self {
        Self {
            user_message: exchange.user_message.into(),
            assistant_message: exchange.assistant_message.into(),
        }
    }
}

#[derive(Debug, Default, Deserialize, ToSchema)]
pub(crate) struct CreateConversationRequest {
    /// Defaults to "New chat".
    #[serde(default)]
    pub title: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
pub(crate) struct RenameConversationRequest {
    #[schema(min_length = 1, max_length = 200)]
    pub title: String,
}

#[derive(Debug, Deserialize, ToSchema)]
pub(crate) struct SendMessageRequest {
    /// Not blank.
    #[schema(min_length = 1)]
    pub content: String,
}

/// Data of an SSE `delta` event: the next piece of the reply.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct DeltaEvent {
    pub text: String,
}

/// Data of the SSE `start` event that opens every streamed reply.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct StreamStartEvent {
    #[schema(format = Uuid)]
    pub generation_id: String,
    #[schema(format = Uuid)]
    pub conversation_id: String,
    /// The user's message being answered.
    pub content: String,
}

/// Data of an SSE `error` event.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct StreamErrorEvent {
    pub message: String,
    pub code: String,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct ListConversationsQuery {
    /// 1 to 200, default 50.
    #[param(minimum = 1, maximum = 200)]
    pub limit: Option<i64>,
    /// `next_cursor` of the previous page.
    #[param(min_length = 1)]
    pub cursor: Option<String>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct ListMessagesQuery {
    /// 1 to 200, default 50.
    #[param(minimum = 1, maximum = 200)]
    pub limit: Option<i64>,
    /// `next_cursor` of the previous page: gives the messages before it.
    #[param(min_length = 1)]
    pub before: Option<String>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct ResumeQuery {
    /// The last event id received (`<generation_id>:<sequence>`); the `Last-Event-ID` header
    /// takes precedence.
    pub after: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct HealthResponse {
    #[schema(example = "ok")]
    pub status: &'static str,
}
