//! [`ChatRepository`](domain::ChatRepository) on an embedded SQLite file.
//!
//! Every write goes to one dedicated writer thread which commits whatever is queued in one
//! transaction (group commit); a second thread makes each commit durable with one `fdatasync` of
//! the WAL before its requesters are answered, so many durable exchanges share one sync and the
//! writer never waits for the disk. Reads use a separate pool of connections on Tokio's blocking
//! threads and never wait for the writer (WAL mode); they wait only, and only under write load,
//! until what they saw is durable. Conversation lookups, which every v1 send makes, go instead to
//! one thread that answers all queued lookups at each wake-up. No diesel call runs on the async
//! executor's threads.

mod appends;
mod durability;
mod errors;
mod lookups;
mod queries;
mod repository;
mod schema;
mod writer;

pub use repository::{SqliteChatRepository, SqliteSettings};
