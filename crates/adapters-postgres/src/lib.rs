//! [`ChatRepository`] on PostgreSQL via diesel, shared by any number of server replicas.
//!
//! - Migrations are embedded and applied by [`PostgresChatRepository::connect`] under an advisory
//!   lock, so replicas starting together do not race.
//! - Appended exchanges are group-committed (see `batches`): each batch bumps
//!   `conversations.last_position` once per conversation and inserts all its messages in one
//!   transaction. The row lock serialises writers of one conversation across replicas, so
//!   positions are gap-free and follow commit order, and a failed append stores nothing.
//! - Reads queue for a few reader threads, each of which runs every read queued when it wakes on one
//!   pooled connection (see `reads`); other calls run on a blocking thread of their own.
//! - Every diesel call runs with a pooled connection; a pool checkout waits at
//!   most `connect_timeout`, so calls fail with `Unavailable` soon after the database goes down
//!   (an append may wait for the batches ahead of it, each bounded by that timeout) and recover
//!   by themselves (connections are tested on checkout) when it is back. With a statement
//!   timeout, a read also gives up (`Unavailable`) when the database stops answering behind a
//!   live connection.

mod batches;
mod health;
mod lookups;
mod reads;
mod schema;

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::anyhow;
use async_trait::async_trait;
use diesel::connection::SimpleConnection;
use diesel::pg::PgConnection;
use diesel::prelude::*;
use diesel::r2d2::{ConnectionManager, CustomizeConnection, HandleError, Pool, PooledConnection};
use diesel::result::{DatabaseErrorKind, Error as DieselError};
use diesel::sql_types::{BigInt, Bool, Text, Uuid as SqlUuid};
use diesel_migrations::{embed_migrations, EmbeddedMigrations, MigrationHarness};
use domain::{
    ChatRepository, Conversation, ConversationCursor, ConversationId, ConversationTitle, Exchange,
    Message, MessageCursor, MessageId, MessageWindow, NewExchange, NewMessage, Page, PageLimit,
    RepositoryError, Role, Timestamp,
};
use uuid::Uuid;

use crate::schema::{conversations, messages};

const MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations");

/// Key of the session advisory lock held while migrations run ("chatmigr" in ASCII).
const MIGRATION_LOCK_KEY: i64 = 0x6368_6174_6d69_6772;

/// Without a statement timeout, how much longer than the connect timeout a health check is
/// waited for before a new one starts.
const UNBOUNDED_CHECK_PATIENCE: Duration = Duration::from_secs(10);

/// Reads that may wait for a reader thread; one more is refused with `Overloaded`.
const READ_QUEUE_CAPACITY: usize = 1024;

/// How to reach PostgreSQL.
#[derive(Clone)]
pub struct PostgresSettings {
    /// `postgres://` or `postgresql://` URL. May hold a password: never logged, redacted by `Debug`.
    pub url: String,
    /// Most connections this process opens.
    pub pool_size: u32,
    /// Longest wait for a connection, at start and for every call; past it a call is `Unavailable`.
    pub connect_timeout: Duration,
    /// Server-side limit per statement (`SET statement_timeout`); `None` keeps the server default.
    /// Set, it bounds reads on this side too (`connect_timeout` + it + 1 s), for a database that
    /// stopped answering behind a live connection.
    pub statement_timeout: Option<Duration>,
    /// Appends that may wait for a batch; one more is refused with `Overloaded`.
    pub write_queue_capacity: usize,
    /// Most appends committed in one transaction.
    pub max_batch: usize,
}

impl PostgresSettings {
    /// Settings with the defaults: 10 connections, 2 s connect timeout, no statement timeout,
    /// 1024 queued appends, batches of at most 256.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            pool_size: 10,
            connect_timeout: Duration::from_secs(2),
            statement_timeout: None,
            write_queue_capacity: 1024,
            max_batch: 256,
        }
    }
}

impl fmt::Debug for PostgresSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresSettings")
            .field("url", &"<redacted>")
            .field("pool_size", &self.pool_size)
            .field("connect_timeout", &self.connect_timeout)
            .field("statement_timeout", &self.statement_timeout)
            .field("write_queue_capacity", &self.write_queue_capacity)
            .field("max_batch", &self.max_batch)
            .finish()
    }
}

type PgPool = Pool<ConnectionManager<PgConnection>>;

/// Conversations and messages in PostgreSQL. Cheap to clone (the pool is shared).
#[derive(Clone)]
pub struct PostgresChatRepository {
    pool: PgPool,
    appends: batches::AppendBatches,
    lookups: lookups::ConversationLookups,
    readers: reads::ReaderThreads,
    read_deadline: Option<Duration>,
    answers: Arc<health::Answers>,
    health_checks: Arc<health::SingleCheck>,
}

impl fmt::Debug for PostgresChatRepository {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.pool.state();
        f.debug_struct("PostgresChatRepository")
            .field("connections", &state.connections)
            .field("idle_connections", &state.idle_connections)
            .finish_non_exhaustive()
    }
}

/// Applies the isolation level and the statement timeout to every new connection.
#[derive(Debug, Clone, Copy)]
struct SessionSettings {
    statement_timeout: Option<Duration>,
}

/// Appends rely on READ COMMITTED: an `UPDATE` that waited for a conversation's row lock reads the
/// `last_position` its holder committed. A database or role defaulting to REPEATABLE READ or
/// SERIALIZABLE would fail such an append with a serialization error instead.
const READ_COMMITTED: &str =
    "SET SESSION CHARACTERISTICS AS TRANSACTION ISOLATION LEVEL READ COMMITTED";

impl SessionSettings {
    fn apply(&self, connection: &mut PgConnection) -> QueryResult<()> {
        match self.statement_timeout {
            Some(timeout) => connection
                .batch_execute(&format!("SET statement_timeout = {}", timeout.as_millis())),
            // The database's or role's own setting, which a `SET ... = 0` would have replaced.
            None => connection.batch_execute("RESET statement_timeout"),
        }
    }
}

impl CustomizeConnection<PgConnection, diesel::r2d2::Error> for SessionSettings {
    fn on_acquire(&self, connection: &mut PgConnection) -> Result<(), diesel::r2d2::Error> {
        connection.batch_execute(READ_COMMITTED)?;
        if self.statement_timeout.is_some() {
            self.apply(connection)?;
        }
        Ok(())
    }
}

/// Sends the pool's connection failures to tracing. libpq's messages name host and port; they
/// would repeat part of a password only from a URL it misreads, which the settings refuse.
#[derive(Debug, Clone, Copy)]
struct TracingErrorHandler;

impl HandleError<diesel::r2d2::Error> for TracingErrorHandler {
    fn handle_error(&self, error: diesel::r2d2::Error) {
        tracing::warn!(error = %error, "PostgreSQL connection failed");
    }
}

impl PostgresChatRepository {
    /// Builds the pool, checks that PostgreSQL answers within `connect_timeout` (`Unavailable`
    /// otherwise) and applies pending migrations.
    pub async fn connect(settings: PostgresSettings) -> Result<Self, RepositoryError> {
        if !(settings.url.starts_with("postgres://") || settings.url.starts_with("postgresql://")) {
            return Err(RepositoryError::Unknown(anyhow!(
                "the PostgreSQL URL must start with postgres:// or postgresql://"
            )));
        }
        if settings.pool_size == 0 {
            return Err(RepositoryError::Unknown(anyhow!(
                "the PostgreSQL pool size must be at least 1"
            )));
        }
        let session = SessionSettings {
            statement_timeout: settings.statement_timeout,
        };
        let pool = Pool::builder()
            .max_size(settings.pool_size)
            .min_idle(Some(0))
            .connection_timeout(settings.connect_timeout)
            .test_on_check_out(true)
            .connection_customizer(Box::new(session))
            .error_handler(Box::new(TracingErrorHandler))
            .build_unchecked(ConnectionManager::<PgConnection>::new(
                with_network_defaults(&settings.url, settings.connect_timeout),
            ));
        // Two batches in flight: one runs its statements while the other commits. More only
        // split the queue into smaller batches that wait for each other on a busy conversation's
        // row lock (measured: one hot conversation, 64 clients: 1 in flight 19.8k exchanges/s,
        // 2 17.4k, 4 12k). At most half the pool, so reads still get connections.
        count_refusals_from_zero();
        let appends = batches::AppendBatches::start(
            pool.clone(),
            settings.write_queue_capacity,
            settings.max_batch,
            usize::try_from(settings.pool_size / 2)
                .unwrap_or(1)
                .clamp(1, 2),
        );
        let lookups = lookups::ConversationLookups::start(pool.clone());
        // Half the pool, so appends, lookups and the other calls still get connections.
        let reader_threads = usize::try_from(settings.pool_size / 2).unwrap_or(1).max(1);
        let readers = reads::ReaderThreads::spawn(&pool, reader_threads, READ_QUEUE_CAPACITY)
            .map_err(|error| {
                RepositoryError::Unavailable(format!(
                    "cannot start the PostgreSQL reader threads: {error}"
                ))
            })?;
        let read_deadline = read_deadline(&settings);
        let repository = Self {
            pool,
            appends,
            lookups,
            readers,
            read_deadline,
            answers: Arc::new(health::Answers::new()),
            // As long as a read may take; with statements unbounded, the connect timeout and
            // the usual statement time.
            health_checks: Arc::new(health::SingleCheck::new(
                read_deadline.unwrap_or(settings.connect_timeout + UNBOUNDED_CHECK_PATIENCE),
            )),
        };
        repository
            .run("migrate", move |connection| {
                refuse_other_encodings(connection)?;
                run_migrations(connection, session)
            })
            .await?;
        tracing::info!(pool_size = settings.pool_size, "PostgreSQL storage ready");
        Ok(repository)
    }

    /// Runs `work` on a blocking thread with a pooled connection, and records how long the
    /// operation took (pool wait included) and how it ended.
    async fn run<T, F>(&self, operation: &'static str, work: F) -> Result<T, RepositoryError>
    where
        T: Send + 'static,
        F: FnOnce(&mut PgConnection) -> Result<T, RepositoryError> + Send + 'static,
    {
        let started = Instant::now();
        let pool = self.pool.clone();
        let span = tracing::Span::current();
        let result = tokio::task::spawn_blocking(move || {
            let _entered = span.enter();
            let mut connection = checkout(&pool)?;
            work(&mut connection)
        })
        .await
        .map_err(|error| RepositoryError::Unknown(anyhow!("storage task failed: {error}")))
        .and_then(|result| result);
        record_operation(&self.answers, operation, started, &result);
        result
    }

    /// Deletes conversation `id` in one statement when it has at most `chunk` messages. A larger
    /// one loses its messages oldest first, `chunk` per statement, each within the statement
    /// timeout and without the conversation's row lock, which appends need; it goes with its
    /// last chunk, and a message appended to it meanwhile goes with it. A failure leaves the
    /// conversation without some of its oldest messages; deleting it again goes on.
    async fn delete_in_chunks(
        &self,
        id: ConversationId,
        chunk: i64,
    ) -> Result<(), RepositoryError> {
        while !self
            .run("delete_conversation", move |connection| {
                delete_conversation_or_oldest_messages(connection, id, chunk)
            })
            .await?
        {}
        Ok(())
    }

    /// Runs `query` on one of the reader threads (see `reads`), and records it like [`Self::run`].
    async fn read<T, F>(&self, operation: &'static str, query: F) -> Result<T, RepositoryError>
    where
        T: Send + 'static,
        F: FnOnce(&mut PgConnection) -> Result<T, RepositoryError> + Send + 'static,
    {
        let started = Instant::now();
        let span = tracing::Span::current();
        let (answer, answered) = tokio::sync::oneshot::channel();
        let queued = self.readers.submit(Box::new(move |connection| {
            let _entered = span.enter();
            answer_if_awaited(answer, || connection.and_then(query));
        }));
        let result = match queued {
            Ok(()) => {
                self.within_read_deadline(async {
                    // Dropped unanswered only when the read panicked.
                    answered.await.unwrap_or_else(|_| {
                        Err(RepositoryError::Unknown(anyhow!(
                            "the read failed unexpectedly"
                        )))
                    })
                })
                .await
            }
            Err(refused) => Err(refused),
        };
        record_operation(&self.answers, operation, started, &result);
        result
    }

    /// `read`'s answer, or `Unavailable` once the deadline has passed. A database that stopped
    /// answering behind a live connection (a frozen server or proxy, whose kernel still
    /// acknowledges every packet, so neither keepalives nor `tcp_user_timeout` notice) would
    /// otherwise hold the request as long as it stays so. The thread running the read still
    /// waits for it; the reads queued behind it get this answer too, or `Overloaded` once the
    /// queue is full.
    async fn within_read_deadline<T>(
        &self,
        read: impl std::future::Future<Output = Result<T, RepositoryError>>,
    ) -> Result<T, RepositoryError> {
        let Some(deadline) = self.read_deadline else {
            return read.await;
        };
        tokio::time::timeout(deadline, read)
            .await
            .unwrap_or_else(|_| {
                Err(RepositoryError::Unavailable(format!(
                    "PostgreSQL did not answer a read within {} s",
                    deadline.as_secs_f64()
                )))
            })
    }
}

/// Runs `read` and sends its result, unless the requester went away (past its deadline, or its
/// client gone): it then needs no answer and the database no work, which behind a slow database
/// would delay every read queued after it.
fn answer_if_awaited<T>(
    answer: tokio::sync::oneshot::Sender<Result<T, RepositoryError>>,
    read: impl FnOnce() -> Result<T, RepositoryError>,
) {
    if !answer.is_closed() {
        let _ = answer.send(read());
    }
}

/// Records how long a storage operation took (pool or batch wait included) and how it ended,
/// under the label set every storage backend uses, and notes in `answers` that the database
/// answered unless it failed for want of one.
fn record_operation<T>(
    answers: &health::Answers,
    operation: &'static str,
    started: Instant,
    result: &Result<T, RepositoryError>,
) {
    if !matches!(
        result,
        Err(RepositoryError::Unavailable(_) | RepositoryError::Overloaded)
    ) {
        answers.note();
    }
    let outcome = result.as_ref().map_or_else(RepositoryError::kind, |_| "ok");
    metrics::histogram!(
        "storage_operation_duration_seconds",
        "backend" => "postgres",
        "operation" => operation,
        "outcome" => outcome,
    )
    .record(started.elapsed().as_secs_f64());
}

/// How long a read may take when every statement is bounded: the wait for a connection, the
/// statement, and a second for the round trips. Unbounded statements leave reads unbounded too.
fn read_deadline(settings: &PostgresSettings) -> Option<Duration> {
    settings
        .statement_timeout
        .map(|statement| settings.connect_timeout + statement + Duration::from_secs(1))
}

/// Adds libpq parameters the URL does not set itself. Without a libpq `connect_timeout`, a
/// connection attempt to a host that drops packets hangs for minutes in the pool's background
/// threads and delays recovery; without keepalives, a query on a connection whose peer vanished
/// (node lost, network partition) waits for the kernel's two-hour default. Keepalives only probe
/// a quiet connection: a query sent after the peer vanished stays unacknowledged and would be
/// retransmitted for about 15 minutes (Linux's default), holding its pooled connection and its
/// caller all that time, so `tcp_user_timeout` closes a connection whose sent data goes
/// unacknowledged for 30 s. It never cuts a slow query: the server acknowledges what it receives.
fn with_network_defaults(url: &str, connect_timeout: Duration) -> String {
    // libpq takes whole seconds and treats anything below 2 as 2.
    let connect_seconds = connect_timeout.as_secs_f64().ceil().max(2.0).to_string();
    let defaults = [
        ("connect_timeout", connect_seconds.as_str()),
        ("keepalives", "1"),
        ("keepalives_idle", "30"),
        ("keepalives_interval", "10"),
        ("keepalives_count", "3"),
        ("tcp_user_timeout", "30000"),
    ];
    let query = url.split_once('?').map_or("", |(_, query)| query);
    let present: Vec<&str> = query
        .split('&')
        .filter_map(|pair| pair.split('=').next())
        .collect();
    let mut url = url.to_owned();
    for (key, value) in defaults {
        if present.contains(&key) {
            continue;
        }
        url.push(if url.contains('?') { '&' } else { '?' });
        url.push_str(key);
        url.push('=');
        url.push_str(value);
    }
    url
}

/// Messages one statement of a conversation's deletion removes. In one statement, a conversation
/// of millions of messages (the seed routes' default one, after long use) would outlast the
/// statement timeout, so it could never be deleted, and hold its row lock all the while.
const MESSAGES_DELETED_PER_STATEMENT: i64 = 10_000;

/// One step of deleting a conversation: its `chunk` oldest messages while it has more than that,
/// then the conversation itself with the rest (ON DELETE CASCADE). Returns whether it is gone.
fn delete_conversation_or_oldest_messages(
    connection: &mut PgConnection,
    id: ConversationId,
    chunk: i64,
) -> Result<bool, RepositoryError> {
    let more_than_a_chunk = diesel::sql_query(
        "DELETE FROM messages WHERE id IN \
         (SELECT id FROM messages WHERE conversation_id = $1 ORDER BY position LIMIT $2) \
         AND (SELECT COUNT(*) FROM \
              (SELECT 1 FROM messages WHERE conversation_id = $1 LIMIT $2 + 1) AS counted) > $2",
    )
    .bind::<SqlUuid, _>(id.as_uuid())
    .bind::<BigInt, _>(chunk)
    .execute(connection)
    .map_err(map_error)?
        > 0;
    if more_than_a_chunk {
        return Ok(false);
    }
    connection
        .transaction(|connection| {
            let deleted =
                diesel::delete(conversations::table.find(id.as_uuid())).execute(connection)?;
            if deleted == 0 {
                return Err(DieselError::NotFound);
            }
            if id != ConversationId::DEFAULT {
                diesel::sql_query(
                    "INSERT INTO deleted_conversations (id, deleted_at) VALUES ($1, $2)",
                )
                .bind::<SqlUuid, _>(id.as_uuid())
                .bind::<BigInt, _>(Timestamp::now().unix_micros())
                .execute(connection)?;
            }
            Ok(true)
        })
        .map_err(map_error)
}

fn checkout(
    pool: &PgPool,
) -> Result<PooledConnection<ConnectionManager<PgConnection>>, RepositoryError> {
    pool.get()
        .map_err(|error| RepositoryError::Unavailable(format!("PostgreSQL: {error}")))
}

/// A database in another encoding (LATIN1, WIN1252, EUC_JP) cannot hold every character a
/// message may have: one emoji would fail its whole batch of appends after their replies were
/// generated. Such a database is refused at start, with what to do instead. `SQL_ASCII` (what
/// `initdb` picks under the C locale) stores the UTF-8 bytes it is sent unchanged, and nothing
/// here relies on the database knowing characters, so it is kept, with a warning.
fn refuse_other_encodings(connection: &mut PgConnection) -> Result<(), RepositoryError> {
    let encoding = diesel::select(diesel::dsl::sql::<Text>(
        "current_setting('server_encoding')",
    ))
    .get_result::<String>(connection)
    .map_err(map_error)?;
    match encoding.as_str() {
        "UTF8" => Ok(()),
        "SQL_ASCII" => {
            tracing::warn!(
                "the PostgreSQL database is encoded in SQL_ASCII: it stores text as sent, but \
                 checks nothing; prefer ENCODING 'UTF8'"
            );
            Ok(())
        }
        other => Err(RepositoryError::Unknown(anyhow!(
            "the PostgreSQL database is encoded in {other}, which cannot hold every character \
             of a message; create it with ENCODING 'UTF8' (e.g. CREATE DATABASE chat ENCODING \
             'UTF8' TEMPLATE template0)"
        ))),
    }
}

fn run_migrations(
    connection: &mut PgConnection,
    session: SessionSettings,
) -> Result<(), RepositoryError> {
    // Migrations may legitimately take longer than a request's statement timeout.
    connection
        .batch_execute("SET statement_timeout = 0")
        .map_err(map_error)?;
    diesel::sql_query("SELECT pg_advisory_lock($1)")
        .bind::<BigInt, _>(MIGRATION_LOCK_KEY)
        .execute(connection)
        .map_err(map_error)?;
    let migrated = connection
        .run_pending_migrations(MIGRATIONS)
        .map(|applied| applied.len())
        .map_err(|error| {
            RepositoryError::Unknown(anyhow!("PostgreSQL migrations failed: {error}"))
        });
    let unlocked = diesel::sql_query("SELECT pg_advisory_unlock($1)")
        .bind::<BigInt, _>(MIGRATION_LOCK_KEY)
        .execute(connection)
        .map_err(map_error);
    let restored = session.apply(connection).map_err(map_error);
    let applied = migrated?;
    unlocked?;
    restored?;
    if applied > 0 {
        tracing::info!(applied, "applied PostgreSQL migrations");
    }
    Ok(())
}

/// Translates diesel's errors at the edge. Messages come from PostgreSQL or libpq and never hold the
/// connection URL.
fn map_error(error: DieselError) -> RepositoryError {
    match error {
        DieselError::NotFound => RepositoryError::NotFound,
        DieselError::DatabaseError(DatabaseErrorKind::UniqueViolation, _) => {
            RepositoryError::Conflict
        }
        DieselError::DatabaseError(
            DatabaseErrorKind::ClosedConnection | DatabaseErrorKind::UnableToSendCommand,
            info,
        ) => {
            RepositoryError::Unavailable(format!("PostgreSQL connection lost: {}", info.message()))
        }
        // Two writers met on the same rows (possible only under an isolation level above READ
        // COMMITTED, which sessions do not use): trying again succeeds.
        DieselError::DatabaseError(DatabaseErrorKind::SerializationFailure, info) => {
            RepositoryError::Unavailable(format!("PostgreSQL: {}", info.message()))
        }
        DieselError::DatabaseError(DatabaseErrorKind::ReadOnlyTransaction, info) => {
            RepositoryError::Unavailable(format!(
                "PostgreSQL refuses writes (a read-only database or a standby): {}",
                info.message()
            ))
        }
        DieselError::DatabaseError(_, info) if is_outage_message(info.message()) => {
            RepositoryError::Unavailable(format!("PostgreSQL: {}", info.message()))
        }
        DieselError::DatabaseError(_, info) if is_missing_schema(info.message()) => {
            RepositoryError::Unavailable(format!("{MISSING_SCHEMA} ({})", info.message()))
        }
        other => RepositoryError::Unknown(anyhow!("PostgreSQL: {other}")),
    }
}

/// What a database without the tables and functions the migrations made is told as.
const MISSING_SCHEMA: &str = "the PostgreSQL database has no chat tables (was it dropped and \
                              created again, or restored without them?); restart the server to \
                              create them";

/// A table or function the migrations create is not there: `relation "messages" does not exist`,
/// `function append_exchange_batch(...) does not exist`.
pub(crate) fn is_missing_schema(message: &str) -> bool {
    (message.starts_with("relation \"") || message.starts_with("function "))
        && message.ends_with("does not exist")
}

/// Failures of the database rather than of the statement, which diesel gives no kind of its own:
/// they pass once the database is well again, so callers may retry.
fn is_outage_message(message: &str) -> bool {
    const OUTAGES: [&str; 5] = [
        // A statement or lock timeout (a `lock_timeout` of the database or role while another
        // session holds a row), an administrator's cancel, a standby replaying over the query.
        "canceling statement due to",
        "deadlock detected",
        "terminating connection",
        // A full disk: "could not extend file ...: No space left on device".
        "could not extend file",
        "No space left on device",
    ];
    OUTAGES.iter().any(|outage| message.contains(outage))
}

/// PostgreSQL refused the statement for what it was given (a taken id, text it cannot store),
/// which can be pinned on the one append that gave it. Only such refusals count: anything else (a
/// lost connection, a timeout, a read-only replica after failover, a full disk) fails the whole
/// batch rather than being retried append by append against a database already in trouble.
fn is_refusal(error: &DieselError) -> bool {
    /// Data exceptions PostgreSQL reports without a kind diesel names.
    const DATA_REFUSALS: [&str; 3] = [
        "invalid byte sequence",
        "invalid input syntax",
        "value too long",
    ];
    match error {
        DieselError::DatabaseError(
            DatabaseErrorKind::UniqueViolation
            | DatabaseErrorKind::ForeignKeyViolation
            | DatabaseErrorKind::NotNullViolation
            | DatabaseErrorKind::CheckViolation,
            _,
        ) => true,
        DieselError::DatabaseError(_, info) => DATA_REFUSALS
            .iter()
            .any(|refusal| info.message().starts_with(refusal)),
        _ => false,
    }
}

#[derive(Queryable, Selectable)]
#[diesel(table_name = conversations, check_for_backend(diesel::pg::Pg))]
struct ConversationRow {
    id: Uuid,
    title: String,
    created_at: i64,
    updated_at: i64,
}

impl From<ConversationRow> for Conversation {
    fn from(row: ConversationRow) -> Self {
        Conversation {
            id: ConversationId::from_uuid(row.id),
            title: row.title,
            created_at: Timestamp::from_unix_micros(row.created_at),
            updated_at: Timestamp::from_unix_micros(row.updated_at),
        }
    }
}

#[derive(Insertable)]
#[diesel(table_name = conversations)]
struct NewConversationRow<'a> {
    id: Uuid,
    title: &'a str,
    created_at: i64,
    updated_at: i64,
}

#[derive(Queryable, Selectable)]
#[diesel(table_name = messages, check_for_backend(diesel::pg::Pg))]
struct MessageRow {
    id: Uuid,
    conversation_id: Uuid,
    position: i64,
    role: String,
    content: String,
    created_at: i64,
}

impl TryFrom<MessageRow> for Message {
    type Error = RepositoryError;

    fn try_from(row: MessageRow) -> Result<Self, RepositoryError> {
        let role = Role::parse(&row.role).ok_or_else(|| {
            RepositoryError::Unknown(anyhow!(
                "message {} has unknown role {:?}",
                row.id,
                row.role
            ))
        })?;
        Ok(Message {
            id: MessageId::from_uuid(row.id),
            conversation_id: ConversationId::from_uuid(row.conversation_id),
            position: row.position,
            role,
            content: row.content,
            created_at: Timestamp::from_unix_micros(row.created_at),
        })
    }
}

fn stored_message(
    conversation_id: ConversationId,
    message: &NewMessage,
    role: Role,
    position: i64,
) -> Message {
    Message {
        id: message.id,
        conversation_id,
        position,
        role,
        content: message.content.clone(),
        created_at: message.created_at,
    }
}

/// Both messages and the conversation's bump in one statement, hence one transaction and one round
/// trip. The `UPDATE` row-locks the conversation until commit, so concurrent writers of one
/// conversation (from any replica) queue there and each sees the position its predecessor
/// committed: positions are gap-free and follow commit order. A unique violation on a message id
/// aborts the whole statement, bump included; a missing conversation inserts nothing.
const APPEND_EXCHANGE: &str = "\
    WITH bumped AS ( \
        UPDATE conversations \
        SET last_position = last_position + 2, updated_at = GREATEST(updated_at, $8) \
        WHERE id = $1 \
        RETURNING last_position \
    ) \
    INSERT INTO messages (id, conversation_id, position, role, content, created_at) \
    SELECT $2, $1, last_position - 1, 'user', $3, $4 FROM bumped \
    UNION ALL \
    SELECT $5, $1, last_position, 'assistant', $6, $7 FROM bumped \
    RETURNING position";

#[derive(QueryableByName)]
struct Position {
    #[diesel(sql_type = BigInt)]
    position: i64,
}

fn append(connection: &mut PgConnection, exchange: &NewExchange) -> Result<Exchange, DieselError> {
    let inserted: Vec<Position> = diesel::sql_query(APPEND_EXCHANGE)
        .bind::<SqlUuid, _>(exchange.conversation_id.as_uuid())
        .bind::<SqlUuid, _>(exchange.user.id.as_uuid())
        .bind::<Text, _>(&exchange.user.content)
        .bind::<BigInt, _>(exchange.user.created_at.unix_micros())
        .bind::<SqlUuid, _>(exchange.assistant.id.as_uuid())
        .bind::<Text, _>(&exchange.assistant.content)
        .bind::<BigInt, _>(exchange.assistant.created_at.unix_micros())
        .bind::<BigInt, _>(exchange.assistant.created_at.unix_micros())
        .load(connection)?;
    let Some(last_position) = inserted.iter().map(|row| row.position).max() else {
        return Err(DieselError::NotFound);
    };
    let stored = |message: &NewMessage, role, position| {
        stored_message(exchange.conversation_id, message, role, position)
    };
    Ok(Exchange {
        user_message: stored(&exchange.user, Role::User, last_position - 1),
        assistant_message: stored(&exchange.assistant, Role::Assistant, last_position),
    })
}

fn page_messages(
    connection: &mut PgConnection,
    conversation_id: ConversationId,
    window: MessageWindow,
    limit: PageLimit,
) -> Result<Page<Message, MessageCursor>, RepositoryError> {
    let id = conversation_id.as_uuid();
    let wanted = i64::from(limit.get());
    let base = messages::table
        .filter(messages::conversation_id.eq(id))
        .select(MessageRow::as_select())
        .limit(wanted + 1);
    let rows: QueryResult<Vec<MessageRow>> = match window {
        MessageWindow::Latest => base.order(messages::position.desc()).load(connection),
        MessageWindow::Before(cursor) => base
            .filter(messages::position.lt(cursor.position))
            .order(messages::position.desc())
            .load(connection),
        MessageWindow::After(cursor) => base
            .filter(messages::position.gt(cursor.position))
            .order(messages::position.asc())
            .load(connection),
    };
    let mut rows = rows.map_err(map_error)?;
    // Messages prove that the conversation exists; only an empty page needs a second look.
    if rows.is_empty() {
        let exists: bool = diesel::select(diesel::dsl::exists(conversations::table.find(id)))
            .get_result(connection)
            .map_err(map_error)?;
        if !exists {
            return Err(RepositoryError::NotFound);
        }
    }
    let more = rows.len() > usize::try_from(limit.get()).unwrap_or(usize::MAX);
    rows.truncate(usize::try_from(limit.get()).unwrap_or(usize::MAX));
    let mut items = rows
        .into_iter()
        .map(Message::try_from)
        .collect::<Result<Vec<_>, _>>()?;
    let backwards = !matches!(window, MessageWindow::After(_));
    if backwards {
        items.reverse();
    }
    // Backwards the page continues before its oldest item, forwards after its newest.
    let edge = if backwards {
        items.first()
    } else {
        items.last()
    };
    let next_cursor = edge.filter(|_| more).map(|message| MessageCursor {
        position: message.position,
    });
    Ok(Page { items, next_cursor })
}

#[async_trait]
impl ChatRepository for PostgresChatRepository {
    #[tracing::instrument(skip_all, fields(conversation_id = %conversation.id))]
    async fn create_conversation(
        &self,
        conversation: &Conversation,
    ) -> Result<(), RepositoryError> {
        let conversation = conversation.clone();
        self.run("create_conversation", move |connection| {
            connection
                .transaction(|connection| {
                    diesel::insert_into(conversations::table)
                        .values(NewConversationRow {
                            id: conversation.id.as_uuid(),
                            title: &conversation.title,
                            created_at: conversation.created_at.unix_micros(),
                            updated_at: conversation.updated_at.unix_micros(),
                        })
                        .execute(connection)?;
                    // Asked after the insert, in a statement of its own: an insert that waited for
                    // a deletion of the same id to commit sees that deletion's row here.
                    let deleted_before = diesel::select(
                        diesel::dsl::sql::<Bool>(
                            "EXISTS (SELECT 1 FROM deleted_conversations WHERE id = ",
                        )
                        .bind::<SqlUuid, _>(conversation.id.as_uuid())
                        .sql(")"),
                    )
                    .get_result::<bool>(connection)?;
                    if deleted_before {
                        return Err(DieselError::DatabaseError(
                            DatabaseErrorKind::UniqueViolation,
                            Box::new("the id of a deleted conversation".to_owned()),
                        ));
                    }
                    Ok(())
                })
                .map_err(map_error)
        })
        .await
    }

    #[tracing::instrument(skip(self))]
    async fn get_conversation(&self, id: ConversationId) -> Result<Conversation, RepositoryError> {
        let started = Instant::now();
        if let Some(found) = self
            .within_read_deadline(async { self.lookups.find(id).await.transpose() })
            .await
            .transpose()
        {
            record_operation(&self.answers, "get_conversation", started, &found);
            return found;
        }
        self.read("get_conversation", move |connection| {
            conversations::table
                .find(id.as_uuid())
                .select(ConversationRow::as_select())
                .first(connection)
                .map(Conversation::from)
                .map_err(map_error)
        })
        .await
    }

    #[tracing::instrument(skip(self))]
    async fn list_conversations(
        &self,
        after: Option<ConversationCursor>,
        limit: PageLimit,
    ) -> Result<Page<Conversation, ConversationCursor>, RepositoryError> {
        self.read("list_conversations", move |connection| {
            let wanted = i64::from(limit.get());
            let mut query = conversations::table
                .select(ConversationRow::as_select())
                .order((conversations::updated_at.desc(), conversations::id.desc()))
                .limit(wanted + 1)
                .into_boxed();
            if let Some(cursor) = after {
                // A row comparison, so the (updated_at DESC, id DESC) index serves it as one range.
                query = query.filter(
                    diesel::dsl::sql::<Bool>("(conversations.updated_at, conversations.id) < (")
                        .bind::<BigInt, _>(cursor.updated_at.unix_micros())
                        .sql(", ")
                        .bind::<SqlUuid, _>(cursor.id.as_uuid())
                        .sql(")"),
                );
            }
            let rows = query.load(connection).map_err(map_error)?;
            let wanted = usize::try_from(limit.get()).unwrap_or(usize::MAX);
            let more = rows.len() > wanted;
            let items: Vec<Conversation> = rows
                .into_iter()
                .take(wanted)
                .map(Conversation::from)
                .collect();
            let next_cursor = items
                .last()
                .filter(|_| more)
                .map(|last| ConversationCursor {
                    updated_at: last.updated_at,
                    id: last.id,
                });
            Ok(Page { items, next_cursor })
        })
        .await
    }

    #[tracing::instrument(skip(self, title))]
    async fn rename_conversation(
        &self,
        id: ConversationId,
        title: &ConversationTitle,
        now: Timestamp,
    ) -> Result<Conversation, RepositoryError> {
        let title = title.as_str().to_owned();
        self.run("rename_conversation", move |connection| {
            diesel::update(conversations::table.find(id.as_uuid()))
                .set((
                    conversations::title.eq(&title),
                    conversations::updated_at.eq(diesel::dsl::sql::<BigInt>(
                        "GREATEST(updated_at, ",
                    )
                    .bind::<BigInt, _>(now.unix_micros())
                    .sql(")")),
                ))
                .returning(ConversationRow::as_returning())
                .get_result(connection)
                .map(Conversation::from)
                .map_err(map_error)
        })
        .await
    }

    #[tracing::instrument(skip(self))]
    async fn delete_conversation(&self, id: ConversationId) -> Result<(), RepositoryError> {
        self.delete_in_chunks(id, MESSAGES_DELETED_PER_STATEMENT)
            .await
    }

    #[tracing::instrument(skip(self))]
    async fn list_messages(
        &self,
        conversation_id: ConversationId,
        window: MessageWindow,
        limit: PageLimit,
    ) -> Result<Page<Message, MessageCursor>, RepositoryError> {
        self.read("list_messages", move |connection| {
            page_messages(connection, conversation_id, window, limit)
        })
        .await
    }

    #[tracing::instrument(skip_all, fields(conversation_id = %exchange.conversation_id))]
    async fn append_exchange(&self, exchange: &NewExchange) -> Result<Exchange, RepositoryError> {
        let started = Instant::now();
        let result = self
            .appends
            .append(exchange.clone(), batches::WhenFull::Refuse)
            .await;
        record_operation(&self.answers, "append_exchange", started, &result);
        result
    }

    #[tracing::instrument(skip_all, fields(conversation_id = %exchange.conversation_id))]
    async fn append_exchange_waiting_for_room(
        &self,
        exchange: &NewExchange,
    ) -> Result<Exchange, RepositoryError> {
        let started = Instant::now();
        let result = self
            .appends
            .append(exchange.clone(), batches::WhenFull::WaitForRoom)
            .await;
        record_operation(&self.answers, "append_exchange", started, &result);
        result
    }

    /// One check at a time: callers that ask while one runs get its outcome (see `health`).
    async fn health_check(&self) -> Result<(), RepositoryError> {
        let pool = self.pool.clone();
        let answers = Arc::clone(&self.answers);
        let checked = self
            .health_checks
            .run(move || {
                let started = Instant::now();
                let checked = checkout(&pool).and_then(|mut connection| {
                    // A catalog lookup, which takes no lock on the tables: a migration holding
                    // one does not take every replica out of the load balancer.
                    let tables_present = diesel::select(diesel::dsl::sql::<Bool>(
                        "to_regclass('conversations') IS NOT NULL \
                         AND to_regclass('messages') IS NOT NULL",
                    ))
                    .get_result::<bool>(&mut connection)
                    .map_err(|error| match map_error(error) {
                        RepositoryError::Unknown(error) => {
                            RepositoryError::Unavailable(error.to_string())
                        }
                        other => other,
                    })?;
                    if tables_present {
                        Ok(())
                    } else {
                        Err(RepositoryError::Unavailable(MISSING_SCHEMA.to_owned()))
                    }
                });
                record_operation(&answers, "health_check", started, &checked);
                checked
            })
            .await;
        // No connection came free in time, but every one of them is open and at work, and the
        // database answered something within the time a read may take: the replica is busy. A
        // database that answered nothing that long is hung, whatever holds the connections.
        let state = self.pool.state();
        let answering = self
            .read_deadline
            .is_none_or(|deadline| self.answers.within(deadline));
        let busy =
            state.idle_connections == 0 && state.connections >= self.pool.max_size() && answering;
        match checked {
            Err(RepositoryError::Unavailable(_)) if busy => Err(RepositoryError::Overloaded),
            checked => checked,
        }
    }
}

/// A counter is published from its first increment unless it is registered before: an alert on
/// its increase would miss that first one, and "none yet" would look like "not counted".
fn count_refusals_from_zero() {
    metrics::counter!("storage_writer_rejected_total").increment(0);
    metrics::counter!("storage_reads_rejected_total").increment(0);
    metrics::counter!("storage_writer_isolated_batches_total").increment(0);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_read_nobody_awaits_any_more_is_not_run() {
        let (answer, answered) = tokio::sync::oneshot::channel::<Result<i32, RepositoryError>>();
        drop(answered);
        answer_if_awaited(answer, || panic!("the read ran for nobody"));

        let (answer, mut answered) = tokio::sync::oneshot::channel();
        answer_if_awaited(answer, || Ok(7));
        assert_eq!(answered.try_recv().unwrap().unwrap(), 7);
    }

    #[test]
    fn network_defaults_are_added_without_overriding_the_url() {
        assert_eq!(
            with_network_defaults("postgres://u:p@h/db", Duration::from_millis(2500)),
            "postgres://u:p@h/db?connect_timeout=3&keepalives=1&keepalives_idle=30\
             &keepalives_interval=10&keepalives_count=3&tcp_user_timeout=30000"
        );
        assert_eq!(
            with_network_defaults(
                "postgresql://h/db?sslmode=require&connect_timeout=9&keepalives_idle=5",
                Duration::from_secs(1)
            ),
            "postgresql://h/db?sslmode=require&connect_timeout=9&keepalives_idle=5\
             &keepalives=1&keepalives_interval=10&keepalives_count=3&tcp_user_timeout=30000"
        );
    }

    /// With no timeout of its own, a session goes back to the one the database or role sets,
    /// also after migrations switched it off.
    #[tokio::test]
    async fn without_a_timeout_of_its_own_a_session_keeps_the_database_setting() {
        let Some(database) = testkit::postgres::TestDatabase::create().await else {
            return;
        };
        let url = database.url().to_owned();
        tokio::task::spawn_blocking(move || {
            PgConnection::establish(&url)
                .unwrap()
                .batch_execute(
                    "DO $$ BEGIN EXECUTE format(\
                     'ALTER DATABASE %I SET statement_timeout = ''1234ms''', current_database()); \
                     END $$",
                )
                .unwrap();
            let mut connection = PgConnection::establish(&url).unwrap();
            connection
                .batch_execute("SET statement_timeout = 0")
                .unwrap();
            let session = SessionSettings {
                statement_timeout: None,
            };
            session.apply(&mut connection).unwrap();
            let timeout: String = diesel::select(diesel::dsl::sql::<Text>(
                "current_setting('statement_timeout')",
            ))
            .get_result(&mut connection)
            .unwrap();
            assert_eq!(timeout, "1234ms");
        })
        .await
        .unwrap();
    }

    /// Every connection requests run on, pooled or a reader's, carries the configured timeout.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_configured_timeout_is_set_on_every_connection_requests_use() {
        let Some(database) = testkit::postgres::TestDatabase::create().await else {
            return;
        };
        let mut settings = PostgresSettings::new(database.url());
        settings.statement_timeout = Some(Duration::from_millis(3250));
        let repository = PostgresChatRepository::connect(settings).await.unwrap();
        let timeout = |connection: &mut PgConnection| {
            diesel::select(diesel::dsl::sql::<Text>(
                "current_setting('statement_timeout')",
            ))
            .get_result::<String>(connection)
            .map_err(map_error)
        };
        assert_eq!(repository.run("test", timeout).await.unwrap(), "3250ms");
        assert_eq!(repository.read("test", timeout).await.unwrap(), "3250ms");
    }

    /// Every connection busy past the checkout timeout is load, which the domain counts as ready;
    /// only a database that cannot be reached is an outage.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_check_that_finds_every_connection_at_work_reports_load_not_an_outage() {
        let Some(database) = testkit::postgres::TestDatabase::create().await else {
            return;
        };
        let mut settings = PostgresSettings::new(database.url());
        settings.pool_size = 2;
        settings.connect_timeout = Duration::from_millis(500);
        let repository =
            std::sync::Arc::new(PostgresChatRepository::connect(settings).await.unwrap());
        let hold = |repository: std::sync::Arc<PostgresChatRepository>| async move {
            repository
                .run("test", |_| {
                    std::thread::sleep(Duration::from_secs(2));
                    Ok(())
                })
                .await
        };
        let held = [
            tokio::spawn(hold(std::sync::Arc::clone(&repository))),
            tokio::spawn(hold(std::sync::Arc::clone(&repository))),
        ];
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(matches!(
            repository.health_check().await,
            Err(RepositoryError::Overloaded)
        ));
        for held in held {
            held.await.unwrap().unwrap();
        }
        repository.health_check().await.unwrap();
    }

    /// A conversation goes in several statements of its messages, oldest first, then its row.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_conversation_is_deleted_in_chunks_of_messages_and_no_other_is_touched() {
        let Some(database) = testkit::postgres::TestDatabase::create().await else {
            return;
        };
        let repository = std::sync::Arc::new(
            PostgresChatRepository::connect(PostgresSettings::new(database.url()))
                .await
                .unwrap(),
        );
        testkit::repository::deleting_in_steps_goes_oldest_first_and_leaves_nothing(
            std::sync::Arc::clone(&repository),
            |id| repository.delete_in_chunks(id, 3),
            |id| {
                repository.run("test", move |connection| {
                    delete_conversation_or_oldest_messages(connection, id, 3)
                })
            },
        )
        .await;
    }

    /// A full disk cannot be staged against the test database; its error as PostgreSQL words it.
    #[test]
    fn a_full_disk_is_an_outage_not_an_internal_error() {
        let full_disk = DieselError::DatabaseError(
            DatabaseErrorKind::Unknown,
            Box::new(
                "could not extend file \"base/16384/16390\": No space left on device".to_owned(),
            ),
        );
        assert!(!is_refusal(&full_disk), "the whole batch fails");
        assert!(matches!(
            map_error(full_disk),
            RepositoryError::Unavailable(_)
        ));
    }

    /// A lock or statement timeout, a deadlock, an administrator's cancel, two serializable
    /// writers: the database's trouble of the moment, so 503 with Retry-After, not 500.
    #[test]
    fn waits_and_conflicts_of_the_moment_are_outages_not_internal_errors() {
        let errors = [
            (
                DatabaseErrorKind::Unknown,
                "canceling statement due to lock timeout",
            ),
            (DatabaseErrorKind::Unknown, "deadlock detected"),
            (
                DatabaseErrorKind::Unknown,
                "canceling statement due to user request",
            ),
            (
                DatabaseErrorKind::SerializationFailure,
                "could not serialize access due to concurrent update",
            ),
        ];
        for (kind, message) in errors {
            let error = DieselError::DatabaseError(kind, Box::new(message.to_owned()));
            assert!(!is_refusal(&error), "{message}: the whole batch fails");
            assert!(
                matches!(map_error(error), RepositoryError::Unavailable(_)),
                "{message}"
            );
        }
    }

    #[test]
    fn settings_debug_hides_the_url() {
        let settings = PostgresSettings::new("postgres://user:hunter2@db/chat");
        let shown = format!("{settings:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("pool_size: 10"), "{shown}");
    }
}
