//! Reading a JSON request body with the limits and error messages this API promises, instead of
//! the framework's plain-text extractor errors.

use std::time::Duration;

use actix_web::http::header;
use actix_web::{web, HttpRequest};
use bytes::BytesMut;
use futures::StreamExt;
use serde::de::DeserializeOwned;
use serde_json::error::Category;

use crate::state::ApiSettings;

#[derive(Debug, thiserror::Error)]
pub(crate) enum BodyError {
    #[error("The request body is larger than {limit} bytes.")]
    TooLarge { limit: usize },
    #[error("The request body must be JSON (Content-Type: application/json).")]
    UnsupportedMediaType,
    #[error("The request body must not be encoded (Content-Encoding {0:?} is not supported).")]
    UnsupportedEncoding(String),
    #[error("{0}")]
    Invalid(String),
    #[error("The request body could not be read: {0}")]
    Read(String),
    #[error("The request body did not arrive within {} seconds.", .0.as_secs())]
    TimedOut(Duration),
}

/// A body without a Content-Type is read as JSON (clients such as the original web client did
/// not always send one); any other declared type is refused.
fn is_json(request: &HttpRequest) -> bool {
    match request.headers().get(header::CONTENT_TYPE) {
        None => true,
        Some(value) => value
            .to_str()
            .is_ok_and(|value| is_json_media_type(Some(value))),
    }
}

fn is_json_media_type(content_type: Option<&str>) -> bool {
    let Some(value) = content_type else {
        return true;
    };
    let essence = value
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

/// A `Content-Encoding` other than `identity`: the body is read as it arrives, so a compressed one
/// would be taken for malformed JSON, and one in a coding nobody knows for plain text.
fn unsupported_encoding(request: &HttpRequest) -> Option<String> {
    let encodings = request.headers().get_all(header::CONTENT_ENCODING);
    encodings
        .flat_map(|value| value.to_str().unwrap_or("?").split(','))
        .map(str::trim)
        .find(|coding| !coding.is_empty() && !coding.eq_ignore_ascii_case("identity"))
        .map(str::to_owned)
}

fn declared_length(request: &HttpRequest) -> Option<usize> {
    request
        .headers()
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

pub(crate) async fn read_json<T: DeserializeOwned>(
    request: &HttpRequest,
    payload: web::Payload,
    settings: &ApiSettings,
) -> Result<T, BodyError> {
    decode(&read_json_bytes(request, payload, settings).await?)
}

/// Like [`read_json`] for a body the client may leave out: no bytes, or JSON `null` (what the
/// OpenAPI description of an optional body allows, and generated clients send), mean
/// `T::default()`, also under a JSON Content-Type, which many clients send on every request.
/// Whether there is a body is known only once it is read, as a chunked one declares no length.
pub(crate) async fn read_optional_json<T: DeserializeOwned + Default>(
    request: &HttpRequest,
    payload: web::Payload,
    settings: &ApiSettings,
) -> Result<T, BodyError> {
    let body = read_json_bytes(request, payload, settings).await?;
    if body.is_empty() || body.trim_ascii() == b"null" {
        return Ok(T::default());
    }
    decode(&body)
}

async fn read_json_bytes(
    request: &HttpRequest,
    mut payload: web::Payload,
    settings: &ApiSettings,
) -> Result<BytesMut, BodyError> {
    let limit = settings.max_body_bytes;
    if !is_json(request) {
        return Err(BodyError::UnsupportedMediaType);
    }
    if let Some(encoding) = unsupported_encoding(request) {
        return Err(BodyError::UnsupportedEncoding(encoding));
    }
    if declared_length(request).is_some_and(|length| length > limit) {
        return Err(BodyError::TooLarge { limit });
    }
    let read = async {
        let mut body = BytesMut::new();
        while let Some(chunk) = payload.next().await {
            let chunk = chunk.map_err(|error| BodyError::Read(error.to_string()))?;
            if body.len() + chunk.len() > limit {
                return Err(BodyError::TooLarge { limit });
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    };
    // The framework's request timeout ends with the head: a body sent a byte at a time would
    // hold the connection (and, on a streaming route, a stream slot) for as long as it liked.
    tokio::time::timeout(settings.body_timeout, read)
        .await
        .unwrap_or(Err(BodyError::TimedOut(settings.body_timeout)))
}

fn decode<T: DeserializeOwned>(body: &[u8]) -> Result<T, BodyError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(BodyError::Invalid(
            "The request body is empty; a JSON object is expected.".to_owned(),
        ));
    }
    // serde would also build a struct from a JSON array (`["hi"]`); only objects are requests.
    let first = body.iter().find(|byte| !byte.is_ascii_whitespace());
    if first != Some(&b'{') {
        if let Err(error) = serde_json::from_slice::<serde::de::IgnoredAny>(body) {
            return Err(BodyError::Invalid(format!(
                "The request body is not valid JSON: {error}."
            )));
        }
        return Err(BodyError::Invalid(
            "The request body must be a JSON object.".to_owned(),
        ));
    }
    serde_json::from_slice(body).map_err(|error| match error.classify() {
        Category::Data => BodyError::Invalid(format!("Invalid request body: {error}.")),
        Category::Syntax | Category::Eof | Category::Io => {
            BodyError::Invalid(format!("The request body is not valid JSON: {error}."))
        }
    })
}

/// The request parsing of `POST /chat/message` without the framework around it, for fuzzing:
/// content type check, size limit, JSON decoding, text validation. Returns the accepted text or
/// the status code the request would get.
pub fn parse_seed_message(
    content_type: Option<&str>,
    body: &[u8],
    max_body_bytes: usize,
    max_message_chars: usize,
) -> Result<String, u16> {
    if !is_json_media_type(content_type) {
        return Err(415);
    }
    if body.len() > max_body_bytes {
        return Err(413);
    }
    let request: crate::dto::SeedSendRequest = decode(body).map_err(|_| 400u16)?;
    domain::MessageText::new(request.message, max_message_chars)
        .map(domain::MessageText::into_string)
        .map_err(|error| match error {
            domain::TextError::TooLong { .. } => 413,
            _ => 400,
        })
}
