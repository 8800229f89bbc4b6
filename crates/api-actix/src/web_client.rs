//! The built web client, served at `/` after every API route had its chance.

use std::path::{Component, Path, PathBuf};

use actix_files::NamedFile;
use actix_web::http::header::{self, HeaderValue};
use actix_web::http::Method;
use actix_web::{web, HttpRequest, HttpResponse};

use crate::errors::{response_for_route, ApiError};
use crate::seed::SEED_ROUTES;
use crate::state::AppState;

const API_PREFIXES: [&str; 7] = [
    "/api/",
    "/chat/",
    "/healthz",
    "/readyz",
    "/metrics",
    "/openapi.json",
    "/docs",
];

/// Hashed bundle files never change under their name; everything else must be revalidated so a
/// deploy is picked up at the next load.
fn cache_control(relative: &Path) -> &'static str {
    if relative.starts_with("assets") {
        "public, max-age=31536000, immutable"
    } else {
        "no-cache"
    }
}

/// The request path as a relative path inside the dist directory, refusing anything that could
/// step outside it.
fn relative_path(path: &str) -> Option<PathBuf> {
    let decoded = path.trim_start_matches('/');
    let relative = PathBuf::from(decoded);
    relative
        .components()
        .all(|component| matches!(component, Component::Normal(_)))
        .then_some(relative)
}

async fn is_file(path: &Path) -> bool {
    tokio::fs::metadata(path)
        .await
        .is_ok_and(|metadata| metadata.is_file())
}

async fn serve_file(
    request: &HttpRequest,
    file: &Path,
    relative: &Path,
) -> Result<HttpResponse, ApiError> {
    let named = NamedFile::open_async(file)
        .await
        .map_err(|_| ApiError::not_found())?;
    let mut response = named.into_response(request);
    response.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static(cache_control(relative)),
    );
    Ok(response)
}

/// Everything no route matched: a seed route asked for with a trailing slash, a file of the web
/// client, the client's `index.html` for its own paths (it routes on the client side), or a JSON
/// 404 in the shape of the API the path belongs to.
pub(crate) async fn fallback(request: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    // The path as the router matched it, percent-encoding decoded: the raw one would serve the
    // client's page for `/%61pi/...`, an API path in disguise.
    let path = request.match_info().as_str();
    if let Some(route) = seed_route_without_trailing_slash(path) {
        return redirect_keeping_method(route, request.query_string());
    }
    // The API's description is read-only: its routes take GET only, so other methods land here
    // (`/docs` itself refuses them with 405). A HEAD arrives here as GET (see
    // `http_conformance`).
    let documentation = path == "/openapi.json" || path.starts_with("/docs/");
    if documentation && request.method() != Method::GET {
        return response_for_route(path, ApiError::method_not_allowed("GET, HEAD"));
    }
    match web_client_file(&request, &state, path).await {
        Ok(response) => response,
        Err(error) => response_for_route(path, error),
    }
}

/// The original app (FastAPI) redirected `/chat/history/` to `/chat/history`, and so on, so a
/// client written with the slash kept working.
fn seed_route_without_trailing_slash(path: &str) -> Option<&'static str> {
    let without = path.strip_suffix('/')?;
    SEED_ROUTES.into_iter().find(|route| *route == without)
}

/// `307`, as FastAPI answered: unlike 301 and 302, clients repeat a POST with its body.
fn redirect_keeping_method(route: &str, query: &str) -> HttpResponse {
    let location = if query.is_empty() {
        route.to_owned()
    } else {
        format!("{route}?{query}")
    };
    HttpResponse::TemporaryRedirect()
        .insert_header((header::LOCATION, location))
        .finish()
}

async fn web_client_file(
    request: &HttpRequest,
    state: &AppState,
    path: &str,
) -> Result<HttpResponse, ApiError> {
    // A HEAD arrives here as GET (see `http_conformance`).
    let is_read = request.method() == Method::GET;
    let Some(dist) = state.settings.web_dist_dir.as_deref() else {
        return Err(ApiError::not_found());
    };
    if !is_read || API_PREFIXES.iter().any(|prefix| path.starts_with(prefix)) {
        return Err(ApiError::not_found());
    }
    let relative = relative_path(path).ok_or_else(ApiError::not_found)?;
    if !relative.as_os_str().is_empty() {
        let file = dist.join(&relative);
        if is_file(&file).await {
            return serve_file(request, &file, &relative).await;
        }
        // A missing bundle file is an error, not the client's index page.
        if relative.starts_with("assets") {
            return Err(ApiError::not_found());
        }
    }
    let index = Path::new("index.html");
    serve_file(request, &dist.join(index), index).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_cannot_leave_the_dist_directory() {
        assert_eq!(
            relative_path("/assets/app.js"),
            Some(PathBuf::from("assets/app.js"))
        );
        assert_eq!(relative_path("/"), Some(PathBuf::new()));
        assert_eq!(relative_path("/../etc/passwd"), None);
        assert_eq!(relative_path("/assets/../../secret"), None);
    }

    #[test]
    fn only_hashed_assets_are_cached_forever() {
        assert!(cache_control(Path::new("assets/index-abc123.js")).contains("immutable"));
        assert_eq!(cache_control(Path::new("index.html")), "no-cache");
    }
}
