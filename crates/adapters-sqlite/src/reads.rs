//! Reads answered by a few threads that each take every queued read at a wake-up.
//!
//! On Tokio's blocking pool each read woke a blocking thread and put it back to sleep; on this
//! kind of machine those two context switches cost more CPU than the read (a page of 20 messages
//! used about 45 µs of CPU on its blocking thread). Here a reader thread sleeps until a read
//! arrives, then runs everything queued by then on one pooled connection, so the switches are
//! paid per batch. The queue is bounded: a read that finds it full is refused with `Overloaded`
//! at once rather than piling up memory and latency.

use std::panic::{self, AssertUnwindSafe};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};

use diesel::r2d2::{ConnectionManager, Pool};
use diesel::sqlite::SqliteConnection;
use domain::RepositoryError;

use crate::errors::unavailable;

/// Most reads run on one checked-out connection before the thread looks at the queue again.
const MAX_BATCH: usize = 64;

/// One read, given a connection, or the reason there is none.
type Read = Box<dyn FnOnce(Result<&mut SqliteConnection, RepositoryError>) + Send>;

#[derive(Debug, Clone)]
pub(crate) struct ReaderThreads {
    queue: SyncSender<Read>,
}

impl ReaderThreads {
    /// Starts `threads` reader threads, named `{name}-{n}`, on connections from `pool`;
    /// `capacity` reads may wait.
    pub(crate) fn spawn(
        pool: &Pool<ConnectionManager<SqliteConnection>>,
        threads: usize,
        capacity: usize,
        name: &str,
    ) -> std::io::Result<Self> {
        let (queue, reads) = sync_channel(capacity);
        // The thread holding the lock sleeps in `recv`; the others wait for the lock, so each
        // arriving read wakes one thread, which then takes every read queued behind it.
        let reads = Arc::new(Mutex::new(reads));
        for number in 0..threads.max(1) {
            let reads = Arc::clone(&reads);
            let pool = pool.clone();
            std::thread::Builder::new()
                .name(format!("{name}-{number}"))
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
                "the SQLite reader threads have stopped".to_owned(),
            )),
        }
    }
}

fn serve(reads: &Mutex<Receiver<Read>>, pool: &Pool<ConnectionManager<SqliteConnection>>) {
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
fn run(batch: Vec<Read>, pool: &Pool<ConnectionManager<SqliteConnection>>) {
    let mut pending = batch.into_iter().peekable();
    while pending.peek().is_some() {
        let mut connection = match pool.get() {
            Ok(connection) => connection,
            Err(error) => {
                let error = unavailable(error);
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
    use std::sync::mpsc;
    use std::time::Duration;

    use diesel::connection::SimpleConnection;

    use super::*;

    fn pool_of(url: &str) -> Pool<ConnectionManager<SqliteConnection>> {
        Pool::builder()
            .max_size(2)
            .connection_timeout(Duration::from_millis(200))
            .build_unchecked(ConnectionManager::new(url))
    }

    /// A read that reports its outcome on `done`.
    fn answering(done: &mpsc::Sender<Result<(), RepositoryError>>) -> Read {
        let done = done.clone();
        Box::new(move |connection| {
            let outcome = connection.and_then(|connection| {
                connection
                    .batch_execute("SELECT 1")
                    .map_err(crate::errors::from_diesel)
            });
            done.send(outcome).unwrap();
        })
    }

    /// One reader thread with room for `capacity` reads, held busy by a read until the returned
    /// sender is dropped, so that later reads queue.
    fn held_reader(capacity: usize) -> (ReaderThreads, mpsc::Sender<()>) {
        let readers =
            ReaderThreads::spawn(&pool_of(":memory:"), 1, capacity, "test-reader").unwrap();
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

    #[test]
    fn reads_queued_behind_a_busy_thread_all_run_once_it_is_free() {
        let (readers, release) = held_reader(64);

        let (done, outcomes) = mpsc::channel();
        for _ in 0..50 {
            readers.submit(answering(&done)).unwrap();
        }
        assert!(
            outcomes.try_recv().is_err(),
            "nothing runs while the thread is held"
        );
        drop(release);
        for _ in 0..50 {
            let outcome = outcomes.recv_timeout(Duration::from_secs(5)).unwrap();
            assert!(outcome.is_ok(), "{outcome:?}");
        }
    }

    #[test]
    fn a_full_queue_refuses_at_once_and_the_queued_reads_still_run() {
        let (readers, release) = held_reader(2);

        let (done, outcomes) = mpsc::channel();
        readers.submit(answering(&done)).unwrap();
        readers.submit(answering(&done)).unwrap();
        assert!(matches!(
            readers.submit(answering(&done)),
            Err(RepositoryError::Overloaded)
        ));
        drop(release);
        for _ in 0..2 {
            let outcome = outcomes.recv_timeout(Duration::from_secs(5)).unwrap();
            assert!(outcome.is_ok(), "{outcome:?}");
        }
        assert!(
            outcomes.recv_timeout(Duration::from_millis(200)).is_err(),
            "the refused read never runs"
        );
    }

    #[test]
    fn a_read_that_panics_loses_only_its_own_answer() {
        let (readers, release) = held_reader(8);

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
        let outcome = outcomes.recv_timeout(Duration::from_secs(5)).unwrap();
        assert!(outcome.is_ok(), "the read after it still runs: {outcome:?}");
        readers.submit(answering(&done)).unwrap();
        let outcome = outcomes.recv_timeout(Duration::from_secs(5)).unwrap();
        assert!(outcome.is_ok(), "the thread still serves: {outcome:?}");
    }

    #[test]
    fn without_a_connection_every_read_is_told_unavailable() {
        let readers = ReaderThreads::spawn(
            &pool_of("/nonexistent-directory/chat.db"),
            1,
            8,
            "test-reader",
        )
        .unwrap();
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
