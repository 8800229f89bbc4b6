//! Endpoints for operators and orchestrators.

use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse};

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

/// Storage can serve requests now; 503 takes the replica out of the load balancer until it can.
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
    match state.service.health().await {
        Ok(()) => Ok(HttpResponse::Ok().json(HealthResponse { status: "ready" })),
        Err(error) => {
            tracing::warn!(%error, "not ready");
            Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "storage_unavailable",
                "Storage is unavailable.",
            ))
        }
    }
}

/// Metrics in the Prometheus text format.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "operations",
    responses(
        (status = 200, description = "Prometheus text exposition", content_type = "text/plain", body = String),
        (status = 404, description = "Metrics are not enabled", body = ErrorResponse),
    )
)]
pub(crate) async fn metrics(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let render = state.metrics.as_ref().ok_or_else(ApiError::not_found)?;
    Ok(HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(render()))
}
