//! [`ChatRepository`](domain::ChatRepository) on an embedded SQLite file.
//!
//! Every write goes to one dedicated writer thread which commits whatever is queued in one
//! transaction (group commit); a second thread makes each commit durable with one `fdatasync` of
//! the WAL before its requesters are answered, so many durable exchanges share one sync and the
//! writer does not wait for them (only SQLite's automatic checkpoints, which sync the database
//! file, still run inside its commits). Reads queue for a few reader threads with connections of
//! their own, each of which runs every read queued when it wakes; they never wait for the writer
//! (WAL mode), only, and only under write load, until what they saw is durable. Conversation
//! lookups, which every v1 send makes, go to one thread of their own in the same way. No diesel
//! call runs on the async executor's threads.

mod appends;
mod durability;
mod errors;
mod queries;
mod reads;
mod repository;
mod schema;
mod writer;

pub use repository::{SqliteChatRepository, SqliteSettings};
