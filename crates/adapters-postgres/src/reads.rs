//! Reads answered by a few threads that each take every queued read at a wake-up.
//!
//! On Tokio's blocking pool each read paid a hop to a blocking thread and back, and a pool
//! checkout whose `SELECT 1` test is a round trip to PostgreSQL of its own: more CPU than a page
//! of 50 messages. Here a reader thread sleeps until a read arrives, checks one connection out
//! and runs everything queued by then on it, so the hop and the test are paid per batch. The
//! queue is bounded: a read that finds it full is refused with `Overloaded` at once.
//!
//! The SQLite adapter's readers work the same way on its own connection type; adapters share
//! nothing but the domain, so each carries its own.

use std::panic::{self, AssertUnwindSafe};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};

use diesel::pg::PgConnection;
use domain::RepositoryError;

use crate::{checkout, PgPool};

/// Most reads run on one checked-out connection before the thread looks at the queue again.
const MAX_BATCH: usize = 64;

/// One read, given a connection, or the reason there is none.
type Read = Box<dyn FnOnce(Result<&mut PgConnection, RepositoryError>) + Send>;

#[derive(Debug, Clone)]
pub(crate) struct ReaderThreads {
    queue: SyncSender<Read>,
}

impl ReaderThreads {
    /// Starts `threads` reader threads on connections from `pool`; `capacity` reads may wait.
    pub(crate) fn spawn(pool: &PgPool, threads: usize, capacity: usize) -> std::io::Result<Self> {
        let (queue, reads) = sync_channel(capacity);
        // The thread holding the lock sleeps in `recv`; the others wait for the lock, so each
        // arriving read wakes one thread, which then takes every read queued behind it.
        let reads = Arc::new(Mutex::new(reads));
        for number in 0..threads.max(1) {
            let reads = Arc::clone(&reads);
            let pool = pool.clone();
            std::thread::Builder::new()
                .name(format!("postgres-reader-{number}"))
                .spawn(move || serve(&reads, &pool))?;
        }
        Ok(Self { queue })
    }

    /// Queues `read`; it runs on a reader thread with a pooled connection.
    pub(crate) fn submit(&self, read: Read) -> Result<(), RepositoryError> {
        match self.queue.try_send(read) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(_)) => {
                metrics::counter!("storage_reads_rejected_total").increment(1);
                Err(RepositoryError::Overloaded)
            }
            Err(TrySendError::Disconnected(_)) => Err(RepositoryError::Unavailable(
                "the PostgreSQL reader threads have stopped".to_owned(),
            )),
        }
    }
}

fn serve(reads: &Mutex<Receiver<Read>>, pool: &PgPool) {
    loop {
        let batch: Vec<Read> = {
            // Held only around `recv`, which does not panic; even poisoned, the queue is sound.
            let reads = reads
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let Ok(first) = reads.recv() else {
                return;
            };
            std::iter::once(first)
                .chain(reads.try_iter().take(MAX_BATCH - 1))
                .collect()
        };
        run(batch, pool);
    }
}

/// Runs a batch on one pooled connection. A read that panics (a bug) loses only its own answer:
/// it may have left its connection inside a transaction, so the rest of the batch takes a
/// fresh one, and the pool discards the old one if so.
fn run(batch: Vec<Read>, pool: &PgPool) {
    let mut pending = batch.into_iter().peekable();
    while pending.peek().is_some() {
        let mut connection = match checkout(pool) {
            Ok(connection) => connection,
            Err(error) => {
                for read in pending {
                    read(Err(error.for_another_caller()));
                }
                return;
            }
        };
        for read in pending.by_ref() {
            let ran = panic::catch_unwind(AssertUnwindSafe(|| read(Ok(&mut connection))));
            if ran.is_err() {
                break;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::mpsc;
    use std::time::Duration;

    use diesel::r2d2::event::CheckoutEvent;
    use diesel::r2d2::{ConnectionManager, HandleEvent, Pool};
    use diesel::sql_types::Integer;
    use diesel::RunQueryDsl;
    use testkit::postgres::TestDatabase;

    use super::*;

    fn pool_of(url: &str) -> PgPool {
        counting_pool(url, Arc::default())
    }

    /// Counts the pool's checkouts.
    #[derive(Debug)]
    struct Checkouts(Arc<AtomicUsize>);

    impl HandleEvent for Checkouts {
        fn handle_checkout(&self, _: CheckoutEvent) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn counting_pool(url: &str, checkouts: Arc<AtomicUsize>) -> PgPool {
        Pool::builder()
            .max_size(2)
            .connection_timeout(Duration::from_millis(500))
            .event_handler(Box::new(Checkouts(checkouts)))
            .build_unchecked(ConnectionManager::new(url))
    }

    #[derive(diesel::QueryableByName)]
    struct Backend {
        #[diesel(sql_type = Integer)]
        pid: i32,
    }

    /// A read that reports the server process it ran on (one per connection) on `done`.
    fn answering(done: &mpsc::Sender<Result<i32, RepositoryError>>) -> Read {
        let done = done.clone();
        Box::new(move |connection| {
            let outcome = connection.and_then(|connection| {
                diesel::sql_query("SELECT pg_backend_pid() AS pid")
                    .get_result::<Backend>(connection)
                    .map(|backend| backend.pid)
                    .map_err(crate::map_error)
            });
            done.send(outcome).unwrap();
        })
    }

    /// One reader thread with room for `capacity` reads, held busy by a read until the returned
    /// sender is dropped, so that later reads queue.
    fn held_reader(pool: &PgPool, capacity: usize) -> (ReaderThreads, mpsc::Sender<()>) {
        let readers = ReaderThreads::spawn(pool, 1, capacity).unwrap();
        let (running, started) = mpsc::channel();
        let (release, released) = mpsc::channel::<()>();
        readers
            .submit(Box::new(move |_| {
                running.send(()).unwrap();
                let _ = released.recv();
            }))
            .unwrap();
        started.recv().unwrap();
        (readers, release)
    }

    fn answers(outcomes: &mpsc::Receiver<Result<i32, RepositoryError>>, count: usize) -> Vec<i32> {
        (0..count)
            .map(|_| {
                let outcome = outcomes.recv_timeout(Duration::from_secs(5)).unwrap();
                outcome.unwrap_or_else(|error| panic!("a read failed: {error}"))
            })
            .collect()
    }

    #[tokio::test]
    async fn reads_queued_behind_a_busy_thread_run_together_on_one_connection() {
        let Some(database) = TestDatabase::create().await else {
            return;
        };
        let checkouts = Arc::new(AtomicUsize::new(0));
        let (readers, release) =
            held_reader(&counting_pool(database.url(), Arc::clone(&checkouts)), 64);

        let (done, outcomes) = mpsc::channel();
        for _ in 0..50 {
            readers.submit(answering(&done)).unwrap();
        }
        assert!(
            outcomes.try_recv().is_err(),
            "nothing runs while the thread is held"
        );
        drop(release);
        let backends = answers(&outcomes, 50);
        assert!(
            backends.iter().all(|backend| *backend == backends[0]),
            "one connection serves the whole batch: {backends:?}"
        );
        assert_eq!(
            checkouts.load(Ordering::SeqCst),
            2,
            "one checkout for the holding read, one for the 50 queued behind it"
        );
    }

    #[tokio::test]
    async fn a_full_queue_refuses_at_once_and_the_queued_reads_still_run() {
        let Some(database) = TestDatabase::create().await else {
            return;
        };
        let (readers, release) = held_reader(&pool_of(database.url()), 2);

        let (done, outcomes) = mpsc::channel();
        readers.submit(answering(&done)).unwrap();
        readers.submit(answering(&done)).unwrap();
        assert!(matches!(
            readers.submit(answering(&done)),
            Err(RepositoryError::Overloaded)
        ));
        drop(release);
        answers(&outcomes, 2);
        assert!(
            outcomes.recv_timeout(Duration::from_millis(200)).is_err(),
            "the refused read never runs"
        );
    }

    #[tokio::test]
    async fn a_read_that_panics_loses_only_its_own_answer() {
        let Some(database) = TestDatabase::create().await else {
            return;
        };
        let (readers, release) = held_reader(&pool_of(database.url()), 8);

        let (done, outcomes) = mpsc::channel();
        let (panicking_done, panicking_outcome) = mpsc::channel::<()>();
        readers
            .submit(Box::new(move |_| {
                let _answer_dropped_by_the_panic = panicking_done;
                panic!("a bug in a read");
            }))
            .unwrap();
        readers.submit(answering(&done)).unwrap();
        drop(release);
        assert!(
            panicking_outcome
                .recv_timeout(Duration::from_secs(5))
                .is_err(),
            "the panicking read's answer is dropped, not sent"
        );
        answers(&outcomes, 1);
        readers.submit(answering(&done)).unwrap();
        answers(&outcomes, 1);
    }

    #[test]
    fn without_a_connection_every_read_is_told_unavailable() {
        // Port 1 on the loopback refuses at once: nothing listens there.
        let readers =
            ReaderThreads::spawn(&pool_of("postgres://postgres@127.0.0.1:1/chat"), 1, 8).unwrap();
        let (done, outcomes) = mpsc::channel();
        for _ in 0..3 {
            readers.submit(answering(&done)).unwrap();
        }
        for _ in 0..3 {
            let outcome = outcomes.recv_timeout(Duration::from_secs(5)).unwrap();
            assert!(
                matches!(outcome, Err(RepositoryError::Unavailable(_))),
                "{outcome:?}"
            );
        }
    }
}
