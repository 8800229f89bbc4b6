//! Every failure a client can see, as JSON. Product API errors carry a stable `code`; seed API
//! errors keep the original `{"status": "error", "message": ...}` shape exactly.

use actix_web::http::header::{self, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use domain::{AssistantError, ChatError, CursorError, RepositoryError, TextError};
use serde::Serialize;

use crate::body::BodyError;

/// Seconds a client should wait before retrying an overloaded or unavailable service.
const RETRY_AFTER_SECS: u64 = 1;

/// A product API error: status, stable machine-readable code and a sentence for humans.
#[derive(Debug)]
pub(crate) struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    retry_after: Option<u64>,
    /// What the request may use instead, sent as a header.
    accepted: Option<Accepted>,
    /// The whole cause, for the log only; never sent to the client.
    cause: Option<String>,
}

/// What a refused request may use instead.
#[derive(Debug)]
enum Accepted {
    /// The methods the resource allows (`Allow`, for a 405).
    Methods(String),
    /// Only unencoded bodies (`Accept-Encoding: identity`, for a body in a content coding).
    IdentityEncoding,
}

#[derive(Serialize)]
struct ApiErrorBody<'a> {
    status: &'static str,
    message: &'a str,
    code: &'a str,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            retry_after: None,
            accepted: None,
            cause: None,
        }
    }

    fn retry_later(mut self) -> Self {
        self.retry_after = Some(RETRY_AFTER_SECS);
        self
    }

    /// Asks the client to wait `seconds` before trying again (`Retry-After`).
    pub(crate) fn retry_after_secs(mut self, seconds: u64) -> Self {
        self.retry_after = Some(seconds);
        self
    }

    fn caused_by(mut self, cause: &dyn std::fmt::Display) -> Self {
        self.cause = Some(cause.to_string());
        self
    }

    pub(crate) fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    pub(crate) fn not_found() -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "There is nothing at this address.",
        )
    }

    pub(crate) fn method_not_allowed(allow: &str) -> Self {
        let mut error = Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "This method is not allowed on this address.",
        );
        error.accepted = Some(Accepted::Methods(allow.to_owned()));
        error
    }

    fn build_response(&self) -> actix_web::HttpResponseBuilder {
        let mut response = HttpResponse::build(self.status);
        if let Some(seconds) = self.retry_after {
            response.insert_header((header::RETRY_AFTER, HeaderValue::from(seconds)));
        }
        match &self.accepted {
            Some(Accepted::Methods(allow)) => {
                response.insert_header((header::ALLOW, allow.as_str()));
            }
            Some(Accepted::IdentityEncoding) => {
                response.insert_header((header::ACCEPT_ENCODING, "identity"));
            }
            None => {}
        }
        response
    }

    pub(crate) fn conversation_not_found() -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "conversation_not_found",
            "Conversation not found.",
        )
    }

    pub(crate) fn invalid_id() -> Self {
        Self::bad_request("invalid_id", "The conversation id must be a UUID.")
    }

    /// Names the field a text error is about ("content", "title").
    pub(crate) fn for_text_field(error: ChatError, field: &str) -> Self {
        match error {
            ChatError::InvalidText(text) => text_error(field, &text),
            other => other.into(),
        }
    }

    /// A title longer than its fixed, documented maximum is an invalid field (400); only message
    /// text over the configurable limit is treated as too large a payload (413).
    pub(crate) fn for_title(error: ChatError) -> Self {
        match error {
            ChatError::InvalidText(text @ TextError::TooLong { .. }) => {
                ApiError::bad_request("text_too_long", format!("title {text}"))
            }
            other => Self::for_text_field(other, "title"),
        }
    }

    pub(crate) fn code(&self) -> &'static str {
        self.code
    }

    pub(crate) fn message(&self) -> &str {
        &self.message
    }

    fn log(&self) {
        if self.status.is_server_error() {
            tracing::error!(
                status = self.status.as_u16(),
                code = self.code,
                cause = self.cause.as_deref().unwrap_or(""),
                "request failed"
            );
        }
    }
}

fn text_error(field: &str, error: &TextError) -> ApiError {
    match error {
        TextError::TooLong { .. } => ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "text_too_long",
            format!("{field} {error}"),
        ),
        TextError::Blank | TextError::NulCharacter => {
            ApiError::bad_request("invalid_text", format!("{field} {error}"))
        }
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.message, self.code)
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.status
    }

    fn error_response(&self) -> HttpResponse {
        self.log();
        self.build_response().json(ApiErrorBody {
            status: "error",
            message: &self.message,
            code: self.code,
        })
    }
}

impl From<RepositoryError> for ApiError {
    fn from(error: RepositoryError) -> Self {
        match &error {
            RepositoryError::NotFound => ApiError::conversation_not_found(),
            RepositoryError::Conflict => {
                ApiError::new(StatusCode::CONFLICT, "conflict", "This already exists.")
            }
            RepositoryError::Unavailable(_) => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "storage_unavailable",
                "Storage is unavailable; try again shortly.",
            )
            .retry_later()
            .caused_by(&error),
            RepositoryError::Overloaded => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "overloaded",
                "The server is busy; try again shortly.",
            )
            .retry_later(),
            RepositoryError::Unknown(cause) => internal(&format!("{cause:#}")),
        }
    }
}

impl From<AssistantError> for ApiError {
    fn from(error: AssistantError) -> Self {
        match &error {
            AssistantError::Provider(_) => ApiError::new(
                StatusCode::BAD_GATEWAY,
                "assistant_failed",
                "The assistant could not produce a reply.",
            )
            .caused_by(&error),
            AssistantError::Timeout => ApiError::new(
                StatusCode::GATEWAY_TIMEOUT,
                "assistant_timeout",
                "The assistant did not answer in time.",
            ),
            AssistantError::Overloaded => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "assistant_overloaded",
                "The assistant is busy; try again shortly.",
            )
            .retry_later(),
            AssistantError::Unknown(cause) => internal(&format!("{cause:#}")),
        }
    }
}

impl From<ChatError> for ApiError {
    fn from(error: ChatError) -> Self {
        match error {
            ChatError::InvalidText(text) => text_error("content", &text),
            ChatError::InvalidPage(CursorError::Malformed) => {
                ApiError::bad_request("invalid_cursor", "The cursor is not valid.")
            }
            ChatError::InvalidPage(limit @ CursorError::LimitOutOfRange { .. }) => {
                ApiError::bad_request("invalid_limit", limit.to_string())
            }
            ChatError::ConversationNotFound => ApiError::conversation_not_found(),
            ChatError::DeletedConversationId => ApiError::new(
                StatusCode::CONFLICT,
                "conversation_deleted",
                "A conversation with this id was deleted, and ids are not used again; choose a new id.",
            ),
            ChatError::Storage(storage) => storage.into(),
            ChatError::Assistant(assistant) => assistant.into(),
            ChatError::CutShort => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "shutting_down",
                "The server stopped before the reply began; send the message again.",
            )
            .retry_later(),
            // The final event of the stopped reply's stream, or the answer to its message when
            // the client that chose its id stopped it before it began: its stop was asked for.
            ChatError::Stopped => ApiError::new(
                StatusCode::CONFLICT,
                "stopped",
                "The reply was stopped before it began; nothing was stored.",
            ),
        }
    }
}

impl From<BodyError> for ApiError {
    fn from(error: BodyError) -> Self {
        match error {
            BodyError::TooLarge { .. } => ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                error.to_string(),
            ),
            BodyError::UnsupportedMediaType => ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                error.to_string(),
            ),
            // RFC 9110 (15.5.16): a refused content coding is answered with the codings accepted.
            BodyError::UnsupportedEncoding(_) => {
                let mut refused = ApiError::new(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "unsupported_media_type",
                    error.to_string(),
                );
                refused.accepted = Some(Accepted::IdentityEncoding);
                refused
            }
            BodyError::Invalid(_) | BodyError::Read(_) => {
                ApiError::bad_request("invalid_body", error.to_string())
            }
            BodyError::TimedOut(_) => ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                "body_timeout",
                error.to_string(),
            ),
        }
    }
}

fn internal(cause: &str) -> ApiError {
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal_error",
        "Internal Server Error",
    )
    .caused_by(&cause)
}

/// A seed API error: `{"status": "error", "message": ...}`, as the original app answered.
#[derive(Debug)]
pub(crate) struct SeedError(ApiError);

#[derive(Serialize)]
struct SeedErrorBody<'a> {
    status: &'static str,
    message: &'a str,
}

impl std::fmt::Display for SeedError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl ResponseError for SeedError {
    fn status_code(&self) -> StatusCode {
        self.0.status
    }

    fn error_response(&self) -> HttpResponse {
        self.0.log();
        self.0.build_response().json(SeedErrorBody {
            status: "error",
            message: &self.0.message,
        })
    }
}

impl<E: Into<ApiError>> From<E> for SeedError {
    fn from(error: E) -> Self {
        SeedError(error.into())
    }
}

impl SeedError {
    pub(crate) fn for_text_field(error: ChatError, field: &str) -> Self {
        SeedError(ApiError::for_text_field(error, field))
    }
}

/// Whether `routed_path` (the path as the router matched it, percent-encoding decoded) is one of
/// the seed routes, whose errors keep the original app's `{status, message}` body.
pub(crate) fn is_seed_path(routed_path: &str) -> bool {
    routed_path.starts_with("/chat/")
}

/// `error` in the shape of the route at `routed_path`: the seed routes keep their
/// `{status, message}` body, the product API adds its `code`.
pub(crate) fn response_for_route(routed_path: &str, error: ApiError) -> HttpResponse {
    if is_seed_path(routed_path) {
        SeedError::from(error).error_response()
    } else {
        error.error_response()
    }
}
