//! The statements of the hot write path, in forms diesel prepares once per connection and caches.
//! Raw SQL (`sql_query`) and diesel's own `UPDATE` builder are parsed again on every call, which
//! cost more than the rest of an exchange's write together.

use diesel::query_builder::{AstPass, Query, QueryFragment, QueryId};
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

diesel::table! {
    messages (id) {
        id -> Text,
        conversation_id -> Text,
        position -> BigInt,
        role -> Text,
        content -> Text,
        created_at -> BigInt,
    }
}

/// Claims the next two message positions of a conversation and moves its `updated_at` forward
/// (never backwards); returns the second position, or no row when the conversation is missing.
/// A hand-written statement because diesel never caches an `UPDATE` it builds.
#[derive(Debug)]
pub(crate) struct ClaimExchangePositions<'a> {
    pub(crate) conversation_id: &'a str,
    pub(crate) updated_at: i64,
}

impl QueryFragment<Sqlite> for ClaimExchangePositions<'_> {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Sqlite>) -> QueryResult<()> {
        out.push_sql(
            "UPDATE conversations SET last_position = last_position + 2, \
             updated_at = max(updated_at, ",
        );
        out.push_bind_param::<BigInt, _>(&self.updated_at)?;
        out.push_sql(") WHERE id = ");
        out.push_bind_param::<Text, _>(self.conversation_id)?;
        out.push_sql(" RETURNING last_position");
        Ok(())
    }
}

/// One statement text whatever the borrowed values: the type is the cache key.
impl QueryId for ClaimExchangePositions<'_> {
    type QueryId = ClaimExchangePositions<'static>;
    const HAS_STATIC_QUERY_ID: bool = true;
}

impl Query for ClaimExchangePositions<'_> {
    type SqlType = BigInt;
}

impl RunQueryDsl<SqliteConnection> for ClaimExchangePositions<'_> {}
