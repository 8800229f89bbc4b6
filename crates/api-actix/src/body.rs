//! Reading a JSON request body with the limits and error messages this API promises, instead of
//! the framework's plain-text extractor errors.

use actix_web::http::header;
use actix_web::{web, HttpRequest};
use bytes::BytesMut;
use futures::StreamExt;
use serde::de::DeserializeOwned;
use serde_json::error::Category;

#[derive(Debug, thiserror::Error)]
pub(crate) enum BodyError {
    #[error("The request body is larger than {limit} bytes.")]
    TooLarge { limit: usize },
    #[error("The request body must be JSON (Content-Type: application/json).")]
    UnsupportedMediaType,
    #[error("{0}")]
    Invalid(String),
    #[error("The request body could not be read: {0}")]
    Read(String),
}

/// A body without a Content-Type is read as JSON (clients such as the original web client did
/// not always send one); any other declared type is refused.
fn is_json(request: &HttpRequest) -> bool {
    let Some(value) = request.headers().get(header::CONTENT_TYPE) else {
        return true;
    };
    let Ok(value) = value.to_str() else {
        return false;
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
    mut payload: web::Payload,
    limit: usize,
) -> Result<T, BodyError> {
    if !is_json(request) {
        return Err(BodyError::UnsupportedMediaType);
    }
    if declared_length(request).is_some_and(|length| length > limit) {
        return Err(BodyError::TooLarge { limit });
    }
    let mut body = BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|error| BodyError::Read(error.to_string()))?;
        if body.len() + chunk.len() > limit {
            return Err(BodyError::TooLarge { limit });
        }
        body.extend_from_slice(&chunk);
    }
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(BodyError::Invalid(
            "The request body is empty; a JSON object is expected.".to_owned(),
        ));
    }
    serde_json::from_slice(&body).map_err(|error| match error.classify() {
        Category::Data => BodyError::Invalid(format!("Invalid request body: {error}.")),
        Category::Syntax | Category::Eof | Category::Io => {
            BodyError::Invalid(format!("The request body is not valid JSON: {error}."))
        }
    })
}
