use std::sync::Arc;
use std::time::Duration;

use adapters_cache::{CacheScope, CachedAssistant, MemoryReplyCache};
use domain::{Assistant, AssistantError, Role};
use futures::StreamExt;

use crate::support::{context, drain, scope, with_counts, Behaviour, CountingAssistant};

const HOUR: Duration = Duration::from_secs(3600);

fn cached(inner: &Arc<CountingAssistant>, key_scope: CacheScope, ttl: Duration) -> CachedAssistant {
    CachedAssistant::new(
        inner.clone(),
        Arc::new(MemoryReplyCache::new(100, 1 << 20)),
        key_scope,
        ttl,
    )
}

#[test]
fn a_repeated_question_is_answered_from_the_cache() {
    let ((), counts) = with_counts(|| async {
        let inner = CountingAssistant::new();
        let assistant = cached(&inner, scope("m", "p"), HOUR);
        let question = context(&[(Role::User, "hi"), (Role::Assistant, "hello")], "what?");

        let first = assistant.reply(&question).await.unwrap();
        let second = assistant.reply(&question).await.unwrap();
        assert_eq!(first, second);
        assert_eq!(inner.calls(), 1);
        // The same exchange in another conversation is the same question.
        let elsewhere = context(&[(Role::User, "hi"), (Role::Assistant, "hello")], "what?");
        assert_eq!(assistant.reply(&elsewhere).await.unwrap(), first);
        assert_eq!(inner.calls(), 1);
    });
    assert_eq!(counts.get("assistant_cache_hits_total"), 2);
    assert_eq!(counts.get("assistant_cache_misses_total"), 1);
    assert_eq!(counts.get("assistant_cache_errors_total{operation=get}"), 0);
}

#[tokio::test]
async fn another_context_prompt_or_model_is_a_miss() {
    let inner = CountingAssistant::new();
    let store = Arc::new(MemoryReplyCache::new(100, 1 << 20));
    let with = |model: &str, prompt: &str| {
        CachedAssistant::new(inner.clone(), store.clone(), scope(model, prompt), HOUR)
    };
    let question = context(&[(Role::User, "hi")], "what?");
    with("m", "p").reply(&question).await.unwrap();
    assert_eq!(inner.calls(), 1);

    let other_history = context(&[(Role::User, "hello")], "what?");
    with("m", "p").reply(&other_history).await.unwrap();
    assert_eq!(inner.calls(), 2, "another history");
    let no_history = context(&[], "what?");
    with("m", "p").reply(&no_history).await.unwrap();
    assert_eq!(inner.calls(), 3, "no history");
    let other_text = context(&[(Role::User, "hi")], "what?!");
    with("m", "p").reply(&other_text).await.unwrap();
    assert_eq!(inner.calls(), 4, "another question");
    with("m", "other prompt").reply(&question).await.unwrap();
    assert_eq!(inner.calls(), 5, "another system prompt");
    with("other model", "p").reply(&question).await.unwrap();
    assert_eq!(inner.calls(), 6, "another model");
    let elsewhere = CacheScope {
        provider: "http://127.0.0.1:11434/v1".to_owned(),
        ..scope("m", "p")
    };
    CachedAssistant::new(inner.clone(), store.clone(), elsewhere, HOUR)
        .reply(&question)
        .await
        .unwrap();
    assert_eq!(inner.calls(), 7, "another provider");

    with("m", "p").reply(&question).await.unwrap();
    assert_eq!(inner.calls(), 7, "the original is still cached");
}

#[tokio::test]
async fn a_hit_streams_the_cached_reply_in_pieces() {
    let inner = CountingAssistant::new();
    let assistant = cached(&inner, scope("m", "p"), HOUR);
    let question = context(&[], "stream it");
    let whole = assistant.reply(&question).await.unwrap();

    let (pieces, error) = drain(assistant.reply_stream(&question).await.unwrap()).await;
    assert!(error.is_none());
    assert_eq!(inner.calls(), 1, "the hit did not ask the assistant");
    assert!(pieces.len() > 3, "{pieces:?}");
    assert!(pieces.iter().all(|piece| !piece.is_empty()));
    assert_eq!(pieces.concat(), whole);
}

#[tokio::test]
async fn a_streamed_miss_is_relayed_as_is_and_then_cached() {
    let inner = CountingAssistant::new();
    let assistant = cached(&inner, scope("m", "p"), HOUR);
    let question = context(&[(Role::Assistant, "earlier")], "tell me");

    let (relayed, error) = drain(assistant.reply_stream(&question).await.unwrap()).await;
    assert!(error.is_none());
    let (direct, _) = drain(inner.reply_stream(&question).await.unwrap()).await;
    assert_eq!(relayed.len(), direct.len(), "piece by piece: {relayed:?}");
    assert_eq!(inner.calls(), 2);

    assert_eq!(assistant.reply(&question).await.unwrap(), relayed.concat());
    assert_eq!(inner.calls(), 2);
}

#[tokio::test]
async fn a_stream_that_fails_midway_is_not_cached() {
    let inner = CountingAssistant::new();
    let assistant = cached(&inner, scope("m", "p"), HOUR);
    let question = context(&[], "flaky");

    inner.set(Behaviour::FailMidStream);
    let (pieces, error) = drain(assistant.reply_stream(&question).await.unwrap()).await;
    assert_eq!(pieces.concat(), "partial reply");
    assert!(matches!(error, Some(AssistantError::Provider(_))));

    inner.set(Behaviour::Answer);
    let (pieces, error) = drain(assistant.reply_stream(&question).await.unwrap()).await;
    assert!(error.is_none());
    assert_eq!(inner.calls(), 2, "the partial reply was not served");
    assert!(pieces.concat().starts_with("reply 2 to flaky"));
}

#[tokio::test]
async fn a_stream_dropped_before_its_end_is_not_cached() {
    let inner = CountingAssistant::new();
    let assistant = cached(&inner, scope("m", "p"), HOUR);
    let question = context(&[], "abandoned");

    let mut stream = assistant.reply_stream(&question).await.unwrap();
    stream.next().await.unwrap().unwrap();
    drop(stream);

    assistant.reply(&question).await.unwrap();
    assert_eq!(inner.calls(), 2);
}

#[tokio::test]
async fn failures_pass_through_and_are_not_cached() {
    let inner = CountingAssistant::new();
    let assistant = cached(&inner, scope("m", "p"), HOUR);
    let question = context(&[], "down");

    inner.set(Behaviour::FailAtOnce);
    assert!(matches!(
        assistant.reply(&question).await,
        Err(AssistantError::Provider(_))
    ));
    assert!(matches!(
        assistant.reply_stream(&question).await.map(drop),
        Err(AssistantError::Provider(_))
    ));

    inner.set(Behaviour::Answer);
    assistant.reply(&question).await.unwrap();
    assert_eq!(inner.calls(), 3);
}

/// The service refuses a blank reply; cached, it would fail every repeat of the question
/// without the assistant being asked again.
#[tokio::test]
async fn a_blank_reply_is_not_cached() {
    let inner = CountingAssistant::new();
    let assistant = cached(&inner, scope("m", "p"), HOUR);
    let question = context(&[], "say nothing");

    inner.set(Behaviour::AnswerBlank);
    assistant.reply(&question).await.unwrap();
    drain(assistant.reply_stream(&question).await.unwrap()).await;
    inner.set(Behaviour::Answer);
    let answer = assistant.reply(&question).await.unwrap();
    assert!(answer.starts_with("reply 3 to"), "{answer}");
    assert_eq!(inner.calls(), 3);
}

#[tokio::test]
async fn cached_replies_expire_after_the_ttl() {
    let inner = CountingAssistant::new();
    let assistant = cached(&inner, scope("m", "p"), Duration::from_secs(1));
    let question = context(&[], "fresh?");
    assistant.reply(&question).await.unwrap();
    assistant.reply(&question).await.unwrap();
    assert_eq!(inner.calls(), 1);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assistant.reply(&question).await.unwrap();
    assert_eq!(inner.calls(), 2);
}

#[tokio::test]
async fn a_zero_ttl_caches_nothing() {
    let inner = CountingAssistant::new();
    let assistant = cached(&inner, scope("m", "p"), Duration::ZERO);
    let question = context(&[], "again");
    assistant.reply(&question).await.unwrap();
    assistant.reply(&question).await.unwrap();
    assert_eq!(inner.calls(), 2);
}

#[test]
fn the_context_size_is_the_inner_assistants() {
    let inner = CountingAssistant::new();
    assert_eq!(cached(&inner, scope("m", "p"), HOUR).context_messages(), 7);
}
