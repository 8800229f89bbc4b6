use std::future::Future;
use std::path::{Path, PathBuf};
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
use tokio::sync::oneshot;

use crate::durability::{wal_sync, SyncWal};
use crate::errors::{from_diesel, unavailable};
use crate::queries;
use crate::reads::ReaderThreads;
use crate::writer::{WhenFull, Writer};

const MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations");

/// Reads that may wait for a reader thread; one more is refused with `Overloaded`.
const READ_QUEUE_CAPACITY: usize = 1024;

/// Messages one write of a conversation's deletion removes. In one write, a conversation of
/// millions of messages (the seed routes' default one, after long use) would hold the single
/// writer, and every other write, for as long as deleting all of them takes, and grow the WAL by
/// all of them at once.
const MESSAGES_DELETED_PER_WRITE: i64 = 10_000;

#[derive(Debug, Clone)]
pub struct SqliteSettings {
    /// The database file; created with its directory's permissions when missing.
    pub path: PathBuf,
    /// Reader threads, each reading on a connection of its own.
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
    readers: ReaderThreads,
    lookups: ReaderThreads,
    writer: Writer,
    settings: SqliteSettings,
}

#[derive(Debug)]
struct ReaderPragmas {
    busy_timeout_ms: u128,
}

/// Each reader's own page cache, in KiB. SQLite's default of 2 MiB per connection made up a quarter
/// of the server's memory under concurrent history reads; the file's pages stay in the kernel's
/// page cache, so a smaller one costs a `pread` per miss and measured no slower.
const READER_CACHE_KIB: u32 = 512;

impl CustomizeConnection<SqliteConnection, diesel::r2d2::Error> for ReaderPragmas {
    fn on_acquire(&self, conn: &mut SqliteConnection) -> Result<(), diesel::r2d2::Error> {
        conn.batch_execute(&format!(
            "PRAGMA busy_timeout = {}; PRAGMA foreign_keys = ON; PRAGMA query_only = ON; \
             PRAGMA cache_size = -{READER_CACHE_KIB};",
            self.busy_timeout_ms
        ))
        .map_err(diesel::r2d2::Error::QueryError)
    }
}

impl SqliteChatRepository {
    /// Opens (or creates) the database, applies pending migrations and starts the writer thread.
    /// Blocking: call it before serving, or from a blocking thread.
    pub fn open(settings: &SqliteSettings) -> Result<Self, RepositoryError> {
        Self::open_syncing_with(settings, wal_sync)
    }

    /// [`Self::open`], with the WAL made durable by what `sync_for` returns for the database.
    fn open_syncing_with(
        settings: &SqliteSettings,
        sync_for: impl FnOnce(&Path) -> std::io::Result<SyncWal>,
    ) -> Result<Self, RepositoryError> {
        let url = settings.path.to_string_lossy().into_owned();
        let mut writer_connection = open_writer_connection(settings)?;
        writer_connection
            .run_pending_migrations(MIGRATIONS)
            .map_err(|error| {
                RepositoryError::Unknown(anyhow::anyhow!("migration failed: {error}"))
            })?;

        let reader_threads = settings.read_pool_size.max(1);
        // One connection per reader thread and one for the lookup thread, so neither waits for
        // the other's connection.
        let readers = Pool::builder()
            .max_size(reader_threads + 1)
            .connection_timeout(settings.busy_timeout)
            // r2d2 would otherwise run `SELECT 1` (parsed anew each time) before every read; a
            // local file connection does not go stale, and a failing read reports itself.
            .test_on_check_out(false)
            .connection_customizer(Box::new(ReaderPragmas {
                busy_timeout_ms: settings.busy_timeout.as_millis(),
            }))
            .build(ConnectionManager::<SqliteConnection>::new(url))
            .map_err(unavailable)?;
        // The migrations have opened (and, on a new database, created) the WAL file.
        let sync_wal = sync_for(&settings.path).map_err(|error| {
            RepositoryError::Unavailable(format!(
                "cannot open the WAL of SQLite database {}: {error}",
                settings.path.display()
            ))
        })?;
        count_refusals_from_zero();
        let reopen_settings = settings.clone();
        let writer = Writer::spawn(
            writer_connection,
            Box::new(move || open_writer_connection(&reopen_settings)),
            sync_wal,
            settings.write_queue_capacity.max(1),
            settings.max_batch.max(1),
        )
        .map_err(unavailable)?;
        // Every v1 send looks its conversation up before the assistant is asked; a thread of
        // their own keeps those lookups from queueing behind page reads.
        let lookups = ReaderThreads::spawn(&readers, 1, READ_QUEUE_CAPACITY, "sqlite-lookups")
            .map_err(unavailable)?;
        let readers = ReaderThreads::spawn(
            &readers,
            reader_threads as usize,
            READ_QUEUE_CAPACITY,
            "sqlite-reader",
        )
        .map_err(unavailable)?;
        Ok(Self {
            readers,
            lookups,
            writer,
            settings: settings.clone(),
        })
    }

    /// Deletes conversation `id` in one write when it has at most `chunk` messages. A larger one
    /// loses its messages oldest first, `chunk` per write, so that other writes take turns with
    /// them, and goes with its last chunk; a message appended to it meanwhile goes with it. A
    /// failure leaves the conversation without some of its oldest messages; deleting it again
    /// goes on.
    async fn delete_in_chunks(
        &self,
        id: ConversationId,
        chunk: i64,
    ) -> Result<(), RepositoryError> {
        while !self
            .writer
            .write(move |conn| queries::delete_conversation_or_oldest_messages(conn, id, chunk))
            .await?
        {}
        Ok(())
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

    /// Runs `query` on one of the reader threads, outside any transaction: a query of several
    /// statements that must see one snapshot opens its own. The outcome is returned once
    /// everything the query could have seen is durable.
    async fn read<T, F>(&self, query: F) -> Result<T, RepositoryError>
    where
        T: Send + 'static,
        F: FnOnce(&mut SqliteConnection) -> Result<T, diesel::result::Error> + Send + 'static,
    {
        self.read_on(&self.readers, query).await
    }

    /// [`Self::read`] on the threads of `queue`.
    async fn read_on<T, F>(&self, queue: &ReaderThreads, query: F) -> Result<T, RepositoryError>
    where
        T: Send + 'static,
        F: FnOnce(&mut SqliteConnection) -> Result<T, diesel::result::Error> + Send + 'static,
    {
        let writer = self.writer.clone();
        let (answer, answered) = oneshot::channel();
        queue.submit(Box::new(move |connection| {
            let found = writer.noting_commits(|| query(connection?).map_err(from_diesel));
            // A requester that went away needs no answer.
            let _ = answer.send(found);
        }))?;
        // Dropped unanswered only when the read panicked.
        let (outcome, seen) = answered.await.map_err(|_| {
            RepositoryError::Unknown(anyhow::anyhow!("the read failed unexpectedly"))
        })?;
        self.writer.settled(seen).await?;
        outcome
    }
}

/// The writer's connection: WAL mode, and the pragmas every write relies on. Opening it reads the
/// database, so from then on it holds the WAL open with its shared lock.
fn open_writer_connection(settings: &SqliteSettings) -> Result<SqliteConnection, RepositoryError> {
    let mut connection =
        SqliteConnection::establish(&settings.path.to_string_lossy()).map_err(|error| {
            RepositoryError::Unavailable(format!(
                "cannot open SQLite database {}: {error}",
                settings.path.display()
            ))
        })?;
    // busy_timeout first, so that every later statement waits for locks instead of failing.
    // synchronous=NORMAL: commits do not wait for the disk; the writer's syncer thread syncs the
    // WAL before any requester is answered, so an acknowledged exchange still survives power
    // loss, not only a crash (see `durability`).
    connection
        .batch_execute(&format!(
            "PRAGMA busy_timeout = {}; PRAGMA journal_mode = WAL; \
             PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON;",
            settings.busy_timeout.as_millis()
        ))
        .map_err(from_diesel)?;
    Ok(connection)
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
        let find = move |conn: &mut SqliteConnection| queries::find_conversation(conn, id);
        let lookup = async move {
            match self.read_on(&self.lookups, find).await {
                // The lookup thread's queue is full: the lookup waits with the other reads.
                Err(RepositoryError::Overloaded) => self.read(find).await,
                other => other,
            }
        };
        Self::timed("get_conversation", lookup).await
    }

    async fn list_conversations(
        &self,
        after: Option<ConversationCursor>,
        limit: PageLimit,
    ) -> Result<Page<Conversation, ConversationCursor>, RepositoryError> {
        Self::timed(
            "list_conversations",
            self.read(move |conn| queries::list_conversations(conn, after, limit)),
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
        Self::timed(
            "delete_conversation",
            self.delete_in_chunks(id, MESSAGES_DELETED_PER_WRITE),
        )
        .await
    }

    async fn list_messages(
        &self,
        conversation_id: ConversationId,
        window: MessageWindow,
        limit: PageLimit,
    ) -> Result<Page<Message, MessageCursor>, RepositoryError> {
        Self::timed(
            "list_messages",
            self.read(move |conn| queries::list_messages(conn, conversation_id, window, limit)),
        )
        .await
    }

    async fn append_exchange(&self, exchange: &NewExchange) -> Result<Exchange, RepositoryError> {
        let append = self.writer.append(exchange.clone(), WhenFull::Refuse);
        Self::timed("append_exchange", append).await
    }

    async fn append_exchange_waiting_for_room(
        &self,
        exchange: &NewExchange,
    ) -> Result<Exchange, RepositoryError> {
        let append = self.writer.append(exchange.clone(), WhenFull::WaitForRoom);
        Self::timed("append_exchange", append).await
    }

    async fn health_check(&self) -> Result<(), RepositoryError> {
        if self.writer.is_failing() {
            // The flag clears only when a write commits. A replica that readiness has taken out
            // of the load balancer gets no writes, so the check tries one itself; otherwise it
            // would stay unready after storage came back. Not while real writes keep failing:
            // the check's one-page write can succeed where they fail (a full disk with room
            // left in the WAL), and readiness would then let traffic back to fail again.
            if let Some(left) = self.writer.quiet_left() {
                return Err(RepositoryError::Unavailable(format!(
                    "writes failed for storage reasons; the next trial write in {} s",
                    left.as_secs().max(1)
                )));
            }
            return self.writer.write(rewrite_user_version).await;
        }
        self.read(|conn| conn.batch_execute("SELECT 1 FROM conversations LIMIT 1"))
            .await
    }

    /// Moves the WAL's pages into the database file and empties the WAL, so that after a clean
    /// stop `chat.db` alone holds everything (the process exits without closing its
    /// connections, and only the last connection to close would do this by itself).
    async fn close(&self) {
        // Queued behind every write already submitted, so that those are in the WAL first.
        if let Err(error) = self.writer.write(|_| Ok(())).await {
            tracing::warn!(%error, "SQLite writes still failing at stop; the WAL is left to the next start");
            return;
        }
        let settings = self.settings.clone();
        let checkpoint = tokio::task::spawn_blocking(move || checkpoint_wal(&settings));
        match checkpoint.await {
            Ok(Ok(WalCheckpoint::Complete)) => {
                tracing::info!("SQLite WAL checkpointed into the database file");
            }
            Ok(Ok(WalCheckpoint::Blocked)) => tracing::warn!(
                "SQLite WAL checkpoint at stop was blocked by another connection; chat.db alone is \
                 not complete, keep chat.db-wal with it (the next start recovers it)"
            ),
            Ok(Err(error)) => tracing::warn!(
                %error,
                "SQLite WAL checkpoint at stop failed; the next start recovers the WAL"
            ),
            Err(error) => tracing::warn!(%error, "SQLite WAL checkpoint at stop did not run"),
        }
    }
}

enum WalCheckpoint {
    /// Every frame of the WAL is in the database file and the WAL is empty.
    Complete,
    /// A reader or writer of another connection held frames back; they stay in the WAL.
    Blocked,
}

/// Folds the WAL into the database file on a connection of its own, waiting at most a second
/// for other connections: the stop it belongs to should not wait on a stuck one.
fn checkpoint_wal(settings: &SqliteSettings) -> Result<WalCheckpoint, RepositoryError> {
    #[derive(diesel::QueryableByName)]
    struct Checkpoint {
        #[diesel(sql_type = diesel::sql_types::Integer)]
        busy: i32,
        #[diesel(sql_type = diesel::sql_types::Integer)]
        log: i32,
        #[diesel(sql_type = diesel::sql_types::Integer)]
        checkpointed: i32,
    }
    let mut connection = open_writer_connection(settings)?;
    connection
        .batch_execute("PRAGMA busy_timeout = 1000")
        .map_err(from_diesel)?;
    let outcome: Checkpoint = diesel::RunQueryDsl::get_result(
        diesel::sql_query("PRAGMA wal_checkpoint(TRUNCATE)"),
        &mut connection,
    )
    .map_err(from_diesel)?;
    // TRUNCATE reports a log of 0 frames once it has emptied the WAL; `busy` says it could not.
    Ok(
        if outcome.busy == 0 && outcome.log == outcome.checkpointed {
            WalCheckpoint::Complete
        } else {
            WalCheckpoint::Blocked
        },
    )
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

/// A counter is published from its first increment unless it is registered before: an alert on
/// its increase would miss that first one, and "none yet" would look like "not counted".
fn count_refusals_from_zero() {
    metrics::counter!("storage_writer_rejected_total").increment(0);
    metrics::counter!("storage_reads_rejected_total").increment(0);
    metrics::counter!("storage_writer_isolated_batches_total").increment(0);
}

#[cfg(test)]
mod tests {
    use std::sync::{mpsc, Arc};

    use diesel::result::{DatabaseErrorKind, Error as DieselError};
    use domain::{ConversationId, MessageWindow, NewExchange, PageLimit};

    use super::*;

    /// A conversation goes in several writes of its messages, oldest first, then its row.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_conversation_is_deleted_in_chunks_of_messages_and_no_other_is_touched() {
        let directory = tempfile::tempdir().unwrap();
        let repository = Arc::new(
            SqliteChatRepository::open(&SqliteSettings::new(directory.path().join("chat.db")))
                .unwrap(),
        );
        testkit::repository::deleting_in_steps_goes_oldest_first_and_leaves_nothing(
            Arc::clone(&repository),
            |id| repository.delete_in_chunks(id, 3),
            |id| {
                repository
                    .writer
                    .write(move |conn| queries::delete_conversation_or_oldest_messages(conn, id, 3))
            },
        )
        .await;
    }

    /// A database path that is a symlink (`chat.db -> /data/chat.db`, as a volume mount may be
    /// laid out): SQLite writes the WAL beside the file the link leads to, and that is the one the
    /// syncer must open and sync.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_database_reached_through_a_symlink_syncs_the_wal_sqlite_writes() {
        let directory = tempfile::tempdir().unwrap();
        let data = directory.path().join("data");
        std::fs::create_dir(&data).unwrap();
        std::fs::File::create(data.join("chat.db")).unwrap();
        let link = directory.path().join("chat.db");
        std::os::unix::fs::symlink(data.join("chat.db"), &link).unwrap();
        let repository = SqliteChatRepository::open(&SqliteSettings::new(&link))
            .expect("a database reached through a symlink opens");
        let conversation = domain::Conversation::new(
            ConversationId::generate(),
            domain::ConversationTitle::new("Linked").unwrap(),
            domain::Timestamp::now(),
        );
        repository.create_conversation(&conversation).await.unwrap();
        assert!(data.join("chat.db-wal").exists());
        assert!(!directory.path().join("chat.db-wal").exists());
        let stored = repository.get_conversation(conversation.id).await.unwrap();
        assert_eq!(stored.title, "Linked");
    }

    /// SQLite writes on through the files it has open: once the database file at the path is
    /// another (deleted, or a copy moved over it), nothing written is there at the next start.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn writes_are_refused_once_the_database_file_is_deleted_or_replaced() {
        let conversation = || {
            domain::Conversation::new(
                ConversationId::generate(),
                domain::ConversationTitle::new("Kept?").unwrap(),
                domain::Timestamp::now(),
            )
        };
        let replaced = |path: &std::path::Path| {
            let copy = path.with_extension("copy");
            std::fs::copy(path, &copy).unwrap();
            std::fs::rename(&copy, path).unwrap();
        };
        let deleted = |path: &std::path::Path| std::fs::remove_file(path).unwrap();
        let wal_deleted = |path: &std::path::Path| {
            std::fs::remove_file(path.with_extension("db-wal")).unwrap();
        };
        for (what, change) in [
            ("deleted", &deleted as &dyn Fn(&std::path::Path)),
            ("replaced by another file", &replaced),
            ("deleted", &wal_deleted),
        ] {
            let directory = tempfile::tempdir().unwrap();
            let path = directory.path().join("chat.db");
            let repository = SqliteChatRepository::open(&SqliteSettings::new(&path)).unwrap();
            repository
                .create_conversation(&conversation())
                .await
                .unwrap();
            change(&path);

            let refused = repository.create_conversation(&conversation()).await;
            let Err(RepositoryError::Unavailable(message)) = refused else {
                panic!("{what}: {refused:?}");
            };
            assert!(message.contains("deleted or replaced"), "{what}: {message}");
            assert!(
                matches!(
                    repository.health_check().await,
                    Err(RepositoryError::Unavailable(_))
                ),
                "{what}: still ready"
            );
        }
    }

    /// A full disk fails real batches while the check's one-page write would still succeed: the
    /// check must not make the replica ready again while real writes are failing.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn readiness_reports_an_outage_while_real_writes_keep_failing() {
        let directory = tempfile::tempdir().unwrap();
        let repository =
            SqliteChatRepository::open(&SqliteSettings::new(directory.path().join("chat.db")))
                .unwrap();
        let full_disk = repository
            .writer
            .write(|_| -> Result<(), DieselError> {
                Err(DieselError::DatabaseError(
                    DatabaseErrorKind::Unknown,
                    Box::new("database or disk is full".to_owned()),
                ))
            })
            .await;
        assert!(matches!(full_disk, Err(RepositoryError::Unavailable(_))));
        assert!(matches!(
            repository.health_check().await,
            Err(RepositoryError::Unavailable(_))
        ));
        assert!(
            repository.writer.is_failing(),
            "the check wrote nothing of its own"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_read_that_sees_a_commit_answers_only_once_the_commit_is_synced() {
        let directory = tempfile::tempdir().unwrap();
        let (called, calls) = mpsc::channel();
        let (release, released) = mpsc::channel::<()>();
        let repository = SqliteChatRepository::open_syncing_with(
            &SqliteSettings::new(directory.path().join("chat.db")),
            |_| -> std::io::Result<SyncWal> {
                Ok(Box::new(move || {
                    called.send(()).unwrap();
                    released.recv().unwrap();
                    Ok(())
                }))
            },
        )
        .unwrap();
        let exchange = NewExchange::new(
            ConversationId::DEFAULT,
            domain::MessageText::new("held", 100).unwrap(),
            "reply".to_owned(),
        );
        let conversation = domain::Conversation::new(
            ConversationId::DEFAULT,
            domain::ConversationTitle::new("Chat").unwrap(),
            domain::Timestamp::now(),
        );
        let store = {
            let repository = repository.clone();
            tokio::spawn(async move {
                repository.create_conversation(&conversation).await?;
                repository.append_exchange(&exchange).await
            })
        };
        // The creation's sync, then the append's: from here the append is committed.
        let calls = tokio::task::spawn_blocking(move || {
            calls.recv().unwrap();
            calls
        })
        .await
        .unwrap();
        release.send(()).unwrap();
        let calls = tokio::task::spawn_blocking(move || {
            calls.recv().unwrap();
            calls
        })
        .await
        .unwrap();
        let read = {
            let repository = repository.clone();
            tokio::spawn(async move {
                repository
                    .list_messages(
                        ConversationId::DEFAULT,
                        MessageWindow::Latest,
                        PageLimit::new(10).unwrap(),
                    )
                    .await
            })
        };
        let lookup = {
            let repository = repository.clone();
            tokio::spawn(async move { repository.get_conversation(ConversationId::DEFAULT).await })
        };
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        assert!(
            !read.is_finished(),
            "the read saw the unsynced append and waits for it"
        );
        assert!(
            !lookup.is_finished(),
            "a conversation lookup waits for the same sync"
        );
        assert!(!store.is_finished());
        release.send(()).unwrap();
        store.await.unwrap().unwrap();
        let page = read.await.unwrap().unwrap();
        assert_eq!(
            page.items.len(),
            2,
            "the read shows the append, now durable"
        );
        assert_eq!(lookup.await.unwrap().unwrap().id, ConversationId::DEFAULT);
        drop(calls);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn reader_connections_keep_a_small_page_cache_and_cannot_write() {
        #[derive(diesel::QueryableByName)]
        struct CacheSize {
            #[diesel(sql_type = diesel::sql_types::BigInt)]
            cache_size: i64,
        }
        let directory = tempfile::tempdir().unwrap();
        let repository =
            SqliteChatRepository::open(&SqliteSettings::new(directory.path().join("chat.db")))
                .unwrap();

        let cache_size = repository
            .read(|conn| {
                diesel::RunQueryDsl::get_result::<CacheSize>(
                    diesel::sql_query("PRAGMA cache_size"),
                    conn,
                )
            })
            .await
            .unwrap();
        let write = repository
            .read(|conn| conn.batch_execute("DELETE FROM conversations"))
            .await;

        assert_eq!(cache_size.cache_size, -i64::from(READER_CACHE_KIB));
        assert!(write.is_err(), "a reader must not write: {write:?}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_reply_already_shown_waits_for_room_in_a_full_queue_where_others_are_refused() {
        let directory = tempfile::tempdir().unwrap();
        let mut settings = SqliteSettings::new(directory.path().join("chat.db"));
        settings.write_queue_capacity = 1;
        let repository = SqliteChatRepository::open(&settings).unwrap();
        let conversation = domain::Conversation::new(
            ConversationId::DEFAULT,
            domain::ConversationTitle::new("Chat").unwrap(),
            domain::Timestamp::now(),
        );
        repository.create_conversation(&conversation).await.unwrap();
        let exchange = |text: &str| {
            NewExchange::new(
                ConversationId::DEFAULT,
                domain::MessageText::new(text, 100).unwrap(),
                "reply".to_owned(),
            )
        };
        // The writer is held by one write while a second fills the queue.
        let (running, started) = mpsc::channel();
        let (release, released) = mpsc::channel::<()>();
        let held = {
            let writer = repository.writer.clone();
            tokio::spawn(async move {
                writer
                    .write(move |_| {
                        running.send(()).unwrap();
                        let _ = released.recv();
                        Ok(())
                    })
                    .await
            })
        };
        tokio::task::spawn_blocking(move || started.recv().unwrap())
            .await
            .unwrap();
        let queued = {
            let repository = repository.clone();
            let first = exchange("queued");
            tokio::spawn(async move { repository.append_exchange(&first).await })
        };
        while repository.writer.queued() < 1 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // Counted just before it is sent: let the send land.
        tokio::time::sleep(Duration::from_millis(50)).await;

        assert!(matches!(
            repository.append_exchange(&exchange("refused")).await,
            Err(RepositoryError::Overloaded)
        ));
        let shown = {
            let repository = repository.clone();
            let reply = exchange("shown");
            tokio::spawn(async move { repository.append_exchange_waiting_for_room(&reply).await })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!shown.is_finished(), "it waits while the queue is full");
        release.send(()).unwrap();
        held.await.unwrap().unwrap();
        queued.await.unwrap().unwrap();
        let stored = shown.await.unwrap().expect("stored once there was room");
        assert_eq!(stored.user_message.content, "shown");
        let page = repository
            .list_messages(
                ConversationId::DEFAULT,
                domain::MessageWindow::Latest,
                domain::PageLimit::new(10).unwrap(),
            )
            .await
            .unwrap();
        let users: Vec<_> = page
            .items
            .iter()
            .filter(|m| m.role == domain::Role::User)
            .map(|m| m.content.as_str())
            .collect();
        assert_eq!(users, ["queued", "shown"]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_lookup_that_finds_its_queue_full_is_answered_by_the_other_readers() {
        let directory = tempfile::tempdir().unwrap();
        let repository =
            SqliteChatRepository::open(&SqliteSettings::new(directory.path().join("chat.db")))
                .unwrap();
        let conversation = domain::Conversation::new(
            ConversationId::DEFAULT,
            domain::ConversationTitle::new("Chat").unwrap(),
            domain::Timestamp::now(),
        );
        repository.create_conversation(&conversation).await.unwrap();
        // The lookup thread is held by one read while READ_QUEUE_CAPACITY more wait behind it.
        let (running, started) = mpsc::channel();
        let (release, released) = mpsc::channel::<()>();
        repository
            .lookups
            .submit(Box::new(move |_| {
                running.send(()).unwrap();
                let _ = released.recv();
            }))
            .unwrap();
        started.recv().unwrap();
        for _ in 0..READ_QUEUE_CAPACITY {
            repository.lookups.submit(Box::new(|_| {})).unwrap();
        }
        assert!(matches!(
            repository.lookups.submit(Box::new(|_| {})),
            Err(RepositoryError::Overloaded)
        ));

        let found = tokio::time::timeout(
            std::time::Duration::from_secs(5),
            repository.get_conversation(ConversationId::DEFAULT),
        )
        .await
        .expect("answered while the lookup thread is still held");
        assert_eq!(found.unwrap().id, ConversationId::DEFAULT);
        drop(release);
    }
}
