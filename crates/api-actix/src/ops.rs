//! Endpoints for operators and orchestrators.

use actix_web::http::header::{HeaderMap, HeaderName, FORWARDED};
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};

use crate::client_ip::X_FORWARDED_FOR;
use crate::dto::{ErrorResponse, HealthResponse};
use crate::errors::ApiError;
use crate::state::AppState;

/// The process is alive. Never touches storage, so an outage does not get the pod restarted.
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "operations",
    responses((status = 200, description = "Alive", body = HealthResponse))
)]
pub(crate) async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(HealthResponse { status: "ok" })
}

/// Storage can serve requests now; 503 takes the replica out of the load balancer until it can,
/// also when storage does not answer within `readiness_deadline` (a database hung behind a live
/// connection), so that a caller without a time limit of its own still hears back.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "operations",
    responses(
        (status = 200, description = "Ready", body = HealthResponse),
        (status = 503, description = "Storage unavailable", body = ErrorResponse),
    )
)]
pub(crate) async fn readyz(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let deadline = state.settings.readiness_deadline;
    match actix_web::rt::time::timeout(deadline, state.service.health()).await {
        Ok(Ok(())) => return Ok(HttpResponse::Ok().json(HealthResponse { status: "ready" })),
        Ok(Err(error)) => tracing::warn!(%error, "not ready"),
        Err(_) => tracing::warn!(
            deadline_ms = deadline.as_millis() as u64,
            "not ready: storage did not answer in time"
        ),
    }
    Err(ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "storage_unavailable",
        "Storage is unavailable.",
    ))
}

/// Metrics in the Prometheus text format.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "operations",
    responses(
        (status = 200, description = "Prometheus text exposition", content_type = "text/plain", body = String),
        (status = 404, description = "Metrics are not enabled, or a proxy forwarded the request (see `security.metrics_through_proxies`)", body = ErrorResponse),
    )
)]
pub(crate) async fn metrics(
    state: web::Data<AppState>,
    request: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    if !state.settings.metrics_through_proxies && forwarded_by_a_proxy(request.headers()) {
        return Err(ApiError::not_found());
    }
    let render = state.metrics.as_ref().ok_or_else(ApiError::not_found)?;
    Ok(HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(render()))
}

/// A proxy (an ingress, a load balancer, the web image's nginx) names the client it forwards for
/// in one of these; a scraper connecting to the replica sends none.
fn forwarded_by_a_proxy(headers: &HeaderMap) -> bool {
    const X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");
    [FORWARDED, X_FORWARDED_FOR, X_REAL_IP]
        .iter()
        .any(|name| headers.contains_key(name))
}
