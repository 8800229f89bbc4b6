use std::net::TcpListener;
use std::time::Duration;

use actix_web::body::MessageBody;
use actix_web::dev::{Server, ServiceFactory, ServiceRequest, ServiceResponse};
use actix_web::http::{header, Method};
use actix_web::middleware::from_fn;
use actix_web::{web, App, HttpResponse, HttpServer, Route};
use utoipa::OpenApi;
use utoipa_swagger_ui::SwaggerUi;

use crate::errors::{ApiError, SeedError};
use crate::middleware::{
    cors, http_conformance, json_errors, observe, screen_requests, security_headers,
};
use crate::openapi::ApiDoc;
use crate::rate_limit::limit_rate;
use crate::state::AppState;
use crate::stream_limit::{limit_streams, limit_streams_when_asked};
use crate::{ops, seed, v1, web_client};

/// Connection-level limits and timeouts of the HTTP server.
#[derive(Debug, Clone)]
pub struct HttpSettings {
    /// Worker threads; 0 means one per core.
    pub workers: usize,
    pub keep_alive: Duration,
    /// Time a client has to send the request head.
    pub client_request_timeout: Duration,
    /// Time in-flight requests get to finish after a stop signal.
    pub shutdown_grace: Duration,
    /// Open connections per worker.
    pub max_connections: usize,
}

fn query_error(
    error: actix_web::error::QueryPayloadError,
    _: &actix_web::HttpRequest,
) -> actix_web::Error {
    ApiError::bad_request("invalid_query", format!("Invalid query string: {error}.")).into()
}

/// A resource with its routes; any other method gets 405 with an `Allow` header listing them
/// (and `HEAD` beside `GET`, see `http_conformance`).
fn resource(path: &str, routes: Vec<(Method, Route)>, seed: bool) -> actix_web::Resource {
    let allow = routes
        .iter()
        .flat_map(|(method, _)| {
            let head = (*method == Method::GET).then_some(Method::HEAD.as_str());
            std::iter::once(method.as_str()).chain(head)
        })
        .collect::<Vec<_>>()
        .join(", ");
    let resource = routes
        .into_iter()
        .fold(web::resource(path), |resource, (_, route)| {
            resource.route(route)
        });
    if seed {
        resource.default_service(web::to(move || {
            let error = SeedError::from(ApiError::method_not_allowed(&allow));
            async move { Err::<HttpResponse, _>(error) }
        }))
    } else {
        resource.default_service(web::to(move || {
            let error = ApiError::method_not_allowed(&allow);
            async move { Err::<HttpResponse, _>(error) }
        }))
    }
}

/// The whole application: what `main` serves and what the in-process tests call.
pub fn app(
    state: AppState,
) -> App<
    impl ServiceFactory<
        ServiceRequest,
        Config = (),
        Response = ServiceResponse<impl MessageBody>,
        Error = actix_web::Error,
        InitError = (),
    >,
> {
    let settings = state.settings.clone();
    App::new()
        .app_data(web::Data::new(state))
        .app_data(web::QueryConfig::default().error_handler(query_error))
        // Innermost of the application's layers (only the stream limit, on the two routes that
        // stream, is inside it), so the request log still shows the HEAD.
        .wrap(from_fn(http_conformance))
        // Inside the rest, so limited answers still get CORS, security headers, request ids and
        // metrics.
        .wrap(from_fn(limit_rate))
        .wrap(from_fn(screen_requests))
        .wrap(cors(&settings))
        .wrap(from_fn(json_errors))
        .wrap(security_headers(&settings))
        .wrap(from_fn(observe))
        .service(resource(
            seed::HISTORY_ROUTE,
            vec![(Method::GET, web::get().to(seed::history))],
            true,
        ))
        .service(resource(
            seed::MESSAGE_ROUTE,
            vec![(Method::POST, web::post().to(seed::send_message))],
            true,
        ))
        .service(resource(
            "/api/v1/conversations",
            vec![
                (Method::POST, web::post().to(v1::create_conversation)),
                (Method::GET, web::get().to(v1::list_conversations)),
            ],
            false,
        ))
        .service(resource(
            "/api/v1/conversations/{id}",
            vec![
                (Method::GET, web::get().to(v1::get_conversation)),
                (Method::PATCH, web::patch().to(v1::rename_conversation)),
                (Method::DELETE, web::delete().to(v1::delete_conversation)),
            ],
            false,
        ))
        .service(resource(
            "/api/v1/conversations/{id}/messages",
            vec![
                (Method::GET, web::get().to(v1::list_messages)),
                (
                    Method::POST,
                    web::post()
                        .to(v1::send_message)
                        .wrap(from_fn(limit_streams_when_asked)),
                ),
            ],
            false,
        ))
        .service(resource(
            "/api/v1/conversations/{id}/stream",
            vec![(
                Method::GET,
                web::get()
                    .to(v1::resume_stream)
                    .wrap(from_fn(limit_streams)),
            )],
            false,
        ))
        .service(resource(
            "/api/v1/limits",
            vec![(Method::GET, web::get().to(v1::limits))],
            false,
        ))
        .service(resource(
            "/api/v1/conversations/{id}/generations/{generation_id}/stop",
            vec![(Method::POST, web::post().to(v1::stop_reply))],
            false,
        ))
        .service(resource(
            "/healthz",
            vec![(Method::GET, web::get().to(ops::healthz))],
            false,
        ))
        .service(resource(
            "/readyz",
            vec![(Method::GET, web::get().to(ops::readyz))],
            false,
        ))
        .service(resource(
            "/metrics",
            vec![(Method::GET, web::get().to(ops::metrics))],
            false,
        ))
        .service(resource(
            "/docs",
            vec![(Method::GET, web::get().to(docs_with_a_slash))],
            false,
        ))
        .service(SwaggerUi::new("/docs/{_:.*}").url("/openapi.json", ApiDoc::openapi()))
        .default_service(web::to(web_client::fallback))
}

/// Swagger UI lives under `/docs/`, where its relative asset paths resolve.
async fn docs_with_a_slash() -> HttpResponse {
    HttpResponse::PermanentRedirect()
        .insert_header((header::LOCATION, "/docs/"))
        .finish()
}

/// Starts serving on `listener` (port 0 is fine). It does not watch signals: stop it through
/// `Server::handle`; a graceful stop gives in-flight requests `shutdown_grace` to finish.
pub fn serve(
    listener: TcpListener,
    state: AppState,
    http: &HttpSettings,
) -> std::io::Result<Server> {
    let mut server = HttpServer::new(move || app(state.clone()))
        // The caller watches the signals and stops the server through its handle: actix-web's
        // own handling would make SIGINT (Ctrl-C) a forced stop that drops every stream.
        .disable_signals()
        .keep_alive(http.keep_alive)
        .client_request_timeout(http.client_request_timeout)
        .shutdown_timeout(http.shutdown_grace.as_secs())
        .max_connections(http.max_connections);
    if http.workers > 0 {
        server = server.workers(http.workers);
    }
    Ok(server.listen(listener)?.run())
}
