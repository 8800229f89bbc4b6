use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use domain::{
    ConversationId, GenerationEvent, GenerationEvents, GenerationId, GenerationLog,
    GenerationLogError, GenerationState,
};
use futures::stream::{self, StreamExt};
use tokio::sync::watch;

/// A generation that never finishes (its process stopped mid-reply) is dropped after this long.
const UNFINISHED_LIFETIME: Duration = Duration::from_secs(3600);
/// What an event holds besides its name and data (its sequence, two string headers, the
/// allocator's rounding), as counted against the byte budget.
const EVENT_OVERHEAD_BYTES: usize = 96;

/// Generation logs in this process's memory; right for a single replica.
#[derive(Debug, Clone)]
pub struct MemoryGenerationLog {
    inner: Arc<Mutex<Logs>>,
    ttl: Duration,
    max_bytes: usize,
}

#[derive(Debug, Default)]
struct Logs {
    generations: HashMap<GenerationId, Log>,
    /// Each conversation's generations still running, oldest first: two tabs may each have a reply
    /// running, and when the newer one finishes the older one is the one in progress again.
    running: HashMap<ConversationId, Vec<GenerationId>>,
    /// Finished generations in the order they finished: expiry and eviction take the front.
    finished: VecDeque<(Instant, GenerationId)>,
    /// What every log's events hold, as [`event_bytes`] counts it.
    bytes: usize,
}

#[derive(Debug)]
struct Log {
    conversation_id: ConversationId,
    events: Vec<GenerationEvent>,
    /// What its events hold, as [`event_bytes`] counts it.
    bytes: usize,
    started: Instant,
    finished: Option<Instant>,
    /// Carries the last sequence, waking followers on every append.
    appended: watch::Sender<u64>,
}

fn event_bytes(name: &str, data: &str) -> usize {
    name.len() + data.len() + EVENT_OVERHEAD_BYTES
}

impl MemoryGenerationLog {
    /// Finished logs are kept for `ttl`, and only while all the logs together hold at most
    /// `max_bytes`: past that, the ones that finished first go first, so a burst of long replies
    /// cannot take the process's memory. A resume of a log that went gets nothing to follow and
    /// reads the stored reply instead, as after its `ttl`. Running replies are never dropped for
    /// room: their followers need them, and there are only as many as replies being generated.
    pub fn new(ttl: Duration, max_bytes: usize) -> Self {
        Self {
            inner: Arc::default(),
            ttl,
            max_bytes,
        }
    }

    fn logs(&self) -> MutexGuard<'_, Logs> {
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Logs {
    /// Drops the finished logs past `ttl`, then more of the oldest finished ones while all the logs
    /// hold more than `max_bytes`, and the unfinished ones whose process gave up on them.
    fn expire(&mut self, ttl: Duration, max_bytes: usize) {
        let now = Instant::now();
        while let Some(&(finished, id)) = self.finished.front() {
            if now.duration_since(finished) < ttl {
                break;
            }
            self.finished.pop_front();
            self.remove(id);
        }
        if self.bytes > max_bytes {
            // A log a client is still reading stays, or its stream would end without its final
            // event; the ones after it go instead.
            let finished = std::mem::take(&mut self.finished);
            for (at, id) in finished {
                let followed = self
                    .generations
                    .get(&id)
                    .is_some_and(|log| log.appended.receiver_count() > 0);
                if self.bytes > max_bytes && !followed {
                    self.remove(id);
                } else {
                    self.finished.push_back((at, id));
                }
            }
        }
        let lifetime = UNFINISHED_LIFETIME.max(ttl);
        let abandoned: Vec<GenerationId> = self
            .running
            .values()
            .flatten()
            .filter(|id| {
                self.generations
                    .get(id)
                    .is_some_and(|log| now.duration_since(log.started) >= lifetime)
            })
            .copied()
            .collect();
        for id in abandoned {
            self.remove(id);
        }
        let generations = &self.generations;
        self.running.retain(|_, ids| {
            ids.retain(|id| generations.contains_key(id));
            !ids.is_empty()
        });
    }

    fn remove(&mut self, id: GenerationId) {
        if let Some(log) = self.generations.remove(&id) {
            self.bytes -= log.bytes;
        }
    }
}

/// The events after `after` already logged, and whether the log is complete.
fn pending(
    inner: &Mutex<Logs>,
    id: GenerationId,
    after: u64,
) -> Option<(Vec<GenerationEvent>, bool)> {
    let logs = inner
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let log = logs.generations.get(&id)?;
    let events = log
        .events
        .iter()
        .filter(|event| event.sequence > after)
        .cloned()
        .collect();
    Some((events, log.finished.is_some()))
}

#[async_trait]
impl GenerationLog for MemoryGenerationLog {
    async fn begin(
        &self,
        conversation_id: ConversationId,
        generation_id: GenerationId,
    ) -> Result<(), GenerationLogError> {
        let mut logs = self.logs();
        logs.expire(self.ttl, self.max_bytes);
        let (appended, _) = watch::channel(0);
        logs.generations.insert(
            generation_id,
            Log {
                conversation_id,
                events: Vec::new(),
                bytes: 0,
                started: Instant::now(),
                finished: None,
                appended,
            },
        );
        logs.running
            .entry(conversation_id)
            .or_default()
            .push(generation_id);
        Ok(())
    }

    async fn append(
        &self,
        generation_id: GenerationId,
        name: &str,
        data: &str,
        last: bool,
    ) -> Result<u64, GenerationLogError> {
        let mut logs = self.logs();
        let log = logs
            .generations
            .get_mut(&generation_id)
            .ok_or(GenerationLogError::NotFound)?;
        let sequence = log.events.len() as u64 + 1;
        log.events.push(GenerationEvent {
            sequence,
            name: name.to_owned(),
            data: data.to_owned(),
        });
        let added = event_bytes(name, data);
        log.bytes += added;
        let now = Instant::now();
        if last {
            log.finished = Some(now);
        }
        log.appended.send_replace(sequence);
        let conversation_id = log.conversation_id;
        logs.bytes += added;
        if last {
            logs.finished.push_back((now, generation_id));
            if let Some(running) = logs.running.get_mut(&conversation_id) {
                running.retain(|id| *id != generation_id);
                if running.is_empty() {
                    logs.running.remove(&conversation_id);
                }
            }
            logs.expire(self.ttl, self.max_bytes);
        }
        Ok(sequence)
    }

    async fn in_progress(
        &self,
        conversation_id: ConversationId,
    ) -> Result<Option<GenerationId>, GenerationLogError> {
        let mut logs = self.logs();
        logs.expire(self.ttl, self.max_bytes);
        let logs = &*logs;
        let logged_something = |id: &&GenerationId| {
            logs.generations
                .get(id)
                .is_some_and(|log| !log.events.is_empty())
        };
        Ok(logs
            .running
            .get(&conversation_id)
            .and_then(|running| running.iter().rev().find(logged_something).copied()))
    }

    async fn state(
        &self,
        generation_id: GenerationId,
    ) -> Result<Option<GenerationState>, GenerationLogError> {
        let mut logs = self.logs();
        logs.expire(self.ttl, self.max_bytes);
        Ok(logs
            .generations
            .get(&generation_id)
            .map(|log| GenerationState {
                conversation_id: log.conversation_id,
                last_sequence: log.events.len() as u64,
                finished: log.finished.is_some(),
            }))
    }

    async fn follow(
        &self,
        generation_id: GenerationId,
        after: u64,
    ) -> Result<GenerationEvents, GenerationLogError> {
        let appended = {
            let mut logs = self.logs();
            logs.expire(self.ttl, self.max_bytes);
            logs.generations
                .get(&generation_id)
                .map(|log| log.appended.subscribe())
                .ok_or(GenerationLogError::NotFound)?
        };
        let inner = Arc::clone(&self.inner);
        let events = stream::unfold(
            (inner, appended, after, false),
            move |(inner, mut appended, cursor, done)| async move {
                if done {
                    return None;
                }
                loop {
                    // Mark the current value seen before reading, so no append between the read
                    // and the wait goes unnoticed.
                    appended.borrow_and_update();
                    let (events, finished) = pending(&inner, generation_id, cursor)?;
                    if let Some(last) = events.last() {
                        let cursor = last.sequence;
                        let done = finished
                            && pending(&inner, generation_id, cursor)
                                .is_none_or(|(rest, _)| rest.is_empty());
                        let batch = stream::iter(events.into_iter().map(Ok));
                        return Some((batch, (inner, appended, cursor, done)));
                    }
                    if finished || appended.changed().await.is_err() {
                        return None;
                    }
                }
            },
        )
        .flatten();
        Ok(events.boxed())
    }
}
