//! The SQL of the adapter. Every query is served by an index of the migrations: conversations by
//! primary key or `conversations_by_recency`, messages by `messages_by_position`, deleted
//! conversations' ids by primary key.

use std::marker::PhantomData;

use diesel::prelude::*;
use diesel::result::DatabaseErrorKind;
use diesel::sql_types::{BigInt, Text};
use diesel::sqlite::SqliteConnection;
use domain::{
    Conversation, ConversationCursor, ConversationId, ConversationTitle, Exchange, Message,
    MessageCursor, MessageWindow, NewExchange, NewMessage, Page, PageLimit, Role, Timestamp,
};

use crate::appends::PositionClaims;
use crate::schema::{
    After, Before, ConversationsPage, InsertMessage, Latest, MessagesPage, PageWindow,
};

type QueryResult<T> = Result<T, diesel::result::Error>;

/// A conversation's columns, by name (raw SQL) or by position (the cached statements).
#[derive(Queryable, QueryableByName)]
struct ConversationRow {
    #[diesel(sql_type = Text)]
    id: String,
    #[diesel(sql_type = Text)]
    title: String,
    #[diesel(sql_type = BigInt)]
    created_at: i64,
    #[diesel(sql_type = BigInt)]
    updated_at: i64,
}

/// The columns of [`MessagesPage`], in its order.
#[derive(Queryable)]
struct MessageRow {
    id: String,
    conversation_id: String,
    position: i64,
    role: String,
    content: String,
    created_at: i64,
}

fn corrupt(what: &str) -> diesel::result::Error {
    diesel::result::Error::DeserializationError(format!("stored {what} is not valid").into())
}

impl TryFrom<ConversationRow> for Conversation {
    type Error = diesel::result::Error;

    fn try_from(row: ConversationRow) -> QueryResult<Self> {
        Ok(Conversation {
            id: row.id.parse().map_err(|_| corrupt("conversation id"))?,
            title: row.title,
            created_at: Timestamp::from_unix_micros(row.created_at),
            updated_at: Timestamp::from_unix_micros(row.updated_at),
        })
    }
}

impl TryFrom<MessageRow> for Message {
    type Error = diesel::result::Error;

    fn try_from(row: MessageRow) -> QueryResult<Self> {
        Ok(Message {
            id: row.id.parse().map_err(|_| corrupt("message id"))?,
            conversation_id: row
                .conversation_id
                .parse()
                .map_err(|_| corrupt("conversation id"))?,
            position: row.position,
            role: Role::parse(&row.role).ok_or_else(|| corrupt("role"))?,
            content: row.content,
            created_at: Timestamp::from_unix_micros(row.created_at),
        })
    }
}

const CONVERSATION_COLUMNS: &str = "id, title, created_at, updated_at";

/// Stores the conversation unless its id is taken: by a conversation (the primary key's unique
/// violation), or by one deleted (its row in `deleted_conversations`).
pub(crate) fn insert_conversation(
    conn: &mut SqliteConnection,
    conversation: &Conversation,
) -> QueryResult<()> {
    let id = conversation.id.to_string();
    let inserted = diesel::sql_query(
        "INSERT INTO conversations (id, title, created_at, updated_at) SELECT ?, ?, ?, ? \
         WHERE NOT EXISTS (SELECT 1 FROM deleted_conversations WHERE id = ?)",
    )
    .bind::<Text, _>(&id)
    .bind::<Text, _>(&conversation.title)
    .bind::<BigInt, _>(conversation.created_at.unix_micros())
    .bind::<BigInt, _>(conversation.updated_at.unix_micros())
    .bind::<Text, _>(&id)
    .execute(conn)?;
    if inserted == 0 {
        return Err(diesel::result::Error::DatabaseError(
            DatabaseErrorKind::UniqueViolation,
            Box::new("the id of a deleted conversation".to_owned()),
        ));
    }
    Ok(())
}

pub(crate) fn find_conversation(
    conn: &mut SqliteConnection,
    id: ConversationId,
) -> QueryResult<Conversation> {
    use crate::schema::conversations;

    // The query builder's form: prepared once per connection, as every v1 send checks this.
    conversations::table
        .find(id.to_string())
        .select((
            conversations::id,
            conversations::title,
            conversations::created_at,
            conversations::updated_at,
        ))
        .get_result::<ConversationRow>(conn)?
        .try_into()
}

pub(crate) fn list_conversations(
    conn: &mut SqliteConnection,
    after: Option<ConversationCursor>,
    limit: PageLimit,
) -> QueryResult<Page<Conversation, ConversationCursor>> {
    let fetch = i64::from(limit.get()) + 1;
    let rows: Vec<ConversationRow> = match after {
        None => ConversationsPage::<Latest> {
            after: (0, ""),
            fetch,
            window: PhantomData,
        }
        .load(conn)?,
        Some(cursor) => {
            let id = cursor.id.to_string();
            ConversationsPage::<After> {
                after: (cursor.updated_at.unix_micros(), &id),
                fetch,
                window: PhantomData,
            }
            .load(conn)?
        }
    };
    let mut items = rows
        .into_iter()
        .map(Conversation::try_from)
        .collect::<QueryResult<Vec<_>>>()?;
    let next_cursor = if items.len() > limit.get() as usize {
        items.truncate(limit.get() as usize);
        items.last().map(|last| ConversationCursor {
            updated_at: last.updated_at,
            id: last.id,
        })
    } else {
        None
    };
    Ok(Page { items, next_cursor })
}

pub(crate) fn rename_conversation(
    conn: &mut SqliteConnection,
    id: ConversationId,
    title: &ConversationTitle,
    now: Timestamp,
) -> QueryResult<Conversation> {
    diesel::sql_query(format!(
        "UPDATE conversations SET title = ?, updated_at = max(updated_at, ?) WHERE id = ? \
         RETURNING {CONVERSATION_COLUMNS}"
    ))
    .bind::<Text, _>(title.as_str())
    .bind::<BigInt, _>(now.unix_micros())
    .bind::<Text, _>(id.to_string())
    .get_result::<ConversationRow>(conn)?
    .try_into()
}

/// One step of deleting a conversation: the conversation itself (and its messages) when it has
/// at most `chunk` messages left, otherwise its `chunk` oldest messages. Returns whether the
/// conversation is gone.
pub(crate) fn delete_conversation_or_oldest_messages(
    conn: &mut SqliteConnection,
    id: ConversationId,
    chunk: i64,
) -> QueryResult<bool> {
    let more_than_a_chunk = diesel::sql_query(
        "DELETE FROM messages WHERE id IN \
         (SELECT id FROM messages WHERE conversation_id = ? ORDER BY position LIMIT ?) \
         AND (SELECT COUNT(*) FROM \
              (SELECT 1 FROM messages WHERE conversation_id = ? LIMIT ? + 1)) > ?",
    )
    .bind::<Text, _>(id.to_string())
    .bind::<BigInt, _>(chunk)
    .bind::<Text, _>(id.to_string())
    .bind::<BigInt, _>(chunk)
    .bind::<BigInt, _>(chunk)
    .execute(conn)?
        > 0;
    if more_than_a_chunk {
        return Ok(false);
    }
    delete_conversation(conn, id)?;
    Ok(true)
}

pub(crate) fn delete_conversation(
    conn: &mut SqliteConnection,
    id: ConversationId,
) -> QueryResult<()> {
    let deleted = diesel::sql_query("DELETE FROM conversations WHERE id = ?")
        .bind::<Text, _>(id.to_string())
        .execute(conn)?;
    if deleted == 0 {
        return Err(diesel::result::Error::NotFound);
    }
    if id != ConversationId::DEFAULT {
        diesel::sql_query("INSERT INTO deleted_conversations (id, deleted_at) VALUES (?, ?)")
            .bind::<Text, _>(id.to_string())
            .bind::<BigInt, _>(Timestamp::now().unix_micros())
            .execute(conn)?;
    }
    Ok(())
}

pub(crate) fn list_messages(
    conn: &mut SqliteConnection,
    conversation_id: ConversationId,
    window: MessageWindow,
    limit: PageLimit,
) -> QueryResult<Page<Message, MessageCursor>> {
    let fetch = i64::from(limit.get()) + 1;
    let conversation = conversation_id.to_string();
    let mut rows = page_rows(conn, &conversation, window, fetch)?;
    if rows.is_empty() {
        // Only a message proves that the conversation exists. Without one, the page is read
        // again with the conversation in one snapshot, so that "empty" and "exists" hold at
        // the same moment.
        rows = conn.transaction::<_, diesel::result::Error, _>(|conn| {
            let rows = page_rows(conn, &conversation, window, fetch)?;
            if rows.is_empty() {
                find_conversation(conn, conversation_id)?;
            }
            Ok(rows)
        })?;
    }
    let newest_first = !matches!(window, MessageWindow::After(_));
    let mut items = rows
        .into_iter()
        .map(Message::try_from)
        .collect::<QueryResult<Vec<_>>>()?;
    let more = items.len() > limit.get() as usize;
    items.truncate(limit.get() as usize);
    let next_cursor = more
        .then(|| {
            items.last().map(|last| MessageCursor {
                position: last.position,
            })
        })
        .flatten();
    if newest_first {
        items.reverse();
    }
    Ok(Page { items, next_cursor })
}

/// Up to `fetch` rows of the conversation's `window`, in the window's order.
fn page_rows(
    conn: &mut SqliteConnection,
    conversation_id: &str,
    window: MessageWindow,
    fetch: i64,
) -> QueryResult<Vec<MessageRow>> {
    match window {
        MessageWindow::Latest => page_of::<Latest>(conn, conversation_id, 0, fetch),
        MessageWindow::Before(cursor) => {
            page_of::<Before>(conn, conversation_id, cursor.position, fetch)
        }
        MessageWindow::After(cursor) => {
            page_of::<After>(conn, conversation_id, cursor.position, fetch)
        }
    }
}

fn page_of<W: PageWindow>(
    conn: &mut SqliteConnection,
    conversation_id: &str,
    bound: i64,
    fetch: i64,
) -> QueryResult<Vec<MessageRow>> {
    MessagesPage::<W> {
        conversation_id,
        bound,
        fetch,
        window: PhantomData,
    }
    .load(conn)
}

/// Stores the exchange at the next two positions its conversation has in `claims`; the claim is
/// written back to the conversation by [`PositionClaims::settle`].
pub(crate) fn append_exchange(
    conn: &mut SqliteConnection,
    exchange: &NewExchange,
    claims: &mut PositionClaims,
) -> QueryResult<Exchange> {
    let conversation_id = exchange.conversation_id.to_string();
    // Claiming positions on the conversation orders exchanges as they are stored; no row means
    // no conversation.
    let last_position = claims.claim_exchange(
        conn,
        &conversation_id,
        exchange.assistant.created_at.unix_micros(),
    )?;
    let user_position = last_position - 1;
    for (message, role, position) in [
        (&exchange.user, Role::User, user_position),
        (&exchange.assistant, Role::Assistant, last_position),
    ] {
        let mut id = uuid::Uuid::encode_buffer();
        InsertMessage {
            id: message.id.as_uuid().hyphenated().encode_lower(&mut id),
            conversation_id: &conversation_id,
            position,
            role: role.as_str(),
            content: &message.content,
            created_at: message.created_at.unix_micros(),
        }
        .execute(conn)?;
    }
    let stored = |new: &NewMessage, role, position| Message {
        id: new.id,
        conversation_id: exchange.conversation_id,
        position,
        role,
        content: new.content.clone(),
        created_at: new.created_at,
    };
    Ok(Exchange {
        user_message: stored(&exchange.user, Role::User, user_position),
        assistant_message: stored(&exchange.assistant, Role::Assistant, last_position),
    })
}
