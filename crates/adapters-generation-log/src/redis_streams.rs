use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use domain::{
    ChosenId, ConversationId, GenerationEvent, GenerationEvents, GenerationId, GenerationLog,
    GenerationLogError, GenerationState,
};
use futures::stream::{self, BoxStream, StreamExt};
use redis::aio::{ConnectionManager, ConnectionManagerConfig, MultiplexedConnection};
use redis::streams::{StreamId, StreamRangeReply, StreamReadOptions, StreamReadReply};
use redis::{AsyncCommands, AsyncConnectionConfig, Client, SetExpiry, SetOptions, Value};
use tokio::sync::watch;

/// A generation that never finishes (its replica died mid-reply) is dropped after this long.
const UNFINISHED_LIFETIME_SECS: u64 = 3600;
/// How long a stop of a generation that has logged nothing yet lasts.
const STOP_BEFORE_START_LIFETIME_SECS: u64 = 60;

/// [`GenerationLog::claim`], in one step on the server, so that of two replicas claiming one id
/// at once one only wins: a logged generation's id (KEYS[1], its stream) is taken; one stopped in
/// this conversation (KEYS[2], its stop key) is stopped; otherwise `SET NX` of the claim key to the
/// conversation's id (ARGV[1]), for ARGV[2] milliseconds (renewed by the claiming process while
/// it holds the claim), decides.
const CLAIM_SCRIPT: &str = r#"
if redis.call('EXISTS', KEYS[1]) == 1 then return 'taken' end
if redis.call('EXISTS', KEYS[2]) == 1 then return 'stopped' end
if redis.call('SET', KEYS[3], ARGV[1], 'NX', 'PX', ARGV[2]) then return 'claimed' end
return 'taken'
"#;
/// At most this many of a conversation's running generations are looked at, newest first, to find
/// one that is still running (the others may have died with their replica).
const RUNNING_CHECKED: isize = 16;
/// How long one blocking read waits before checking that the log still exists.
const BLOCK_MILLIS: usize = 2000;
/// A blocking read's answer comes after up to `BLOCK_MILLIS`; its connection waits this much
/// longer before calling Redis unreachable (the library's default of 500 ms would end every
/// follower at the first pause between two tokens).
const BLOCKING_READ_MARGIN: Duration = Duration::from_secs(2);
/// How long a generation's liveness key, or a claim's key, lives unless its process renews it.
/// Once a liveness key is gone the generation is abandoned: its replica died (killed, out of
/// memory) or its writer gave up logging its end, so nothing more will come of it. Once a claim's
/// key is gone the id is free again: its replica died while the send waited for its model. Redis
/// expires keys by its own clock, so the replicas' clocks do not matter, and a process renews
/// them however long its model is silent.
const LIVENESS: Duration = Duration::from_secs(15);
/// How often a process renews the liveness keys of the generations it writes and the keys of
/// the claims it holds: three times in a key's life, so one slow round does not let a key expire.
const HEARTBEAT: Duration = Duration::from_secs(5);
/// The field of every entry whose writer keeps the generation's liveness key. Entries written
/// before there were liveness keys lack it; theirs is judged by the time they were logged.
const KEEPS_ALIVE: &str = "alive";
/// A follower gives up on a generation of the older kind (its entries without [`KEEPS_ALIVE`])
/// that logged nothing for this many blocking reads (two minutes).
const IDLE_READS: u32 = 60;
/// A generation of the older kind that logged nothing for as long as such a follower waits is
/// abandoned.
const ABANDONED_AFTER_MILLIS: u128 = BLOCK_MILLIS as u128 * IDLE_READS as u128;
/// Redis's refusal of an `XADD` whose id is not above the stream's last one.
const ALREADY_WRITTEN: &str = "equal or smaller than the target stream top item";

/// Generation logs in Redis Streams: one stream per generation, entry ids `<sequence>-0`, so any
/// replica sharing the Redis can replay and follow any reply.
#[derive(Clone)]
pub struct RedisGenerationLog {
    client: Client,
    commands: ConnectionManager,
    prefix: String,
    ttl: Duration,
    /// The generations this process is writing; a generation has one writer.
    writing: Arc<Mutex<HashMap<GenerationId, Writing>>>,
    claims: Arc<Claims>,
}

/// The chosen ids this process claimed and has not given up, each with its conversation, and the
/// lock a renewal round holds: a claim given up during a round is deleted after the round has
/// set its key again, not before.
#[derive(Default)]
struct Claims {
    held: Mutex<HashMap<GenerationId, ConversationId>>,
    round: tokio::sync::Mutex<()>,
}

impl Claims {
    fn held(&self) -> std::sync::MutexGuard<'_, HashMap<GenerationId, ConversationId>> {
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A generation this process is writing.
#[derive(Debug, Clone)]
struct Writing {
    conversation: ConversationId,
    /// Its events as logged, for its followers in this process.
    mirror: Arc<Mirror>,
    /// The sequence of its last event in the stream (0 before the first).
    last: u64,
    /// When it began or last logged an event; its stream expires `UNFINISHED_LIFETIME_SECS` later.
    touched: Instant,
    /// Its final event has been tried: its liveness key is no longer renewed, so that a final
    /// event that cannot be logged leaves the generation abandoned rather than running forever.
    finishing: bool,
}

/// The events of a generation this process writes, each copied here once Redis has it: followers
/// in this process (the client that sent the message, above all) read them from memory instead of
/// each holding a Redis connection for blocking reads. Where the stream is whole they see the
/// same events in the same order as a follower reading it, and they go over to the stream when
/// this copy cannot tell them more: an append failed, or the writer is done without a final
/// event here ([`RedisGenerationLog::follow_mirror`]).
#[derive(Debug)]
struct Mirror {
    events: Mutex<MirroredEvents>,
    /// Wakes the followers here on every copy, as a blocking read of the stream would.
    appended: watch::Sender<()>,
}

#[derive(Debug, Default)]
struct MirroredEvents {
    /// Each event, in sequence order from 1, and whether it is the final one, after which a
    /// follower stops.
    events: Vec<(GenerationEvent, bool)>,
    /// An event did not follow the one before, or an append failed: the stream has the answer
    /// (an entry written by an attempt given up on, an error), this copy not, so followers read
    /// the stream from then on.
    diverged: bool,
}

impl MirroredEvents {
    /// What was copied is no longer needed once followers read the stream.
    fn let_go(&mut self) {
        self.diverged = true;
        self.events = Vec::new();
    }
}

impl Mirror {
    fn new() -> Self {
        Self {
            events: Mutex::default(),
            appended: watch::Sender::new(()),
        }
    }

    fn events(&self) -> std::sync::MutexGuard<'_, MirroredEvents> {
        self.events.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Copies the event Redis holds at `sequence` (`None`: one that could not be read back).
    fn record(&self, sequence: u64, event: Option<(&str, &str)>, last: bool) {
        {
            let mut mirrored = self.events();
            let next = mirrored.events.len() as u64 + 1;
            match event {
                Some((name, data)) if sequence == next && !mirrored.diverged => {
                    let event = GenerationEvent {
                        sequence,
                        name: name.to_owned(),
                        data: data.to_owned(),
                    };
                    mirrored.events.push((event, last));
                }
                _ => mirrored.let_go(),
            }
        }
        self.appended.send_replace(());
    }

    /// From now on the followers here read the stream.
    fn diverge(&self) {
        self.events().let_go();
        self.appended.send_replace(());
    }

    /// The events after `cursor`, or `None` once the copy has diverged from the stream.
    fn after(&self, cursor: u64) -> Option<Vec<(GenerationEvent, bool)>> {
        let mirrored = self.events();
        if mirrored.diverged {
            return None;
        }
        let start = usize::try_from(cursor).map_or(mirrored.events.len(), |cursor| {
            cursor.min(mirrored.events.len())
        });
        Some(mirrored.events[start..].to_vec())
    }
}

/// Forgets the generations that logged nothing for as long as an unfinished stream lives: their
/// writer could not log their end (Redis failed it) and their stream is gone, so nothing more can
/// be appended and they would otherwise stay here for the life of the process.
fn forget_expired(writing: &mut HashMap<GenerationId, Writing>, now: Instant) {
    let lifetime = Duration::from_secs(UNFINISHED_LIFETIME_SECS);
    writing.retain(|_, generation| now.saturating_duration_since(generation.touched) < lifetime);
}

impl std::fmt::Debug for RedisGenerationLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisGenerationLog")
            .field("prefix", &self.prefix)
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

fn unavailable(error: redis::RedisError) -> GenerationLogError {
    GenerationLogError::Unavailable(error.to_string())
}

fn text(value: Option<&Value>) -> String {
    match value {
        Some(Value::BulkString(bytes)) => String::from_utf8_lossy(bytes).into_owned(),
        Some(Value::SimpleString(text)) => text.clone(),
        _ => String::new(),
    }
}

/// The conversation an entry belongs to.
fn conversation(entry: &StreamId) -> Option<ConversationId> {
    text(entry.map.get("conversation")).parse().ok()
}

/// When the entry was logged, in milliseconds since the Unix epoch; `None` for an entry without
/// the field (logged by an older version).
fn logged_at(entry: &StreamId) -> Option<u128> {
    text(entry.map.get("at")).parse().ok()
}

/// Whether this process writes the generation.
fn writes(writing: &Mutex<HashMap<GenerationId, Writing>>, id: GenerationId) -> bool {
    writing
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .contains_key(&id)
}

/// Whether this process writes the generation and has not tried its final event yet: then it is
/// alive, however long its model is silent.
fn runs_here(writing: &Mutex<HashMap<GenerationId, Writing>>, id: GenerationId) -> bool {
    writing
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(&id)
        .is_some_and(|generation| !generation.finishing)
}

fn liveness_key(prefix: &str, id: GenerationId) -> String {
    format!("{prefix}:generation:{id}:alive")
}

/// Set, to the conversation's id, by the replica that claimed an id a client chose.
fn claim_key(prefix: &str, id: GenerationId) -> String {
    format!("{prefix}:generation:{id}:claim")
}

/// Whether generation `id`, whose newest entry is `newest` (not its final one), may still log
/// more: it runs here, or its liveness key is there. An entry of the older kind, without
/// [`KEEPS_ALIVE`], has no key: its generation is taken for dead once it logged nothing for
/// `ABANDONED_AFTER_MILLIS` by this replica's clock (never when the entry has no time either).
async fn still_written(
    connection: &mut impl redis::aio::ConnectionLike,
    (writing, prefix): (&Mutex<HashMap<GenerationId, Writing>>, &str),
    id: GenerationId,
    newest: &StreamId,
) -> Result<bool, redis::RedisError> {
    if runs_here(writing, id) {
        return Ok(true);
    }
    if newest.map.contains_key(KEEPS_ALIVE) {
        return redis::cmd("EXISTS")
            .arg(liveness_key(prefix, id))
            .query_async(connection)
            .await;
    }
    Ok(
        logged_at(newest)
            .is_none_or(|at| now_millis().saturating_sub(at) <= ABANDONED_AFTER_MILLIS),
    )
}

/// Renews, every [`HEARTBEAT`], the liveness keys of the generations this process writes and the
/// keys of the claims it holds, until the log is dropped. A failed round is logged and the next
/// one tried: a key lives for three.
fn keep_alive(
    mut commands: ConnectionManager,
    prefix: String,
    writing: Weak<Mutex<HashMap<GenerationId, Writing>>>,
    claims: Weak<Claims>,
) {
    tokio::spawn(async move {
        let mut beats = tokio::time::interval(HEARTBEAT);
        beats.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            beats.tick().await;
            let (Some(writing), Some(claims)) = (writing.upgrade(), claims.upgrade()) else {
                return;
            };
            if let Err(error) = renew(&mut commands, &prefix, &writing, &claims).await {
                tracing::warn!(%error, "renewing the keys of running replies and of claims failed");
            }
        }
    });
}

/// One round of [`keep_alive`]. A claim's key is set again, not only given more time: one Redis
/// lost (evicted, or Redis restarted) would otherwise leave the id free while its send waits.
async fn renew(
    commands: &mut ConnectionManager,
    prefix: &str,
    writing: &Mutex<HashMap<GenerationId, Writing>>,
    claims: &Claims,
) -> Result<(), redis::RedisError> {
    let _round = claims.round.lock().await;
    let running: Vec<GenerationId> = writing
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .filter(|(_, generation)| !generation.finishing)
        .map(|(id, _)| *id)
        .collect();
    let claimed: Vec<(GenerationId, ConversationId)> = claims
        .held()
        .iter()
        .map(|(id, conversation)| (*id, *conversation))
        .collect();
    if running.is_empty() && claimed.is_empty() {
        return Ok(());
    }
    let mut renewals = redis::pipe();
    for id in running {
        renewals
            .set_options(liveness_key(prefix, id), 1, alive_for_a_while())
            .ignore();
    }
    for (id, conversation) in claimed {
        renewals
            .set_options(
                claim_key(prefix, id),
                conversation.to_string(),
                alive_for_a_while(),
            )
            .ignore();
    }
    renewals.query_async(commands).await
}

fn alive_for_a_while() -> SetOptions {
    SetOptions::default().with_expiration(SetExpiry::PX(LIVENESS.as_millis() as u64))
}

fn now_millis() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| since.as_millis())
}

/// An entry and whether it is the final one.
fn event(entry: &StreamId) -> Option<(GenerationEvent, bool)> {
    let sequence = entry.id.split('-').next()?.parse().ok()?;
    let event = GenerationEvent {
        sequence,
        name: text(entry.map.get("name")),
        data: text(entry.map.get("data")),
    };
    Some((event, text(entry.map.get("last")) == "1"))
}

impl RedisGenerationLog {
    /// Connects (and reconnects by itself later); finished logs expire after `ttl`.
    pub async fn connect(
        url: &str,
        prefix: impl Into<String>,
        ttl: Duration,
    ) -> Result<Self, GenerationLogError> {
        let client = Client::open(url).map_err(unavailable)?;
        // Fail fast when Redis is away instead of the library's long default retries.
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(2)))
            .set_response_timeout(Some(Duration::from_secs(2)))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_millis(500));
        let commands = ConnectionManager::new_with_config(client.clone(), config)
            .await
            .map_err(unavailable)?;
        let prefix = prefix.into();
        let writing = Arc::default();
        let claims = Arc::default();
        keep_alive(
            commands.clone(),
            prefix.clone(),
            Arc::downgrade(&writing),
            Arc::downgrade(&claims),
        );
        Ok(Self {
            client,
            commands,
            prefix,
            ttl,
            writing,
            claims,
        })
    }

    fn stream_key(&self, id: GenerationId) -> String {
        format!("{}:generation:{id}", self.prefix)
    }

    /// Set when a replica asks the writer of the conversation's generation to stop it: one key
    /// per conversation, so that a stop under another conversation's id takes no stop's place.
    fn stop_key(&self, conversation: ConversationId, id: GenerationId) -> String {
        format!("{}:generation:{id}:stop:{conversation}", self.prefix)
    }

    fn claim_key(&self, id: GenerationId) -> String {
        claim_key(&self.prefix, id)
    }

    /// A sorted set of the conversation's generations still running, scored by their start (ms).
    fn running_key(&self, id: ConversationId) -> String {
        format!("{}:conversation:{id}:running", self.prefix)
    }

    async fn newest_entry(
        &self,
        generation_id: GenerationId,
    ) -> Result<Option<StreamId>, GenerationLogError> {
        let mut commands = self.commands.clone();
        let newest: StreamRangeReply = commands
            .xrevrange_count(self.stream_key(generation_id), "+", "-", 1)
            .await
            .map_err(unavailable)?;
        Ok(newest.ids.into_iter().next())
    }

    /// The event at `sequence` of the stream at `key`, if there is one.
    async fn entry(
        &self,
        key: &str,
        sequence: u64,
    ) -> Result<Option<(GenerationEvent, bool)>, GenerationLogError> {
        let mut commands = self.commands.clone();
        let id = format!("{sequence}-0");
        let found: StreamRangeReply = commands.xrange(key, &id, &id).await.map_err(unavailable)?;
        Ok(found.ids.first().and_then(event))
    }

    /// The conversation of generation `id` and the sequence its next event gets. It moves on only
    /// once that event is in the stream ([`Self::appended`]): a failed append is tried again with
    /// the same sequence, so the stream never has a hole. From the first try of its final event
    /// on, the generation is finishing.
    fn upcoming(
        &self,
        id: GenerationId,
        last: bool,
    ) -> Result<(ConversationId, u64), GenerationLogError> {
        let mut writing = self.writing.lock().unwrap_or_else(|p| p.into_inner());
        let generation = writing.get_mut(&id).ok_or(GenerationLogError::NotFound)?;
        generation.finishing |= last;
        Ok((generation.conversation, generation.last + 1))
    }

    /// Whether generation `id`, whose newest entry is `newest`, may still log more.
    async fn still_written(
        &self,
        id: GenerationId,
        newest: &StreamId,
    ) -> Result<bool, GenerationLogError> {
        let mut commands = self.commands.clone();
        still_written(&mut commands, (&self.writing, &self.prefix), id, newest)
            .await
            .map_err(unavailable)
    }

    /// The stream holds `event` at `sequence` (`None`: an entry that could not be read back):
    /// copied for the followers here, and the next event goes after it; a final one ends the
    /// generation here.
    fn appended(&self, id: GenerationId, sequence: u64, event: Option<(&str, &str)>, last: bool) {
        let mut writing = self.writing.lock().unwrap_or_else(|p| p.into_inner());
        let Some(generation) = writing.get_mut(&id) else {
            return;
        };
        generation.mirror.record(sequence, event, last);
        if last {
            writing.remove(&id);
        } else {
            generation.last = sequence;
            generation.touched = Instant::now();
        }
    }

    fn stop_mirroring(&self, id: GenerationId) {
        if let Some(mirror) = self.mirror(id) {
            mirror.diverge();
        }
    }

    fn mirror(&self, id: GenerationId) -> Option<Arc<Mirror>> {
        self.writing
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&id)
            .map(|generation| Arc::clone(&generation.mirror))
    }

    /// Follows a generation written here from its copy in memory. When the copy has nothing
    /// more to tell (it diverged, or the writer has tried its final event and nothing came for
    /// a blocking read's time, which may mean that event could not be logged), the stream is
    /// read from there on, with its checks of whether the generation still runs.
    fn follow_mirror(&self, id: GenerationId, mirror: Arc<Mirror>, after: u64) -> GenerationEvents {
        enum Step {
            Events(Vec<Result<GenerationEvent, GenerationLogError>>),
            ReadTheStreamAfter(u64),
        }
        let appended = mirror.appended.subscribe();
        let writing = Arc::clone(&self.writing);
        let steps = stream::unfold(Some((mirror, appended, after)), move |state| {
            let writing = Arc::clone(&writing);
            async move {
                let (mirror, mut appended, cursor) = state?;
                let mut writer_done = false;
                loop {
                    // Marked seen before reading, so no copy between the read and the wait
                    // goes unnoticed.
                    appended.borrow_and_update();
                    let Some(events) = mirror.after(cursor) else {
                        return Some((Step::ReadTheStreamAfter(cursor), None));
                    };
                    if let Some((newest, last)) = events.last() {
                        let (next, finished) = (newest.sequence, *last);
                        let batch = events.into_iter().map(|(event, _)| Ok(event)).collect();
                        let state = (!finished).then_some((mirror, appended, next));
                        return Some((Step::Events(batch), state));
                    }
                    if writer_done {
                        return Some((Step::ReadTheStreamAfter(cursor), None));
                    }
                    let wait = Duration::from_millis(BLOCK_MILLIS as u64);
                    // Read once more before going over: the final event may have been copied
                    // between the wait's end and this check.
                    writer_done = tokio::time::timeout(wait, appended.changed())
                        .await
                        .is_err()
                        && !runs_here(&writing, id);
                }
            }
        });
        let log = self.clone();
        steps
            .flat_map(move |step| -> BoxStream<'static, _> {
                match step {
                    Step::Events(batch) => stream::iter(batch).boxed(),
                    Step::ReadTheStreamAfter(cursor) => {
                        let log = log.clone();
                        stream::once(async move { log.follow_stream(id, cursor).await })
                            .flat_map(|followed| match followed {
                                Ok(events) => events,
                                Err(error) => stream::iter([Err(error)]).boxed(),
                            })
                            .boxed()
                    }
                }
            })
            .boxed()
    }
}

#[async_trait]
impl GenerationLog for RedisGenerationLog {
    async fn begin(
        &self,
        conversation_id: ConversationId,
        generation_id: GenerationId,
    ) -> Result<(), GenerationLogError> {
        let mut commands = self.commands.clone();
        let key = self.running_key(conversation_id);
        let started_millis = now_millis();
        let (_, _, _): (Value, Value, Value) = redis::pipe()
            .atomic()
            .zadd(&key, generation_id.to_string(), started_millis.to_string())
            .expire(&key, UNFINISHED_LIFETIME_SECS as i64)
            .set_options(
                liveness_key(&self.prefix, generation_id),
                1,
                alive_for_a_while(),
            )
            .query_async(&mut commands)
            .await
            .map_err(unavailable)?;
        let now = Instant::now();
        let mut writing = self.writing.lock().unwrap_or_else(|p| p.into_inner());
        forget_expired(&mut writing, now);
        writing.insert(
            generation_id,
            Writing {
                conversation: conversation_id,
                mirror: Arc::new(Mirror::new()),
                last: 0,
                touched: now,
                finishing: false,
            },
        );
        Ok(())
    }

    async fn append(
        &self,
        generation_id: GenerationId,
        name: &str,
        data: &str,
        last: bool,
    ) -> Result<u64, GenerationLogError> {
        let appended = self.append_to_stream(generation_id, name, data, last).await;
        if appended.is_err() {
            // The copy would leave the followers here waiting in silence for as long as Redis
            // fails (a final event, for a minute of tries); the stream tells them it failed, as
            // it tells followers on other replicas.
            self.stop_mirroring(generation_id);
        }
        appended
    }

    async fn in_progress(
        &self,
        conversation_id: ConversationId,
    ) -> Result<Option<GenerationId>, GenerationLogError> {
        let mut commands = self.commands.clone();
        let newest_first: Vec<String> = commands
            .zrevrange(self.running_key(conversation_id), 0, RUNNING_CHECKED - 1)
            .await
            .map_err(unavailable)?;
        for generation_id in newest_first.iter().filter_map(|id| id.parse().ok()) {
            // Its final event may be logged without the set updated yet (another replica, or the
            // removal failed); an expired log has nothing left to resume; a generation no longer
            // kept alive lost its writer.
            let Some(newest) = self.newest_entry(generation_id).await? else {
                continue;
            };
            let finished = event(&newest).is_none_or(|(_, last)| last);
            if !finished && self.still_written(generation_id, &newest).await? {
                return Ok(Some(generation_id));
            }
        }
        Ok(None)
    }

    async fn state(
        &self,
        generation_id: GenerationId,
    ) -> Result<Option<GenerationState>, GenerationLogError> {
        let Some(entry) = self.newest_entry(generation_id).await? else {
            return Ok(None);
        };
        let (Some((event, last)), Some(conversation_id)) = (event(&entry), conversation(&entry))
        else {
            return Ok(None);
        };
        let finished = last || !self.still_written(generation_id, &entry).await?;
        Ok(Some(GenerationState {
            conversation_id,
            last_sequence: event.sequence,
            finished,
        }))
    }

    async fn follow(
        &self,
        generation_id: GenerationId,
        after: u64,
    ) -> Result<GenerationEvents, GenerationLogError> {
        match self.mirror(generation_id) {
            Some(mirror) => Ok(self.follow_mirror(generation_id, mirror, after)),
            None => self.follow_stream(generation_id, after).await,
        }
    }

    async fn claim(
        &self,
        conversation_id: ConversationId,
        generation_id: GenerationId,
    ) -> Result<ChosenId, GenerationLogError> {
        let mut commands = self.commands.clone();
        let found: String = redis::cmd("EVAL")
            .arg(CLAIM_SCRIPT)
            .arg(3)
            .arg(self.stream_key(generation_id))
            .arg(self.stop_key(conversation_id, generation_id))
            .arg(self.claim_key(generation_id))
            .arg(conversation_id.to_string())
            .arg(LIVENESS.as_millis() as u64)
            .query_async(&mut commands)
            .await
            .map_err(unavailable)?;
        match found.as_str() {
            "claimed" => {
                self.claims.held().insert(generation_id, conversation_id);
                Ok(ChosenId::Claimed)
            }
            "stopped" => Ok(ChosenId::Stopped),
            "taken" => Ok(ChosenId::Taken),
            other => Err(GenerationLogError::Unavailable(format!(
                "the claim script answered {other:?}"
            ))),
        }
    }

    async fn release(&self, generation_id: GenerationId) -> Result<(), GenerationLogError> {
        // No longer renewed from now on: a key the deletion misses lapses within `LIVENESS`.
        self.claims.held().remove(&generation_id);
        // A round in progress may set the key again: delete it after that round.
        let _round = self.claims.round.lock().await;
        let mut commands = self.commands.clone();
        let () = commands
            .del(self.claim_key(generation_id))
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn claimant(
        &self,
        generation_id: GenerationId,
    ) -> Result<Option<ConversationId>, GenerationLogError> {
        let mut commands = self.commands.clone();
        let claimed_in: Option<String> = commands
            .get(self.claim_key(generation_id))
            .await
            .map_err(unavailable)?;
        Ok(claimed_in.and_then(|id| id.parse().ok()))
    }

    async fn request_stop(
        &self,
        conversation_id: ConversationId,
        generation_id: GenerationId,
    ) -> Result<(), GenerationLogError> {
        let mut commands = self.commands.clone();
        // A logged generation's stop lives as long as its unfinished stream may: no reply runs
        // longer. One not logged yet is waiting for its model (its writer asks every 250 ms) or
        // for its message to arrive: a minute is plenty, and stops of made-up ids cost no more.
        let logged: bool = commands
            .exists(self.stream_key(generation_id))
            .await
            .map_err(unavailable)?;
        let lifetime = if logged {
            UNFINISHED_LIFETIME_SECS
        } else {
            STOP_BEFORE_START_LIFETIME_SECS
        };
        let () = commands
            .set_ex(self.stop_key(conversation_id, generation_id), 1, lifetime)
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn stop_requested(
        &self,
        conversation_id: ConversationId,
        generation_id: GenerationId,
    ) -> Result<bool, GenerationLogError> {
        let mut commands = self.commands.clone();
        commands
            .exists(self.stop_key(conversation_id, generation_id))
            .await
            .map_err(unavailable)
    }
}

impl RedisGenerationLog {
    /// Appends an event to the generation's stream, then copies it for the followers here.
    async fn append_to_stream(
        &self,
        generation_id: GenerationId,
        name: &str,
        data: &str,
        last: bool,
    ) -> Result<u64, GenerationLogError> {
        let key = self.stream_key(generation_id);
        let lifetime = if last {
            self.ttl.as_secs().max(1)
        } else {
            UNFINISHED_LIFETIME_SECS
        };
        let mut commands = self.commands.clone();
        loop {
            let (conversation_id, sequence) = self.upcoming(generation_id, last)?;
            let conversation = conversation_id.to_string();
            let at = now_millis().to_string();
            let fields = [
                ("name", name),
                ("data", data),
                ("last", if last { "1" } else { "0" }),
                ("conversation", conversation.as_str()),
                ("at", at.as_str()),
                (KEEPS_ALIVE, "1"),
            ];
            let written: Result<(Value, Value), _> = redis::pipe()
                .atomic()
                .xadd(&key, format!("{sequence}-0"), &fields)
                .expire(&key, lifetime as i64)
                .query_async(&mut commands)
                .await;
            match written {
                Ok(_) => {}
                // Only this process writes this stream, so the entry at this sequence was written
                // by an earlier attempt whose answer was lost: this very event, or one its caller
                // gave up on, which this event then follows.
                Err(error) if error.to_string().contains(ALREADY_WRITTEN) => {
                    match self.entry(&key, sequence).await? {
                        Some((event, _)) if event.name == name && event.data == data => {}
                        Some((event, given_up_last)) => {
                            let given_up = (event.name.as_str(), event.data.as_str());
                            self.appended(generation_id, sequence, Some(given_up), given_up_last);
                            continue;
                        }
                        None => {
                            self.appended(generation_id, sequence, None, false);
                            continue;
                        }
                    }
                }
                Err(error) => return Err(unavailable(error)),
            }
            self.appended(generation_id, sequence, Some((name, data)), last);
            if last {
                // Tidying only: the final event is logged, which is what followers and resumes
                // go by, and the generation is no longer this process's to log. Failed (Redis
                // slow, say), the id stays among the running until their set expires, passed
                // over as finished, and the liveness key expires unrenewed.
                let tidied: Result<(Value, Value), _> = redis::pipe()
                    .zrem(self.running_key(conversation_id), generation_id.to_string())
                    .del(liveness_key(&self.prefix, generation_id))
                    .query_async(&mut commands)
                    .await;
                if let Err(error) = tidied {
                    tracing::debug!(%error, "tidying up after a finished reply failed");
                }
            }
            return Ok(sequence);
        }
    }

    /// Follows a generation by reading its stream, on a connection of its own.
    async fn follow_stream(
        &self,
        generation_id: GenerationId,
        after: u64,
    ) -> Result<GenerationEvents, GenerationLogError> {
        let key = self.stream_key(generation_id);
        let mut commands = self.commands.clone();
        let exists: bool = commands.exists(&key).await.map_err(unavailable)?;
        if !exists && !writes(&self.writing, generation_id) {
            return Err(GenerationLogError::NotFound);
        }
        // Blocking reads get a connection of their own: on a shared one they would hold up
        // every other command behind them.
        let reader_config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(2)))
            .set_response_timeout(Some(
                Duration::from_millis(BLOCK_MILLIS as u64) + BLOCKING_READ_MARGIN,
            ));
        let reader: MultiplexedConnection = self
            .client
            .get_multiplexed_async_connection_with_config(&reader_config)
            .await
            .map_err(unavailable)?;
        let writing = Arc::clone(&self.writing);
        let prefix = self.prefix.clone();
        let events = stream::unfold(
            (reader, key, after, false),
            move |(mut reader, key, cursor, done)| {
                let writing = Arc::clone(&writing);
                let prefix = prefix.clone();
                let options = StreamReadOptions::default().block(BLOCK_MILLIS).count(64);
                async move {
                    if done {
                        return None;
                    }
                    let mut idle_reads = 0;
                    loop {
                        let reply: Result<Option<StreamReadReply>, _> = reader
                            .xread_options(&[&key], &[format!("{cursor}-0")], &options)
                            .await;
                        let entries = match reply {
                            Ok(Some(reply)) => reply
                                .keys
                                .into_iter()
                                .flat_map(|k| k.ids)
                                .collect::<Vec<_>>(),
                            Ok(None) => {
                                idle_reads += 1;
                                let newest: Result<StreamRangeReply, _> =
                                    reader.xrevrange_count(&key, "+", "-", 1).await;
                                let newest = match newest {
                                    Ok(newest) => match newest.ids.into_iter().next() {
                                        Some(newest) => newest,
                                        // Expired: nothing left to follow.
                                        None => return None,
                                    },
                                    Err(error) => {
                                        let failed = stream::iter(vec![Err(unavailable(error))]);
                                        return Some((failed, (reader, key, cursor, true)));
                                    }
                                };
                                let written = still_written(
                                    &mut reader,
                                    (&writing, &prefix),
                                    generation_id,
                                    &newest,
                                )
                                .await;
                                let older_kind = !newest.map.contains_key(KEEPS_ALIVE);
                                let stalled = match written {
                                    Ok(written) => {
                                        !written || (older_kind && idle_reads >= IDLE_READS)
                                    }
                                    Err(error) => {
                                        let failed = stream::iter(vec![Err(unavailable(error))]);
                                        return Some((failed, (reader, key, cursor, true)));
                                    }
                                };
                                if stalled {
                                    let stalled = GenerationLogError::Unavailable(
                                        "the reply stopped making progress".to_owned(),
                                    );
                                    let failed = stream::iter(vec![Err(stalled)]);
                                    return Some((failed, (reader, key, cursor, true)));
                                }
                                continue;
                            }
                            Err(error) => {
                                let failed = stream::iter(vec![Err(unavailable(error))]);
                                return Some((failed, (reader, key, cursor, true)));
                            }
                        };
                        let mut batch = Vec::with_capacity(entries.len());
                        let mut finished = false;
                        let mut next_cursor = cursor;
                        for (event, last) in entries.iter().filter_map(event) {
                            // Events are numbered without a hole; one means the stream lost
                            // entries (Redis evicted or someone deleted it mid-reply, and the
                            // writer's next event started it again). Going on would give a
                            // reply with pieces missing, as if whole.
                            if event.sequence != next_cursor + 1 {
                                batch.push(Err(GenerationLogError::Unavailable(format!(
                                    "the reply's log lost events {} to {}",
                                    next_cursor + 1,
                                    event.sequence - 1
                                ))));
                                finished = true;
                                break;
                            }
                            next_cursor = event.sequence;
                            batch.push(Ok(event));
                            if last {
                                finished = true;
                                break;
                            }
                        }
                        if batch.is_empty() {
                            continue;
                        }
                        return Some((stream::iter(batch), (reader, key, next_cursor, finished)));
                    }
                }
            },
        )
        .flatten();
        Ok(events.boxed())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A log on the test Redis under a prefix of its own, or `None` (loudly) where Redis is
    /// absent outside CI. Its keys are left to expire (within the hour an unfinished reply's
    /// keys live).
    async fn log_on_test_redis() -> Option<RedisGenerationLog> {
        let url = testkit::redis_url();
        let prefix = format!("chat-test-mirror-{}", GenerationId::generate());
        match RedisGenerationLog::connect(&url, prefix, Duration::from_secs(60)).await {
            Ok(log) => Some(log),
            Err(error) => {
                testkit::cannot_run_without("redis", format_args!("{url}: {error}"));
                None
            }
        }
    }

    /// A log on the same Redis under the same prefix: another replica.
    async fn another_replica(of: &RedisGenerationLog) -> RedisGenerationLog {
        RedisGenerationLog::connect(&testkit::redis_url(), of.prefix.clone(), of.ttl)
            .await
            .unwrap()
    }

    /// No Redis answers there: a connection of its own would fail at once.
    fn without_connections_of_its_own(log: &mut RedisGenerationLog) {
        log.client = Client::open("redis://127.0.0.1:1").unwrap();
    }

    #[tokio::test]
    async fn a_reply_written_here_is_followed_from_memory_without_a_connection_of_its_own() {
        let Some(mut log) = log_on_test_redis().await else {
            return;
        };
        without_connections_of_its_own(&mut log);
        let (conversation, generation) = (ConversationId::generate(), GenerationId::generate());
        log.begin(conversation, generation).await.unwrap();
        let mut from_the_start = log.follow(generation, 0).await.unwrap();
        log.append(generation, "start", "{}", false).await.unwrap();
        log.append(generation, "delta", "a", false).await.unwrap();
        let mut resumed = log.follow(generation, 1).await.unwrap();
        log.append(generation, "done", "{}", true).await.unwrap();

        let mut names = Vec::new();
        while let Some(event) = from_the_start.next().await {
            let event = event.unwrap();
            names.push((event.sequence, event.name));
        }
        assert_eq!(
            names,
            [(1, "start".into()), (2, "delta".into()), (3, "done".into())]
        );
        let mut after_start = Vec::new();
        while let Some(event) = resumed.next().await {
            after_start.push(event.unwrap().sequence);
        }
        assert_eq!(after_start, [2, 3]);
    }

    #[tokio::test]
    async fn a_stop_asked_through_one_replica_is_seen_by_the_writer_on_another() {
        let Some(writer) = log_on_test_redis().await else {
            return;
        };
        let other_replica = another_replica(&writer).await;
        let conversation = ConversationId::generate();
        let seen = |generation| {
            let writer = &writer;
            async move {
                writer
                    .stop_requested(conversation, generation)
                    .await
                    .unwrap()
            }
        };
        let (generation, untouched) = (GenerationId::generate(), GenerationId::generate());
        writer.begin(conversation, generation).await.unwrap();
        writer.begin(conversation, untouched).await.unwrap();
        assert!(!seen(generation).await);

        other_replica
            .request_stop(conversation, generation)
            .await
            .unwrap();
        assert!(seen(generation).await);
        assert!(!seen(untouched).await);

        // Asked before the writer began it (its client chose the id): still seen once it begins.
        let overtaken = GenerationId::generate();
        other_replica
            .request_stop(conversation, overtaken)
            .await
            .unwrap();
        assert!(seen(overtaken).await);
        writer.begin(conversation, overtaken).await.unwrap();
        assert!(seen(overtaken).await);

        // A stop asked under another conversation stops nothing of this one, nor takes the place
        // of its stop.
        let (stranger, elsewhere) = (ConversationId::generate(), GenerationId::generate());
        for generation in [elsewhere, overtaken] {
            other_replica
                .request_stop(stranger, generation)
                .await
                .unwrap();
        }
        assert!(seen(overtaken).await);
        assert!(!seen(elsewhere).await);

        // A logged generation's stop lasts as long as its stream may; one of an id that logged
        // nothing (made up, or still waiting for its model) a minute.
        let logged = GenerationId::generate();
        writer.begin(conversation, logged).await.unwrap();
        writer.append(logged, "start", "{}", false).await.unwrap();
        other_replica
            .request_stop(conversation, logged)
            .await
            .unwrap();
        let mut commands = writer.commands.clone();
        let lifetime: i64 = commands
            .ttl(writer.stop_key(conversation, logged))
            .await
            .unwrap();
        assert!(lifetime > 60, "{lifetime}");
        let lifetime: i64 = commands
            .ttl(writer.stop_key(stranger, elsewhere))
            .await
            .unwrap();
        assert!((1..=60).contains(&lifetime), "{lifetime}");
    }

    #[tokio::test]
    async fn a_chosen_id_is_claimed_by_one_replica_only_until_released() {
        let Some(one) = log_on_test_redis().await else {
            return;
        };
        let other_replica = another_replica(&one).await;
        let conversation = ConversationId::generate();
        let chosen = GenerationId::generate();
        let (first, second) = tokio::join!(
            one.claim(conversation, chosen),
            other_replica.claim(conversation, chosen)
        );
        let (first, second) = (first.unwrap(), second.unwrap());
        let mut outcomes = [first, second];
        outcomes.sort_by_key(|outcome| *outcome != ChosenId::Claimed);
        assert_eq!(outcomes, [ChosenId::Claimed, ChosenId::Taken]);
        // Only the holder gives its claim up (its heartbeat would set the key again otherwise).
        let (holder, other) = if first == ChosenId::Claimed {
            (&one, &other_replica)
        } else {
            (&other_replica, &one)
        };
        assert_eq!(
            holder.claim(conversation, chosen).await.unwrap(),
            ChosenId::Taken
        );
        assert_eq!(other.claimant(chosen).await.unwrap(), Some(conversation));
        assert_eq!(one.claimant(GenerationId::generate()).await.unwrap(), None);

        // Given up (its send ended without logging), the id is nobody's.
        holder.release(chosen).await.unwrap();
        assert_eq!(other.claimant(chosen).await.unwrap(), None);
        assert_eq!(
            other.claim(conversation, chosen).await.unwrap(),
            ChosenId::Claimed
        );

        // Stopped before its message came, in this conversation only.
        let stopped = GenerationId::generate();
        one.request_stop(conversation, stopped).await.unwrap();
        assert_eq!(
            other_replica.claim(conversation, stopped).await.unwrap(),
            ChosenId::Stopped
        );
        assert_eq!(other_replica.claimant(stopped).await.unwrap(), None);
        assert_eq!(
            other_replica
                .claim(ConversationId::generate(), stopped)
                .await
                .unwrap(),
            ChosenId::Claimed
        );
    }

    /// A claim lives a few seconds unless the process holding it renews it, so that the id of a
    /// send whose replica died (killed while the send waited for its model) is soon free again;
    /// the holder's heartbeat renews it for as long as it holds it (one beat: up to 5 s), and
    /// sets it again if Redis lost it (evicted, or Redis restarted).
    #[tokio::test]
    async fn a_claim_lapses_within_seconds_unless_its_holder_renews_it() {
        let Some(holder) = log_on_test_redis().await else {
            return;
        };
        let conversation = ConversationId::generate();
        let (aging, lost) = (GenerationId::generate(), GenerationId::generate());
        for id in [aging, lost] {
            assert_eq!(
                holder.claim(conversation, id).await.unwrap(),
                ChosenId::Claimed
            );
        }
        let mut commands = holder.commands.clone();
        let left: i64 = commands.pttl(holder.claim_key(aging)).await.unwrap();
        assert!(
            (1..=LIVENESS.as_millis() as i64).contains(&left),
            "{left} ms"
        );

        // As if half its life had passed, and as if Redis had evicted the other: the next
        // heartbeat gives both a whole life again.
        let () = commands
            .pexpire(holder.claim_key(aging), 7500)
            .await
            .unwrap();
        let () = commands.del(holder.claim_key(lost)).await.unwrap();
        let beat = Instant::now() + HEARTBEAT + Duration::from_secs(1);
        for id in [aging, lost] {
            loop {
                let left: i64 = commands.pttl(holder.claim_key(id)).await.unwrap();
                if left > 10_000 {
                    break;
                }
                assert!(Instant::now() < beat, "not renewed: {left} ms left");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        assert_eq!(holder.claimant(lost).await.unwrap(), Some(conversation));

        for id in [aging, lost] {
            holder.release(id).await.unwrap();
            assert!(!holder.claims.held().contains_key(&id), "no longer renewed");
            let exists: bool = commands.exists(holder.claim_key(id)).await.unwrap();
            assert!(!exists);
        }
    }

    /// A claim given up while a renewal round may be setting its key again is deleted after that
    /// round, not before: the round would otherwise bring it back for a whole life.
    #[tokio::test]
    async fn a_claim_given_up_during_a_renewal_round_is_deleted_after_it() {
        let Some(holder) = log_on_test_redis().await else {
            return;
        };
        let (conversation, id) = (ConversationId::generate(), GenerationId::generate());
        assert_eq!(
            holder.claim(conversation, id).await.unwrap(),
            ChosenId::Claimed
        );
        let round = holder.claims.round.lock().await;
        let releasing = tokio::spawn({
            let holder = holder.clone();
            async move { holder.release(id).await }
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(!holder.claims.held().contains_key(&id), "no longer renewed");
        assert!(!releasing.is_finished(), "waits for the round");
        drop(round);
        releasing.await.unwrap().unwrap();
        let mut commands = holder.commands.clone();
        let exists: bool = commands.exists(holder.claim_key(id)).await.unwrap();
        assert!(!exists);
    }

    /// A generation begun here, its start logged, and a follower here that has read it.
    async fn followed_past_its_start(log: &RedisGenerationLog) -> (GenerationId, GenerationEvents) {
        let (conversation, generation) = (ConversationId::generate(), GenerationId::generate());
        log.begin(conversation, generation).await.unwrap();
        log.append(generation, "start", "{}", false).await.unwrap();
        let mut events = log.follow(generation, 0).await.unwrap();
        assert_eq!(events.next().await.unwrap().unwrap().name, "start");
        (generation, events)
    }

    /// Puts a value of another type under the generation's stream key, so that every append
    /// fails; awaiting the returned future removes it.
    async fn block_appends(
        log: &RedisGenerationLog,
        generation: GenerationId,
    ) -> impl std::future::Future<Output = ()> {
        let mut commands = log.commands.clone();
        let key = log.stream_key(generation);
        let () = commands.del(&key).await.unwrap();
        let () = commands.set(&key, "in the way").await.unwrap();
        async move {
            let () = commands.del(&key).await.unwrap();
        }
    }

    #[tokio::test]
    async fn a_follower_here_hears_of_a_failed_append_as_a_follower_of_the_stream_would() {
        let Some(log) = log_on_test_redis().await else {
            return;
        };
        let (generation, mut events) = followed_past_its_start(&log).await;
        let unblock = block_appends(&log, generation).await;
        assert!(log.append(generation, "delta", "a", false).await.is_err());

        // Told, not left to wait in silence for as long as Redis fails (here, for ever).
        let told = tokio::time::timeout(Duration::from_secs(5), events.next())
            .await
            .expect("told at once");
        assert!(
            matches!(told, Some(Err(GenerationLogError::Unavailable(_)))),
            "{told:?}"
        );
        unblock.await;
    }

    #[tokio::test]
    async fn a_follower_here_goes_over_to_the_stream_when_the_end_cannot_be_logged() {
        let Some(log) = log_on_test_redis().await else {
            return;
        };
        let (generation, mut events) = followed_past_its_start(&log).await;
        let unblock = block_appends(&log, generation).await;
        assert!(log.append(generation, "done", "{}", true).await.is_err());
        let copy = log.mirror(generation).expect("still written here");
        assert!(copy.events().events.is_empty(), "the copy is let go");

        let ended = tokio::time::timeout(Duration::from_secs(10), events.next())
            .await
            .expect("not left waiting for an end that will not come");
        assert!(
            matches!(ended, Some(Err(GenerationLogError::Unavailable(_)))),
            "{ended:?}"
        );
        unblock.await;
    }

    #[test]
    fn a_generation_silent_for_its_stream_lifetime_is_forgotten_and_no_other() {
        let start = Instant::now();
        let generation = |touched| Writing {
            conversation: ConversationId::generate(),
            mirror: Arc::new(Mirror::new()),
            last: 3,
            touched,
            finishing: false,
        };
        let lost = GenerationId::generate();
        let running = GenerationId::generate();
        let mut writing = HashMap::from([
            (lost, generation(start)),
            (running, generation(start + Duration::from_secs(60))),
        ]);
        let lifetime = Duration::from_secs(UNFINISHED_LIFETIME_SECS);

        forget_expired(&mut writing, start + lifetime - Duration::from_secs(1));
        assert_eq!(writing.len(), 2, "both may still log");

        forget_expired(&mut writing, start + lifetime);
        assert!(!writing.contains_key(&lost), "its stream has expired");
        assert!(writing.contains_key(&running), "it logged a minute later");
    }
}
