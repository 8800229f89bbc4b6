//! Request and response bodies, exactly as they appear on the wire and in the OpenAPI document.

use domain::{
    Conversation, ConversationCursor, Exchange, Message, MessageCursor, Page, Role, Timestamp,
};
use serde::de::IgnoredAny;
use serde::{Deserialize, Serialize};
use time::format_description::FormatItem;
use time::macros::format_description;
use time::OffsetDateTime;
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

/// RFC 3339 in UTC, always with six fractional digits so timestamps sort as strings.
const RFC3339_MICROS: &[FormatItem<'static>] =
    format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:6]Z");

/// A timestamp on the wire, e.g. `2026-11-23T10:15:30.123456Z`. Formatted while the response is
/// written, into a buffer on the stack: building a page's DTOs with a `String` per id and
/// timestamp took a quarter of the HTTP worker's time for a page of 50 messages.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Rfc3339(Timestamp);

/// `YYYY-MM-DDTHH:MM:SS.ffffffZ`
const RFC3339_MICROS_LEN: usize = 27;

impl Rfc3339 {
    /// The four-digit years; any other goes through the `time` crate's general formatting.
    fn write(time: OffsetDateTime, buffer: &mut [u8; RFC3339_MICROS_LEN]) -> Option<&str> {
        let year = u32::try_from(time.year())
            .ok()
            .filter(|year| *year <= 9999)?;
        let fields: [(u32, usize, usize); 7] = [
            (year, 0, 4),
            (u32::from(u8::from(time.month())), 5, 2),
            (u32::from(time.day()), 8, 2),
            (u32::from(time.hour()), 11, 2),
            (u32::from(time.minute()), 14, 2),
            (u32::from(time.second()), 17, 2),
            (time.microsecond(), 20, 6),
        ];
        *buffer = *b"0000-00-00T00:00:00.000000Z";
        for (mut value, start, digits) in fields {
            for index in (start..start + digits).rev() {
                // A digit: always below 10.
                buffer[index] = b'0' + (value % 10) as u8;
                value /= 10;
            }
        }
        std::str::from_utf8(buffer).ok()
    }
}

impl From<Timestamp> for Rfc3339 {
    fn from(timestamp: Timestamp) -> Self {
        Self(timestamp)
    }
}

impl Serialize for Rfc3339 {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let Ok(time) =
            OffsetDateTime::from_unix_timestamp_nanos(i128::from(self.0.unix_micros()) * 1000)
        else {
            return serializer.serialize_str("");
        };
        let mut buffer = [0; RFC3339_MICROS_LEN];
        match Self::write(time, &mut buffer) {
            Some(text) => serializer.serialize_str(text),
            None => serializer.serialize_str(&time.format(RFC3339_MICROS).unwrap_or_default()),
        }
    }
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
    pub id: Uuid,
    pub title: String,
    #[schema(value_type = String, format = DateTime)]
    pub created_at: Rfc3339,
    #[schema(value_type = String, format = DateTime)]
    pub updated_at: Rfc3339,
}

impl From<Conversation> for ConversationDto {
    fn from(conversation: Conversation) -> Self {
        Self {
            id: conversation.id.as_uuid(),
            title: conversation.title,
            created_at: conversation.created_at.into(),
            updated_at: conversation.updated_at.into(),
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
    pub id: Uuid,
    pub conversation_id: Uuid,
    pub role: RoleDto,
    pub content: String,
    #[schema(value_type = String, format = DateTime)]
    pub created_at: Rfc3339,
}

impl From<Message> for MessageDto {
    fn from(message: Message) -> Self {
        Self {
            id: message.id.as_uuid(),
            conversation_id: message.conversation_id.as_uuid(),
            role: match message.role {
                Role::User => RoleDto::User,
                Role::Assistant => RoleDto::Assistant,
            },
            content: message.content,
            created_at: message.created_at.into(),
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
    /// Defaults to "New chat"; not blank.
    #[serde(default)]
    #[schema(min_length = 1, max_length = 200)]
    pub title: Option<String>,
    /// The id the conversation is to have, chosen by the client (a random UUID, new for every
    /// conversation) so that a create retried after its answer was lost finds the conversation
    /// the first try made instead of making a second. Without it the server chooses one.
    #[serde(default)]
    #[schema(format = Uuid)]
    pub id: Option<String>,
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
    /// With `Accept: text/event-stream` only: the id the streamed reply is to have, chosen by the
    /// client (a random UUID, new for every message) so that it can stop the reply before its
    /// `start` event arrives. Without it the server chooses one.
    #[schema(format = Uuid)]
    pub generation_id: Option<String>,
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
#[derive(Debug, Serialize, Deserialize, ToSchema)]
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
    /// The messages list's parameter, refused here.
    #[param(ignore)]
    #[serde(default, rename = "before")]
    pub misplaced_before: Option<IgnoredAny>,
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
    /// The conversations list's parameter, refused here.
    #[param(ignore)]
    #[serde(default, rename = "cursor")]
    pub misplaced_cursor: Option<IgnoredAny>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct ResumeQuery {
    /// The last event id received (`<generation_id>:<sequence>`); the `Last-Event-ID` header
    /// takes precedence.
    pub after: Option<String>,
}

/// The server's limits on texts, as it counts them: characters are Unicode scalar values (code
/// points), not bytes or UTF-16 units.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct LimitsResponse {
    /// Longest message `content` accepted (`limits.max_message_chars`); longer is `413 text_too_long`.
    #[schema(example = 16000)]
    pub max_message_chars: usize,
    /// Longest conversation title accepted, as sent; longer is `400 text_too_long`.
    #[schema(example = 200)]
    pub max_title_chars: usize,
}

/// Where a reply asked to stop stands.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct StopResponse {
    /// `stopped` (it has ended), `finished` (it had ended before) or `stopping` (not ended yet).
    #[schema(example = "stopped")]
    pub status: &'static str,
}

impl StopResponse {
    pub(crate) const STOPPED: Self = Self { status: "stopped" };
    pub(crate) const FINISHED: Self = Self { status: "finished" };
    pub(crate) const STOPPING: Self = Self { status: "stopping" };
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct HealthResponse {
    #[schema(example = "ok")]
    pub status: &'static str,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn on_the_wire(unix_micros: i64) -> String {
        serde_json::to_string(&Rfc3339(Timestamp::from_unix_micros(unix_micros))).unwrap()
    }

    fn as_the_time_crate_formats(unix_micros: i64) -> String {
        let time =
            OffsetDateTime::from_unix_timestamp_nanos(i128::from(unix_micros) * 1000).unwrap();
        format!("\"{}\"", time.format(RFC3339_MICROS).unwrap())
    }

    #[test]
    fn timestamps_are_written_as_the_time_crate_formats_them() {
        let edges = [
            0,
            1,
            999_999,
            951_782_400_000_000,     // 2000-02-29T00:00:00Z
            1_798_761_599_999_999,   // 2026-12-31T23:59:59.999999Z
            -1,                      // 1969-12-31T23:59:59.999999Z
            -62_167_219_200_000_000, // 0000-01-01T00:00:00Z
            253_402_300_799_999_999, // 9999-12-31T23:59:59.999999Z
        ];
        // Spread over four centuries, in steps that hit every field's carries.
        let spread = (0..20_000).map(|step: i64| -2_208_988_800_000_000 + step * 631_152_000_123);
        for unix_micros in edges.into_iter().chain(spread) {
            assert_eq!(
                on_the_wire(unix_micros),
                as_the_time_crate_formats(unix_micros),
                "{unix_micros}"
            );
        }
    }

    #[test]
    fn years_before_zero_fall_back_to_the_general_formatting() {
        let year_minus_one = -62_198_755_200_000_000;
        assert_eq!(
            on_the_wire(year_minus_one),
            as_the_time_crate_formats(year_minus_one)
        );
        assert!(on_the_wire(year_minus_one).starts_with("\"-0001-01-01T"));
        // Beyond the years the time crate represents: an empty string, as before.
        assert_eq!(on_the_wire(i64::MAX), "\"\"");
    }
}
