use std::future::Future;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use diesel::connection::SimpleConnection;
use diesel::r2d2::{ConnectionManager, CustomizeConnection, Pool};
use diesel::sqlite::SqliteConnection;
use diesel::Connection;
use diesel_migrations::{embed_migrations, EmbeddedMigrations, MigrationHarness};
use domain::{
    ChatRepository, Conversation, ConversationCursor, ConversationId, ConversationTitle, Exchange,
    Message, MessageCursor, MessageWindow, NewExchange, Page, PageLimit, RepositoryError,
    Timestamp,
};

use crate::errors::{from_diesel, unavailable};
use crate::queries;
use crate::writer::Writer;

const MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations");

#[derive(Debug, Clone)]
pub struct SqliteSettings {
    /// The database file; created with its directory's permissions when missing.
    pub path: PathBuf,
    /// Connections for reads, used from Tokio's blocking threads.
    pub read_pool_size: u32,
    /// How long a connection waits for a lock before giving up.
    pub busy_timeout: Duration,
    /// Writes that may wait for the writer; one more is refused with `Overloaded`.
    pub write_queue_capacity: usize,
    /// Most writes committed in one transaction.
    pub max_batch: usize,
}

impl SqliteSettings {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            read_pool_size: 4,
            busy_timeout: Duration::from_secs(5),
            write_queue_capacity: 1024,
            max_batch: 256,
        }
    }
}

/// `ChatRepository` on one SQLite file; see the crate documentation for the concurrency design.
#[derive(Debug, Clone)]
pub struct SqliteChatRepository {
    readers: Pool<ConnectionManager<SqliteConnection>>,
    writer: Writer,
}

#[derive(Debug)]
struct ReaderPragmas {
    busy_timeout_ms: u128,
}

impl CustomizeConnection<SqliteConnection, diesel::r2d2::Error> for ReaderPragmas {
    fn on_acquire(&self, conn: &mut SqliteConnection) -> Result<(), diesel::r2d2::Error> {
        conn.batch_execute(&format!(
            "PRAGMA busy_timeout = {}; PRAGMA foreign_keys = ON; PRAGMA query_only = ON;",
            self.busy_timeout_ms
        ))
        .map_err(diesel::r2d2::Error::QueryError)
    }
}

impl SqliteChatRepository {
    /// Opens (or creates) the database, applies pending migrations and starts the writer thread.
    /// Blocking: call it before serving, or from a blocking thread.
    pub fn open(settings: &SqliteSettings) -> Result<Self, RepositoryError> {
        let url = settings.path.to_string_lossy().into_owned();
        let mut writer_connection = SqliteConnection::establish(&url).map_err(|error| {
            RepositoryError::Unavailable(format!(
                "cannot open SQLite database {}: {error}",
                settings.path.display()
            ))
        })?;
        // busy_timeout first, so that every later statement waits for locks instead of failing.
        // synchronous=FULL: an acknowledged exchange survives power loss, not only a crash.
        writer_connection
            .batch_execute(&format!(
                "PRAGMA busy_timeout = {}; PRAGMA journal_mode = WAL; \
                 PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON;",
                settings.busy_timeout.as_millis()
            ))
            .map_err(from_diesel)?;
        writer_connection
            .run_pending_migrations(MIGRATIONS)
            .map_err(|error| {
                RepositoryError::Unknown(anyhow::anyhow!("migration failed: {error}"))
            })?;

        let readers = Pool::builder()
            .max_size(settings.read_pool_size.max(1))
            .connection_timeout(settings.busy_timeout)
            .connection_customizer(Box::new(ReaderPragmas {
                busy_timeout_ms: settings.busy_timeout.as_millis(),
            }))
            .build(ConnectionManager::<SqliteConnection>::new(url))
            .map_err(unavailable)?;
        let writer = Writer::spawn(
            writer_connection,
            settings.write_queue_capacity.max(1),
            settings.max_batch.max(1),
        )
        .map_err(unavailable)?;
        Ok(Self { readers, writer })
    }

    /// Records how long `operation` took and how it ended, under the label set every storage
    /// backend uses.
    async fn timed<T>(
        operation: &'static str,
        work: impl Future<Output = Result<T, RepositoryError>>,
    ) -> Result<T, RepositoryError> {
        let started = Instant::now();
        let result = work.await;
        let outcome = result.as_ref().map_or_else(RepositoryError::kind, |_| "ok");
        metrics::histogram!(
            "storage_operation_duration_seconds",
            "backend" => "sqlite",
            "operation" => operation,
            "outcome" => outcome,
        )
        .record(started.elapsed().as_secs_f64());
        result
    }

    /// Runs `query` on a pooled reader from a blocking thread. A query of several statements
    /// runs in one read transaction, so every statement sees the same snapshot; a single
    /// statement is a snapshot by itself and skips the two extra statements.
    async fn read<T, F>(&self, scope: ReadScope, query: F) -> Result<T, RepositoryError>
    where
        T: Send + 'static,
        F: FnOnce(&mut SqliteConnection) -> Result<T, diesel::result::Error> + Send + 'static,
    {
        let readers = self.readers.clone();
        tokio::task::spawn_blocking(move || {
            let mut pooled = readers.get().map_err(unavailable)?;
            let conn: &mut SqliteConnection = &mut pooled;
            match scope {
                ReadScope::OneStatement => query(conn),
                ReadScope::Snapshot => conn.transaction(query),
            }
            .map_err(from_diesel)
        })
        .await
        .map_err(|error| RepositoryError::Unknown(anyhow::Error::new(error)))?
    }
}

/// Whether a read needs an explicit transaction around it.
#[derive(Debug, Clone, Copy)]
enum ReadScope {
    OneStatement,
    Snapshot,
}

#[async_trait]
impl ChatRepository for SqliteChatRepository {
    async fn create_conversation(
        &self,
        conversation: &Conversation,
    ) -> Result<(), RepositoryError> {
        let conversation = conversation.clone();
        let insert = self
            .writer
            .write(move |conn| queries::insert_conversation(conn, &conversation));
        Self::timed("create_conversation", insert).await
    }

    async fn get_conversation(&self, id: ConversationId) -> Result<Conversation, RepositoryError> {
        Self::timed(
            "get_conversation",
            self.read(ReadScope::OneStatement, move |conn| {
                queries::find_conversation(conn, id)
            }),
        )
        .await
    }

    async fn list_conversations(
        &self,
        after: Option<ConversationCursor>,
        limit: PageLimit,
    ) -> Result<Page<Conversation, ConversationCursor>, RepositoryError> {
        Self::timed(
            "list_conversations",
            self.read(ReadScope::OneStatement, move |conn| {
                queries::list_conversations(conn, after, limit)
            }),
        )
        .await
    }

    async fn rename_conversation(
        &self,
        id: ConversationId,
        title: &ConversationTitle,
        now: Timestamp,
    ) -> Result<Conversation, RepositoryError> {
        let title = title.clone();
        let rename = self
            .writer
            .write(move |conn| queries::rename_conversation(conn, id, &title, now));
        Self::timed("rename_conversation", rename).await
    }

    async fn delete_conversation(&self, id: ConversationId) -> Result<(), RepositoryError> {
        let delete = self
            .writer
            .write(move |conn| queries::delete_conversation(conn, id));
        Self::timed("delete_conversation", delete).await
    }

    async fn list_messages(
        &self,
        conversation_id: ConversationId,
        window: MessageWindow,
        limit: PageLimit,
    ) -> Result<Page<Message, MessageCursor>, RepositoryError> {
        Self::timed(
            "list_messages",
            self.read(ReadScope::Snapshot, move |conn| {
                queries::list_messages(conn, conversation_id, window, limit)
            }),
        )
        .await
    }

    async fn append_exchange(&self, exchange: &NewExchange) -> Result<Exchange, RepositoryError> {
        let exchange = exchange.clone();
        let append = self
            .writer
            .write(move |conn| queries::append_exchange(conn, &exchange));
        Self::timed("append_exchange", append).await
    }

    async fn health_check(&self) -> Result<(), RepositoryError> {
        if self.writer.is_failing() {
            // The flag clears only when a write commits. A replica that readiness has taken out
            // of the load balancer gets no writes, so the check tries one itself; otherwise it
            // would stay unready after storage came back.
            return self.writer.write(rewrite_user_version).await;
        }
        self.read(ReadScope::OneStatement, |conn| {
            conn.batch_execute("SELECT 1 FROM conversations LIMIT 1")
        })
        .await
    }
}

/// Writes the header's `user_version` back with its own value: a real one-page write that changes
/// nothing, and fails exactly when the database cannot be written.
fn rewrite_user_version(conn: &mut SqliteConnection) -> Result<(), diesel::result::Error> {
    #[derive(diesel::QueryableByName)]
    struct UserVersion {
        #[diesel(sql_type = diesel::sql_types::Integer)]
        user_version: i32,
    }
    let current: UserVersion =
        diesel::RunQueryDsl::get_result(diesel::sql_query("PRAGMA user_version"), conn)?;
    conn.batch_execute(&format!("PRAGMA user_version = {}", current.user_version))
}
