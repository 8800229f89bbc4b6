//! The original app's contract, kept byte for byte: `GET /chat/history`, `POST /chat/message`.

use std::sync::Arc;

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse, ResponseError};
use bytes::Bytes;
use domain::{ChatError, ChatService, HistoryCursor, Message, Page, Role};
use futures::{stream, Stream};

use crate::body::read_json;
use crate::dto::{
    SeedErrorResponse, SeedHistoryEntry, SeedHistoryError, SeedSendRequest, SeedSendResponse,
};
use crate::errors::SeedError;
use crate::state::AppState;

pub(crate) const HISTORY_ROUTE: &str = "/chat/history";
pub(crate) const MESSAGE_ROUTE: &str = "/chat/message";
pub(crate) const SEED_ROUTES: [&str; 2] = [HISTORY_ROUTE, MESSAGE_ROUTE];

/// The history could not be read: the seed contract's exact 500 body.
#[derive(Debug)]
pub(crate) struct HistoryFailed;

impl std::fmt::Display for HistoryFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Failed to fetch chat history.")
    }
}

impl ResponseError for HistoryFailed {
    fn status_code(&self) -> StatusCode {
        StatusCode::INTERNAL_SERVER_ERROR
    }

    fn error_response(&self) -> HttpResponse {
        HttpResponse::InternalServerError().json(SeedHistoryError {
            message: self.to_string(),
        })
    }
}

/// Every exchange of the default conversation, oldest first.
///
/// The array is written page by page as it is read, so a long history costs one page of memory
/// and the first bytes leave before the last rows are read.
#[utoipa::path(
    get,
    path = "/chat/history",
    tag = "seed",
    responses(
        (status = 200, description = "Every exchange, oldest first", body = [SeedHistoryEntry]),
        (status = 500, description = "Storage failed", body = SeedHistoryError),
    )
)]
pub(crate) async fn history(state: web::Data<AppState>) -> Result<HttpResponse, HistoryFailed> {
    let first = state.service.history_page(None).await.map_err(|error| {
        tracing::error!(%error, "reading the history failed");
        HistoryFailed
    })?;
    Ok(HttpResponse::Ok()
        .content_type("application/json")
        .streaming(history_stream(Arc::clone(&state.service), first)))
}

/// Pairs each user message with the reply stored right after it.
#[derive(Default)]
struct HistoryEncoder {
    opened: bool,
    wrote_entry: bool,
    pending_user: Option<String>,
}

impl HistoryEncoder {
    fn encode(&mut self, messages: Vec<Message>) -> Vec<u8> {
        let mut chunk = Vec::with_capacity(messages.iter().map(|m| m.content.len() + 16).sum());
        if !self.opened {
            chunk.push(b'[');
            self.opened = true;
        }
        for message in messages {
            match message.role {
                Role::User => self.pending_user = Some(message.content),
                Role::Assistant => {
                    let Some(user) = self.pending_user.take() else {
                        continue;
                    };
                    if self.wrote_entry {
                        chunk.push(b',');
                    }
                    let entry = SeedHistoryEntry {
                        user,
                        ai: message.content,
                    };
                    serde_json::to_writer(&mut chunk, &entry).expect("strings always serialise");
                    self.wrote_entry = true;
                }
            }
        }
        chunk
    }
}

type HistoryState = Option<(Page<Message, HistoryCursor>, HistoryEncoder)>;

fn history_stream(
    service: Arc<ChatService>,
    first: Page<Message, HistoryCursor>,
) -> impl Stream<Item = Result<Bytes, actix_web::Error>> {
    let start: HistoryState = Some((first, HistoryEncoder::default()));
    stream::unfold(start, move |state| {
        let service = Arc::clone(&service);
        async move {
            let (page, mut encoder) = state?;
            let mut chunk = encoder.encode(page.items);
            let Some(cursor) = page.next_cursor else {
                chunk.push(b']');
                return Some((Ok(Bytes::from(chunk)), None));
            };
            match service.history_page(Some(cursor)).await {
                Ok(next) => Some((Ok(Bytes::from(chunk)), Some((next, encoder)))),
                Err(error) => {
                    // The status line is gone already; cutting the body tells the client it is
                    // incomplete rather than letting it parse a truncated array as whole. A
                    // deletion while the history is read is no failure of the server's.
                    if matches!(error, ChatError::ConversationNotFound) {
                        tracing::info!(
                            "the history's conversation was deleted (or deleted and created again) while it was sent"
                        );
                    } else {
                        tracing::error!(%error, "reading the history failed mid-stream");
                    }
                    Some((
                        Err(actix_web::error::ErrorInternalServerError(HistoryFailed)),
                        None,
                    ))
                }
            }
        }
    })
}

/// Sends a message to the assistant in the default conversation and returns its reply once the
/// exchange is stored.
#[utoipa::path(
    post,
    path = "/chat/message",
    tag = "seed",
    request_body = SeedSendRequest,
    responses(
        (status = 200, description = "The exchange is stored", body = SeedSendResponse),
        (status = 400, description = "Malformed JSON, missing or non-string `message`, blank text", body = SeedErrorResponse),
        (status = 413, description = "Body or text over the limit", body = SeedErrorResponse),
        (status = 403, description = "A write from another origin's page (Sec-Fetch-Site), from an origin not allowed", body = SeedErrorResponse),
        (status = 408, description = "The body did not arrive in time", body = SeedErrorResponse),
        (status = 415, description = "Body is not JSON, or is encoded (a Content-Encoding other than identity)", body = SeedErrorResponse),
        (status = 500, description = "Internal failure", body = SeedErrorResponse),
        (status = 502, description = "The assistant failed", body = SeedErrorResponse),
        (status = 503, description = "Storage or assistant overloaded or unavailable; see Retry-After", body = SeedErrorResponse),
        (status = 504, description = "The assistant timed out", body = SeedErrorResponse),
    )
)]
pub(crate) async fn send_message(
    state: web::Data<AppState>,
    request: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, SeedError> {
    let body: SeedSendRequest = read_json(&request, payload, &state.settings).await?;
    let text = state
        .service
        .message_text(body.message)
        .map_err(|error| SeedError::for_text_field(error, "message"))?;
    let exchange = state.service.send_default_message(text).await?;
    Ok(HttpResponse::Ok().json(SeedSendResponse {
        status: "Success",
        response: exchange.assistant_message.content,
    }))
}
