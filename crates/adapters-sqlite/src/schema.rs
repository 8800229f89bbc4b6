//! The statements of the hot write path, in forms diesel prepares once per connection and caches.
//! Raw SQL (`sql_query`) and diesel's own `UPDATE` builder are parsed again on every call, which
//! cost more than the rest of an exchange's write together.

use diesel::query_builder::{AstPass, QueryFragment, QueryId};
use diesel::sql_types::{BigInt, Text};
use diesel::sqlite::{Sqlite, SqliteConnection};
use diesel::{QueryResult, RunQueryDsl};

diesel::table! {
    conversations (id) {
        id -> Text,
        title -> Text,
        created_at -> BigInt,
        updated_at -> BigInt,
        last_position -> BigInt,
    }
}

/// Writes back what a batch's appends claimed on a conversation: its last message position, and
/// its `updated_at` moved forward (never backwards). A hand-written statement because diesel
/// never caches an `UPDATE` it builds.
#[derive(Debug)]
pub(crate) struct SettleConversation<'a> {
    pub(crate) conversation_id: &'a str,
    pub(crate) last_position: i64,
    pub(crate) updated_at: i64,
}

impl QueryFragment<Sqlite> for SettleConversation<'_> {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Sqlite>) -> QueryResult<()> {
        out.push_sql("UPDATE conversations SET last_position = ");
        out.push_bind_param::<BigInt, _>(&self.last_position)?;
        out.push_sql(", updated_at = max(updated_at, ");
        out.push_bind_param::<BigInt, _>(&self.updated_at)?;
        out.push_sql(") WHERE id = ");
        out.push_bind_param::<Text, _>(self.conversation_id)?;
        Ok(())
    }
}

/// One statement text whatever the borrowed values: the type is the cache key.
impl QueryId for SettleConversation<'_> {
    type QueryId = SettleConversation<'static>;
    const HAS_STATIC_QUERY_ID: bool = true;
}

impl RunQueryDsl<SqliteConnection> for SettleConversation<'_> {}

/// One message of an appended exchange. Hand-written like [`SettleConversation`]: diesel's
/// generic `INSERT` walks its column tuple several times per execution (for the cache key, the
/// cache check and the binds), which cost the writer more than SQLite's own work on the row.
#[derive(Debug)]
pub(crate) struct InsertMessage<'a> {
    pub(crate) id: &'a str,
    pub(crate) conversation_id: &'a str,
    pub(crate) position: i64,
    pub(crate) role: &'a str,
    pub(crate) content: &'a str,
    pub(crate) created_at: i64,
}

impl QueryFragment<Sqlite> for InsertMessage<'_> {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Sqlite>) -> QueryResult<()> {
        out.push_sql(
            "INSERT INTO messages (id, conversation_id, position, role, content, created_at) \
             VALUES (",
        );
        out.push_bind_param::<Text, _>(self.id)?;
        out.push_sql(", ");
        out.push_bind_param::<Text, _>(self.conversation_id)?;
        out.push_sql(", ");
        out.push_bind_param::<BigInt, _>(&self.position)?;
        out.push_sql(", ");
        out.push_bind_param::<Text, _>(self.role)?;
        out.push_sql(", ");
        out.push_bind_param::<Text, _>(self.content)?;
        out.push_sql(", ");
        out.push_bind_param::<BigInt, _>(&self.created_at)?;
        out.push_sql(")");
        Ok(())
    }
}

impl QueryId for InsertMessage<'_> {
    type QueryId = InsertMessage<'static>;
    const HAS_STATIC_QUERY_ID: bool = true;
}

impl RunQueryDsl<SqliteConnection> for InsertMessage<'_> {}
