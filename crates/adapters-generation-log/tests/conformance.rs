//! The shared GenerationLog contracts, in memory and on the real Redis.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use adapters_generation_log::{MemoryGenerationLog, RedisGenerationLog};
use domain::GenerationLog;
use futures::StreamExt;
use redis::Commands;

mod memory {
    use super::*;
    use domain::{ConversationId, GenerationId};

    /// Far more than the contract tests log.
    const MAX_BYTES: usize = 1 << 20;

    testkit::generation_log_conformance!(async {
        Arc::new(MemoryGenerationLog::new(Duration::from_secs(60), MAX_BYTES))
            as Arc<dyn GenerationLog>
    });

    #[tokio::test]
    async fn a_finished_log_expires_after_its_ttl() {
        // Long enough that a test thread stalled on a loaded machine still reads it before then.
        let ttl = Duration::from_secs(1);
        testkit::generation_log::a_finished_log_expires_after_its_ttl(
            Arc::new(MemoryGenerationLog::new(ttl, MAX_BYTES)),
            ttl,
        )
        .await;
    }

    /// Logs a finished generation of one 10,000-byte event.
    async fn finish_one(log: &MemoryGenerationLog, conversation: ConversationId) -> GenerationId {
        let id = GenerationId::generate();
        log.begin(conversation, id).await.unwrap();
        log.append(id, "done", &"x".repeat(10_000), true)
            .await
            .unwrap();
        id
    }

    async fn is_kept(log: &MemoryGenerationLog, id: GenerationId) -> bool {
        log.state(id).await.unwrap().is_some()
    }

    #[tokio::test]
    async fn past_the_byte_budget_finished_logs_go_oldest_first_and_running_or_followed_ones_stay()
    {
        // Room for three events of about 10,100 bytes each (the text and some overhead).
        let log = MemoryGenerationLog::new(Duration::from_secs(60), 30_600);
        let conversation = ConversationId::generate();
        let running = GenerationId::generate();
        log.begin(conversation, running).await.unwrap();
        log.append(running, "start", &"r".repeat(10_000), false)
            .await
            .unwrap();
        let mut finished = Vec::new();
        for _ in 0..4 {
            finished.push(finish_one(&log, conversation).await);
        }
        assert!(!is_kept(&log, finished[0]).await);
        assert!(!is_kept(&log, finished[1]).await);
        assert!(is_kept(&log, finished[2]).await);
        assert!(is_kept(&log, finished[3]).await);
        assert!(!log.state(running).await.unwrap().unwrap().finished);

        let follower = log.follow(finished[2], 0).await.unwrap();
        let newest = finish_one(&log, conversation).await;
        assert!(is_kept(&log, finished[2]).await, "a log being read stays");
        assert!(
            !is_kept(&log, finished[3]).await,
            "the next oldest goes instead"
        );
        assert!(is_kept(&log, newest).await);
        drop(follower);
        let newer = finish_one(&log, conversation).await;
        assert!(
            !is_kept(&log, finished[2]).await,
            "read no more, it goes first"
        );
        assert!(is_kept(&log, newest).await);
        assert!(is_kept(&log, newer).await);
        assert!(is_kept(&log, running).await);
    }

    #[tokio::test]
    async fn a_reply_followed_as_it_finishes_past_the_byte_budget_is_read_to_its_final_event() {
        let log = MemoryGenerationLog::new(Duration::from_secs(60), 15_000);
        let generation = GenerationId::generate();
        log.begin(ConversationId::generate(), generation)
            .await
            .unwrap();
        log.append(generation, "start", &"s".repeat(10_000), false)
            .await
            .unwrap();
        let follower = log.follow(generation, 0).await.unwrap();
        log.append(generation, "done", &"d".repeat(10_000), true)
            .await
            .unwrap();
        let events: Vec<_> = follower.collect().await;
        let names: Vec<_> = events
            .into_iter()
            .map(|event| event.unwrap().name)
            .collect();
        assert_eq!(names, ["start", "done"]);
        assert!(
            !is_kept(&log, generation).await,
            "read to its end, it goes for room"
        );
    }
}

/// Deletes every key under a test's prefix when the test ends.
struct RedisKeys {
    url: String,
    prefix: String,
}

impl Drop for RedisKeys {
    fn drop(&mut self) {
        let Ok(client) = redis::Client::open(self.url.as_str()) else {
            return;
        };
        let Ok(mut connection) = client.get_connection() else {
            return;
        };
        let keys: Vec<String> = match connection.scan_match(format!("{}:*", self.prefix)) {
            Ok(keys) => keys.filter_map(Result::ok).collect(),
            Err(_) => return,
        };
        if !keys.is_empty() {
            let _: redis::RedisResult<()> = redis::cmd("DEL").arg(keys).query(&mut connection);
        }
    }
}

async fn redis_log() -> Option<(Arc<dyn GenerationLog>, RedisKeys)> {
    redis_log_kept_for(Duration::from_secs(60)).await
}

/// A log on the real Redis under a prefix of its own, finished generations kept for `ttl`, or
/// `None` (loudly) where Redis is absent outside CI.
async fn redis_log_kept_for(ttl: Duration) -> Option<(Arc<dyn GenerationLog>, RedisKeys)> {
    let url = testkit::redis_url();
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let prefix = format!("chat-test-{}-{nanos}", std::process::id());
    match RedisGenerationLog::connect(&url, prefix.clone(), ttl).await {
        Ok(log) => Some((
            Arc::new(log) as Arc<dyn GenerationLog>,
            RedisKeys { url, prefix },
        )),
        Err(error) => {
            testkit::cannot_run_without(
                "redis",
                format_args!("not reachable at {url} (set CHAT_TEST_REDIS_URL): {error}"),
            );
            None
        }
    }
}

fn now_millis() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis()
}

/// Which adapter wrote an entry.
#[derive(Clone, Copy, PartialEq)]
enum Writer {
    /// One that keeps a liveness key for each generation it writes, as this one does.
    KeepingAlive,
    /// An older version's, without liveness keys: its generations are judged by the clock.
    WithoutLiveness,
}

/// Writes an event (its sequence, name and data) into a generation's stream by hand, as `writer`
/// would have at `at_millis`.
fn write_event(
    connection: &mut redis::Connection,
    key: &str,
    (sequence, name, data): (u64, &str, &str),
    (conversation, at_millis): (domain::ConversationId, u128),
    writer: Writer,
) {
    let mut fields = vec![
        ("name", name.to_owned()),
        ("data", data.to_owned()),
        ("last", "0".to_owned()),
        ("conversation", conversation.to_string()),
        ("at", at_millis.to_string()),
    ];
    if writer == Writer::KeepingAlive {
        fields.push(("alive", "1".to_owned()));
    }
    let _: String = redis::cmd("XADD")
        .arg(key)
        .arg(format!("{sequence}-0"))
        .arg(&fields)
        .query(connection)
        .unwrap();
}

mod redis_streams {
    use super::*;

    testkit::generation_log_conformance!(redis_log());

    #[tokio::test]
    async fn a_finished_log_expires_after_its_ttl() {
        // Redis keeps keys for whole seconds.
        let ttl = Duration::from_secs(1);
        let Some((log, _keys)) = redis_log_kept_for(ttl).await else {
            return;
        };
        testkit::generation_log::a_finished_log_expires_after_its_ttl(log, ttl).await;
    }
}

/// A replica of an older version that died mid-reply never logs the end, and keeps no liveness
/// key: once its log has been silent for as long as a follower waits (two minutes), its
/// generation is no longer in progress.
#[tokio::test]
async fn an_older_writers_generation_silent_for_minutes_is_no_longer_in_progress() {
    let Some((log, keys)) = redis_log().await else {
        return;
    };
    let conversation = domain::ConversationId::generate();
    let (dead, alive) = (
        domain::GenerationId::generate(),
        domain::GenerationId::generate(),
    );
    log.begin(conversation, alive).await.unwrap();
    log.append(alive, "start", "{}", false).await.unwrap();
    // Later, so that it is the newest of the two; begun by another replica, which then died.
    tokio::time::sleep(Duration::from_millis(5)).await;
    let other_replica =
        RedisGenerationLog::connect(&keys.url, keys.prefix.clone(), Duration::from_secs(60))
            .await
            .unwrap();
    other_replica.begin(conversation, dead).await.unwrap();
    let client = redis::Client::open(keys.url.as_str()).unwrap();
    let mut connection = client.get_connection().unwrap();
    let key = format!("{}:generation:{dead}", keys.prefix);
    let three_minutes_ago = now_millis() - 180_000;
    let start = (1, "start", "{}");
    write_event(
        &mut connection,
        &key,
        start,
        (conversation, three_minutes_ago),
        Writer::WithoutLiveness,
    );

    assert_eq!(
        log.in_progress(conversation).await.unwrap(),
        Some(alive),
        "the newer, dead generation is passed over"
    );
    log.append(alive, "done", "{}", true).await.unwrap();
    assert_eq!(log.in_progress(conversation).await.unwrap(), None);
}

/// A resume of a dead older replica's reply (a client reconnecting with its last id, minutes
/// later) learns at once that nothing more will come: its state is finished, and following it
/// replays what was logged and then gives up within one blocking read, not after two minutes more.
#[tokio::test]
async fn an_older_writers_dead_generation_is_finished_and_following_it_gives_up_within_seconds() {
    let Some((log, keys)) = redis_log().await else {
        return;
    };
    let conversation = domain::ConversationId::generate();
    let dead = domain::GenerationId::generate();
    let client = redis::Client::open(keys.url.as_str()).unwrap();
    let mut connection = client.get_connection().unwrap();
    let key = format!("{}:generation:{dead}", keys.prefix);
    let three_minutes_ago = now_millis() - 180_000;
    for event in [(1, "start", "{}"), (2, "delta", "{\"text\":\"Hel\"}")] {
        write_event(
            &mut connection,
            &key,
            event,
            (conversation, three_minutes_ago),
            Writer::WithoutLiveness,
        );
    }

    let state = log.state(dead).await.unwrap().expect("its log is there");
    assert_eq!(state.last_sequence, 2);
    assert!(state.finished, "nothing more will come");

    replays_then_gives_up_at_once(log.as_ref(), dead, 1, (2, "delta")).await;
}

/// Following dead generation `id` after sequence `after` replays `first` (its sequence and name)
/// and then ends with an error within one blocking read.
async fn replays_then_gives_up_at_once(
    log: &dyn GenerationLog,
    id: domain::GenerationId,
    after: u64,
    first: (u64, &str),
) {
    let started = std::time::Instant::now();
    let mut events = log.follow(id, after).await.unwrap();
    let replayed = events.next().await.unwrap().unwrap();
    assert_eq!((replayed.sequence, replayed.name.as_str()), first);
    let ended = tokio::time::timeout(Duration::from_secs(10), events.next())
        .await
        .expect("following a dead generation gives up");
    assert!(matches!(ended, Some(Err(_))), "{ended:?}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "gave up after {:?}",
        started.elapsed()
    );
}

/// A generation this process writes is alive however long it has been silent (a model that
/// thinks for minutes), whatever the clocks say: it is neither finished nor passed over.
#[tokio::test]
async fn a_generation_written_here_is_never_taken_for_dead() {
    let Some((log, keys)) = redis_log().await else {
        return;
    };
    let conversation = domain::ConversationId::generate();
    let thinking = domain::GenerationId::generate();
    log.begin(conversation, thinking).await.unwrap();
    let client = redis::Client::open(keys.url.as_str()).unwrap();
    let mut connection = client.get_connection().unwrap();
    let key = format!("{}:generation:{thinking}", keys.prefix);
    let three_minutes_ago = now_millis() - 180_000;
    write_event(
        &mut connection,
        &key,
        (1, "start", "{}"),
        (conversation, three_minutes_ago),
        Writer::WithoutLiveness,
    );

    let state = log
        .state(thinking)
        .await
        .unwrap()
        .expect("its log is there");
    assert!(!state.finished, "its writer is this process, alive");
    assert_eq!(log.in_progress(conversation).await.unwrap(), Some(thinking));
}

/// A failed append is tried again under the same sequence, so followers see no hole; one whose
/// first attempt reached Redis (its answer lost on the way back) is not written twice.
#[tokio::test]
async fn a_failed_append_leaves_no_hole_and_a_repeated_one_no_double() {
    use futures::StreamExt;

    let Some((log, keys)) = redis_log().await else {
        return;
    };
    let conversation = domain::ConversationId::generate();
    let generation = domain::GenerationId::generate();
    log.begin(conversation, generation).await.unwrap();
    let key = format!("{}:generation:{generation}", keys.prefix);
    let client = redis::Client::open(keys.url.as_str()).unwrap();
    let mut connection = client.get_connection().unwrap();

    // A value of another type under the stream's key makes the append fail.
    let () = connection.set(&key, "in the way").unwrap();
    assert!(log.append(generation, "start", "{}", false).await.is_err());
    let () = connection.del(&key).unwrap();
    assert_eq!(
        log.append(generation, "start", "{}", false).await.unwrap(),
        1
    );

    // The next event as an attempt whose answer was lost left it in the stream.
    let delta = (2, "delta", "{\"text\":\"a\"}");
    let now = (conversation, now_millis());
    write_event(&mut connection, &key, delta, now, Writer::KeepingAlive);
    let retried = log.append(generation, "delta", "{\"text\":\"a\"}", false);
    assert_eq!(retried.await.unwrap(), 2);
    // An event its caller gave up on, although it got there: the next event goes after it.
    let given_up = (3, "delta", "{\"text\":\"b\"}");
    write_event(&mut connection, &key, given_up, now, Writer::KeepingAlive);
    assert_eq!(log.append(generation, "done", "{}", true).await.unwrap(), 4);

    let events: Vec<_> = log
        .follow(generation, 0)
        .await
        .unwrap()
        .map(Result::unwrap)
        .collect()
        .await;
    let logged: Vec<(u64, &str)> = events
        .iter()
        .map(|event| (event.sequence, event.name.as_str()))
        .collect();
    assert_eq!(
        logged,
        [(1, "start"), (2, "delta"), (3, "delta"), (4, "done")]
    );
}

/// A stream that lost entries mid-reply (Redis evicted it, or someone deleted it, and the
/// writer's next event started it again) is not replayed as if whole: a follower reading it from
/// another replica gets the events up to the hole, then an error. Followers where it is written
/// read their own copy and see every event.
#[tokio::test]
async fn a_stream_that_lost_events_is_not_replayed_as_if_whole() {
    let Some((writer, keys)) = redis_log().await else {
        return;
    };
    let conversation = domain::ConversationId::generate();
    let generation = domain::GenerationId::generate();
    writer.begin(conversation, generation).await.unwrap();
    let mut here = writer.follow(generation, 0).await.unwrap();
    for name in ["start", "delta", "delta"] {
        writer.append(generation, name, "{}", false).await.unwrap();
    }
    let client = redis::Client::open(keys.url.as_str()).unwrap();
    let mut connection = client.get_connection().unwrap();
    let () = connection
        .del(format!("{}:generation:{generation}", keys.prefix))
        .unwrap();
    writer
        .append(generation, "delta", "{}", false)
        .await
        .unwrap();

    let other_replica =
        RedisGenerationLog::connect(&keys.url, keys.prefix.clone(), Duration::from_secs(60))
            .await
            .unwrap();
    let mut resumed = other_replica.follow(generation, 1).await.unwrap();
    let first = resumed.next().await.expect("an answer");
    assert!(
        matches!(first, Err(domain::GenerationLogError::Unavailable(ref message)) if message.contains("lost events 2 to 3")),
        "{first:?}"
    );
    assert!(resumed.next().await.is_none(), "nothing after the error");

    writer.append(generation, "done", "{}", true).await.unwrap();
    let mut sequences = Vec::new();
    while let Some(event) = here.next().await {
        sequences.push(event.unwrap().sequence);
    }
    assert_eq!(sequences, [1, 2, 3, 4, 5]);
}

/// Another replica's generation that lost its liveness key (its replica died, and the key's 15 s
/// ran out) is abandoned at once, however recently it logged: not in progress, finished, and
/// following it gives up within one blocking read.
#[tokio::test]
async fn a_generation_no_longer_kept_alive_is_abandoned_at_once() {
    let Some((log, keys)) = redis_log().await else {
        return;
    };
    let conversation = domain::ConversationId::generate();
    let dead = domain::GenerationId::generate();
    let other_replica =
        RedisGenerationLog::connect(&keys.url, keys.prefix.clone(), Duration::from_secs(60))
            .await
            .unwrap();
    other_replica.begin(conversation, dead).await.unwrap();
    other_replica
        .append(dead, "start", "{}", false)
        .await
        .unwrap();
    assert_eq!(log.in_progress(conversation).await.unwrap(), Some(dead));
    drop(other_replica);
    // A renewal under way as it went would set the key again after the removal below.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let client = redis::Client::open(keys.url.as_str()).unwrap();
    let mut connection = client.get_connection().unwrap();
    let () = connection
        .del(format!("{}:generation:{dead}:alive", keys.prefix))
        .unwrap();

    assert_eq!(log.in_progress(conversation).await.unwrap(), None);
    let state = log.state(dead).await.unwrap().expect("its log is there");
    assert!(state.finished, "nothing more will come");
    replays_then_gives_up_at_once(log.as_ref(), dead, 0, (1, "start")).await;
}

/// Another replica's generation whose liveness key is there runs, however long ago it last
/// logged (a model silent for minutes, or a replica whose clock is behind): in progress, not
/// finished, and its followers wait for what comes next.
#[tokio::test]
async fn a_generation_kept_alive_runs_whatever_the_time_of_its_last_event() {
    let Some((log, keys)) = redis_log().await else {
        return;
    };
    let conversation = domain::ConversationId::generate();
    let thinking = domain::GenerationId::generate();
    let other_replica =
        RedisGenerationLog::connect(&keys.url, keys.prefix.clone(), Duration::from_secs(60))
            .await
            .unwrap();
    other_replica.begin(conversation, thinking).await.unwrap();
    let client = redis::Client::open(keys.url.as_str()).unwrap();
    let mut connection = client.get_connection().unwrap();
    let key = format!("{}:generation:{thinking}", keys.prefix);
    let three_minutes_ago = (conversation, now_millis() - 180_000);
    let start = (1, "start", "{}");
    write_event(
        &mut connection,
        &key,
        start,
        three_minutes_ago,
        Writer::KeepingAlive,
    );

    assert_eq!(log.in_progress(conversation).await.unwrap(), Some(thinking));
    let state = log
        .state(thinking)
        .await
        .unwrap()
        .expect("its log is there");
    assert!(!state.finished, "its replica keeps it alive");
    let mut events = log.follow(thinking, 1).await.unwrap();
    let waiting = tokio::time::timeout(Duration::from_secs(3), events.next()).await;
    assert!(
        waiting.is_err(),
        "past a blocking read it still waits: {waiting:?}"
    );
    other_replica
        .append(thinking, "done", "{}", true)
        .await
        .unwrap();
    let done = events.next().await.unwrap().unwrap();
    assert_eq!(done.name, "done");
    assert!(events.next().await.is_none());
}

/// A process renews the liveness of the generations it writes for as long as they run, but not
/// of one whose final event it has tried: if that event cannot be logged, the generation is
/// abandoned 15 s later instead of running for the hour its stream lives. One that finished
/// leaves no key behind.
#[tokio::test]
async fn a_writer_keeps_its_running_generations_alive_and_lets_a_failed_end_go() {
    let Some((log, keys)) = redis_log().await else {
        return;
    };
    let conversation = domain::ConversationId::generate();
    let [running, failed_end, finished] = [(); 3].map(|()| domain::GenerationId::generate());
    for generation in [running, failed_end, finished] {
        log.begin(conversation, generation).await.unwrap();
        log.append(generation, "start", "{}", false).await.unwrap();
    }
    let client = redis::Client::open(keys.url.as_str()).unwrap();
    let mut connection = client.get_connection().unwrap();
    let alive_key = |generation| format!("{}:generation:{generation}:alive", keys.prefix);
    log.append(finished, "done", "{}", true).await.unwrap();
    let stream_key = format!("{}:generation:{failed_end}", keys.prefix);
    let () = connection.del(&stream_key).unwrap();
    let () = connection.set(&stream_key, "in the way").unwrap();
    assert!(log.append(failed_end, "done", "{}", true).await.is_err());

    // Renewed every 5 s, a key never has less than 10 s left; not renewed, 7 s after 8 s.
    tokio::time::sleep(Duration::from_secs(8)).await;
    let left = |connection: &mut redis::Connection, generation| -> i64 {
        connection.pttl(alive_key(generation)).unwrap()
    };
    let running_left = left(&mut connection, running);
    assert!(running_left > 8_500, "renewed: {running_left} ms left");
    let failed_left = left(&mut connection, failed_end);
    assert!(
        (0..=7_000).contains(&failed_left),
        "not renewed: {failed_left} ms left"
    );
    assert_eq!(left(&mut connection, finished), -2, "no key left");
}

/// A final event that got into the stream is logged, whatever the tidying after it meets (Redis
/// too slow to answer, here a key of another type in the way): the append succeeds, so its
/// caller does not try it again, which would fail as the generation is no longer written here.
#[tokio::test]
async fn a_final_event_in_the_stream_is_logged_even_when_tidying_up_after_it_fails() {
    let Some((log, keys)) = redis_log().await else {
        return;
    };
    let conversation = domain::ConversationId::generate();
    let generation = domain::GenerationId::generate();
    log.begin(conversation, generation).await.unwrap();
    log.append(generation, "start", "{}", false).await.unwrap();
    let client = redis::Client::open(keys.url.as_str()).unwrap();
    let mut connection = client.get_connection().unwrap();
    let running = format!("{}:conversation:{conversation}:running", keys.prefix);
    let () = connection.del(&running).unwrap();
    let () = connection.set(&running, "in the way").unwrap();

    assert_eq!(log.append(generation, "done", "{}", true).await.unwrap(), 2);
    let state = log
        .state(generation)
        .await
        .unwrap()
        .expect("its log is there");
    assert!(state.finished);
    assert_eq!(state.last_sequence, 2);
}
