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
    let text = as_utf8(&body)?;
    let trimmed = trim_json_whitespace(&text);
    if body.is_empty() || trimmed == b"null" {
        return Ok(T::default());
    }
    // Not JSON, as `json.loads` says too; but no body at all would have done.
    if trimmed.is_empty() {
        return Err(BodyError::Invalid(
            "The request body is only white space; send a JSON object, or no body at all."
                .to_owned(),
        ));
    }
    decode_utf8(&text)
}

/// The body as UTF-8, read as the original app's `json.loads` of the bytes reads it (Python's
/// `json.detect_encoding`): without a leading UTF-8 byte order mark, and UTF-16 or UTF-32, told by
/// their byte order mark or by the zero bytes around the first character (which JSON requires to
/// be ASCII), decoded. Anything else is returned as it is, for the JSON parser to judge.
fn as_utf8(body: &[u8]) -> Result<std::borrow::Cow<'_, [u8]>, BodyError> {
    use std::borrow::Cow;
    if let Some(rest) = body.strip_prefix(b"\xEF\xBB\xBF") {
        return Ok(Cow::Borrowed(rest));
    }
    let (unit, big_endian, bom) = match body {
        [0, 0, 0xFE, 0xFF, ..] => (4, true, 4),
        [0xFF, 0xFE, 0, 0, ..] => (4, false, 4),
        [0xFE, 0xFF, ..] => (2, true, 2),
        [0xFF, 0xFE, ..] => (2, false, 2),
        [0, second, _, _, ..] => (if *second == 0 { 4 } else { 2 }, true, 0),
        [_, 0, third, fourth, ..] => (if *third == 0 && *fourth == 0 { 4 } else { 2 }, false, 0),
        [0, _] => (2, true, 0),
        [_, 0] => (2, false, 0),
        _ => return Ok(Cow::Borrowed(body)),
    };
    let encoded = &body[bom..];
    let decoded: Option<String> = if !encoded.len().is_multiple_of(unit) {
        None
    } else if unit == 2 {
        let units = encoded.chunks_exact(2).map(|pair| {
            let pair = [pair[0], pair[1]];
            if big_endian {
                u16::from_be_bytes(pair)
            } else {
                u16::from_le_bytes(pair)
            }
        });
        char::decode_utf16(units).collect::<Result<_, _>>().ok()
    } else {
        encoded
            .chunks_exact(4)
            .map(|quad| {
                let quad = [quad[0], quad[1], quad[2], quad[3]];
                char::from_u32(if big_endian {
                    u32::from_be_bytes(quad)
                } else {
                    u32::from_le_bytes(quad)
                })
            })
            .collect()
    };
    decoded
        .map(|text| Cow::Owned(text.into_bytes()))
        .ok_or_else(|| {
            BodyError::Invalid(format!(
                "The request body is neither UTF-8 nor valid UTF-{} text.",
                unit * 8
            ))
        })
}

/// JSON's own white space (RFC 8259): space, tab, line feed, carriage return; not a form feed.
fn is_json_whitespace(byte: &u8) -> bool {
    matches!(byte, b' ' | b'\t' | b'\n' | b'\r')
}

fn trim_json_whitespace(text: &[u8]) -> &[u8] {
    let start = text.iter().position(|byte| !is_json_whitespace(byte));
    let end = text.iter().rposition(|byte| !is_json_whitespace(byte));
    match (start, end) {
        (Some(start), Some(end)) => &text[start..=end],
        _ => &[],
    }
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
    decode_utf8(&as_utf8(body)?)
}

/// [`decode`] of a body already read as UTF-8 (see [`as_utf8`]).
fn decode_utf8<T: DeserializeOwned>(body: &[u8]) -> Result<T, BodyError> {
    if body.iter().all(is_json_whitespace) {
        return Err(BodyError::Invalid(
            "The request body is empty; a JSON object is expected.".to_owned(),
        ));
    }
    // serde would also build a struct from a JSON array (`["hi"]`); only objects are requests.
    let first = body.iter().find(|byte| !is_json_whitespace(byte));
    if first != Some(&b'{') {
        if let Err(error) = serde_json::from_slice::<serde::de::IgnoredAny>(body) {
            return Err(BodyError::Invalid(not_json(&error)));
        }
        return Err(BodyError::Invalid(
            "The request body must be a JSON object.".to_owned(),
        ));
    }
    serde_json::from_slice(body)
        .or_else(|error| {
            // Perhaps a field given twice (the first time even of another type): the original app
            // took the last, as Python's `json` does. Read again through a map, which keeps the
            // last, only then, so the common case stays one pass; if that fails too, the first
            // error stands.
            if error.classify() != Category::Data {
                return Err(error);
            }
            match serde_json::from_slice::<serde_json::Value>(body) {
                // Still wrong: the first error says where, unless it was only the repetition,
                // when what is wrong with the last value is the news.
                Ok(last_wins) => serde_json::from_value(last_wins).map_err(|last_error| {
                    if error.to_string().starts_with("duplicate field") {
                        last_error
                    } else {
                        error
                    }
                }),
                Err(_) => Err(error),
            }
        })
        .map_err(|error| match error.classify() {
            Category::Data => BodyError::Invalid(format!("Invalid request body: {error}.")),
            Category::Syntax | Category::Eof | Category::Io => BodyError::Invalid(not_json(&error)),
        })
}

/// Why a body is not JSON, in serde's words, and for a `\u` escape what it should have been:
/// serde says "unexpected end of hex escape" of `"\ud800 x"`, half of a surrogate pair, which
/// Python's `json` would take (as text no store here can hold).
fn not_json(error: &serde_json::Error) -> String {
    let why = error.to_string();
    if why.contains("hex escape") {
        format!(
            "The request body is not valid JSON: {why} (a \\u escape is four hex digits, and one \
             of a UTF-16 surrogate pair needs the other right after it)."
        )
    } else {
        format!("The request body is not valid JSON: {why}.")
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dto::SeedSendRequest;

    fn message(body: &[u8]) -> Result<String, String> {
        decode::<SeedSendRequest>(body)
            .map(|request| request.message)
            .map_err(|error| error.to_string())
    }

    fn utf16(text: &str, big_endian: bool, bom: bool) -> Vec<u8> {
        let mut bytes = Vec::new();
        if bom {
            bytes.extend(if big_endian {
                [0xFE, 0xFF]
            } else {
                [0xFF, 0xFE]
            });
        }
        for unit in text.encode_utf16() {
            bytes.extend(if big_endian {
                unit.to_be_bytes()
            } else {
                unit.to_le_bytes()
            });
        }
        bytes
    }

    fn utf32(text: &str, big_endian: bool) -> Vec<u8> {
        text.chars()
            .flat_map(|c| {
                if big_endian {
                    u32::from(c).to_be_bytes()
                } else {
                    u32::from(c).to_le_bytes()
                }
            })
            .collect()
    }

    #[test]
    fn bodies_the_original_apps_json_loads_read_are_read() {
        let json = r#"{"message": "héllo 😀"}"#;
        assert_eq!(message(json.as_bytes()).unwrap(), "héllo 😀");
        let with_bom = [b"\xEF\xBB\xBF".as_slice(), json.as_bytes()].concat();
        assert_eq!(message(&with_bom).unwrap(), "héllo 😀");
        for (big_endian, bom) in [(false, true), (true, true), (false, false), (true, false)] {
            assert_eq!(
                message(&utf16(json, big_endian, bom)).unwrap(),
                "héllo 😀",
                "UTF-16, big endian {big_endian}, byte order mark {bom}"
            );
        }
        for big_endian in [false, true] {
            assert_eq!(message(&utf32(json, big_endian)).unwrap(), "héllo 😀");
        }
        assert_eq!(
            message(br#"{"message": "first", "message": "last"}"#).unwrap(),
            "last"
        );
        assert_eq!(
            message(br#"{"message": 5, "message": "last"}"#).unwrap(),
            "last"
        );
    }

    #[test]
    fn what_it_refused_is_still_refused() {
        let truncated = &utf16(r#"{"message": "x"}"#, false, true)[..7];
        assert_eq!(
            message(truncated).unwrap_err(),
            "The request body is neither UTF-8 nor valid UTF-16 text."
        );
        assert_eq!(
            message(b"\x0c{}").unwrap_err(),
            "The request body is not valid JSON: expected value at line 1 column 1.",
            "a form feed is not JSON's white space"
        );
        assert!(
            message(br#"{"message": "a", "message": 5}"#)
                .unwrap_err()
                .contains("invalid type: integer `5`"),
            "the last value's fault, not the repetition"
        );
        for half in [
            &br#"{"message": "\ud800 x"}"#[..],
            br#"{"message": "\ud800\u0041"}"#,
        ] {
            let refused = message(half).unwrap_err();
            assert!(
                refused.contains("one of a UTF-16 surrogate pair needs the other right after it"),
                "{refused}"
            );
        }
        for body in [
            truncated,
            br#"{"message": 5}"#.as_slice(),
            br#"{"message": "a", "message": 5}"#.as_slice(),
            b"\xEF\xBB\xBF",
            b"\xEF\xBB\xBF[1]",
            b"{\"message\": \"\xff\"}",
        ] {
            assert!(message(body).is_err(), "{body:?}");
        }
    }
}
