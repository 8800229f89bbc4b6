//! The HTTP adapter. Handlers do three things: turn the request into domain values, call the
//! [`ChatService`](domain::ChatService), turn the result into a response. It depends on the domain
//! only; which storage and assistant stand behind the service is the server crate's business.

mod body;
mod client_ip;
mod dto;
mod errors;
mod generations;
mod middleware;
mod openapi;
mod ops;
mod rate_limit;
mod seed;
mod server;
mod sse;
mod state;
mod stream_limit;
mod trace_context;
mod v1;
mod web_client;

pub use actix_web::dev::Server;
pub use body::parse_seed_message;
pub use client_ip::{InvalidNetwork, IpNetwork};
pub use generations::Generations;
pub use openapi::ApiDoc;
pub use rate_limit::{ClientLimits, RateLimit};
pub use server::{app, serve, HttpSettings};
pub use state::{ApiSettings, AppState, MetricsRenderer};
pub use trace_context::TraceParent;
