//! The single writer: one thread, one connection, group commit.
//!
//! Requests queue write jobs on a bounded channel. The thread takes whatever is queued (up to a
//! batch limit), runs the jobs one after another in one `BEGIN IMMEDIATE` transaction and commits
//! once; the syncer thread ([`crate::durability`]) makes the commit durable and only then tells
//! each requester its result, while this thread goes on with the next batch.
//!
//! A job refused for its own reasons (a missing row, a taken id) must not take the others down,
//! yet a savepoint around every job costs more than the job itself (each one parses two statements
//! and copies every page the job touches into a statement journal). So a batch first runs without
//! savepoints; only when a job is refused is that attempt rolled back and the batch run again with
//! each job in its own savepoint, so the refusal undoes only its own job. Any other failure (I/O,
//! full disk) rolls the whole batch back and every requester gets the error: SQLite may already
//! have ended the transaction, and a later job must not then commit on its own. Jobs are
//! therefore repeatable: they get the connection, never consume their inputs, and what they
//! return is kept only from the attempt that commits.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use diesel::connection::{AnsiTransactionManager, Connection, TransactionManager};
use diesel::sqlite::SqliteConnection;
use domain::{Exchange, NewExchange, RepositoryError, WAIT_FOR_ROOM_LIMIT};
use tokio::sync::oneshot;

use crate::appends::PositionClaims;

use crate::durability::{
    run_answerer, run_syncer, Durability, FinishedBatch, SyncWal, SyncedBatches,
};
use crate::errors::from_diesel;
use crate::queries;

/// What a write does when the queue is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WhenFull {
    /// Answers `Overloaded` at once: the caller can still refuse its request cleanly.
    Refuse,
    /// Tries again, in growing pauses, for up to [`WAIT_FOR_ROOM_LIMIT`]: a reply already shown.
    WaitForRoom,
}

/// The first pause before a write waiting for room tries the full queue again; each next one
/// is twice as long, up to the longest. A batch commits in about a millisecond.
const FIRST_PAUSE_FOR_ROOM: Duration = Duration::from_millis(2);
const LONGEST_PAUSE_FOR_ROOM: Duration = Duration::from_millis(100);

/// One queued write, type-erased so jobs of any result type share the queue.
pub(crate) trait Job: Send {
    /// Runs the write on `connection` (inside a savepoint of its own when `isolated`) and keeps
    /// its outcome, replacing the outcome of an earlier attempt. Appends claim positions in
    /// `claims`; any other write first settles them, so it sees every earlier append.
    fn run(
        &mut self,
        connection: &mut SqliteConnection,
        isolated: bool,
        claims: &mut PositionClaims,
    ) -> Ran;
    /// Answers the requester: the kept outcome if the batch committed, the commit's error if not.
    fn finish(self: Box<Self>, commit: Result<(), &RepositoryError>);
}

/// How one run of a job ended.
pub(crate) enum Ran {
    Succeeded,
    /// Refused for its own reasons (a missing row, a taken id): the statement changed nothing
    /// and the transaction goes on.
    FailedAlone,
    /// Anything else (I/O error, full disk, ...): SQLite may have ended the whole transaction,
    /// so no later job may run in it, or it would commit on its own.
    FailedBatch(RepositoryError),
}

/// A job's requester and the outcome it gets if the batch commits.
struct Pending<T> {
    outcome: Option<Result<T, RepositoryError>>,
    requester: oneshot::Sender<Result<T, RepositoryError>>,
}

impl<T> Pending<T> {
    /// A job's requester, and the answer it awaits.
    fn awaited() -> (Self, oneshot::Receiver<Result<T, RepositoryError>>) {
        let (requester, answer) = oneshot::channel();
        let pending = Self {
            outcome: None,
            requester,
        };
        (pending, answer)
    }

    fn keep(&mut self, outcome: Result<T, diesel::result::Error>) -> Ran {
        let outcome = outcome.map_err(from_diesel);
        let ran = match &outcome {
            Ok(_) => Ran::Succeeded,
            Err(RepositoryError::NotFound | RepositoryError::Conflict) => Ran::FailedAlone,
            Err(error) => Ran::FailedBatch(error.for_another_caller()),
        };
        self.outcome = Some(outcome);
        ran
    }

    fn finish(self, commit: Result<(), &RepositoryError>) {
        let result = match commit {
            // A committed batch ran every job, so an outcome is always there.
            Ok(()) => self.outcome.unwrap_or_else(|| {
                Err(RepositoryError::Unavailable(
                    "the write did not run".to_owned(),
                ))
            }),
            Err(error) => Err(error.for_another_caller()),
        };
        // The requester may have gone away; whatever happened to the write stands.
        let _ = self.requester.send(result);
    }
}

struct QueuedWrite<T, F> {
    operation: F,
    pending: Pending<T>,
}

impl<T, F> Job for QueuedWrite<T, F>
where
    T: Send,
    F: FnMut(&mut SqliteConnection) -> Result<T, diesel::result::Error> + Send,
{
    fn run(
        &mut self,
        connection: &mut SqliteConnection,
        isolated: bool,
        claims: &mut PositionClaims,
    ) -> Ran {
        if let Err(error) = claims.settle(connection) {
            return Ran::FailedBatch(from_diesel(error));
        }
        let operation = &mut self.operation;
        let outcome = if isolated {
            // A nested transaction is a savepoint: a failure here undoes only this job.
            connection.transaction(|connection| operation(connection))
        } else {
            operation(connection)
        };
        self.pending.keep(outcome)
    }

    fn finish(self: Box<Self>, commit: Result<(), &RepositoryError>) {
        self.pending.finish(commit);
    }
}

struct QueuedAppend {
    exchange: NewExchange,
    pending: Pending<Exchange>,
}

impl Job for QueuedAppend {
    fn run(
        &mut self,
        connection: &mut SqliteConnection,
        isolated: bool,
        claims: &mut PositionClaims,
    ) -> Ran {
        let exchange = &self.exchange;
        let outcome = if isolated {
            // Settled inside its own savepoint, so a failure takes its claim back with it.
            let stored = connection.transaction(|connection| {
                let stored = queries::append_exchange(connection, exchange, claims)?;
                claims.settle(connection)?;
                Ok(stored)
            });
            if stored.is_err() {
                claims.forget();
            }
            stored
        } else {
            queries::append_exchange(connection, exchange, claims)
        };
        self.pending.keep(outcome)
    }

    fn finish(self: Box<Self>, commit: Result<(), &RepositoryError>) {
        self.pending.finish(commit);
    }
}

/// Cheap to clone; every clone feeds the same writer thread.
#[derive(Clone)]
pub(crate) struct Writer {
    queue: SyncSender<Box<dyn Job>>,
    queued: Arc<AtomicUsize>,
    durability: Arc<Durability>,
}

impl std::fmt::Debug for Writer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Writer")
            .field("queued", &self.queued.load(Ordering::Relaxed))
            .finish()
    }
}

/// Committed batches that may wait for the syncer, and synced ones for the answering thread; a
/// full channel blocks the thread before it, so a slow disk slows the writer down instead of
/// piling up memory.
const BATCHES_AWAITING_SYNC: usize = 4;

impl Writer {
    /// Starts the writer thread on `connection`, the syncer thread, which makes each commit
    /// durable with `sync_wal`, and the thread that then answers the requesters.
    pub(crate) fn spawn(
        connection: SqliteConnection,
        reopen: Reopen,
        sync_wal: SyncWal,
        capacity: usize,
        max_batch: usize,
    ) -> std::io::Result<Self> {
        let (queue, jobs) = mpsc::sync_channel::<Box<dyn Job>>(capacity);
        let (finished, to_sync) = mpsc::sync_channel::<FinishedBatch>(BATCHES_AWAITING_SYNC);
        let (synced, to_answer) = mpsc::sync_channel::<SyncedBatches>(BATCHES_AWAITING_SYNC);
        let queued = Arc::new(AtomicUsize::new(0));
        let durability = Arc::new(Durability::new());
        let syncer_durability = Arc::clone(&durability);
        thread::Builder::new()
            .name("sqlite-answerer".to_owned())
            .spawn(move || run_answerer(to_answer))?;
        thread::Builder::new()
            .name("sqlite-syncer".to_owned())
            .spawn(move || run_syncer(to_sync, sync_wal, &syncer_durability, synced))?;
        let writer = WriterThread {
            connection,
            reopen,
            jobs,
            finished,
            max_batch,
            queued: Arc::clone(&queued),
            durability: Arc::clone(&durability),
        };
        thread::Builder::new()
            .name("sqlite-writer".to_owned())
            .spawn(move || writer.run())?;
        Ok(Self {
            queue,
            queued,
            durability,
        })
    }

    /// Runs `operation` in the next batch and resolves once that batch has committed and is
    /// durable. `operation` may run more than once (see the module documentation); only the
    /// outcome of the run that commits is returned. Fails at once with `Overloaded` when the
    /// queue is full.
    pub(crate) async fn write<T, F>(&self, operation: F) -> Result<T, RepositoryError>
    where
        T: Send + 'static,
        F: FnMut(&mut SqliteConnection) -> Result<T, diesel::result::Error> + Send + 'static,
    {
        let (pending, answer) = Pending::awaited();
        self.submit(
            Box::new(QueuedWrite { operation, pending }),
            answer,
            WhenFull::Refuse,
        )
        .await
    }

    /// Stores `exchange` in the next batch, like [`Writer::write`]; the appends of a batch share
    /// one write of each conversation row.
    pub(crate) async fn append(
        &self,
        exchange: NewExchange,
        when_full: WhenFull,
    ) -> Result<Exchange, RepositoryError> {
        let (pending, answer) = Pending::awaited();
        self.submit(
            Box::new(QueuedAppend { exchange, pending }),
            answer,
            when_full,
        )
        .await
    }

    async fn submit<T>(
        &self,
        mut job: Box<dyn Job>,
        answer: oneshot::Receiver<Result<T, RepositoryError>>,
        when_full: WhenFull,
    ) -> Result<T, RepositoryError> {
        let mut pause = FIRST_PAUSE_FOR_ROOM;
        let give_up_at = Instant::now() + WAIT_FOR_ROOM_LIMIT;
        loop {
            if self.durability.is_broken() {
                return Err(Durability::refusal());
            }
            self.queued.fetch_add(1, Ordering::Relaxed);
            match self.queue.try_send(job) {
                Ok(()) => break,
                Err(TrySendError::Full(refused)) => {
                    self.queued.fetch_sub(1, Ordering::Relaxed);
                    if when_full == WhenFull::Refuse || Instant::now() >= give_up_at {
                        metrics::counter!("storage_writer_rejected_total").increment(1);
                        return Err(RepositoryError::Overloaded);
                    }
                    job = refused;
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(LONGEST_PAUSE_FOR_ROOM);
                }
                Err(TrySendError::Disconnected(_)) => {
                    self.queued.fetch_sub(1, Ordering::Relaxed);
                    return Err(RepositoryError::Unavailable(
                        "the SQLite writer has stopped".to_owned(),
                    ));
                }
            }
        }
        // A dropped job (the writer thread died) never answers.
        answer.await.map_err(|_| {
            RepositoryError::Unavailable("the write could not be started".to_owned())
        })?
    }

    /// Runs `read` (blocking, on the calling thread) and returns its outcome with the number of
    /// the last commit its snapshot may contain; pass that to [`Writer::settled`] before
    /// showing the outcome to anyone.
    pub(crate) fn noting_commits<T>(&self, read: impl FnOnce() -> T) -> (T, u64) {
        let outcome = read();
        (outcome, self.durability.committing())
    }

    /// Resolves once commit `sequence` is durable (see [`crate::durability`]).
    pub(crate) async fn settled(&self, sequence: u64) -> Result<(), RepositoryError> {
        self.durability.settled(sequence).await
    }

    /// Writes waiting in the queue, not yet taken into a batch.
    #[cfg(test)]
    pub(crate) fn queued(&self) -> usize {
        self.queued.load(Ordering::Relaxed)
    }

    pub(crate) fn is_failing(&self) -> bool {
        self.durability.is_failing()
    }

    /// How long readiness should still report an outage without trying a write of its own
    /// (see [`crate::durability`]).
    pub(crate) fn quiet_left(&self) -> Option<Duration> {
        self.durability.quiet_left()
    }
}

/// Opens a fresh writer connection, for when diesel has given up on the current one.
pub(crate) type Reopen = Box<dyn FnMut() -> Result<SqliteConnection, RepositoryError> + Send>;

struct WriterThread {
    connection: SqliteConnection,
    reopen: Reopen,
    jobs: Receiver<Box<dyn Job>>,
    finished: SyncSender<FinishedBatch>,
    max_batch: usize,
    queued: Arc<AtomicUsize>,
    durability: Arc<Durability>,
}

/// Tells [`Durability`] when the writer thread unwinds from a panic.
struct ReportsDeath(Arc<Durability>);

impl Drop for ReportsDeath {
    fn drop(&mut self) {
        if thread::panicking() {
            tracing::error!(
                "the SQLite writer thread panicked; every write is refused until restart"
            );
            self.0.writer_died();
        }
    }
}

impl WriterThread {
    fn run(mut self) {
        let _death = ReportsDeath(Arc::clone(&self.durability));
        // `recv` fails only once every sender is gone and the queue is drained: then nothing is
        // left to write and the thread ends, and with it the syncer. A batch is whatever is
        // queued, never waited for: the sync runs on another thread, so requesters that arrive
        // during a commit share the next one, and the syncer groups batches that arrive during
        // a sync.
        while let Ok(first) = self.jobs.recv() {
            let mut batch: Vec<Box<dyn Job>> = Vec::with_capacity(self.max_batch);
            batch.push(first);
            while batch.len() < self.max_batch {
                match self.jobs.try_recv() {
                    Ok(job) => batch.push(job),
                    Err(_) => break,
                }
            }
            self.queued.fetch_sub(batch.len(), Ordering::Relaxed);
            metrics::gauge!("storage_writer_queue_depth")
                .set(self.queued.load(Ordering::Relaxed) as f64);
            metrics::histogram!("storage_writer_batch_size").record(batch.len() as f64);
            let started = Instant::now();
            let commit = if self.durability.is_broken() {
                Err(Durability::refusal())
            } else {
                commit_batch(&mut self.connection, &mut batch, &self.durability)
            };
            if commit.is_err() {
                self.replace_connection_if_broken();
            }
            metrics::histogram!("storage_writer_commit_seconds")
                .record(started.elapsed().as_secs_f64());
            let finished = FinishedBatch {
                sequence: self.durability.committing(),
                jobs: batch,
                commit,
            };
            // Fails only when the syncer is gone, and with it every requester's answer.
            if self.finished.send(finished).is_err() {
                tracing::error!("the SQLite syncer has stopped; the writer stops too");
                return;
            }
        }
    }
}

impl WriterThread {
    /// When SQLite has ended a transaction by itself (an I/O error, a full disk) and the rollback
    /// then fails too, diesel marks the connection broken and refuses every later transaction on
    /// it. A fresh connection is opened before the old one is dropped, so the WAL (and the
    /// syncer's handle on it) stays the same file; if opening fails, the next failed batch tries
    /// again.
    fn replace_connection_if_broken(&mut self) {
        if !AnsiTransactionManager::is_broken_transaction_manager(&mut self.connection) {
            return;
        }
        match (self.reopen)() {
            Ok(fresh) => {
                self.connection = fresh;
                tracing::warn!(
                    "reopened the SQLite writer's connection, which diesel had marked broken"
                );
            }
            Err(error) => {
                tracing::error!(%error, "the SQLite writer's connection is broken and cannot be reopened yet");
            }
        }
    }
}

/// A batch attempt that ends in a rollback: nothing of it is stored.
struct BatchFailed(RepositoryError);

impl From<diesel::result::Error> for BatchFailed {
    fn from(error: diesel::result::Error) -> Self {
        Self(from_diesel(error))
    }
}

/// Why the first, savepoint-free attempt at a batch was abandoned.
enum TogetherError {
    /// A job failed alone; the attempt was rolled back so the batch can run again, isolated.
    JobFailedAlone,
    Batch(BatchFailed),
}

impl From<diesel::result::Error> for TogetherError {
    fn from(error: diesel::result::Error) -> Self {
        Self::Batch(error.into())
    }
}

/// Every job of the batch in one transaction, no savepoints; stops at the first failing job.
fn attempt_together(
    connection: &mut SqliteConnection,
    batch: &mut [Box<dyn Job>],
    durability: &Durability,
) -> Result<(), TogetherError> {
    connection.immediate_transaction(|connection| {
        let mut claims = PositionClaims::default();
        for job in batch.iter_mut() {
            match job.run(connection, false, &mut claims) {
                Ran::Succeeded => {}
                Ran::FailedAlone => return Err(TogetherError::JobFailedAlone),
                Ran::FailedBatch(error) => return Err(TogetherError::Batch(BatchFailed(error))),
            }
        }
        claims.settle(connection)?;
        durability.next_commit();
        Ok(())
    })
}

/// Every job of the batch in one transaction, each in a savepoint of its own; a job failing for
/// more than its own reasons fails the batch.
fn attempt_isolated(
    connection: &mut SqliteConnection,
    batch: &mut [Box<dyn Job>],
    durability: &Durability,
) -> Result<(), BatchFailed> {
    connection.immediate_transaction(|connection| {
        // Each append settles its claim inside its own savepoint, so none is left here.
        let mut claims = PositionClaims::default();
        for job in batch.iter_mut() {
            if let Ran::FailedBatch(error) = job.run(connection, true, &mut claims) {
                return Err(BatchFailed(error));
            }
        }
        durability.next_commit();
        Ok(())
    })
}

/// Runs and commits the batch (see the module documentation); the jobs keep their outcomes for
/// the syncer to deliver.
fn commit_batch(
    connection: &mut SqliteConnection,
    batch: &mut [Box<dyn Job>],
    durability: &Durability,
) -> Result<(), RepositoryError> {
    let committed = match attempt_together(connection, batch, durability) {
        Ok(()) => Ok(()),
        Err(TogetherError::Batch(BatchFailed(error))) => Err(error),
        Err(TogetherError::JobFailedAlone) => {
            metrics::counter!("storage_writer_isolated_batches_total").increment(1);
            attempt_isolated(connection, batch, durability).map_err(|BatchFailed(error)| error)
        }
    };
    if let Err(error) = &committed {
        tracing::error!(%error, jobs = batch.len(), "SQLite batch failed to commit");
    }
    committed
}

#[cfg(test)]
mod tests {
    use diesel::connection::SimpleConnection;
    use diesel::result::{DatabaseErrorKind, Error as DieselError};
    use diesel::RunQueryDsl;

    use std::time::Duration;

    use super::*;
    use crate::durability::wal_sync;

    type TestWrite = Box<dyn FnMut(&mut SqliteConnection) -> Result<(), DieselError> + Send>;

    fn connection(path: &std::path::Path) -> SqliteConnection {
        let mut connection = SqliteConnection::establish(&path.to_string_lossy()).unwrap();
        connection
            .batch_execute("PRAGMA busy_timeout = 5000; PRAGMA journal_mode = WAL;")
            .unwrap();
        connection
    }

    fn insert(value: i64) -> impl FnMut(&mut SqliteConnection) -> Result<(), DieselError> {
        move |connection| {
            diesel::sql_query(format!("INSERT INTO kept (value) VALUES ({value})"))
                .execute(connection)
                .map(|_| ())
        }
    }

    fn stored(path: &std::path::Path) -> i64 {
        #[derive(diesel::QueryableByName)]
        struct Count {
            #[diesel(sql_type = diesel::sql_types::BigInt)]
            count: i64,
        }
        diesel::sql_query("SELECT count(*) AS count FROM kept")
            .get_result::<Count>(&mut connection(path))
            .unwrap()
            .count
    }

    /// Queues `writes`, in order, while the writer is busy with a batch that waits for a gate,
    /// then opens the gate: the writes form the next batch together.
    async fn in_one_batch(
        writer: &Writer,
        writes: Vec<TestWrite>,
    ) -> Vec<Result<(), RepositoryError>> {
        let (opened, gate) = mpsc::channel::<()>();
        let (started, running) = mpsc::channel::<()>();
        let gated = {
            let writer = writer.clone();
            tokio::spawn(async move {
                writer
                    .write(move |_| {
                        started.send(()).unwrap();
                        gate.recv().unwrap();
                        Ok(())
                    })
                    .await
            })
        };
        tokio::task::spawn_blocking(move || running.recv().unwrap())
            .await
            .unwrap();
        let count = writes.len();
        // join_all polls each write once, in order, before any waits: they queue in this order.
        let queued = writes.into_iter().map(|write| {
            let writer = writer.clone();
            async move { writer.write(write).await }
        });
        let pending = tokio::spawn(futures::future::join_all(queued));
        while writer.queued.load(Ordering::Relaxed) < count {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        opened.send(()).unwrap();
        gated.await.unwrap().unwrap();
        pending.await.unwrap()
    }

    fn reopen(path: &std::path::Path) -> Reopen {
        let path = path.to_owned();
        Box::new(move || Ok(connection(&path)))
    }

    fn writer(path: &std::path::Path) -> Writer {
        Writer::spawn(table(path), reopen(path), wal_sync(path).unwrap(), 64, 64).unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_writer_that_panicked_is_reported_failing() {
        let directory = tempfile::tempdir().unwrap();
        let writer = writer(&directory.path().join("writer.db"));
        let bug = writer
            .write(|_| -> Result<(), DieselError> { panic!("a bug in a write") })
            .await;
        assert!(matches!(bug, Err(RepositoryError::Unavailable(_))));
        let deadline = Instant::now() + Duration::from_secs(5);
        while !writer.is_failing() {
            assert!(
                Instant::now() < deadline,
                "readiness still reports writes working"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(matches!(
            writer.write(|_| Ok(())).await,
            Err(RepositoryError::Unavailable(_))
        ));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_write_refused_alone_leaves_the_rest_of_its_batch_committed() {
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path().join("writer.db");
        let writer = writer(&path);
        let outcomes = in_one_batch(
            &writer,
            vec![
                Box::new(insert(1)),
                Box::new(insert(1)),
                Box::new(|_: &mut SqliteConnection| Err(DieselError::NotFound)),
                Box::new(insert(2)),
            ],
        )
        .await;
        assert!(outcomes[0].is_ok(), "{:?}", outcomes[0]);
        assert!(matches!(outcomes[1], Err(RepositoryError::Conflict)));
        assert!(matches!(outcomes[2], Err(RepositoryError::NotFound)));
        assert!(outcomes[3].is_ok(), "{:?}", outcomes[3]);
        assert_eq!(stored(&path), 2);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_write_failing_for_storage_reasons_fails_its_whole_batch_and_stores_nothing() {
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path().join("writer.db");
        let writer = writer(&path);
        let disk_error = |_: &mut SqliteConnection| -> Result<(), DieselError> {
            Err(DieselError::DatabaseError(
                DatabaseErrorKind::Unknown,
                Box::new("disk I/O error".to_owned()),
            ))
        };
        // The refused write sends the batch to the isolated attempt first; the storage failure
        // must end that attempt too, before the write after it can run.
        let outcomes = in_one_batch(
            &writer,
            vec![
                Box::new(insert(1)),
                Box::new(|_: &mut SqliteConnection| Err(DieselError::NotFound)),
                Box::new(disk_error),
                Box::new(insert(2)),
            ],
        )
        .await;
        for outcome in &outcomes {
            assert!(
                matches!(outcome, Err(RepositoryError::Unavailable(_))),
                "every requester gets the storage error: {outcomes:?}"
            );
        }
        assert_eq!(stored(&path), 0);
        assert!(writer.is_failing(), "readiness reports the outage");
        assert!(
            writer.quiet_left().is_some(),
            "readiness waits before writing itself"
        );
    }

    /// A WAL sync that tells the test each time it is called, then waits for the test to say how
    /// it ends.
    fn gated_sync() -> (
        SyncWal,
        mpsc::Receiver<()>,
        mpsc::Sender<std::io::Result<()>>,
    ) {
        let (called, calls) = mpsc::channel();
        let (release, released) = mpsc::channel();
        let sync: SyncWal = Box::new(move || {
            called.send(()).unwrap();
            released.recv().unwrap()
        });
        (sync, calls, release)
    }

    fn table(path: &std::path::Path) -> SqliteConnection {
        let mut setup = connection(path);
        setup
            .batch_execute("CREATE TABLE IF NOT EXISTS kept (value INTEGER NOT NULL UNIQUE)")
            .unwrap();
        setup
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_write_and_a_read_that_sees_it_are_answered_only_once_the_wal_is_synced() {
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path().join("writer.db");
        let (sync, calls, release) = gated_sync();
        let writer = Writer::spawn(table(&path), reopen(&path), sync, 64, 64).unwrap();
        let write = tokio::spawn({
            let writer = writer.clone();
            async move { writer.write(insert(1)).await }
        });
        let calls = tokio::task::spawn_blocking(move || {
            calls.recv().unwrap();
            calls
        })
        .await
        .unwrap();
        assert_eq!(
            stored(&path),
            1,
            "committed and visible while the sync runs"
        );
        let ((), seen) = writer.noting_commits(|| ());
        let read = tokio::spawn({
            let writer = writer.clone();
            async move { writer.settled(seen).await }
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(
            !write.is_finished(),
            "the write is not acknowledged before its sync"
        );
        assert!(
            !read.is_finished(),
            "a read that saw the write waits for its sync"
        );
        release.send(Ok(())).unwrap();
        write.await.unwrap().unwrap();
        read.await.unwrap().unwrap();
        assert!(calls.try_recv().is_err(), "one sync covered the batch");
        let ((), nothing_new) = writer.noting_commits(|| ());
        writer.settled(nothing_new).await.unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failed_wal_sync_refuses_its_writes_and_every_later_one() {
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path().join("writer.db");
        let (sync, _calls, release) = gated_sync();
        let writer = Writer::spawn(table(&path), reopen(&path), sync, 64, 64).unwrap();
        release
            .send(Err(std::io::Error::other("injected EIO")))
            .unwrap();
        let first = writer.write(insert(1)).await;
        assert!(
            matches!(first, Err(RepositoryError::Unavailable(_))),
            "{first:?}"
        );
        assert!(writer.is_failing(), "readiness reports the failed sync");
        let later = writer.write(insert(2)).await;
        assert!(
            matches!(later, Err(RepositoryError::Unavailable(_))),
            "{later:?}"
        );
        assert_eq!(stored(&path), 1, "the later write never ran");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_connection_diesel_gave_up_on_is_replaced_and_writes_go_on() {
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path().join("writer.db");
        let writer = writer(&path);
        // What diesel does when a rollback fails while SQLite is still in the transaction (an
        // I/O error at the wrong moment): it marks the connection broken, and the transaction
        // stays open, holding the write lock.
        let given_up = writer
            .write(|connection: &mut SqliteConnection| {
                AnsiTransactionManager::transaction_manager_status_mut(connection).set_in_error();
                Ok(())
            })
            .await;
        assert!(given_up.is_err(), "{given_up:?}");
        writer.write(insert(1)).await.unwrap();
        assert_eq!(stored(&path), 1);
        assert!(!writer.is_failing());
    }
}
