//! The single writer: one thread, one connection, group commit.
//!
//! Requests queue write jobs on a bounded channel. The thread takes whatever is queued (up to a
//! batch limit), runs each job inside its own savepoint of one `BEGIN IMMEDIATE` transaction so a
//! failing job rolls back only itself, commits once, and only then tells each requester its result.

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

type Completion = Box<dyn FnOnce(Result<(), &RepositoryError>) + Send>;
type Job = Box<dyn FnOnce(&mut SqliteConnection) -> JobDone + Send>;

/// A job that ran inside the batch transaction, waiting for the commit to answer its requester.
struct JobDone {
    completion: Completion,
    /// The job failed because storage is unavailable (read-only file, full disk, ...).
    outage: bool,
}

/// Cheap to clone; every clone feeds the same writer thread.
#[derive(Clone)]
pub(crate) struct Writer {
    queue: SyncSender<Job>,
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
        let (queue, jobs) = mpsc::sync_channel::<Job>(capacity);
        let state = Arc::new(WriterState::default());
        let thread_state = Arc::clone(&state);
        thread::Builder::new()
            .name("sqlite-writer".to_owned())
            .spawn(move || run(connection, jobs, max_batch, &thread_state))?;
        Ok(Self { queue, state })
    }

    /// Runs `operation` in the next batch and resolves once that batch has committed.
    /// Fails at once with `Overloaded` when the queue is full.
    pub(crate) async fn write<T, F>(&self, operation: F) -> Result<T, RepositoryError>
    where
        T: Send + 'static,
        F: FnOnce(&mut SqliteConnection) -> Result<T, diesel::result::Error> + Send + 'static,
    {
        let (sender, receiver) = oneshot::channel();
        let job: Job = Box::new(move |conn| {
            // A nested transaction is a savepoint: a failure here undoes only this job.
            let outcome = conn.transaction(operation).map_err(from_diesel);
            let outage = matches!(outcome, Err(RepositoryError::Unavailable(_)));
            let completion: Completion = Box::new(move |commit| {
                let result = match commit {
                    Ok(()) => outcome,
                    Err(error) => Err(copy_commit_error(error)),
                };
                // The requester may have gone away; the write is committed all the same.
                let _ = sender.send(result);
            });
            JobDone { completion, outage }
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
        // A dropped sender means the job never ran: its batch could not even begin.
        receiver.await.map_err(|_| {
            RepositoryError::Unavailable("the write could not be started".to_owned())
        })?
    }

    pub(crate) fn is_failing(&self) -> bool {
        self.state.failing.load(Ordering::Relaxed)
    }
}

fn copy_commit_error(error: &RepositoryError) -> RepositoryError {
    match error {
        RepositoryError::Unavailable(reason) => RepositoryError::Unavailable(reason.clone()),
        other => RepositoryError::Unknown(anyhow::anyhow!("commit failed: {other}")),
    }
}

/// Longest pause between two arrivals that still counts as "more jobs are on their way".
const ARRIVAL_GAP: Duration = Duration::from_micros(300);
/// Upper bound on the extra wait for a batch, whatever the commit time.
const MAX_LINGER: Duration = Duration::from_millis(2);

fn run(
    mut connection: SqliteConnection,
    jobs: Receiver<Job>,
    max_batch: usize,
    state: &WriterState,
) {
    let mut batch: Vec<Job> = Vec::with_capacity(max_batch);
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

fn commit_batch(connection: &mut SqliteConnection, batch: &mut Vec<Job>, state: &WriterState) {
    let mut done: Vec<JobDone> = Vec::with_capacity(batch.len());
    let committed = connection
        .immediate_transaction(|conn| {
            done.extend(batch.drain(..).map(|job| job(conn)));
            Ok::<(), diesel::result::Error>(())
        })
        .map_err(from_diesel);
    // Jobs still in the batch never ran (BEGIN failed); dropping them answers their requesters.
    batch.clear();
    let outage = done.iter().any(|job| job.outage)
        || matches!(committed, Err(RepositoryError::Unavailable(_)));
    state.failing.store(outage, Ordering::Relaxed);
    if let Err(error) = &committed {
        tracing::error!(%error, jobs = done.len(), "SQLite batch failed to commit");
    }
    for job in done {
        (job.completion)(committed.as_ref().map(|_| ()));
    }
}
