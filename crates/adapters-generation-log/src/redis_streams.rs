use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use domain::{
    ConversationId, GenerationEvent, GenerationEvents, GenerationId, GenerationLog,
    GenerationLogError, GenerationState,
};
use futures::stream::{self, StreamExt};
use redis::aio::{ConnectionManager, MultiplexedConnection};
use redis::streams::{StreamId, StreamRangeReply, StreamReadOptions, StreamReadReply};
use redis::{AsyncCommands, Client, Value};

/// A generation that never finishes (its replica died mid-reply) is dropped after this long.
const UNFINISHED_LIFETIME_SECS: u64 = 3600;
/// How long one blocking read waits before checking that the log still exists.
const BLOCK_MILLIS: usize = 2000;

/// Generation logs in Redis Streams: one stream per generation, entry ids `<sequence>-0`, so any
/// replica sharing the Redis can replay and follow any reply.
#[derive(Clone)]
pub struct RedisGenerationLog {
    client: Client,
    commands: ConnectionManager,
    prefix: String,
    ttl: Duration,
    /// Sequences of the generations this process is writing; a generation has one writer.
    sequences: Arc<Mutex<HashMap<GenerationId, u64>>>,
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
        let commands = ConnectionManager::new(client.clone())
            .await
            .map_err(unavailable)?;
        Ok(Self {
            client,
            commands,
            prefix: prefix.into(),
            ttl,
            sequences: Arc::default(),
        })
    }

    fn stream_key(&self, id: GenerationId) -> String {
        format!("{}:generation:{id}", self.prefix)
    }

    fn current_key(&self, id: ConversationId) -> String {
        format!("{}:conversation:{id}:generation", self.prefix)
    }

    fn next_sequence(&self, id: GenerationId, last: bool) -> Result<u64, GenerationLogError> {
        let mut sequences = self.sequences.lock().unwrap_or_else(|p| p.into_inner());
        let next = sequences.get(&id).ok_or(GenerationLogError::NotFound)? + 1;
        if last {
            sequences.remove(&id);
        } else {
            sequences.insert(id, next);
        }
        Ok(next)
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
        let _: () = commands
            .set_ex(
                self.current_key(conversation_id),
                format!("{conversation_id}/{generation_id}"),
                UNFINISHED_LIFETIME_SECS,
            )
            .await
            .map_err(unavailable)?;
        self.sequences
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(generation_id, 0);
        Ok(())
    }

    async fn append(
        &self,
        generation_id: GenerationId,
        name: &str,
        data: &str,
        last: bool,
    ) -> Result<u64, GenerationLogError> {
        let sequence = self.next_sequence(generation_id, last)?;
        let key = self.stream_key(generation_id);
        let lifetime = if last {
            self.ttl.as_secs().max(1)
        } else {
            UNFINISHED_LIFETIME_SECS
        };
        let fields = [
            ("name", name),
            ("data", data),
            ("last", if last { "1" } else { "0" }),
        ];
        let mut commands = self.commands.clone();
        let (_, _): (Value, Value) = redis::pipe()
            .atomic()
            .xadd(&key, format!("{sequence}-0"), &fields)
            .expire(&key, lifetime as i64)
            .query_async(&mut commands)
            .await
            .map_err(unavailable)?;
        Ok(sequence)
    }

    async fn in_progress(
        &self,
        conversation_id: ConversationId,
    ) -> Result<Option<GenerationId>, GenerationLogError> {
        let mut commands = self.commands.clone();
        let current: Option<String> = commands
            .get(self.current_key(conversation_id))
            .await
            .map_err(unavailable)?;
        let Some(generation_id) = current
            .and_then(|value| value.split('/').nth(1).map(str::to_owned))
            .and_then(|id| id.parse::<GenerationId>().ok())
        else {
            return Ok(None);
        };
        // A finished generation is no longer in progress, whoever wrote the pointer last.
        match self.state(generation_id).await? {
            Some(state) if state.finished => Ok(None),
            _ => Ok(Some(generation_id)),
        }
    }

    async fn state(
        &self,
        generation_id: GenerationId,
    ) -> Result<Option<GenerationState>, GenerationLogError> {
        let mut commands = self.commands.clone();
        let newest: StreamRangeReply = commands
            .xrevrange_count(self.stream_key(generation_id), "+", "-", 1)
            .await
            .map_err(unavailable)?;
        Ok(newest
            .ids
            .first()
            .and_then(event)
            .map(|(event, last)| GenerationState {
                last_sequence: event.sequence,
                finished: last,
            }))
    }

    async fn follow(
        &self,
        generation_id: GenerationId,
        after: u64,
    ) -> Result<GenerationEvents, GenerationLogError> {
        let key = self.stream_key(generation_id);
        let mut commands = self.commands.clone();
        let exists: bool = commands.exists(&key).await.map_err(unavailable)?;
        if !exists
            && !self
                .sequences
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .contains_key(&generation_id)
        {
            return Err(GenerationLogError::NotFound);
        }
        // Blocking reads get a connection of their own: on a shared one they would hold up
        // every other command behind them.
        let reader: MultiplexedConnection = self
            .client
            .get_multiplexed_async_connection()
            .await
            .map_err(unavailable)?;
        let events = stream::unfold(
            (reader, key, after, false),
            move |(mut reader, key, cursor, done)| {
                let options = StreamReadOptions::default().block(BLOCK_MILLIS).count(64);
                async move {
                    if done {
                        return None;
                    }
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
                                let exists: Result<bool, _> = reader.exists(&key).await;
                                match exists {
                                    Ok(true) => continue,
                                    Ok(false) => return None,
                                    Err(error) => {
                                        let failed = stream::iter(vec![Err(unavailable(error))]);
                                        return Some((failed, (reader, key, cursor, true)));
                                    }
                                }
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
