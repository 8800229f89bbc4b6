//! The yardstick of `make bench`: an actix-web server that parses the same JSON bodies as
//! chat-server and answers the same shapes, with no storage, no middleware and no assistant.
//! chat-server's throughput is reported as a ratio of this one's, measured in the same run.
//!
//! Usage: `bench-baseline [PORT]` (or `BENCH_PORT`); `BENCH_WORKERS` sets the worker threads
//! (default: one per CPU, as chat-server's `server.workers = 0`).

use actix_web::{web, App, HttpResponse, HttpServer};
use serde::{Deserialize, Serialize};

const REPLY: &str = "Hi there! I'm a simulated AI assistant.";
const CONVERSATION_ID: &str = "00000000-0000-7000-8000-000000000000";
const CREATED_AT: &str = "2026-11-23T10:15:30.123456Z";

#[derive(Debug, Deserialize)]
struct SeedSendRequest {
    message: String,
}

#[derive(Debug, Serialize)]
struct SeedSendResponse {
    status: &'static str,
    response: String,
}

#[derive(Debug, Deserialize)]
struct SendMessageRequest {
    content: String,
}

#[derive(Debug, Serialize)]
struct MessageDto {
    id: String,
    conversation_id: String,
    role: &'static str,
    content: String,
    created_at: &'static str,
}

#[derive(Debug, Serialize)]
struct ExchangeDto {
    user_message: MessageDto,
    assistant_message: MessageDto,
}

#[derive(Debug, Serialize)]
struct SeedErrorResponse {
    status: &'static str,
    message: String,
}

fn bad_request(message: String) -> HttpResponse {
    HttpResponse::BadRequest().json(SeedErrorResponse {
        status: "error",
        message,
    })
}

/// `POST /chat/message`: `{"message": string}` -> `{"status":"Success","response":...}`.
async fn seed_send(body: web::Bytes) -> HttpResponse {
    match serde_json::from_slice::<SeedSendRequest>(&body) {
        Ok(request) if !request.message.trim().is_empty() => {
            HttpResponse::Ok().json(SeedSendResponse {
                status: "Success",
                response: REPLY.to_owned(),
            })
        }
        Ok(_) => bad_request("Message must not be blank.".to_owned()),
        Err(error) => bad_request(error.to_string()),
    }
}

/// `POST /api/v1/conversations/{id}/messages`: `{"content": string}` -> 201 with an exchange.
async fn v1_send(id: web::Path<String>, body: web::Bytes) -> HttpResponse {
    let request = match serde_json::from_slice::<SendMessageRequest>(&body) {
        Ok(request) if !request.content.trim().is_empty() => request,
        Ok(_) => return bad_request("Content must not be blank.".to_owned()),
        Err(error) => return bad_request(error.to_string()),
    };
    let conversation_id = if id.is_empty() {
        CONVERSATION_ID.to_owned()
    } else {
        id.into_inner()
    };
    let message = |suffix: &str, role, content| MessageDto {
        id: format!("01900000-0000-7000-8000-00000000000{suffix}"),
        conversation_id: conversation_id.clone(),
        role,
        content,
        created_at: CREATED_AT,
    };
    HttpResponse::Created().json(ExchangeDto {
        user_message: message("1", "user", request.content),
        assistant_message: message("2", "assistant", REPLY.to_owned()),
    })
}

async fn healthz() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .body(r#"{"status":"ok"}"#)
}

fn main() -> std::io::Result<()> {
    let port: u16 = std::env::args()
        .nth(1)
        .or_else(|| std::env::var("BENCH_PORT").ok())
        .map(|raw| raw.parse().expect("the port is a number"))
        .unwrap_or(8100);
    let workers: usize = std::env::var("BENCH_WORKERS")
        .ok()
        .and_then(|raw| raw.parse().ok())
        .filter(|&workers| workers > 0)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    actix_web::rt::System::new().block_on(async move {
        HttpServer::new(|| {
            App::new()
                .app_data(web::PayloadConfig::new(65536))
                .route("/chat/message", web::post().to(seed_send))
                .route(
                    "/api/v1/conversations/{id}/messages",
                    web::post().to(v1_send),
                )
                .route("/healthz", web::get().to(healthz))
        })
        .workers(workers)
        .bind(("127.0.0.1", port))?
        .run()
        .await
    })
}
