//! Group commit for appends. Each exchange committed on its own costs PostgreSQL a WAL flush, and
//! a request holds a pooled connection for that whole round trip; exchanges queued by concurrent
//! requests are instead written in one transaction per batch, so they share the flush.
//!
//! A batch first runs as one call of the `append_exchange_batch` function (created by a
//! migration), committed on its own: one round trip where `BEGIN`, an `UPDATE` per conversation,
//! the `INSERT` and `COMMIT` took four or more, each a wake-up of PostgreSQL's backend and of this
//! thread. The function claims the positions of each conversation's queued exchanges with one
//! `UPDATE` and writes every message of the batch with one `INSERT`. Appends to a missing
//! conversation fail there without touching anything. If PostgreSQL refuses the call for what one
//! append holds (a message id taken, text it cannot store), the call stores nothing and the batch
//! runs again in a transaction with each append as its own statement in its own savepoint, so the
//! refusal undoes only itself. A failure of the database as a whole (connection lost, timeout)
//! answers every requester with it, but only once PostgreSQL, asked on another connection, says
//! the batch's messages are not there: a connection lost with the answer on its way leaves a
//! committed batch looking failed, and a client told "nothing stored" would send it again.
//! Requesters are answered after the commit.
//!
//! Two batches may be in flight. Each locks conversation rows in one order (by id), so two
//! batches, here or on another replica, never wait for each other in a cycle, and one
//! conversation's exchanges keep their queue order within a batch.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use diesel::connection::Connection;
use diesel::pg::PgConnection;
use diesel::result::Error as DieselError;
use diesel::sql_types::{Array, BigInt, Nullable, Text, Uuid as SqlUuid};
use diesel::{QueryableByName, RunQueryDsl};
use domain::{Exchange, NewExchange, RepositoryError, Role, WAIT_FOR_ROOM_LIMIT};
use tokio::sync::{mpsc, oneshot, Semaphore};
use uuid::Uuid;

use crate::{append, checkout, is_missing_schema, is_refusal, map_error, stored_message, PgPool};

/// What an append does when the queue is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WhenFull {
    /// Answers `Overloaded` at once: the caller can still refuse its request cleanly.
    Refuse,
    /// Waits for room: a reply already shown.
    WaitForRoom,
}

/// How long a batch whose statement failed keeps asking PostgreSQL whether it was committed all
/// the same (while PostgreSQL cannot answer), before its requesters get the failure anyway.
const OUTCOME_PATIENCE: Duration = Duration::from_secs(30);
/// Pause between two such questions.
const OUTCOME_RETRY_INTERVAL: Duration = Duration::from_millis(500);

/// The positions of the messages with these ids that are stored.
const STORED_POSITIONS: &str = "SELECT id, position FROM messages WHERE id = ANY($1)";
/// Takes the lock a batch's claim of positions takes on each of its conversations, so waits for a
/// batch still running on them.
const LOCK_CONVERSATIONS: &str =
    "SELECT 1 FROM conversations WHERE id = ANY($1) ORDER BY id FOR NO KEY UPDATE";
/// How long [`LOCK_CONVERSATIONS`] waits for a batch still running, per question.
const OUTCOME_LOCK_TIMEOUT: &str = "SET LOCAL lock_timeout = '10s'";

#[derive(QueryableByName)]
struct StoredPosition {
    #[diesel(sql_type = SqlUuid)]
    id: Uuid,
    #[diesel(sql_type = BigInt)]
    position: i64,
}

/// The whole batch in one round trip, committed on its own: see the migration that creates
/// `append_exchange_batch`.
const APPEND_BATCH: &str =
    "SELECT append_exchange_batch($1, $2, $3, $4, $5, $6, $7, $8, $9) AS bases";

#[derive(QueryableByName)]
struct Bases {
    /// Per conversation, in the order sent: its last position before the batch's claim, or
    /// `None` when it does not exist.
    #[diesel(sql_type = Array<Nullable<BigInt>>)]
    bases: Vec<Option<i64>>,
}

/// The conversations of a batch as `APPEND_BATCH` binds them, sorted by id.
#[derive(Default)]
struct ConversationColumns {
    ids: Vec<Uuid>,
    claimed: Vec<i64>,
    newest: Vec<i64>,
}

/// The messages of a batch as `APPEND_BATCH` binds them; a message's position is its
/// conversation's base plus its offset.
#[derive(Default)]
struct MessageColumns<'a> {
    ids: Vec<Uuid>,
    conversation_ids: Vec<Uuid>,
    offsets: Vec<i64>,
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

    /// Appends in the next batch and resolves once that batch has committed. A full queue is
    /// `Overloaded` at once, or waited out for up to [`WAIT_FOR_ROOM_LIMIT`].
    pub(crate) async fn append(
        &self,
        exchange: NewExchange,
        when_full: WhenFull,
    ) -> Result<Exchange, RepositoryError> {
        let (requester, answer) = oneshot::channel();
        let append = QueuedAppend {
            exchange,
            requester,
        };
        let stopped =
            || RepositoryError::Unavailable("the PostgreSQL writer has stopped".to_owned());
        let overloaded = || {
            metrics::counter!("storage_writer_rejected_total").increment(1);
            RepositoryError::Overloaded
        };
        if when_full == WhenFull::WaitForRoom {
            tokio::time::timeout(WAIT_FOR_ROOM_LIMIT, self.queue.send(append))
                .await
                .map_err(|_| overloaded())?
                .map_err(|_| stopped())?;
        } else {
            self.queue.try_send(append).map_err(|error| match error {
                mpsc::error::TrySendError::Full(_) => overloaded(),
                mpsc::error::TrySendError::Closed(_) => stopped(),
            })?;
        }
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
    /// PostgreSQL refused what an append holds: the batch runs again with a savepoint per append.
    Refused,
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
    let together = write_together(&mut connection, &batch);
    let outcomes = match together {
        Ok(outcomes) => outcomes,
        Err(TogetherError::Storage(error)) => {
            drop(connection);
            return settle(pool, batch, &map_error(error));
        }
        Err(TogetherError::Refused) => {
            metrics::counter!("storage_writer_isolated_batches_total").increment(1);
            match connection.transaction(|connection| write_isolated(connection, &batch)) {
                Ok(outcomes) => outcomes,
                // Its `COMMIT` (or `BEGIN`, or `ROLLBACK`) failed.
                Err(IsolatedError::Storage(error)) => {
                    drop(connection);
                    return settle(pool, batch, &map_error(error));
                }
                // Failed before its `COMMIT`: nothing of it was committed.
                Err(IsolatedError::Append(error)) => return answer_all(batch, &error),
            }
        }
    };
    for (job, outcome) in batch.into_iter().zip(outcomes) {
        // The requester may have gone away; the exchange is committed all the same.
        let _ = job.requester.send(outcome);
    }
}

/// The batch in one statement; a refusal of what an append holds abandons the attempt, which
/// then stored nothing.
fn write_together(
    connection: &mut PgConnection,
    batch: &[QueuedAppend],
) -> Result<Vec<Result<Exchange, RepositoryError>>, TogetherError> {
    let mut conversations = ConversationColumns::default();
    let mut messages = MessageColumns::default();
    for group in conversation_groups(batch) {
        let conversation_id = group[0].exchange.conversation_id.as_uuid();
        conversations.ids.push(conversation_id);
        conversations
            .claimed
            .push(i64::try_from(2 * group.len()).unwrap_or(i64::MAX));
        conversations.newest.push(
            group
                .iter()
                .map(|job| job.exchange.assistant.created_at.unix_micros())
                .fold(i64::MIN, i64::max),
        );
        for (user_offset, job) in (1..).step_by(2).zip(group) {
            let exchange = &job.exchange;
            for (message, role, offset) in [
                (&exchange.user, Role::User, user_offset),
                (&exchange.assistant, Role::Assistant, user_offset + 1),
            ] {
                messages.ids.push(message.id.as_uuid());
                messages.conversation_ids.push(conversation_id);
                messages.offsets.push(offset);
                messages.roles.push(role.as_str());
                messages.contents.push(&message.content);
                messages.created_at.push(message.created_at.unix_micros());
            }
        }
    }
    let Bases { bases } = diesel::sql_query(APPEND_BATCH)
        .bind::<Array<SqlUuid>, _>(&conversations.ids)
        .bind::<Array<BigInt>, _>(&conversations.claimed)
        .bind::<Array<BigInt>, _>(&conversations.newest)
        .bind::<Array<SqlUuid>, _>(&messages.ids)
        .bind::<Array<SqlUuid>, _>(&messages.conversation_ids)
        .bind::<Array<BigInt>, _>(&messages.offsets)
        .bind::<Array<Text>, _>(&messages.roles)
        .bind::<Array<Text>, _>(&messages.contents)
        .bind::<Array<BigInt>, _>(&messages.created_at)
        .get_result(connection)
        .map_err(|error| {
            if is_refusal(&error) {
                TogetherError::Refused
            } else {
                TogetherError::Storage(error)
            }
        })?;
    let mut outcomes = Vec::with_capacity(batch.len());
    for (group, base) in conversation_groups(batch).zip(bases) {
        let Some(base) = base else {
            outcomes.extend(group.iter().map(|_| Err(RepositoryError::NotFound)));
            continue;
        };
        let conversation_id = group[0].exchange.conversation_id;
        for (user_position, job) in (base + 1..).step_by(2).zip(group) {
            let exchange = &job.exchange;
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
        }
    }
    Ok(outcomes)
}

/// The batch's runs of appends to one conversation (the batch is sorted by conversation).
fn conversation_groups(batch: &[QueuedAppend]) -> impl Iterator<Item = &[QueuedAppend]> {
    batch.chunk_by(|a, b| a.exchange.conversation_id == b.exchange.conversation_id)
}

/// Each append as its own statement in its own savepoint. Appends refused for their own reasons
/// (a missing conversation, a taken id, text PostgreSQL cannot store) fail alone.
fn write_isolated(
    connection: &mut PgConnection,
    batch: &[QueuedAppend],
) -> Result<Vec<Result<Exchange, RepositoryError>>, IsolatedError> {
    let mut outcomes = Vec::with_capacity(batch.len());
    for job in batch {
        // A nested transaction is a savepoint: a failure undoes only this append.
        match connection.transaction(|connection| append(connection, &job.exchange)) {
            Ok(exchange) => outcomes.push(Ok(exchange)),
            Err(error) if matches!(error, DieselError::NotFound) || is_refusal(&error) => {
                outcomes.push(Err(map_error(error)));
            }
            Err(error) => return Err(IsolatedError::Append(map_error(error))),
        }
    }
    Ok(outcomes)
}

/// The batch failed with `error` after it was sent, which may have been committed all the same:
/// a connection lost while the answer was on its way looks like any failure. Whatever of it the
/// database holds, asked on another connection, is answered as stored (the batch is one
/// transaction: in practice all of it or none); the rest gets `error`. While the database cannot
/// say, for up to [`OUTCOME_PATIENCE`], the requesters wait: told "nothing stored" wrongly, a
/// client would send its message again, and it would be stored twice.
fn settle(pool: &PgPool, batch: Vec<QueuedAppend>, error: &RepositoryError) {
    let asked_until = Instant::now() + OUTCOME_PATIENCE;
    let stored = loop {
        let asked = checkout(pool).and_then(|mut connection| {
            match stored_positions(&mut connection, &batch) {
                // Without its tables the database holds nothing of the batch.
                Err(DieselError::DatabaseError(_, info)) if is_missing_schema(info.message()) => {
                    Ok(HashMap::new())
                }
                asked => asked.map_err(map_error),
            }
        });
        match asked {
            Ok(stored) => break stored,
            Err(lookup) if Instant::now() >= asked_until => {
                tracing::error!(%error, %lookup, appends = batch.len(), "whether a failed PostgreSQL append batch was committed is unknown");
                return answer_all(batch, error);
            }
            Err(_) => std::thread::sleep(OUTCOME_RETRY_INTERVAL),
        }
    };
    if stored.is_empty() {
        return answer_all(batch, error);
    }
    tracing::warn!(%error, appends = batch.len(), stored = stored.len() / 2, "a PostgreSQL append batch was committed although its statement failed");
    for job in batch {
        let exchange = &job.exchange;
        let outcome = match stored.get(&exchange.user.id.as_uuid()) {
            Some(&user_position) => Ok(Exchange {
                user_message: stored_message(
                    exchange.conversation_id,
                    &exchange.user,
                    Role::User,
                    user_position,
                ),
                assistant_message: stored_message(
                    exchange.conversation_id,
                    &exchange.assistant,
                    Role::Assistant,
                    user_position + 1,
                ),
            }),
            None => Err(error.for_another_caller()),
        };
        let _ = job.requester.send(outcome);
    }
}

/// The positions of the batch's messages that are stored, by id. A statement whose client
/// vanished runs on in its backend (which notices only when it next writes to the client) and
/// may commit later: it holds its conversations' rows from its claim of positions until then, so
/// the look waits for those rows first and sees what that statement did.
fn stored_positions(
    connection: &mut PgConnection,
    batch: &[QueuedAppend],
) -> Result<HashMap<Uuid, i64>, DieselError> {
    let conversations: Vec<Uuid> = conversation_groups(batch)
        .map(|group| group[0].exchange.conversation_id.as_uuid())
        .collect();
    let ids: Vec<Uuid> = batch
        .iter()
        .flat_map(|job| [job.exchange.user.id, job.exchange.assistant.id])
        .map(|id| id.as_uuid())
        .collect();
    connection.transaction(|connection| {
        diesel::sql_query(OUTCOME_LOCK_TIMEOUT).execute(connection)?;
        diesel::sql_query(LOCK_CONVERSATIONS)
            .bind::<Array<SqlUuid>, _>(&conversations)
            .execute(connection)?;
        let rows: Vec<StoredPosition> = diesel::sql_query(STORED_POSITIONS)
            .bind::<Array<SqlUuid>, _>(&ids)
            .load(connection)?;
        Ok(rows.into_iter().map(|row| (row.id, row.position)).collect())
    })
}

/// Nothing of the batch was committed: every requester gets the error.
fn answer_all(batch: Vec<QueuedAppend>, error: &RepositoryError) {
    tracing::error!(%error, appends = batch.len(), "PostgreSQL append batch failed");
    for job in batch {
        let _ = job.requester.send(Err(error.for_another_caller()));
    }
}
