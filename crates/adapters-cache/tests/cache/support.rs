//! Fakes and helpers shared by the test modules.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use adapters_cache::{CacheError, CacheScope, RedisReplyCache, ReplyCache};
use async_trait::async_trait;
use domain::{
    Assistant, AssistantError, ConversationId, DeltaStream, Message, MessageId, MessageText,
    ReplyContext, Role, Timestamp,
};
use futures::stream::{self, StreamExt};
use metrics::{
    Counter, CounterFn, Gauge, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit,
};
pub use testkit::redis_url;

pub fn scope(model: &str, system_prompt: &str) -> CacheScope {
    CacheScope {
        provider: "https://provider.example/v1".to_owned(),
        model: model.to_owned(),
        system_prompt: system_prompt.to_owned(),
    }
}

pub fn context(history: &[(Role, &str)], text: &str) -> ReplyContext {
    let conversation_id = ConversationId::generate();
    ReplyContext {
        conversation_id,
        history: history
            .iter()
            .enumerate()
            .map(|(index, (role, content))| Message {
                id: MessageId::generate(),
                conversation_id,
                position: index as i64 + 1,
                role: *role,
                content: (*content).to_owned(),
                created_at: Timestamp::now(),
            })
            .collect(),
        user_text: MessageText::new(text, 10_000).unwrap(),
    }
}

/// What the fake assistant does on its next calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Behaviour {
    /// Replies `reply <n> to <text>` (n counts calls), streamed word by word.
    Answer,
    /// Streams two pieces of a reply, then an error.
    FailMidStream,
    /// Fails before any piece exists.
    FailAtOnce,
    /// Answers only whitespace and NUL, which the service takes for no answer.
    AnswerBlank,
}

/// An assistant that counts its calls, so a test can tell a cached reply from a fresh one.
#[derive(Debug)]
pub struct CountingAssistant {
    calls: AtomicUsize,
    behaviour: Mutex<Behaviour>,
}

impl CountingAssistant {
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            calls: AtomicUsize::new(0),
            behaviour: Mutex::new(Behaviour::Answer),
        })
    }

    pub fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    pub fn set(&self, behaviour: Behaviour) {
        *self.behaviour.lock().unwrap() = behaviour;
    }

    fn answer(&self, context: &ReplyContext) -> Result<String, AssistantError> {
        let call = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
        match *self.behaviour.lock().unwrap() {
            Behaviour::Answer => Ok(format!(
                "reply {call} to {}, with  some\nwords.",
                context.user_text.as_str()
            )),
            Behaviour::AnswerBlank => Ok(" \n\0 ".to_owned()),
            Behaviour::FailMidStream | Behaviour::FailAtOnce => {
                Err(AssistantError::Provider("fake failure".into()))
            }
        }
    }
}

#[async_trait]
impl Assistant for CountingAssistant {
    fn context_messages(&self) -> usize {
        7
    }

    async fn reply(&self, context: &ReplyContext) -> Result<String, AssistantError> {
        self.answer(context)
    }

    async fn reply_stream(&self, context: &ReplyContext) -> Result<DeltaStream, AssistantError> {
        let behaviour = *self.behaviour.lock().unwrap();
        let result = self.answer(context);
        match behaviour {
            Behaviour::Answer | Behaviour::AnswerBlank => {
                let reply = result?;
                let pieces: Vec<String> = reply.split_inclusive(' ').map(str::to_owned).collect();
                Ok(stream::iter(pieces.into_iter().map(Ok)).boxed())
            }
            Behaviour::FailMidStream => Ok(stream::iter(vec![
                Ok("partial ".to_owned()),
                Ok("reply".to_owned()),
                Err(AssistantError::Provider("connection reset".into())),
            ])
            .boxed()),
            Behaviour::FailAtOnce => Err(result.unwrap_err()),
        }
    }
}

/// The pieces of a stream, and the error it ended with, if any.
pub async fn drain(stream: DeltaStream) -> (Vec<String>, Option<AssistantError>) {
    let mut pieces = Vec::new();
    let mut stream = stream;
    while let Some(item) = stream.next().await {
        match item {
            Ok(piece) => pieces.push(piece),
            Err(error) => return (pieces, Some(error)),
        }
    }
    (pieces, None)
}

/// A store that fails every operation, or takes far too long.
#[derive(Debug)]
pub enum BrokenCache {
    Failing,
    Slow,
}

#[async_trait]
impl ReplyCache for BrokenCache {
    async fn get(&self, _key: &str) -> Result<Option<String>, CacheError> {
        self.misbehave().await?;
        Ok(Some("never served".into()))
    }

    async fn put(&self, _key: &str, _reply: &str, _ttl: Duration) -> Result<(), CacheError> {
        self.misbehave().await
    }
}

impl BrokenCache {
    async fn misbehave(&self) -> Result<(), CacheError> {
        match self {
            BrokenCache::Failing => Err(CacheError::Unavailable("broken on purpose".into())),
            BrokenCache::Slow => {
                tokio::time::sleep(Duration::from_secs(30)).await;
                Ok(())
            }
        }
    }
}

/// Counter values by `name{label=value,...}`, as a test recorder saw them.
#[derive(Debug, Clone, Default)]
pub struct Counts(Arc<Mutex<HashMap<String, u64>>>);

impl Counts {
    pub fn get(&self, name: &str) -> u64 {
        self.0.lock().unwrap().get(name).copied().unwrap_or(0)
    }
}

#[derive(Debug)]
struct CountingRecorder(Counts);

struct CountingCounter {
    name: String,
    counts: Counts,
}

impl CounterFn for CountingCounter {
    fn increment(&self, value: u64) {
        *self
            .counts
            .0
            .lock()
            .unwrap()
            .entry(self.name.clone())
            .or_default() += value;
    }

    fn absolute(&self, value: u64) {
        self.counts
            .0
            .lock()
            .unwrap()
            .insert(self.name.clone(), value);
    }
}

impl Recorder for CountingRecorder {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}

    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        let mut labels: Vec<String> = key
            .labels()
            .map(|label| format!("{}={}", label.key(), label.value()))
            .collect();
        labels.sort();
        let name = if labels.is_empty() {
            key.name().to_owned()
        } else {
            format!("{}{{{}}}", key.name(), labels.join(","))
        };
        Counter::from_arc(Arc::new(CountingCounter {
            name,
            counts: self.0.clone(),
        }))
    }

    fn register_gauge(&self, _: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::noop()
    }

    fn register_histogram(&self, _: &Key, _: &Metadata<'_>) -> Histogram {
        Histogram::noop()
    }
}

/// Runs `test` on a current-thread runtime with a recorder of its own, so parallel tests do not
/// mix their counts; returns its output and the counters it moved.
pub fn with_counts<F, Fut>(test: F) -> (Fut::Output, Counts)
where
    F: FnOnce() -> Fut,
    Fut: Future,
{
    let counts = Counts::default();
    let recorder = CountingRecorder(counts.clone());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let output = metrics::with_local_recorder(&recorder, || runtime.block_on(test()));
    (output, counts)
}

/// A key prefix no other test run uses.
pub fn unique_prefix(test: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("chat-test-{}-{nanos}-{test}", std::process::id())
}

/// A store on the test Redis under a fresh prefix, or `None` (after saying so) when Redis is not
/// reachable outside CI. In CI an unreachable Redis fails the test.
pub async fn test_redis(test: &str) -> Option<TestRedis> {
    let prefix = unique_prefix(test);
    match RedisReplyCache::connect(&redis_url(), prefix.clone()).await {
        Ok(store) => Some(TestRedis { store, prefix }),
        Err(error) => {
            testkit::cannot_run_without(
                "redis",
                format_args!("not reachable (set CHAT_TEST_REDIS_URL): {error}"),
            );
            None
        }
    }
}

#[derive(Debug)]
pub struct TestRedis {
    pub store: RedisReplyCache,
    pub prefix: String,
}

impl TestRedis {
    /// Every key under this run's prefix.
    pub async fn keys(&self) -> Vec<String> {
        keys_under(&self.prefix).await
    }
}

/// Every key under `prefix` (SCAN, never KEYS).
pub async fn keys_under(prefix: &str) -> Vec<String> {
    {
        let client = redis::Client::open(redis_url()).unwrap();
        let mut connection = client.get_multiplexed_async_connection().await.unwrap();
        let mut cursor = 0u64;
        let mut keys = Vec::new();
        loop {
            let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(format!("{prefix}:*"))
                .arg("COUNT")
                .arg(500)
                .query_async(&mut connection)
                .await
                .unwrap();
            keys.extend(batch);
            if next == 0 {
                return keys;
            }
            cursor = next;
        }
    }
}

/// Deletes this run's keys (SCAN + DEL on the prefix) when the test ends, also when it fails.
impl Drop for TestRedis {
    fn drop(&mut self) {
        let pattern = format!("{}:*", self.prefix);
        let cleaned = (|| -> redis::RedisResult<()> {
            let client = redis::Client::open(redis_url())?;
            let mut connection = client.get_connection_with_timeout(Duration::from_secs(2))?;
            let mut cursor = 0u64;
            loop {
                let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                    .arg(cursor)
                    .arg("MATCH")
                    .arg(&pattern)
                    .arg("COUNT")
                    .arg(500)
                    .query(&mut connection)?;
                if !keys.is_empty() {
                    redis::cmd("DEL").arg(keys).query::<()>(&mut connection)?;
                }
                if next == 0 {
                    return Ok(());
                }
                cursor = next;
            }
        })();
        if let Err(error) = cleaned {
            // The keys expire with their ttl anyway.
            eprintln!("could not delete the test keys {pattern}: {error}");
        }
    }
}
