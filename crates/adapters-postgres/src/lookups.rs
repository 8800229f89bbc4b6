//! Conversation lookups grouped into one query.
//!
//! Every v1 send checks its conversation before the assistant is asked. One at a time, each
//! check took a pooled connection, a hop to a blocking thread and a round trip to PostgreSQL.
//! Here lookups queue, and one `SELECT … WHERE id = ANY($1)` answers every lookup queued while
//! the previous one ran: the busier the server, the more one round trip answers.

use std::collections::HashMap;

use diesel::prelude::*;
use domain::{Conversation, ConversationId, RepositoryError};
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use crate::schema::conversations;
use crate::{checkout, map_error, ConversationRow, PgPool};

/// Lookups that may wait; one more is read on its own instead.
const QUEUE_CAPACITY: usize = 1024;
/// Most conversations asked for in one query.
const MAX_BATCH: usize = 256;

struct Lookup {
    id: ConversationId,
    answer: oneshot::Sender<Result<Conversation, RepositoryError>>,
}

#[derive(Debug, Clone)]
pub(crate) struct ConversationLookups {
    queue: mpsc::Sender<Lookup>,
}

impl ConversationLookups {
    /// Starts the task that runs the queries; call it inside the Tokio runtime.
    pub(crate) fn start(pool: PgPool) -> Self {
        let (queue, queued) = mpsc::channel(QUEUE_CAPACITY);
        tokio::spawn(serve(pool, queued));
        Self { queue }
    }

    /// The conversation, or `None` when the queue is full or its task has stopped: the caller
    /// then reads it on its own, so a lookup is never refused here.
    pub(crate) async fn find(
        &self,
        id: ConversationId,
    ) -> Option<Result<Conversation, RepositoryError>> {
        let (answer, answered) = oneshot::channel();
        self.queue.try_send(Lookup { id, answer }).ok()?;
        answered.await.ok()
    }
}

async fn serve(pool: PgPool, mut queued: mpsc::Receiver<Lookup>) {
    while let Some(first) = queued.recv().await {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match queued.try_recv() {
                Ok(lookup) => batch.push(lookup),
                Err(_) => break,
            }
        }
        let pool = pool.clone();
        // A panicking batch drops its answers, and those callers read on their own.
        let _ = tokio::task::spawn_blocking(move || answer_batch(&pool, batch)).await;
    }
}

fn answer_batch(pool: &PgPool, batch: Vec<Lookup>) {
    let ids: Vec<Uuid> = batch.iter().map(|lookup| lookup.id.as_uuid()).collect();
    let found = checkout(pool).and_then(|mut connection| {
        conversations::table
            .filter(conversations::id.eq_any(&ids))
            .select(ConversationRow::as_select())
            .load(&mut connection)
            .map_err(map_error)
    });
    match found {
        Ok(rows) => {
            let by_id: HashMap<Uuid, Conversation> = rows
                .into_iter()
                .map(|row| (row.id, Conversation::from(row)))
                .collect();
            for lookup in batch {
                let conversation = by_id
                    .get(&lookup.id.as_uuid())
                    .cloned()
                    .ok_or(RepositoryError::NotFound);
                let _ = lookup.answer.send(conversation);
            }
        }
        Err(error) => {
            for lookup in batch {
                let _ = lookup.answer.send(Err(error.for_another_caller()));
            }
        }
    }
}
