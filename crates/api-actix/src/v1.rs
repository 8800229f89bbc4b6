//! The product API: conversations, cursor-paginated messages, streamed replies.

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use domain::ConversationId;

use crate::body::read_json;
use crate::dto::{
    ConversationDto, ConversationPage, CreateConversationRequest, ErrorResponse, ExchangeDto,
    ListConversationsQuery, ListMessagesQuery, MessagePage, RenameConversationRequest,
    SendMessageRequest,
};
use crate::errors::ApiError;
use crate::sse;
use crate::state::AppState;

fn conversation_id(raw: &str) -> Result<ConversationId, ApiError> {
    raw.parse().map_err(|_| ApiError::invalid_id())
}

fn wants_event_stream(request: &HttpRequest) -> bool {
    request
        .headers()
        .get_all(header::ACCEPT)
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|media| {
            media
                .split(';')
                .next()
                .is_some_and(|essence| essence.trim().eq_ignore_ascii_case("text/event-stream"))
        })
}

#[utoipa::path(
    post,
    path = "/api/v1/conversations",
    tag = "conversations",
    request_body(content = CreateConversationRequest, description = "The title is optional", content_type = "application/json"),
    responses(
        (status = 201, description = "Created", body = ConversationDto),
        (status = 400, description = "Malformed body or blank title", body = ErrorResponse),
        (status = 413, description = "Body or title too large", body = ErrorResponse),
        (status = 415, description = "Body is not JSON", body = ErrorResponse),
        (status = 503, description = "Storage unavailable or overloaded; see Retry-After", body = ErrorResponse),
        (status = 500, description = "Internal failure", body = ErrorResponse),
    )
)]
pub(crate) async fn create_conversation(
    state: web::Data<AppState>,
    request: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let body: CreateConversationRequest = if request.headers().contains_key(header::CONTENT_TYPE)
        || request
            .headers()
            .get(header::CONTENT_LENGTH)
            .is_some_and(|length| length != "0")
    {
        read_json(&request, payload, state.settings.max_body_bytes).await?
    } else {
        CreateConversationRequest::default()
    };
    let conversation = state
        .service
        .create_conversation(body.title.as_deref())
        .await
        .map_err(|error| ApiError::for_text_field(error, "title"))?;
    Ok(HttpResponse::Created()
        .insert_header((
            header::LOCATION,
            format!("/api/v1/conversations/{}", conversation.id),
        ))
        .json(ConversationDto::from(conversation)))
}

#[utoipa::path(
    get,
    path = "/api/v1/conversations",
    tag = "conversations",
    params(ListConversationsQuery),
    responses(
        (status = 200, description = "Most recently updated first", body = ConversationPage),
        (status = 400, description = "Bad limit or cursor", body = ErrorResponse),
        (status = 503, description = "Storage unavailable; see Retry-After", body = ErrorResponse),
        (status = 500, description = "Internal failure", body = ErrorResponse),
    )
)]
pub(crate) async fn list_conversations(
    state: web::Data<AppState>,
    query: web::Query<ListConversationsQuery>,
) -> Result<HttpResponse, ApiError> {
    let page = state
        .service
        .list_conversations(query.cursor.as_deref(), query.limit)
        .await?;
    Ok(HttpResponse::Ok().json(ConversationPage::from(page)))
}

#[utoipa::path(
    get,
    path = "/api/v1/conversations/{id}",
    tag = "conversations",
    params(("id" = String, Path, description = "Conversation id (UUID)")),
    responses(
        (status = 200, description = "The conversation", body = ConversationDto),
        (status = 400, description = "Malformed id", body = ErrorResponse),
        (status = 404, description = "No such conversation", body = ErrorResponse),
        (status = 503, description = "Storage unavailable; see Retry-After", body = ErrorResponse),
        (status = 500, description = "Internal failure", body = ErrorResponse),
    )
)]
pub(crate) async fn get_conversation(
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let conversation = state
        .service
        .get_conversation(conversation_id(&id)?)
        .await?;
    Ok(HttpResponse::Ok().json(ConversationDto::from(conversation)))
}

#[utoipa::path(
    patch,
    path = "/api/v1/conversations/{id}",
    tag = "conversations",
    params(("id" = String, Path, description = "Conversation id (UUID)")),
    request_body = RenameConversationRequest,
    responses(
        (status = 200, description = "Renamed", body = ConversationDto),
        (status = 400, description = "Malformed id or body, blank title", body = ErrorResponse),
        (status = 404, description = "No such conversation", body = ErrorResponse),
        (status = 413, description = "Body or title too large", body = ErrorResponse),
        (status = 415, description = "Body is not JSON", body = ErrorResponse),
        (status = 503, description = "Storage unavailable or overloaded; see Retry-After", body = ErrorResponse),
        (status = 500, description = "Internal failure", body = ErrorResponse),
    )
)]
pub(crate) async fn rename_conversation(
    state: web::Data<AppState>,
    id: web::Path<String>,
    request: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let id = conversation_id(&id)?;
    let body: RenameConversationRequest =
        read_json(&request, payload, state.settings.max_body_bytes).await?;
    let conversation = state
        .service
        .rename_conversation(id, &body.title)
        .await
        .map_err(|error| ApiError::for_text_field(error, "title"))?;
    Ok(HttpResponse::Ok().json(ConversationDto::from(conversation)))
}

#[utoipa::path(
    delete,
    path = "/api/v1/conversations/{id}",
    tag = "conversations",
    params(("id" = String, Path, description = "Conversation id (UUID)")),
    responses(
        (status = 204, description = "Deleted with all its messages"),
        (status = 400, description = "Malformed id", body = ErrorResponse),
        (status = 404, description = "No such conversation", body = ErrorResponse),
        (status = 503, description = "Storage unavailable or overloaded; see Retry-After", body = ErrorResponse),
        (status = 500, description = "Internal failure", body = ErrorResponse),
    )
)]
pub(crate) async fn delete_conversation(
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    state
        .service
        .delete_conversation(conversation_id(&id)?)
        .await?;
    Ok(HttpResponse::NoContent().finish())
}

#[utoipa::path(
    get,
    path = "/api/v1/conversations/{id}/messages",
    tag = "messages",
    params(("id" = String, Path, description = "Conversation id (UUID)"), ListMessagesQuery),
    responses(
        (status = 200, description = "A page of messages, oldest first", body = MessagePage),
        (status = 400, description = "Malformed id, bad limit or cursor", body = ErrorResponse),
        (status = 404, description = "No such conversation", body = ErrorResponse),
        (status = 503, description = "Storage unavailable; see Retry-After", body = ErrorResponse),
        (status = 500, description = "Internal failure", body = ErrorResponse),
    )
)]
pub(crate) async fn list_messages(
    state: web::Data<AppState>,
    id: web::Path<String>,
    query: web::Query<ListMessagesQuery>,
) -> Result<HttpResponse, ApiError> {
    let page = state
        .service
        .list_messages(conversation_id(&id)?, query.before.as_deref(), query.limit)
        .await?;
    Ok(HttpResponse::Ok().json(MessagePage::from(page)))
}

/// Sends a message and returns the stored exchange, or with `Accept: text/event-stream` streams
/// the reply as Server-Sent Events: `delta` events (`{"text": ...}`), then one `done` event (the
/// stored exchange) or one `error` event (`{"message", "code"}`).
#[utoipa::path(
    post,
    path = "/api/v1/conversations/{id}/messages",
    tag = "messages",
    params(("id" = String, Path, description = "Conversation id (UUID)")),
    request_body = SendMessageRequest,
    responses(
        (status = 201, description = "The stored exchange", body = ExchangeDto),
        (status = 200, description = "With Accept: text/event-stream: `event: delta` / `data: {\"text\"}` events, then `event: done` with the stored exchange or `event: error` with `{\"message\", \"code\"}`", content_type = "text/event-stream", body = String),
        (status = 400, description = "Malformed id or body, blank content", body = ErrorResponse),
        (status = 404, description = "No such conversation", body = ErrorResponse),
        (status = 413, description = "Body or content too large", body = ErrorResponse),
        (status = 415, description = "Body is not JSON", body = ErrorResponse),
        (status = 500, description = "Internal failure", body = ErrorResponse),
        (status = 502, description = "The assistant failed", body = ErrorResponse),
        (status = 503, description = "Storage or assistant overloaded or unavailable; see Retry-After", body = ErrorResponse),
        (status = 504, description = "The assistant timed out", body = ErrorResponse),
    )
)]
pub(crate) async fn send_message(
    state: web::Data<AppState>,
    id: web::Path<String>,
    request: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let id = conversation_id(&id)?;
    let body: SendMessageRequest =
        read_json(&request, payload, state.settings.max_body_bytes).await?;
    let text = state.service.message_text(body.content)?;
    if wants_event_stream(&request) {
        let pending = state.service.start_reply(id, text).await?;
        return Ok(sse::stream_reply(&state.generations, pending));
    }
    let exchange = state.service.send_message(id, text).await?;
    Ok(HttpResponse::Created().json(ExchangeDto::from(exchange)))
}
