//! Cross-cutting HTTP concerns: request ids, tracing spans, metrics, CORS and security headers.

use std::cell::RefCell;
use std::collections::HashMap;
use std::time::Instant;

use actix_cors::Cors;
use actix_web::body::{BodySize, EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{self, HeaderName, HeaderValue};
use actix_web::http::{ConnectionType, Method, StatusCode, Version};
use actix_web::middleware::{DefaultHeaders, Next};
use actix_web::Error;
use metrics::{Counter, Gauge, Histogram};
use tracing::Instrument;

use crate::errors::{is_seed_path, response_for_route, ApiError, SeedError};
use crate::state::ApiSettings;
use crate::trace_context::TraceParent;

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
const SEC_FETCH_SITE: HeaderName = HeaderName::from_static("sec-fetch-site");

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

/// The caller's `traceparent` when it is valid and the only one (the specification ignores
/// repeated headers), cut to the part every version shares; anything else is dropped, so logs
/// never carry hostile header content.
fn traceparent(request: &ServiceRequest) -> Option<&str> {
    let mut values = request.headers().get_all(&TRACEPARENT);
    let value = values.next()?.to_str().ok()?;
    if values.next().is_some() {
        return None;
    }
    TraceParent::parse(value).map(|_| &value[..TraceParent::LENGTH])
}

/// The `method` label of a request: a standard method by name, any other as `other`, so a
/// client inventing methods cannot add series.
fn method_label(method: &Method) -> &'static str {
    const STANDARD: [(Method, &str); 9] = [
        (Method::GET, "GET"),
        (Method::POST, "POST"),
        (Method::PATCH, "PATCH"),
        (Method::DELETE, "DELETE"),
        (Method::PUT, "PUT"),
        (Method::HEAD, "HEAD"),
        (Method::OPTIONS, "OPTIONS"),
        (Method::CONNECT, "CONNECT"),
        (Method::TRACE, "TRACE"),
    ];
    STANDARD
        .iter()
        .find(|(standard, _)| standard == method)
        .map_or("other", |(_, label)| label)
}

/// The series of one method, route pattern and status.
struct RequestSeries {
    total: Counter,
    duration: Histogram,
}

thread_local! {
    // Handles are looked up once per worker thread: building a labelled key and finding it in the
    // registry on every request cost more than the recording (about 1 µs per request). The keys
    // are bounded: standard methods, route patterns and status codes. A kept handle stays valid
    // because the recorder never expires series (no idle timeout is configured).
    static IN_FLIGHT: Gauge = metrics::gauge!("http_requests_in_flight");
    static SERIES: RefCell<HashMap<(&'static str, String, u16), RequestSeries>> =
        RefCell::default();
}

/// A request counted in `http_requests_in_flight` until dropped: one whose connection was reset
/// is dropped part way, never reaching the line after its handler.
struct InFlight;

impl InFlight {
    fn enter() -> Self {
        IN_FLIGHT.with(|gauge| gauge.increment(1.0));
        Self
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let _ = IN_FLIGHT.try_with(|gauge| gauge.decrement(1.0));
    }
}

fn record_request(method: &'static str, route: String, status: StatusCode, seconds: f64) {
    SERIES.with_borrow_mut(|series| {
        let series = series
            .entry((method, route, status.as_u16()))
            .or_insert_with_key(|(method, route, status)| {
                let labels = [
                    ("method", (*method).to_owned()),
                    ("route", route.clone()),
                    ("status", status.to_string()),
                ];
                RequestSeries {
                    total: metrics::counter!("http_requests_total", &labels),
                    duration: metrics::histogram!("http_request_duration_seconds", &labels),
                }
            });
        series.total.increment(1);
        series.duration.record(seconds);
    });
}

/// One span per request carrying its id, echoed as `x-request-id`, and the caller's trace
/// context, which a trace exporter continues; request count, latency and in-flight gauge by route
/// pattern (never the raw path, which would explode label cardinality).
pub(crate) async fn observe(
    request: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, Error> {
    let id = request_id(&request);
    let route = request
        .match_pattern()
        .unwrap_or_else(|| "unmatched".to_owned());
    let method = method_label(request.method());
    let span = tracing::info_span!(
        "http_request",
        request_id = %id,
        method = %method,
        route = %route,
        status = tracing::field::Empty,
        traceparent = traceparent(&request),
    );
    let started = Instant::now();
    let in_flight = InFlight::enter();
    let result = next.call(request).instrument(span.clone()).await;
    drop(in_flight);
    let status = match &result {
        Ok(response) => response.status(),
        Err(error) => error.as_response_error().status_code(),
    };
    let elapsed = started.elapsed();
    record_request(method, route, status, elapsed.as_secs_f64());
    span.record("status", status.as_u16());
    let latency_ms = elapsed.as_secs_f64() * 1000.0;
    // A refused or failed request gets a line at the default level, so the id a user quotes
    // from a failure is found in the log; answered ones only at debug, where their volume
    // costs nothing in production. So do rate-limited ones (429): a flood must stay cheap to
    // refuse, and `http_requests_total` counts them.
    span.in_scope(|| {
        let failed = status.is_client_error() || status.is_server_error();
        if failed && status != StatusCode::TOO_MANY_REQUESTS {
            tracing::info!(latency_ms, "request finished");
        } else {
            tracing::debug!(latency_ms, "request finished");
        }
    });
    let mut response = result?;
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(REQUEST_ID, value);
    }
    Ok(response)
}

fn is_json(response: &ServiceResponse<impl MessageBody>) -> bool {
    response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.starts_with("application/json"))
}

fn code_for(status: StatusCode) -> &'static str {
    match status {
        StatusCode::BAD_REQUEST => "bad_request",
        StatusCode::NOT_FOUND => "not_found",
        StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
        StatusCode::PAYLOAD_TOO_LARGE => "body_too_large",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
        status if status.is_server_error() => "internal_error",
        _ => "http_error",
    }
}

/// What HTTP asks of a general-purpose server that actix-web does not do by itself, in one layer
/// so that it costs the hot path no more than one:
/// - A `HEAD` is answered as the `GET` of the same address, without its body (RFC 9110 requires
///   both): actix-web's method guards would refuse it with 405.
/// - An HTTP/1.0 client cannot read chunked framing (RFC 9112 §6.1: a server must not send it
///   `Transfer-Encoding`), and a proxy speaking HTTP/1.0 upstream would pass the chunk sizes on
///   as content. A streamed body (the history, a reply's events) goes to it unframed instead,
///   ended by closing the connection.
pub(crate) async fn http_conformance(
    mut request: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody, HeadBody>>, Error> {
    let head = request.method() == Method::HEAD;
    if head {
        request.head_mut().method = Method::GET;
    }
    let http10 = request.version() < Version::HTTP_11;
    let mut response = next.call(request).await?;
    if http10 && response.response().body().size() == BodySize::Stream {
        let head = response.response_mut().head_mut();
        head.no_chunking(true);
        head.set_connection_type(ConnectionType::Close);
    }
    if !head {
        return Ok(response.map_into_left_body());
    }
    // The GET's body is dropped unread: the codec would send none of it, but would still read a
    // stream (a reply being followed) to its end, holding the connection and a stream slot.
    Ok(response.map_body(|_, body| EitherBody::right(HeadBody { size: body.size() })))
}

/// The body of a `GET` answered to a `HEAD`: the size its headers announce, and no content.
pub(crate) struct HeadBody {
    size: BodySize,
}

impl MessageBody for HeadBody {
    type Error = std::convert::Infallible;

    fn size(&self) -> BodySize {
        self.size
    }

    fn poll_next(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<actix_web::web::Bytes, Self::Error>>> {
        std::task::Poll::Ready(None)
    }
}

/// Errors produced outside our handlers (the CORS layer refusing an origin, the framework
/// refusing a request) come as plain text; they are rewritten as JSON like every other error.
pub(crate) async fn json_errors(
    request: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, Error> {
    let seed = is_seed_path(request.match_info().as_str());
    let response = match next.call(request).await {
        Ok(response) => response,
        Err(error) => {
            let status = error.as_response_error().status_code();
            let message = error.to_string();
            let api_error = ApiError::new(status, code_for(status), message);
            return Err(if seed {
                SeedError::from(api_error).into()
            } else {
                api_error.into()
            });
        }
    };
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) || is_json(&response) {
        return Ok(response.map_into_left_body());
    }
    let message = status
        .canonical_reason()
        .unwrap_or("Request failed")
        .to_owned();
    let (request, _) = response.into_parts();
    let replacement = response_for_route(
        request.match_info().as_str(),
        ApiError::new(status, code_for(status), message),
    );
    Ok(ServiceResponse::new(request, replacement).map_into_right_body())
}

/// Refuses, before any handler reads them, the requests no handler should see: a head larger
/// than configured, one for a host this server does not answer for, and a write another site's
/// page made. One layer for all: each layer costs every request.
pub(crate) async fn screen_requests(
    request: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, Error> {
    let refusal = request
        .app_data::<actix_web::web::Data<crate::state::AppState>>()
        .and_then(|state| {
            oversized_head(&request, &state.settings)
                .or_else(|| unknown_host(&request, &state.settings))
                .or_else(|| cross_site_write(&request, &state.settings))
        });
    if let Some(error) = refusal {
        let response = response_for_route(request.match_info().as_str(), error);
        return Ok(request.into_response(response).map_into_right_body());
    }
    next.call(request)
        .await
        .map(ServiceResponse::map_into_left_body)
}

/// A head (target and headers) larger than configured: 431, in JSON. The framework's own cap
/// (128 KiB) stays as the outer bound.
fn oversized_head(request: &ServiceRequest, settings: &ApiSettings) -> Option<ApiError> {
    let limit = settings.max_header_bytes;
    let uri = request.uri();
    let target = uri.scheme_str().map_or(0, |scheme| scheme.len() + 3)
        + uri
            .authority()
            .map_or(0, |authority| authority.as_str().len())
        + uri.path_and_query().map_or(0, |path| path.as_str().len());
    let size = target
        + request
            .headers()
            .iter()
            .map(|(name, value)| name.as_str().len() + value.len() + 4)
            .sum::<usize>();
    (size > limit).then(|| {
        ApiError::new(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "headers_too_large",
            format!("The request target and headers are larger than {limit} bytes."),
        )
    })
}

/// A request whose `Host` names a host not in `allowed_hosts`: 421. A page of another site that
/// points its own name at this server's address (DNS rebinding) is, to the browser, the API's own
/// origin, so neither CORS nor `Sec-Fetch-Site` stops it reading or writing; only the name it
/// sends in `Host` gives it away. So only names are checked: an IP address (a probe's, a
/// scraper's, a LAN client's) cannot be rebound, nor can `localhost` and its subdomains, which
/// browsers resolve themselves. A request without a `Host` (HTTP/1.0) names nothing to check.
fn unknown_host(request: &ServiceRequest, settings: &ApiSettings) -> Option<ApiError> {
    if settings.allowed_hosts.iter().any(|host| host == "*") {
        return None;
    }
    let host = host_name(requested_authority(request.head())?);
    let allowed = host.parse::<std::net::Ipv4Addr>().is_ok()
        || (host.starts_with('[') && host.ends_with(']'))
        || host.eq_ignore_ascii_case("localhost")
        || host
            .get(host.len().saturating_sub(".localhost".len())..)
            .is_some_and(|suffix| suffix.eq_ignore_ascii_case(".localhost"))
        || settings
            .allowed_hosts
            .iter()
            .any(|allowed| allowed.eq_ignore_ascii_case(host));
    if allowed {
        return None;
    }
    let shown: String = host.chars().take(100).collect();
    Some(ApiError::new(
        StatusCode::MISDIRECTED_REQUEST,
        "unknown_host",
        format!(
            "This server does not answer for host {shown:?}; add it to security.allowed_hosts \
             to let it."
        ),
    ))
}

/// Whether `origin` names the host, whatever the port, that the request was sent to.
fn names_request_host(origin: &HeaderValue, request: &actix_web::dev::RequestHead) -> bool {
    origin_authority_and_host(origin, request)
        .is_some_and(|(authority, host)| host_name(authority).eq_ignore_ascii_case(host_name(host)))
}

/// The `host[:port]` an `Origin` names and the one the request names, when both are there.
fn origin_authority_and_host<'a>(
    origin: &'a HeaderValue,
    request: &'a actix_web::dev::RequestHead,
) -> Option<(&'a str, &'a str)> {
    let origin = origin.to_str().ok()?;
    let host = requested_authority(request)?;
    let authority = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"))?;
    Some((authority, host))
}

/// The `host[:port]` a request names: an absolute-form target's own, to which a proxy's `Host`
/// yields (RFC 9112), or else its `Host`. A request without either (HTTP/1.0) names none.
fn requested_authority(request: &actix_web::dev::RequestHead) -> Option<&str> {
    match request.uri.authority() {
        Some(authority) => Some(authority.as_str()),
        None => request
            .headers()
            .get(header::HOST)
            .map(|host| host.to_str().unwrap_or("")),
    }
}

/// The host of a `host[:port]`, without the root's dot a fully qualified name may end with:
/// `localhost.:8000` is `localhost`.
fn host_name(authority: &str) -> &str {
    let host = host_without_port(authority);
    host.strip_suffix('.').unwrap_or(host)
}

/// The host of a `Host` value: `example.com:8000` → `example.com`, `[::1]:8000` → `[::1]`.
fn host_without_port(authority: &str) -> &str {
    match authority.rfind(':') {
        Some(colon) if !authority[colon..].contains(']') => &authority[..colon],
        _ => authority,
    }
}

/// A write (any method but GET, HEAD, OPTIONS) that a browser says another origin's page made
/// (`Sec-Fetch-Site: cross-site`, or `same-site`: a sibling subdomain or another port), from an
/// origin not allowed: 403. CORS only hides answers: a form, a beacon or a fetch without a JSON
/// Content-Type needs no preflight, so without this any page a user of a local or intranet
/// server opened could post messages there (and spend model calls). This server's own pages
/// (`same-origin`) and clients that are not browsers (no such header) are not affected. A
/// browser too old to send `Sec-Fetch-Site` (Safari before 16.4) still sends the `Origin` of a
/// write: one that names another host than the request's is another site's page. Ports are not
/// compared there, as a proxy may pass on the host without the port the browser used.
fn cross_site_write(request: &ServiceRequest, settings: &ApiSettings) -> Option<ApiError> {
    if request.method().is_safe() {
        return None;
    }
    let origin = request.headers().get(header::ORIGIN);
    let cross_site = match request.headers().get(SEC_FETCH_SITE) {
        Some(site) => {
            let site = site.as_bytes();
            site.eq_ignore_ascii_case(b"cross-site") || site.eq_ignore_ascii_case(b"same-site")
        }
        None => origin.is_some_and(|origin| !names_request_host(origin, request.head())),
    };
    if !cross_site {
        return None;
    }
    let origin = origin.and_then(|origin| origin.to_str().ok());
    // No configured origin is empty: without an Origin only `*` allows the write.
    let allowed = is_allowed_origin(&settings.cors_allowed_origins, origin.unwrap_or(""));
    (!allowed).then(|| {
        ApiError::new(
            StatusCode::FORBIDDEN,
            "cross_site_request",
            "Another site's page may not change anything here; add its origin to \
             cors.allowed_origins to let it.",
        )
    })
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
    origin_authority_and_host(origin, request)
        .is_some_and(|(authority, host)| authority.eq_ignore_ascii_case(host))
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
        // Every header an answer carries to say what to do next, so a page on an allowed origin can
        // read it too.
        .expose_headers([
            REQUEST_ID,
            header::RETRY_AFTER,
            header::LOCATION,
            header::ALLOW,
            header::ACCEPT_ENCODING,
        ])
        .max_age(3600);
    if any {
        return cors.send_wildcard().allow_any_origin();
    }
    cors.allowed_origin_fn(move |origin, request| {
        is_same_origin(origin, request)
            || origin
                .to_str()
                .is_ok_and(|origin| is_allowed_origin(&allowed, origin))
    })
}

/// Whether `cors.allowed_origins` (`allowed`) names `origin` or allows any with `*`.
fn is_allowed_origin(allowed: &[String], origin: &str) -> bool {
    allowed
        .iter()
        .any(|allowed| allowed == "*" || allowed == origin)
}

#[cfg(test)]
mod tests {
    use actix_web::test::TestRequest;

    use super::*;

    const VALID: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    fn traceparent_of(headers: &[&str]) -> Option<String> {
        let mut request = TestRequest::default();
        for value in headers {
            request = request.append_header((TRACEPARENT, *value));
        }
        traceparent(&request.to_srv_request()).map(str::to_owned)
    }

    #[test]
    fn the_span_gets_a_single_valid_traceparent_only() {
        assert_eq!(traceparent_of(&[VALID]).as_deref(), Some(VALID));
        assert_eq!(traceparent_of(&[]), None);
        assert_eq!(traceparent_of(&[&VALID.to_uppercase()]), None);
        assert_eq!(traceparent_of(&[VALID, VALID]), None, "repeated header");
        let later_version = format!("{}-more", VALID.replacen("00", "01", 1));
        assert_eq!(
            traceparent_of(&[&later_version]).as_deref(),
            Some(&later_version[..TraceParent::LENGTH]),
            "cut to the shared part"
        );
    }
}
