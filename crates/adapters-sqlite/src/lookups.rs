//! Conversation lookups answered by one thread that takes every queued lookup at each wake-up.
//!
//! Every v1 send checks its conversation before the assistant is asked. Sent to Tokio's blocking
//! pool, each check woke a blocking thread and put it back to sleep, which cost more CPU than
//! the indexed query itself (a v1 send used 54 µs of CPU against 22 µs for a seed send, which
//! does not check). This thread sleeps until a lookup arrives, then answers everything queued by
//! then from one pooled reader connection, so wake-ups are paid per batch. Like every read, an
//! answer carries the last commit its query may have seen; the caller shows it only once that
//! commit is durable.

use std::sync::mpsc::{sync_channel, Receiver, SyncSender};

use diesel::r2d2::{ConnectionManager, Pool};
use diesel::sqlite::SqliteConnection;
use domain::{Conversation, ConversationId, RepositoryError};
use tokio::sync::oneshot;

use crate::errors::{from_diesel, unavailable};
use crate::queries;
use crate::writer::Writer;

/// Lookups that may wait for the thread; one more is read through the pool instead.
const QUEUE_CAPACITY: usize = 1024;
/// Most lookups answered on one checked-out connection, so other readers get their turn.
const MAX_BATCH: usize = 256;

/// A lookup's outcome and the last commit its query may have seen.
pub(crate) type Found = (Result<Conversation, RepositoryError>, u64);

struct Lookup {
    id: ConversationId,
    answer: oneshot::Sender<Found>,
}

#[derive(Debug, Clone)]
pub(crate) struct ConversationLookups {
    queue: SyncSender<Lookup>,
}

impl ConversationLookups {
    pub(crate) fn spawn(
        readers: Pool<ConnectionManager<SqliteConnection>>,
        writer: Writer,
    ) -> std::io::Result<Self> {
        let (queue, lookups) = sync_channel(QUEUE_CAPACITY);
        std::thread::Builder::new()
            .name("sqlite-lookups".to_owned())
            .spawn(move || serve(&lookups, &readers, &writer))?;
        Ok(Self { queue })
    }

    /// The conversation with its commit, or `None` when the queue is full or the thread has
    /// stopped: the caller then reads through the pool, so a lookup is never refused here.
    pub(crate) async fn find(&self, id: ConversationId) -> Option<Found> {
        let (answer, answered) = oneshot::channel();
        self.queue.try_send(Lookup { id, answer }).ok()?;
        answered.await.ok()
    }
}

fn serve(
    lookups: &Receiver<Lookup>,
    readers: &Pool<ConnectionManager<SqliteConnection>>,
    writer: &Writer,
) {
    while let Ok(first) = lookups.recv() {
        let batch: Vec<Lookup> = std::iter::once(first)
            .chain(lookups.try_iter().take(MAX_BATCH - 1))
            .collect();
        let mut reader = match readers.get() {
            Ok(reader) => reader,
            Err(error) => {
                let error = unavailable(error);
                for lookup in batch {
                    let _ = lookup.answer.send((Err(error.for_another_caller()), 0));
                }
                continue;
            }
        };
        for lookup in batch {
            let found = writer.noting_commits(|| {
                queries::find_conversation(&mut reader, lookup.id).map_err(from_diesel)
            });
            // A requester that went away needs no answer.
            let _ = lookup.answer.send(found);
        }
    }
}
