use utoipa::OpenApi;

use crate::dto;
use crate::{ops, seed, v1};

/// The OpenAPI 3.1 document, generated from the handlers and DTOs themselves.
#[derive(Debug, OpenApi)]
#[openapi(
    info(
        title = "Chat service API",
        description = "Self-hostable AI chat. The `seed` routes keep the original app's contract; `/api/v1` is the product API."
    ),
    paths(
        seed::history,
        seed::send_message,
        v1::create_conversation,
        v1::list_conversations,
        v1::get_conversation,
        v1::rename_conversation,
        v1::delete_conversation,
        v1::list_messages,
        v1::send_message,
        v1::resume_stream,
        ops::healthz,
        ops::readyz,
        ops::metrics,
    ),
    components(schemas(
        dto::SeedSendRequest,
        dto::SeedSendResponse,
        dto::SeedHistoryEntry,
        dto::SeedHistoryError,
        dto::SeedErrorResponse,
        dto::ErrorResponse,
        dto::ConversationDto,
        dto::MessageDto,
        dto::RoleDto,
        dto::ConversationPage,
        dto::MessagePage,
        dto::ExchangeDto,
        dto::CreateConversationRequest,
        dto::RenameConversationRequest,
        dto::SendMessageRequest,
        dto::DeltaEvent,
        dto::StreamStartEvent,
        dto::StreamErrorEvent,
        dto::HealthResponse,
    )),
    tags(
        (name = "seed", description = "The original app's API, unchanged"),
        (name = "conversations", description = "Conversations"),
        (name = "messages", description = "Messages and replies"),
        (name = "operations", description = "Health, readiness, metrics"),
    )
)]
pub struct ApiDoc;
