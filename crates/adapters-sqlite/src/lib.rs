//! [`ChatRepository`](domain::ChatRepository) on an embedded SQLite file.
//!
//! Every write goes to one dedicated writer thread which commits whatever is queued in one
//! transaction (group commit); a second thread makes each commit durable with one `fdatasync` of
//! the WAL before its requesters are answered, so many durable exchanges share one sync and the
//! writer never waits for the disk. Reads use a separate pool of connections on Tokio's blocking
//! threads and never wait for the writer (WAL mode); they wait only, and only under write load,
//! until what they saw is durable. No diesel call runs on the async executor's threads.

mod appends;
mod durability;
mod errors;
mod queries;
mod repository;
mod schema;
mod writer;

pub use repository::{SqliteChatRepository, SqliteSettings};
