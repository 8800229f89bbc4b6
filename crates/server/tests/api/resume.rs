//! Streamed replies survive a lost connection: the client resumes with the last event id it saw.

use serde_json::{json, Value};

use crate::helpers::{SseEvent, SseReader, TestApp};

async fn slow_app() -> TestApp {
    TestApp::builder()
        .with("CHAT__ASSISTANT__DUMMY__WORD_DELAY_MS", 25)
        .spawn()
        .await
}

/// Sends `content` asking for the reply's event stream, and checks it is one.
async fn post_streamed(app: &TestApp, conversation: &str, content: &str) -> reqwest::Response {
    let response = app
        .post_streamed(conversation, &json!({ "content": content }))
        .await;
    assert_eq!(response.status(), 200);
    response
}

async fn start_stream(app: &TestApp, conversation: &str, content: &str) -> SseReader {
    SseReader::raw(post_streamed(app, conversation, content).await)
}

async fn resume(
    app: &TestApp,
    conversation: &str,
    last_event_id: Option<&str>,
) -> reqwest::Response {
    let mut request = app
        .client
        .get(app.url(&format!("/api/v1/conversations/{conversation}/stream")));
    if let Some(id) = last_event_id {
        request = request.header("last-event-id", id);
    }
    request.send().await.unwrap()
}

async fn read_to_end(reader: &mut SseReader) -> Vec<SseEvent> {
    let mut events = Vec::new();
    while let Some(event) = reader.next_event().await {
        events.push(event);
    }
    events
}

fn text_of(events: &[SseEvent]) -> String {
    events
        .iter()
        .filter(|event| event.event == "delta")
        .map(|event| event.data["text"].as_str().unwrap())
        .collect()
}

fn done(events: &[SseEvent]) -> &Value {
    let done: Vec<&SseEvent> = events
        .iter()
        .filter(|event| event.event == "done")
        .collect();
    assert_eq!(done.len(), 1, "exactly one done: {events:?}");
    &done[0].data
}

/// Reads `count` events, then drops the connection as a reload would.
async fn read_then_disconnect(mut reader: SseReader, count: usize) -> Vec<SseEvent> {
    let mut seen = Vec::new();
    for _ in 0..count {
        seen.push(reader.next_event().await.expect("an event"));
    }
    seen
}

#[tokio::test]
async fn nothing_in_progress_is_204() {
    let app = TestApp::spawn().await;
    let conversation = app.create_conversation(None).await;
    let id = conversation["id"].as_str().unwrap();
    let response = resume(&app, id, None).await;
    assert_eq!(response.status(), 204);
    // An empty id is no id, as SSE clients mean it.
    assert_eq!(resume(&app, id, Some("")).await.status(), 204);
    let empty_after = app
        .client
        .get(app.url(&format!("/api/v1/conversations/{id}/stream?after=")))
        .send()
        .await
        .unwrap();
    assert_eq!(empty_after.status(), 204);
}

#[tokio::test]
async fn every_event_carries_an_id_and_the_stream_opens_with_start() {
    let app = slow_app().await;
    let conversation = app.create_conversation(None).await;
    let id = conversation["id"].as_str().unwrap();
    let events = read_to_end(&mut start_stream(&app, id, "hello there").await).await;
    assert_eq!(events[0].event, "start");
    assert_eq!(events[0].data["content"], "hello there");
    let generation = events[0].data["generation_id"].as_str().unwrap();
    for (index, event) in events.iter().enumerate() {
        assert_eq!(
            event.id.as_deref(),
            Some(format!("{generation}:{}", index + 1).as_str())
        );
    }
}

#[tokio::test]
async fn a_reconnect_in_the_middle_gets_the_rest_of_the_reply() {
    let app = slow_app().await;
    let conversation = app.create_conversation(None).await;
    let id = conversation["id"].as_str().unwrap();
    let before = read_then_disconnect(start_stream(&app, id, "resume me please").await, 3).await;
    let last_id = before.last().unwrap().id.clone().unwrap();

    let response = resume(&app, id, Some(&last_id)).await;
    assert_eq!(response.status(), 200);
    let after = read_to_end(&mut SseReader::raw(response)).await;
    assert!(
        after.iter().all(|event| event.event != "start"),
        "nothing replayed twice"
    );
    let stored = done(&after)["assistant_message"]["content"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(format!("{}{}", text_of(&before), text_of(&after)), stored);
    assert!(stored.ends_with("You said: resume me please"));
}

#[tokio::test]
async fn a_reconnect_before_the_first_delta_gets_the_whole_reply() {
    let app = slow_app().await;
    let conversation = app.create_conversation(None).await;
    let id = conversation["id"].as_str().unwrap();
    let before = read_then_disconnect(start_stream(&app, id, "from the top").await, 1).await;
    assert_eq!(before[0].event, "start");

    let response = resume(&app, id, before[0].id.as_deref()).await;
    let after = read_to_end(&mut SseReader::raw(response)).await;
    let stored = done(&after)["assistant_message"]["content"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(text_of(&after), stored);
}

#[tokio::test]
async fn opening_a_conversation_mid_reply_replays_it_from_the_start() {
    let app = slow_app().await;
    let conversation = app.create_conversation(None).await;
    let id = conversation["id"].as_str().unwrap();
    let _ = read_then_disconnect(start_stream(&app, id, "a reload").await, 2).await;

    let response = resume(&app, id, None).await;
    assert_eq!(response.status(), 200);
    let events = read_to_end(&mut SseReader::raw(response)).await;
    assert_eq!(events[0].event, "start");
    assert_eq!(events[0].data["content"], "a reload");
    let stored = done(&events)["assistant_message"]["content"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(text_of(&events), stored);
}

#[tokio::test]
async fn after_done_there_is_nothing_more_but_a_missed_done_is_replayed() {
    let app = slow_app().await;
    let conversation = app.create_conversation(None).await;
    let id = conversation["id"].as_str().unwrap();
    let events = read_to_end(&mut start_stream(&app, id, "finish first").await).await;
    let done_id = events.last().unwrap().id.clone().unwrap();
    let before_done = events[events.len() - 2].id.clone().unwrap();

    assert_eq!(resume(&app, id, Some(&done_id)).await.status(), 204);
    assert_eq!(
        resume(&app, id, None).await.status(),
        204,
        "nothing in progress"
    );
    let response = resume(&app, id, Some(&before_done)).await;
    assert_eq!(response.status(), 200);
    let missed = read_to_end(&mut SseReader::raw(response)).await;
    assert_eq!(missed.len(), 1);
    assert_eq!(missed[0].event, "done");

    // The query form works like the header.
    let response = app
        .get(&format!(
            "/api/v1/conversations/{id}/stream?after={before_done}"
        ))
        .await;
    assert_eq!(response.status(), 200);
    let missed = read_to_end(&mut SseReader::raw(response)).await;
    assert_eq!(missed.len(), 1);
    assert_eq!(missed[0].event, "done");
    assert_eq!(missed[0].id.as_deref(), Some(done_id.as_str()));

    // An empty header is no id: the query's counts.
    let response = app
        .client
        .get(app.url(&format!(
            "/api/v1/conversations/{id}/stream?after={before_done}"
        )))
        .header("last-event-id", "")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let missed = read_to_end(&mut SseReader::raw(response)).await;
    assert_eq!(missed.len(), 1, "{missed:?}");
}

#[tokio::test]
async fn an_event_id_past_the_replys_last_event_is_refused_live_or_finished() {
    let app = slow_app().await;
    let conversation = app.create_conversation(None).await;
    let id = conversation["id"].as_str().unwrap();
    let mut live = start_stream(&app, id, "a reply still running").await;
    let start = live.next_event().await.expect("the start event");
    let generation = start.id.unwrap().split(':').next().unwrap().to_owned();
    let past_the_end = format!("{generation}:999");

    let response = resume(&app, id, Some(&past_the_end)).await;
    assert_eq!(response.status(), 400, "while the reply runs");
    assert_eq!(
        response.json::<Value>().await.unwrap()["code"],
        "invalid_cursor"
    );

    let rest = read_to_end(&mut live).await;
    assert_eq!(rest.last().unwrap().event, "done");
    assert_eq!(
        resume(&app, id, Some(&past_the_end)).await.status(),
        400,
        "after the reply finished"
    );
}

#[tokio::test]
async fn bad_resume_requests_are_refused() {
    let app = TestApp::spawn().await;
    let conversation = app.create_conversation(None).await;
    let id = conversation["id"].as_str().unwrap();
    for bad in [
        "garbage",
        "not-a-uuid:3",
        "01a20aeb-8ed3-736c-ac31-b885a1d1bb0e:x",
    ] {
        let response = resume(&app, id, Some(bad)).await;
        assert_eq!(response.status(), 400, "{bad}");
        let error: Value = response.json().await.unwrap();
        assert_eq!(error["code"], "invalid_cursor");
    }
    let unknown_generation = "01a20aeb-8ed3-736c-ac31-b885a1d1bb0e:3";
    assert_eq!(
        resume(&app, id, Some(unknown_generation)).await.status(),
        204
    );
    let response = resume(&app, "01a20aeb-8ed3-736c-ac31-b885a1d1bb0f", None).await;
    assert_eq!(response.status(), 404);
}

fn cache_hits(metrics: &str) -> f64 {
    metrics
        .lines()
        .filter(|line| line.starts_with("assistant_cache_hits_total"))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test]
async fn a_repeated_question_is_answered_from_the_memory_cache() {
    let app = TestApp::builder()
        .with("CHAT__CACHE__KIND", "memory")
        .with("CHAT__ASSISTANT__DUMMY__MODE", "canned")
        .spawn()
        .await;
    let hits_before = cache_hits(&app.get("/metrics").await.text().await.unwrap());
    let mut replies = Vec::new();
    for _ in 0..3 {
        let conversation = app.create_conversation(None).await;
        let exchange = app
            .send(conversation["id"].as_str().unwrap(), "same question")
            .await;
        replies.push(
            exchange["assistant_message"]["content"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    let hits_after = cache_hits(&app.get("/metrics").await.text().await.unwrap());
    assert!(
        hits_after - hits_before >= 2.0,
        "{hits_before} -> {hits_after}"
    );
    assert!(
        replies.iter().all(|reply| reply == &replies[0]),
        "{replies:?}"
    );
}

#[tokio::test]
async fn another_conversations_reply_cannot_be_resumed_here() {
    let app = slow_app().await;
    let first = app.create_conversation(None).await;
    let second = app.create_conversation(None).await;
    let events = read_then_disconnect(
        start_stream(&app, first["id"].as_str().unwrap(), "private").await,
        1,
    )
    .await;
    let response = resume(
        &app,
        second["id"].as_str().unwrap(),
        events[0].id.as_deref(),
    )
    .await;
    assert_eq!(response.status(), 204);
}

/// A stream silent for longer than `server.stream_keep_alive_secs` carries comment lines, which
/// keep proxies from closing it; SSE readers skip them, and the events around them are unchanged.
#[tokio::test]
async fn a_silent_stream_carries_keep_alive_comments_that_readers_skip() {
    use futures::StreamExt;

    let app = TestApp::builder()
        .with("CHAT__ASSISTANT__DUMMY__WORD_DELAY_MS", 1_300)
        .with("CHAT__SERVER__STREAM_KEEP_ALIVE_SECS", 1)
        .spawn()
        .await;
    let conversation = app.create_conversation(None).await;
    let id = conversation["id"].as_str().unwrap();
    let response = post_streamed(&app, id, "hi").await;
    // Read until a word has come after a comment: a second and a half of a 1.3 s pause.
    let mut body = String::new();
    let mut chunks = response.bytes_stream();
    while !body
        .split_once(": keep-alive\n\n")
        .is_some_and(|(_, after)| after.contains("event: delta"))
    {
        let chunk = tokio::time::timeout(std::time::Duration::from_secs(10), chunks.next())
            .await
            .expect("the stream keeps moving")
            .expect("the stream goes on")
            .unwrap();
        body.push_str(std::str::from_utf8(&chunk).unwrap());
    }
    assert!(body.contains("\n\n: keep-alive\n\n"), "{body}");

    let names: Vec<&str> = body
        .split_inclusive("\n\n")
        .filter(|block| !block.starts_with(':'))
        .flat_map(str::lines)
        .filter_map(|line| line.strip_prefix("event: "))
        .collect();
    assert_eq!(names.first(), Some(&"start"));
    assert!(names[1..].iter().all(|name| *name == "delta"), "{names:?}");
}

async fn stored_contents(app: &TestApp, conversation: &str) -> Vec<String> {
    let page: Value = app
        .get(&format!("/api/v1/conversations/{conversation}/messages"))
        .await
        .json()
        .await
        .unwrap();
    page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|message| message["content"].as_str().unwrap().to_owned())
        .collect()
}

/// A reply of about a hundred words: at 25 ms a word it runs for seconds.
const LONG_QUESTION: &str = "tell me everything about the river the hills the town the people \
    the markets the songs the winters the summers the bridges the boats the birds the rain";

#[tokio::test]
async fn a_stopped_reply_ends_where_it_got_to_and_that_much_is_stored() {
    let app = slow_app().await;
    let id = app.new_conversation().await;
    let mut reader = start_stream(&app, &id, LONG_QUESTION).await;
    let mut events = Vec::new();
    for _ in 0..3 {
        events.push(reader.next_event().await.expect("an event"));
    }
    let generation = events[0].data["generation_id"].as_str().unwrap().to_owned();

    let response = app.stop_reply(&id, &generation).await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.json::<Value>().await.unwrap(),
        json!({"status": "stopped"})
    );
    events.extend(read_to_end(&mut reader).await);
    let stored = done(&events)["assistant_message"]["content"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(stored, text_of(&events), "the stream's text is the reply");
    assert!(
        !stored.ends_with(&format!("You said: {LONG_QUESTION}")),
        "the reply ran to its end: {stored}"
    );
    assert_eq!(stored_contents(&app, &id).await, [LONG_QUESTION, &stored]);

    // Ended: asked again, there is nothing left to stop.
    let again = app.stop_reply(&id, &generation).await;
    assert_eq!(again.status(), 200);
    assert_eq!(
        again.json::<Value>().await.unwrap(),
        json!({"status": "finished"})
    );
}

#[tokio::test]
async fn a_message_sent_after_a_stop_comes_after_the_stopped_exchange() {
    let app = slow_app().await;
    let id = app.new_conversation().await;
    let mut reader = start_stream(&app, &id, LONG_QUESTION).await;
    let start = reader.next_event().await.expect("the start event");
    reader.next_event().await.expect("a delta");
    let generation = start.data["generation_id"].as_str().unwrap();
    // The client that stopped has gone (a new page): the stop does not need it.
    drop(reader);

    assert_eq!(app.stop_reply(&id, generation).await.status(), 200);
    app.send(&id, "next question").await;
    let contents = stored_contents(&app, &id).await;
    assert_eq!(contents.len(), 4, "{contents:?}");
    assert_eq!(contents[0], LONG_QUESTION);
    assert_eq!(contents[2], "next question");
}

#[tokio::test]
async fn a_stop_names_a_reply_of_this_conversation() {
    let app = slow_app().await;
    let id = app.new_conversation().await;
    let other = app.new_conversation().await;
    let mut reader = start_stream(&app, &id, LONG_QUESTION).await;
    let start = reader.next_event().await.expect("the start event");
    let generation = start.data["generation_id"].as_str().unwrap();

    let error_code = |response: reqwest::Response| async move {
        let status = response.status().as_u16();
        let body: Value = response.json().await.unwrap();
        (status, body["code"].as_str().unwrap().to_owned())
    };
    for (conversation, generation, status, code) in [
        (other.as_str(), generation, 404, "generation_not_found"),
        (
            id.as_str(),
            "0190d4a2-8f00-7000-8000-000000000000",
            404,
            "generation_not_found",
        ),
        (id.as_str(), "not-a-uuid", 400, "invalid_id"),
        (
            id.as_str(),
            "00000000-0000-0000-0000-000000000000",
            400,
            "invalid_id",
        ),
        ("not-a-uuid", generation, 400, "invalid_id"),
        (
            "0190d4a2-8f00-7000-8000-000000000000",
            generation,
            404,
            "conversation_not_found",
        ),
    ] {
        assert_eq!(
            error_code(app.stop_reply(conversation, generation).await).await,
            (status, code.to_owned()),
            "{conversation} {generation}"
        );
    }
    // None of those touched the reply: it runs to its end.
    let events = read_to_end(&mut reader).await;
    assert!(done(&events)["assistant_message"]["content"]
        .as_str()
        .unwrap()
        .ends_with(&format!("You said: {LONG_QUESTION}")));
}

async fn status_and_code(response: reqwest::Response) -> (u16, String) {
    let status = response.status().as_u16();
    let body: Value = response.json().await.unwrap();
    (status, body["code"].as_str().unwrap().to_owned())
}

/// A client may choose its reply's generation id (to stop it before its `start` event comes):
/// a new UUID, for a streamed reply.
#[tokio::test]
async fn a_chosen_generation_id_is_a_new_uuid_sent_for_a_stream() {
    let app = slow_app().await;
    let id = app.new_conversation().await;
    let chosen = domain::GenerationId::generate().to_string();
    let sent = json!({ "content": "hello there", "generation_id": chosen });
    let mut reader = SseReader::raw(app.post_streamed(&id, &sent).await);
    let start = reader.next_event().await.expect("the start event");
    assert_eq!(start.data["generation_id"], chosen.as_str());
    assert!(start
        .id
        .as_deref()
        .unwrap()
        .starts_with(&format!("{chosen}:")));

    let again = json!({ "content": "same id", "generation_id": chosen });
    assert_eq!(
        status_and_code(app.post_streamed(&id, &again).await).await,
        (409, "generation_id_in_use".to_owned()),
        "while it runs"
    );
    done(&read_to_end(&mut reader).await);
    assert_eq!(
        status_and_code(app.post_streamed(&id, &again).await).await,
        (409, "generation_id_in_use".to_owned()),
        "once it has ended"
    );
    for not_chosen in ["reply-1", "00000000-0000-0000-0000-000000000000"] {
        let sent = json!({ "content": "hi", "generation_id": not_chosen });
        assert_eq!(
            status_and_code(app.post_streamed(&id, &sent).await).await,
            (400, "invalid_id".to_owned()),
            "{not_chosen}"
        );
    }
    let unstreamed = json!({
        "content": "hi",
        "generation_id": domain::GenerationId::generate().to_string(),
    });
    assert_eq!(
        status_and_code(
            app.post_json(&format!("/api/v1/conversations/{id}/messages"), &unstreamed)
                .await
        )
        .await,
        (400, "invalid_body".to_owned())
    );
    assert_eq!(stored_contents(&app, &id).await.len(), 2, "only the first");
}

/// A reply stopped once it had text is stored: its message sent again with its id is refused as a
/// used id, not said to be stopped with nothing stored.
#[tokio::test]
async fn a_chosen_id_stopped_after_its_first_words_is_in_use_not_stopped() {
    let app = slow_app().await;
    let id = app.new_conversation().await;
    let chosen = domain::GenerationId::generate().to_string();
    let sent = json!({ "content": LONG_QUESTION, "generation_id": chosen });
    let mut reader = SseReader::raw(app.post_streamed(&id, &sent).await);
    for _ in 0..3 {
        reader.next_event().await.expect("an event");
    }
    assert_eq!(app.stop_reply(&id, &chosen).await.status(), 200);
    done(&read_to_end(&mut reader).await);
    assert_eq!(
        status_and_code(app.post_streamed(&id, &sent).await).await,
        (409, "generation_id_in_use".to_owned())
    );
    assert_eq!(stored_contents(&app, &id).await.len(), 2);
}
