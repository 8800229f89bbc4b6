//! The single writer: one thread, one connection, group commit.
//!
//! Requests queue write jobs on a bounded channel. The thread takes whatever is queued (up to a
//! batch limit), runs the jobs one after another in one `BEGIN IMMEDIATE` transaction, commits
//! once, and only then tells each requester its result.
//!
//! A job refused for its own reasons (a missing row, a taken id) must not take the others down,
//! yet a savepoint around every job costs more than the job itself (each one parses two statements
//! and copies every page the job touches into a statement journal). So a batch first runs without
//! savepoints; only when a job is refused is that attempt rolled back and the batch run again with
//! each job in its own savepoint, so the refusal undoes only its own job. Any other failure (I/O,
//! full disk) rolls the whole batch back and every requester gets the error: SQLite may already
//! have ended the transaction, and a later job must not then commit on its own. Jobs are therefore repeatable: they get the connection, never consume
//! their inputs, and what they return is kept only from the attempt that commits.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use diesel::connection::Connection;
use diesel::sqlite::SqliteConnection;
use domain::RepositoryError;
use tokio::sync::oneshot;

use crate::errors::from_diesel;

/// One queued write, type-erased so jobs of any result type share the queue.
trait Job: Send {
    /// Runs the write on `connection` (inside a savepoint of its own when `isolated`) and keeps
    /// its outcome, replacing the outcome of an earlier attempt.
    fn run(&mut self, connection: &mut SqliteConnection, isolated: bool) -> Ran;
    /// Answers the requester: the kept outcome if the batch committed, the commit's error if not.
    fn finish(self: Box<Self>, commit: Result<(), &RepositoryError>);
}

/// How one run of a job ended.
enum Ran {
    Succeeded,
    /// Refused for its own reasons (a missing row, a taken id): the statement changed nothing
    /// and the transaction goes on.
    FailedAlone,
    /// Anything else (I/O error, full disk, ...): SQLite may have ended the whole transaction,
    /// so no later job may run in it, or it would commit on its own.
    FailedBatch(RepositoryError),
}

struct QueuedWrite<T, F> {
    operation: F,
    outcome: Option<Result<T, RepositoryError>>,
    requester: oneshot::Sender<Result<T, RepositoryError>>,
}

impl<T, F> Job for QueuedWrite<T, F>
where
    T: Send,
    F: FnMut(&mut SqliteConnection) -> Result<T, diesel::result::Error> + Send,
{
    fn run(&mut self, connection: &mut SqliteConnection, isolated: bool) -> Ran {
        let operation = &mut self.operation;
        let outcome = if isolated {
            // A nested transaction is a savepoint: a failure here undoes only this job.
            connection.transaction(|connection| operation(connection))
        } else {
            operation(connection)
        }
        .map_err(from_diesel);
        let ran = match &outcome {
            Ok(_) => Ran::Succeeded,
            Err(RepositoryError::NotFound | RepositoryError::Conflict) => Ran::FailedAlone,
            Err(error) => Ran::FailedBatch(error.for_another_caller()),
        };
        self.outcome = Some(outcome);
        ran
    }

    fn finish(self: Box<Self>, commit: Result<(), &RepositoryError>) {
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

/// Cheap to clone; every clone feeds the same writer thread.
#[derive(Clone)]
pub(crate) struct Writer {
    queue: SyncSender<Box<dyn Job>>,
    state: Arc<WriterState>,
}

impl std::fmt::Debug for Writer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Writer")
            .field("queued", &self.state.queued.load(Ordering::Relaxed))
            .finish()
    }
}

#[derive(Default)]
struct WriterState {
    queued: AtomicUsize,
    /// Set while the last commit failed with an outage; readiness reports it.
    failing: AtomicBool,
}

impl Writer {
    pub(crate) fn spawn(
        connection: SqliteConnection,
        capacity: usize,
        max_batch: usize,
    ) -> std::io::Result<Self> {
        let (queue, jobs) = mpsc::sync_channel::<Box<dyn Job>>(capacity);
        let state = Arc::new(WriterState::default());
        let thread_state = Arc::clone(&state);
        thread::Builder::new()
            .name("sqlite-writer".to_owned())
            .spawn(move || run(connection, jobs, max_batch, &thread_state))?;
        Ok(Self { queue, state })
    }

    /// Runs `operation` in the next batch and resolves once that batch has committed.
    /// `operation` may run more than once (see the module documentation); only the outcome of
    /// the run that commits is returned. Fails at once with `Overloaded` when the queue is full.
    pub(crate) async fn write<T, F>(&self, operation: F) -> Result<T, RepositoryError>
    where
        T: Send + 'static,
        F: FnMut(&mut SqliteConnection) -> Result<T, diesel::result::Error> + Send + 'static,
    {
        let (requester, answer) = oneshot::channel();
        let job: Box<dyn Job> = Box::new(QueuedWrite {
            operation,
            outcome: None,
            requester,
        });
        self.state.queued.fetch_add(1, Ordering::Relaxed);
        match self.queue.try_send(job) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                self.state.queued.fetch_sub(1, Ordering::Relaxed);
                metrics::counter!("storage_writer_rejected_total").increment(1);
                return Err(RepositoryError::Overloaded);
            }
            Err(TrySendError::Disconnected(_)) => {
                self.state.queued.fetch_sub(1, Ordering::Relaxed);
                return Err(RepositoryError::Unavailable(
                    "the SQLite writer has stopped".to_owned(),
                ));
            }
        }
        // A dropped job (the writer thread died) never answers.
        answer.await.map_err(|_| {
            RepositoryError::Unavailable("the write could not be started".to_owned())
        })?
    }

    pub(crate) fn is_failing(&self) -> bool {
        self.state.failing.load(Ordering::Relaxed)
    }
}

/// Longest pause between two arrivals that still counts as "more jobs are on their way".
const ARRIVAL_GAP: Duration = Duration::from_micros(300);
/// Upper bound on the extra wait for a batch, whatever the commit time.
const MAX_LINGER: Duration = Duration::from_millis(2);

fn run(
    mut connection: SqliteConnection,
    jobs: Receiver<Box<dyn Job>>,
    max_batch: usize,
    state: &WriterState,
) {
    let mut batch: Vec<Box<dyn Job>> = Vec::with_capacity(max_batch);
    let mut last_batch = 0usize;
    let mut last_commit = Duration::ZERO;
    // `recv` fails only once every sender is gone and the queue is drained: then nothing is left
    // to write and the thread ends.
    while let Ok(first) = jobs.recv() {
        batch.push(first);
        while batch.len() < max_batch {
            match jobs.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        // Under concurrent load the requesters answered by the previous commit send their next
        // write a fraction of a millisecond later. Without waiting for them the clients split
        // into two cohorts that alternate, each paying a whole commit (fsync) per round trip;
        // waiting while jobs keep arriving, for at most a quarter of the last commit time, lets
        // them share one. A lone writer (last batch of one) never waits.
        if last_batch > 1 && batch.len() < max_batch {
            let deadline = Instant::now() + (last_commit / 4).min(MAX_LINGER);
            while batch.len() < max_batch {
                let now = Instant::now();
                if now >= deadline {
                    break;
                }
                match jobs.recv_timeout(ARRIVAL_GAP.min(deadline - now)) {
                    Ok(job) => batch.push(job),
                    Err(_) => break,
                }
            }
        }
        last_batch = batch.len();
        state.queued.fetch_sub(batch.len(), Ordering::Relaxed);
        metrics::gauge!("storage_writer_queue_depth")
            .set(state.queued.load(Ordering::Relaxed) as f64);
        metrics::histogram!("storage_writer_batch_size").record(batch.len() as f64);
        let started = Instant::now();
        commit_batch(&mut connection, &mut batch, state);
        last_commit = started.elapsed();
        metrics::histogram!("storage_writer_commit_seconds").record(last_commit.as_secs_f64());
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
) -> Result<(), TogetherError> {
    connection.immediate_transaction(|connection| {
        for job in batch.iter_mut() {
            match job.run(connection, false) {
                Ran::Succeeded => {}
                Ran::FailedAlone => return Err(TogetherError::JobFailedAlone),
                Ran::FailedBatch(error) => return Err(TogetherError::Batch(BatchFailed(error))),
            }
        }
        Ok(())
    })
}

/// Every job of the batch in one transaction, each in a savepoint of its own; a job failing for
/// more than its own reasons fails the batch.
fn attempt_isolated(
    connection: &mut SqliteConnection,
    batch: &mut [Box<dyn Job>],
) -> Result<(), BatchFailed> {
    connection.immediate_transaction(|connection| {
        for job in batch.iter_mut() {
            if let Ran::FailedBatch(error) = job.run(connection, true) {
                return Err(BatchFailed(error));
            }
        }
        Ok(())
    })
}

fn commit_batch(
    connection: &mut SqliteConnection,
    batch: &mut Vec<Box<dyn Job>>,
    state: &WriterState,
) {
    let committed = match attempt_together(connection, batch) {
        Ok(()) => Ok(()),
        Err(TogetherError::Batch(BatchFailed(error))) => Err(error),
        Err(TogetherError::JobFailedAlone) => {
            metrics::counter!("storage_writer_isolated_batches_total").increment(1);
            attempt_isolated(connection, batch).map_err(|BatchFailed(error)| error)
        }
    };
    // A write that meets an outage fails its whole batch, so the batch's outcome tells.
    let outage = matches!(committed, Err(RepositoryError::Unavailable(_)));
    state.failing.store(outage, Ordering::Relaxed);
    if let Err(error) = &committed {
        tracing::error!(%error, jobs = batch.len(), "SQLite batch failed to commit");
    }
    for job in batch.drain(..) {
        job.finish(committed.as_ref().map(|_| ()));
    }
}

#[cfg(test)]
mod tests {
    use diesel::connection::SimpleConnection;
    use diesel::result::{DatabaseErrorKind, Error as DieselError};
    use diesel::RunQueryDsl;

    use super::*;

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
        while writer.state.queued.load(Ordering::Relaxed) < count {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        opened.send(()).unwrap();
        gated.await.unwrap().unwrap();
        pending.await.unwrap()
    }

    fn writer(path: &std::path::Path) -> Writer {
        let mut setup = connection(path);
        setup
            .batch_execute("CREATE TABLE IF NOT EXISTS kept (value INTEGER NOT NULL UNIQUE)")
            .unwrap();
        Writer::spawn(setup, 64, 64).unwrap()
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
    }
}
