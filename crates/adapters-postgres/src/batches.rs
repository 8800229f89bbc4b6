//! Group commit for appends. Each exchange committed on its own costs PostgreSQL a WAL flush, and
//! a request holds a pooled connection for that whole round trip; exchanges queued by concurrent
//! requests are instead written in one transaction per batch, so they share the flush.
//!
//! A batch first runs in one transaction as few statements: one `UPDATE` per conversation claims
//! the positions of all its queued exchanges, and one `INSERT` writes every message of the batch.
//! Appends to a missing conversation fail there without touching anything. If the `INSERT` finds
//! a message id taken, that attempt is rolled back and the batch runs again with each append as
//! its own statement in its own savepoint, so the refusal undoes only itself. Any other failure
//! rolls the whole batch back and answers every requester with it. Requesters are answered after
//! the commit.
//!
//! Two batches may be in flight. Each locks conversation rows in one order (by id), so two
//! batches, here or on another replica, never wait for each other in a cycle, and one
//! conversation's exchanges keep their queue order within a batch.

use std::sync::Arc;

use diesel::connection::Connection;
use diesel::pg::PgConnection;
use diesel::result::{DatabaseErrorKind, Error as DieselError, OptionalExtension};
use diesel::sql_types::{Array, BigInt, Text, Uuid as SqlUuid};
use diesel::{QueryableByName, RunQueryDsl};
use domain::{Exchange, NewExchange, RepositoryError, Role};
use tokio::sync::{mpsc, oneshot, Semaphore};
use uuid::Uuid;

use crate::{append, checkout, map_error, stored_message, PgPool};

/// Claims the next `$2` positions of a conversation and moves its `updated_at` forward (never
/// back); no row when the conversation is missing.
const CLAIM_POSITIONS: &str = "\
    UPDATE conversations \
    SET last_position = last_position + $2, updated_at = GREATEST(updated_at, $3) \
    WHERE id = $1 \
    RETURNING last_position";

/// Every message of a batch in one statement, column by column.
const INSERT_MESSAGES: &str = "\
    INSERT INTO messages (id, conversation_id, position, role, content, created_at) \
    SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::bigint[], $4::text[], $5::text[], \
                         $6::bigint[])";

#[derive(QueryableByName)]
struct LastPosition {
    #[diesel(sql_type = BigInt)]
    last_position: i64,
}

/// The messages of a batch as `INSERT_MESSAGES` binds them.
#[derive(Default)]
struct MessageColumns<'a> {
    ids: Vec<Uuid>,
    conversation_ids: Vec<Uuid>,
    positions: Vec<i64>,
    roles: Vec<&'static str>,
    contents: Vec<&'a str>,
    created_at: Vec<i64>,
}

struct QueuedAppend {
    exchange: NewExchange,
    requester: oneshot::Sender<Result<Exchange, RepositoryError>>,
}

/// Cheap to clone; every clone feeds the same batches.
#[derive(Debug, Clone)]
pub(crate) struct AppendBatches {
    queue: mpsc::Sender<QueuedAppend>,
}

impl AppendBatches {
    /// Starts the task that forms batches; needs a Tokio runtime.
    pub(crate) fn start(
        pool: PgPool,
        capacity: usize,
        max_batch: usize,
        batches_in_flight: usize,
    ) -> Self {
        let (queue, queued) = mpsc::channel(capacity.max(1));
        tokio::spawn(form_batches(
            pool,
            queued,
            max_batch.max(1),
            Arc::new(Semaphore::new(batches_in_flight.max(1))),
        ));
        Self { queue }
    }

    /// Appends in the next batch and resolves once that batch has committed. Fails at once with
    /// `Overloaded` when the queue is full.
    pub(crate) async fn append(&self, exchange: NewExchange) -> Result<Exchange, RepositoryError> {
        let (requester, answer) = oneshot::channel();
        self.queue
            .try_send(QueuedAppend {
                exchange,
                requester,
            })
            .map_err(|error| match error {
                mpsc::error::TrySendError::Full(_) => {
                    metrics::counter!("storage_writer_rejected_total").increment(1);
                    RepositoryError::Overloaded
                }
                mpsc::error::TrySendError::Closed(_) => {
                    RepositoryError::Unavailable("the PostgreSQL writer has stopped".to_owned())
                }
            })?;
        answer.await.map_err(|_| {
            RepositoryError::Unavailable("the append was dropped unanswered".to_owned())
        })?
    }
}

async fn form_batches(
    pool: PgPool,
    mut queued: mpsc::Receiver<QueuedAppend>,
    max_batch: usize,
    in_flight: Arc<Semaphore>,
) {
    // Waiting for a free slot before taking jobs lets the queue fill meanwhile: the busier the
    // database, the larger the next batch.
    while let Ok(slot) = Arc::clone(&in_flight).acquire_owned().await {
        let Some(first) = queued.recv().await else {
            return;
        };
        let mut batch = vec![first];
        while batch.len() < max_batch {
            match queued.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        metrics::histogram!("storage_writer_batch_size").record(batch.len() as f64);
        let pool = pool.clone();
        tokio::task::spawn_blocking(move || {
            write_batch(&pool, batch);
            drop(slot);
        });
    }
}

/// Why the first, savepoint-free attempt at a batch was abandoned.
enum TogetherError {
    /// A message id was taken: the batch runs again with a savepoint per append.
    JobFailed,
    Storage(DieselError),
}

/// Why the attempt with a savepoint per append was abandoned: an append failed for more than its
/// own reasons (connection lost, timeout), so the whole batch is rolled back.
enum IsolatedError {
    Append(RepositoryError),
    Storage(DieselError),
}

impl From<DieselError> for IsolatedError {
    fn from(error: DieselError) -> Self {
        Self::Storage(error)
    }
}

impl From<DieselError> for TogetherError {
    fn from(error: DieselError) -> Self {
        Self::Storage(error)
    }
}

fn write_batch(pool: &PgPool, mut batch: Vec<QueuedAppend>) {
    batch.sort_by_key(|job| job.exchange.conversation_id.as_uuid());
    let mut connection = match checkout(pool) {
        Ok(connection) => connection,
        Err(error) => return answer_all(batch, &error),
    };
    let together = connection.transaction(|connection| write_together(connection, &batch));
    let outcomes = match together {
        Ok(outcomes) => outcomes,
        Err(TogetherError::Storage(error)) => return answer_all(batch, &map_error(error)),
        Err(TogetherError::JobFailed) => {
            metrics::counter!("storage_writer_isolated_batches_total").increment(1);
            match connection.transaction(|connection| write_isolated(connection, &batch)) {
                Ok(outcomes) => outcomes,
                Err(IsolatedError::Storage(error)) => return answer_all(batch, &map_error(error)),
                Err(IsolatedError::Append(error)) => return answer_all(batch, &error),
            }
        }
    };
    for (job, outcome) in batch.into_iter().zip(outcomes) {
        // The requester may have gone away; the exchange is committed all the same.
        let _ = job.requester.send(outcome);
    }
}

/// The batch in as few statements as possible; any failure of the `INSERT` abandons the attempt.
fn write_together(
    connection: &mut PgConnection,
    batch: &[QueuedAppend],
) -> Result<Vec<Result<Exchange, RepositoryError>>, TogetherError> {
    let mut outcomes = Vec::with_capacity(batch.len());
    let mut columns = MessageColumns::default();
    for group in batch.chunk_by(|a, b| a.exchange.conversation_id == b.exchange.conversation_id) {
        let conversation_id = group[0].exchange.conversation_id;
        let newest = group
            .iter()
            .map(|job| job.exchange.assistant.created_at.unix_micros())
            .fold(i64::MIN, i64::max);
        let claimed = i64::try_from(2 * group.len()).unwrap_or(i64::MAX);
        let last_position = diesel::sql_query(CLAIM_POSITIONS)
            .bind::<SqlUuid, _>(conversation_id.as_uuid())
            .bind::<BigInt, _>(claimed)
            .bind::<BigInt, _>(newest)
            .get_result::<LastPosition>(connection)
            .optional()?;
        let Some(LastPosition { last_position }) = last_position else {
            outcomes.extend(group.iter().map(|_| Err(RepositoryError::NotFound)));
            continue;
        };
        let mut user_position = last_position - claimed + 1;
        for job in group {
            let exchange = &job.exchange;
            for (message, role, position) in [
                (&exchange.user, Role::User, user_position),
                (&exchange.assistant, Role::Assistant, user_position + 1),
            ] {
                columns.ids.push(message.id.as_uuid());
                columns.conversation_ids.push(conversation_id.as_uuid());
                columns.positions.push(position);
                columns.roles.push(role.as_str());
                columns.contents.push(&message.content);
                columns.created_at.push(message.created_at.unix_micros());
            }
            outcomes.push(Ok(Exchange {
                user_message: stored_message(
                    conversation_id,
                    &exchange.user,
                    Role::User,
                    user_position,
                ),
                assistant_message: stored_message(
                    conversation_id,
                    &exchange.assistant,
                    Role::Assistant,
                    user_position + 1,
                ),
            }));
            user_position += 2;
        }
    }
    if !columns.ids.is_empty() {
        diesel::sql_query(INSERT_MESSAGES)
            .bind::<Array<SqlUuid>, _>(&columns.ids)
            .bind::<Array<SqlUuid>, _>(&columns.conversation_ids)
            .bind::<Array<BigInt>, _>(&columns.positions)
            .bind::<Array<Text>, _>(&columns.roles)
            .bind::<Array<Text>, _>(&columns.contents)
            .bind::<Array<BigInt>, _>(&columns.created_at)
            .execute(connection)
            .map_err(|error| match error {
                DieselError::DatabaseError(DatabaseErrorKind::UniqueViolation, _) => {
                    TogetherError::JobFailed
                }
                other => TogetherError::Storage(other),
            })?;
    }
    Ok(outcomes)
}

/// Each append as its own statement in its own savepoint. Appends refused for their own reasons
/// (a missing conversation, a taken id) fail alone.
fn write_isolated(
    connection: &mut PgConnection,
    batch: &[QueuedAppend],
) -> Result<Vec<Result<Exchange, RepositoryError>>, IsolatedError> {
    let mut outcomes = Vec::with_capacity(batch.len());
    for job in batch {
        // A nested transaction is a savepoint: a failure undoes only this append.
        let outcome = connection
            .transaction(|connection| append(connection, &job.exchange))
            .map_err(map_error);
        match outcome {
            Ok(_) | Err(RepositoryError::NotFound | RepositoryError::Conflict) => {
                outcomes.push(outcome);
            }
            Err(error) => return Err(IsolatedError::Append(error)),
        }
    }
    Ok(outcomes)
}

/// Nothing of the batch was committed: every requester gets the error.
fn answer_all(batch: Vec<QueuedAppend>, error: &RepositoryError) {
    tracing::error!(%error, appends = batch.len(), "PostgreSQL append batch failed");
    for job in batch {
        let _ = job.requester.send(Err(error.for_another_caller()));
    }
}
