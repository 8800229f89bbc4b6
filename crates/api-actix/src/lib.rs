//! The HTTP adapter. Handlers do three things: turn the request into domain values, call the
//! [`ChatService`](domain::ChatService), turn the result into a response. It depends on the domain
//! only; which storage and assistant stand behind the service is the server crate's business.

mod body;
mod dto;
mod errors;
mod generations;
mod middleware;
mod openapi;
mod ops;
mod seed;
mod server;
mod sse;
mod state;
mod v1;
mod web_client;

pub use actix_web::dev::Server;
pub use generations::Generations;
pub use openapi::ApiDoc;
pub use server::{app, serve, HttpSettings};
pub use state::{ApiSettings, AppState, MetricsRenderer};
