//! The contracts of [`GenerationLog`], for every adapter.

use std::sync::Arc;
use std::time::Duration;

use domain::{
    ChosenId, ConversationId, GenerationEvent, GenerationId, GenerationLog, GenerationLogError,
};
use futures::StreamExt;

async fn collect(log: &dyn GenerationLog, id: GenerationId, after: u64) -> Vec<GenerationEvent> {
    let events = log
        .follow(id, after)
        .await
        .expect("follow a known generation");
    tokio::time::timeout(
        Duration::from_secs(10),
        events.map(Result::unwrap).collect::<Vec<_>>(),
    )
    .await
    .expect("a finished generation's stream ends")
}

async fn begun(log: &dyn GenerationLog) -> (ConversationId, GenerationId) {
    let (conversation, generation) = (ConversationId::generate(), GenerationId::generate());
    log.begin(conversation, generation).await.expect("begin");
    (conversation, generation)
}

pub async fn sequences_start_at_one_and_replay_in_order(log: Arc<dyn GenerationLog>) {
    let (_, id) = begun(log.as_ref()).await;
    for (index, name) in ["start", "delta", "delta"].into_iter().enumerate() {
        let sequence = log
            .append(id, name, &format!("{{\"n\":{index}}}"), false)
            .await
            .unwrap();
        assert_eq!(sequence, index as u64 + 1);
    }
    assert_eq!(log.append(id, "done", "{}", true).await.unwrap(), 4);
    let events = collect(log.as_ref(), id, 0).await;
    let names: Vec<&str> = events.iter().map(|event| event.name.as_str()).collect();
    assert_eq!(names, ["start", "delta", "delta", "done"]);
    assert_eq!(events[1].data, "{\"n\":1}");
    let rest = collect(log.as_ref(), id, 2).await;
    assert_eq!(rest.iter().map(|e| e.sequence).collect::<Vec<_>>(), [3, 4]);
}

pub async fn followers_receive_live_events_until_the_last(log: Arc<dyn GenerationLog>) {
    let (_, id) = begun(log.as_ref()).await;
    log.append(id, "start", "{}", false).await.unwrap();
    let follower = {
        let log = Arc::clone(&log);
        tokio::spawn(async move { collect(log.as_ref(), id, 0).await })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    for _ in 0..5 {
        log.append(id, "delta", "{}", false).await.unwrap();
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    log.append(id, "done", "{}", true).await.unwrap();
    let events = follower.await.unwrap();
    assert_eq!(events.len(), 7);
    assert_eq!(events.last().unwrap().name, "done");
}

/// A model may think for seconds between two tokens: longer than one blocking read of a log
/// that waits for new events, and far longer than a network client's usual response timeout.
pub async fn followers_wait_through_long_pauses(log: Arc<dyn GenerationLog>) {
    let (_, id) = begun(log.as_ref()).await;
    log.append(id, "start", "{}", false).await.unwrap();
    let follower = {
        let log = Arc::clone(&log);
        tokio::spawn(async move { collect(log.as_ref(), id, 0).await })
    };
    tokio::time::sleep(Duration::from_millis(2500)).await;
    log.append(id, "delta", "{}", false).await.unwrap();
    tokio::time::sleep(Duration::from_millis(700)).await;
    log.append(id, "done", "{}", true).await.unwrap();
    let names: Vec<String> = follower
        .await
        .unwrap()
        .into_iter()
        .map(|event| event.name)
        .collect();
    assert_eq!(names, ["start", "delta", "done"]);
}

/// The server follows a reply it is about to stream right after `begin`, before the first event:
/// a log that does not know the generation yet leaves every reply unresumable.
pub async fn a_generation_begun_here_can_be_followed_before_its_first_event(
    log: Arc<dyn GenerationLog>,
) {
    let (_, id) = begun(log.as_ref()).await;
    let events = log
        .follow(id, 0)
        .await
        .expect("a generation begun in this process is known");
    let follower = tokio::spawn(tokio::time::timeout(
        Duration::from_secs(10),
        events.map(Result::unwrap).collect::<Vec<_>>(),
    ));
    log.append(id, "start", "{}", false).await.unwrap();
    log.append(id, "done", "{}", true).await.unwrap();
    let names: Vec<String> = follower
        .await
        .unwrap()
        .expect("a finished generation's stream ends")
        .into_iter()
        .map(|event| event.name)
        .collect();
    assert_eq!(names, ["start", "done"]);
}

pub async fn in_progress_names_the_running_generation_until_it_finishes(
    log: Arc<dyn GenerationLog>,
) {
    let (conversation, id) = begun(log.as_ref()).await;
    log.append(id, "start", "{}", false).await.unwrap();
    assert_eq!(log.in_progress(conversation).await.unwrap(), Some(id));
    assert_eq!(
        log.in_progress(ConversationId::generate()).await.unwrap(),
        None
    );
    log.append(id, "done", "{}", true).await.unwrap();
    assert_eq!(log.in_progress(conversation).await.unwrap(), None);
}

pub async fn a_generation_that_logged_nothing_is_not_in_progress(log: Arc<dyn GenerationLog>) {
    let (conversation, older) = begun(log.as_ref()).await;
    log.append(older, "start", "{}", false).await.unwrap();
    let silent = GenerationId::generate();
    log.begin(conversation, silent).await.unwrap();
    assert_eq!(
        log.in_progress(conversation).await.unwrap(),
        Some(older),
        "the newer generation has logged nothing"
    );
    log.append(older, "done", "{}", true).await.unwrap();
    assert_eq!(log.in_progress(conversation).await.unwrap(), None);
}

pub async fn the_newest_running_generation_is_in_progress_until_it_finishes(
    log: Arc<dyn GenerationLog>,
) {
    let (conversation, older) = begun(log.as_ref()).await;
    log.append(older, "start", "{}", false).await.unwrap();
    let newer = GenerationId::generate();
    log.begin(conversation, newer).await.unwrap();
    log.append(newer, "start", "{}", false).await.unwrap();
    assert_eq!(log.in_progress(conversation).await.unwrap(), Some(newer));

    log.append(newer, "done", "{}", true).await.unwrap();
    assert_eq!(
        log.in_progress(conversation).await.unwrap(),
        Some(older),
        "the older reply still runs"
    );
    let newest = GenerationId::generate();
    log.begin(conversation, newest).await.unwrap();
    log.append(newest, "start", "{}", false).await.unwrap();
    log.append(older, "done", "{}", true).await.unwrap();
    assert_eq!(log.in_progress(conversation).await.unwrap(), Some(newest));
    log.append(newest, "done", "{}", true).await.unwrap();
    assert_eq!(log.in_progress(conversation).await.unwrap(), None);
}

pub async fn state_reports_progress(log: Arc<dyn GenerationLog>) {
    let (conversation, id) = begun(log.as_ref()).await;
    log.append(id, "start", "{}", false).await.unwrap();
    let state = log.state(id).await.unwrap().expect("known");
    assert_eq!((state.last_sequence, state.finished), (1, false));
    assert_eq!(state.conversation_id, conversation);
    log.append(id, "done", "{}", true).await.unwrap();
    let state = log.state(id).await.unwrap().expect("known");
    assert_eq!((state.last_sequence, state.finished), (2, true));
    assert_eq!(log.state(GenerationId::generate()).await.unwrap(), None);
}

/// For a log whose finished generations are kept for `ttl` (an adapter's own test picks a short
/// one, so the macro cannot): after it, the generation is unknown to `state` and `follow`.
pub async fn a_finished_log_expires_after_its_ttl(log: Arc<dyn GenerationLog>, ttl: Duration) {
    let (_, id) = begun(log.as_ref()).await;
    log.append(id, "start", "{}", false).await.unwrap();
    log.append(id, "done", "{}", true).await.unwrap();
    assert_eq!(
        collect(log.as_ref(), id, 0).await.len(),
        2,
        "kept until then"
    );
    tokio::time::sleep(ttl + ttl / 2).await;
    assert!(
        matches!(log.follow(id, 0).await, Err(GenerationLogError::NotFound)),
        "an expired log is not followed"
    );
    assert_eq!(log.state(id).await.unwrap(), None);
}

pub async fn unknown_generations_are_not_found(log: Arc<dyn GenerationLog>) {
    assert!(matches!(
        log.follow(GenerationId::generate(), 0).await,
        Err(GenerationLogError::NotFound)
    ));
}

/// A client's chosen id is claimed while it is new, and never once a generation logged it.
pub async fn a_chosen_id_is_claimed_only_while_new(log: Arc<dyn GenerationLog>) {
    let conversation = ConversationId::generate();
    assert_eq!(
        log.claim(conversation, GenerationId::generate())
            .await
            .unwrap(),
        ChosenId::Claimed
    );
    let (conversation, logged) = begun(log.as_ref()).await;
    log.append(logged, "start", "{}", false).await.unwrap();
    let taken = log.claim(conversation, logged).await.unwrap();
    assert_eq!(taken, ChosenId::Taken, "running");
    log.append(logged, "done", "{}", true).await.unwrap();
    let taken = log.claim(conversation, logged).await.unwrap();
    assert_eq!(taken, ChosenId::Taken, "finished");
}

/// Runs every contract against logs made by `make`, each on a log of its own.
#[macro_export]
macro_rules! generation_log_conformance {
    ($make:expr $(,)?) => {
        $crate::__conformance_tests!(
            $make;
            generation_log;
            sequences_start_at_one_and_replay_in_order,
            followers_receive_live_events_until_the_last,
            followers_wait_through_long_pauses,
            a_generation_begun_here_can_be_followed_before_its_first_event,
            in_progress_names_the_running_generation_until_it_finishes,
            a_generation_that_logged_nothing_is_not_in_progress,
            the_newest_running_generation_is_in_progress_until_it_finishes,
            state_reports_progress,
            unknown_generations_are_not_found,
            a_chosen_id_is_claimed_only_while_new,
        );
    };
}
