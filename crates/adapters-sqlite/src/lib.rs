//! [`ChatRepository`](domain::ChatRepository) on an embedded SQLite file.
//!
//! Every write goes to one dedicated writer thread which commits whatever is queued in one
//! transaction (group commit), so many durable (`synchronous=FULL`) exchanges share one fsync.
//! Reads use a separate pool of connections on Tokio's blocking threads and never wait for the
//! writer (WAL mode). No diesel call runs on the async executor's threads.

mod errors;
mod queries;
mod repository;
mod schema;
mod writer;

pub use repository::{SqliteChatRepository, SqliteSettings};
