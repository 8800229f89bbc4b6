//! The statements of the hot paths, in forms diesel prepares once per connection and caches.
//! Raw SQL (`sql_query`) and diesel's own `UPDATE` builder are parsed again on every call, which
//! cost more than the rest of an exchange's write together, and a fifth of a page read.

use std::marker::PhantomData;

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

/// Which part of a conversation a [`MessagesPage`] reads; one type per statement text, since the
/// type is the statement cache's key.
pub(crate) trait PageWindow: 'static {
    /// The condition on `position` after the conversation's, with one `?` for the bound, if any.
    const BOUND: Option<&'static str>;
    const ORDER: &'static str;
}

/// The newest messages, newest first.
pub(crate) struct Latest;
/// Messages before a position, newest first.
pub(crate) struct Before;
/// Messages after a position, oldest first.
pub(crate) struct After;

impl PageWindow for Latest {
    const BOUND: Option<&'static str> = None;
    const ORDER: &'static str = " ORDER BY position DESC LIMIT ";
}

impl PageWindow for Before {
    const BOUND: Option<&'static str> = Some(" AND position < ");
    const ORDER: &'static str = " ORDER BY position DESC LIMIT ";
}

impl PageWindow for After {
    const BOUND: Option<&'static str> = Some(" AND position > ");
    const ORDER: &'static str = " ORDER BY position ASC LIMIT ";
}

/// Up to `fetch` messages of one conversation in position order, by the `messages_by_position`
/// index, loaded by column position as `(id, conversation_id, position, role, content,
/// created_at)`.
pub(crate) struct MessagesPage<'a, W> {
    pub(crate) conversation_id: &'a str,
    /// Ignored by [`Latest`].
    pub(crate) bound: i64,
    pub(crate) fetch: i64,
    pub(crate) window: PhantomData<W>,
}

impl<W: PageWindow> QueryFragment<Sqlite> for MessagesPage<'_, W> {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Sqlite>) -> QueryResult<()> {
        out.push_sql(
            "SELECT id, conversation_id, position, role, content, created_at FROM messages \
             WHERE conversation_id = ",
        );
        out.push_bind_param::<Text, _>(self.conversation_id)?;
        if let Some(bound) = W::BOUND {
            out.push_sql(bound);
            out.push_bind_param::<BigInt, _>(&self.bound)?;
        }
        out.push_sql(W::ORDER);
        out.push_bind_param::<BigInt, _>(&self.fetch)?;
        Ok(())
    }
}

impl<W: PageWindow> QueryId for MessagesPage<'_, W> {
    type QueryId = MessagesPage<'static, W>;
    const HAS_STATIC_QUERY_ID: bool = true;
}

impl<W> Query for MessagesPage<'_, W> {
    type SqlType = (Text, Text, BigInt, Text, Text, BigInt);
}

impl<W> RunQueryDsl<SqliteConnection> for MessagesPage<'_, W> {}

const SELECT_CONVERSATIONS: &str = "SELECT id, title, created_at, updated_at FROM conversations ";

/// Up to `fetch` conversations, most recently updated first, by `conversations_by_recency`; after
/// the keyset `(updated_at, id)` when one is given. Loaded by column position as `(id, title,
/// created_at, updated_at)`.
pub(crate) struct ConversationsPage<'a, W> {
    /// The last conversation of the previous page; ignored by [`Latest`].
    pub(crate) after: (i64, &'a str),
    pub(crate) fetch: i64,
    pub(crate) window: PhantomData<W>,
}

impl QueryFragment<Sqlite> for ConversationsPage<'_, Latest> {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Sqlite>) -> QueryResult<()> {
        out.push_sql(SELECT_CONVERSATIONS);
        out.push_sql("ORDER BY updated_at DESC, id DESC LIMIT ");
        out.push_bind_param::<BigInt, _>(&self.fetch)?;
        Ok(())
    }
}

impl QueryFragment<Sqlite> for ConversationsPage<'_, After> {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Sqlite>) -> QueryResult<()> {
        out.push_sql(SELECT_CONVERSATIONS);
        out.push_sql("WHERE (updated_at, id) < (");
        out.push_bind_param::<BigInt, _>(&self.after.0)?;
        out.push_sql(", ");
        out.push_bind_param::<Text, _>(self.after.1)?;
        out.push_sql(") ORDER BY updated_at DESC, id DESC LIMIT ");
        out.push_bind_param::<BigInt, _>(&self.fetch)?;
        Ok(())
    }
}

impl<W: 'static> QueryId for ConversationsPage<'_, W> {
    type QueryId = ConversationsPage<'static, W>;
    const HAS_STATIC_QUERY_ID: bool = true;
}

impl<W> Query for ConversationsPage<'_, W> {
    type SqlType = (Text, Text, BigInt, BigInt);
}

impl<W> RunQueryDsl<SqliteConnection> for ConversationsPage<'_, W> {}
