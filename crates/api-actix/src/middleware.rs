//! Cross-cutting HTTP concerns: request ids, tracing spans, metrics, CORS and security headers.

use std::time::Instant;

use actix_cors::Cors;
use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{self, HeaderName, HeaderValue};
use actix_web::middleware::{DefaultHeaders, Next};
use actix_web::Error;
use tracing::Instrument;

use crate::state::ApiSettings;

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// A caller's request id is kept when it is short and printable, so ids can be followed across
/// services; anything else is replaced, so logs never carry hostile header content.
fn request_id(request: &ServiceRequest) -> String {
    request
        .headers()
        .get(&REQUEST_ID)
        .and_then(|value| value.to_str().ok())
        .filter(|value| {
            !value.is_empty()
                && value.len() <= 64
                && value
                    .bytes()
                    .all(|byte| byte.is_ascii_alphanumeric() || b"-_.:".contains(&byte))
        })
        .map(str::to_owned)
        .unwrap_or_else(|| uuid::Uuid::now_v7().to_string())
}

/// One span per request carrying its id, echoed as `x-request-id`; request count, latency and
/// in-flight gauge by route pattern (never the raw path, which would explode label cardinality).
pub(crate) async fn observe(
    request: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, Error> {
    let id = request_id(&request);
    let route = request
        .match_pattern()
        .unwrap_or_else(|| "unmatched".to_owned());
    let method = request.method().to_string();
    let span = tracing::info_span!(
        "http_request",
        request_id = %id,
        method = %method,
        route = %route,
        status = tracing::field::Empty,
    );
    let started = Instant::now();
    metrics::gauge!("http_requests_in_flight").increment(1.0);
    let result = next.call(request).instrument(span.clone()).await;
    metrics::gauge!("http_requests_in_flight").decrement(1.0);
    let status = match &result {
        Ok(response) => response.status(),
        Err(error) => error.as_response_error().status_code(),
    };
    let elapsed = started.elapsed();
    let labels = [
        ("method", method),
        ("route", route),
        ("status", status.as_u16().to_string()),
    ];
    metrics::counter!("http_requests_total", &labels).increment(1);
    metrics::histogram!("http_request_duration_seconds", &labels).record(elapsed.as_secs_f64());
    span.record("status", status.as_u16());
    span.in_scope(|| {
        tracing::debug!(
            latency_ms = elapsed.as_secs_f64() * 1000.0,
            "request finished"
        );
    });
    let mut response = result?;
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(REQUEST_ID, value);
    }
    Ok(response)
}

/// The web client loads only its own scripts and styles and talks only to its own origin.
const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; \
     style-src 'self' 'unsafe-inline'; img-src 'self' data:; connect-src 'self'; \
     font-src 'self' data:; object-src 'none'; base-uri 'self'; form-action 'self'; \
     frame-ancestors 'none'";

pub(crate) fn security_headers(settings: &ApiSettings) -> DefaultHeaders {
    let headers = DefaultHeaders::new()
        .add((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .add((header::REFERRER_POLICY, "no-referrer"))
        .add((header::X_FRAME_OPTIONS, "DENY"))
        .add((header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY));
    if settings.hsts {
        headers.add((
            header::STRICT_TRANSPORT_SECURITY,
            "max-age=31536000; includeSubDomains",
        ))
    } else {
        headers
    }
}

/// Whether `origin` names the host the request was sent to: the web client served by this server
/// calls it from its own origin, which needs no allow-list entry.
fn is_same_origin(origin: &HeaderValue, request: &actix_web::dev::RequestHead) -> bool {
    let (Ok(origin), Some(host)) = (
        origin.to_str(),
        request
            .headers()
            .get(header::HOST)
            .and_then(|h| h.to_str().ok()),
    ) else {
        return false;
    };
    origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"))
        .is_some_and(|authority| authority.eq_ignore_ascii_case(host))
}

/// CORS from the configured allow-list; credentials are never allowed, so `*` is never combined
/// with them.
pub(crate) fn cors(settings: &ApiSettings) -> Cors {
    let allowed: Vec<String> = settings.cors_allowed_origins.clone();
    let any = allowed.iter().any(|origin| origin == "*");
    let cors = Cors::default()
        .allowed_methods(["GET", "POST", "PATCH", "DELETE", "OPTIONS"])
        .allowed_headers([
            header::CONTENT_TYPE,
            header::ACCEPT,
            HeaderName::from_static("last-event-id"),
            REQUEST_ID,
        ])
        .expose_headers([REQUEST_ID, header::RETRY_AFTER, header::LOCATION])
        .max_age(3600);
    if any {
        return cors.send_wildcard().allow_any_origin();
    }
    cors.allowed_origin_fn(move |origin, request| {
        is_same_origin(origin, request)
            || origin
                .to_str()
                .is_ok_and(|origin| allowed.iter().any(|allowed| allowed == origin))
    })
}
