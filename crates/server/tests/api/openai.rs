//! The OpenAI-compatible assistant through the real routes, against a fake provider.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use testkit::fake_openai::{done, event, FakeProvider, Part, Reply};
use tokio::sync::Notify;

use crate::helpers::{eventually, SseEvent, SseReader, TestApp, TestAppBuilder};

const KEY: &str = "sk-test-never-shown";

fn with_provider(provider: &FakeProvider) -> TestAppBuilder {
    TestApp::builder()
        .with("CHAT__ASSISTANT__KIND", "openai")
        .with("CHAT__ASSISTANT__BASE_URL", &provider.base_url)
        .with("CHAT__ASSISTANT__MODEL", "fake-model")
        .with("CHAT__ASSISTANT__API_KEY", KEY)
        .with("CHAT__ASSISTANT__SYSTEM_PROMPT", "Be brief.")
        .with("CHAT__ASSISTANT__MAX_RETRIES", 0)
        .with("CHAT__ASSISTANT__TIMEOUT_SECS", 1)
}

#[tokio::test]
async fn a_streamed_reply_is_relayed_piece_by_piece_and_stored_whole() {
    let provider = FakeProvider::start(|_, _| {
        let mut parts = Vec::new();
        for piece in ["The ", "answer ", "is ", "42."] {
            parts.push(Part::Data(event(piece)));
            parts.push(Part::Pause(Duration::from_millis(30)));
        }
        parts.push(Part::Data(done()));
        Reply::Stream(parts)
    })
    .await;
    let app = with_provider(&provider).spawn().await;
    let conversation = app.create_conversation(None).await;
    let id = conversation["id"].as_str().unwrap();
    let response = app
        .client
        .post(app.url(&format!("/api/v1/conversations/{id}/messages")))
        .header("accept", "text/event-stream")
        .json(&json!({"content": "What is the answer?"}))
        .send()
        .await
        .unwrap();
    let mut reader = SseReader::new(response);
    let mut pieces = Vec::new();
    let done = loop {
        let event = reader.next_event().await.expect("an event");
        match event.event.as_str() {
            "delta" => pieces.push(event.data["text"].as_str().unwrap().to_owned()),
            "done" => break event.data,
            other => panic!("unexpected {other}: {:?}", event.data),
        }
    };
    assert_eq!(pieces, ["The ", "answer ", "is ", "42."]);
    assert_eq!(done["assistant_message"]["content"], "The answer is 42.");
    let stored = app.all_messages(id, 50).await;
    assert_eq!(stored.len(), 2);
    assert_eq!(stored[1]["content"], "The answer is 42.");

    let request = &provider.requests()[0];
    assert_eq!(
        request.header("authorization"),
        Some(format!("Bearer {KEY}").as_str())
    );
    assert_eq!(request.body["model"], "fake-model");
    assert_eq!(request.body["stream"], true);
    assert_eq!(
        request.body["messages"][0],
        json!({"role": "system", "content": "Be brief."})
    );
    assert_eq!(
        request.body["messages"].as_array().unwrap().last().unwrap(),
        &json!({"role": "user", "content": "What is the answer?"})
    );
}

#[tokio::test]
async fn earlier_messages_are_sent_as_context() {
    let provider =
        FakeProvider::start(|index, _| Reply::completion(&format!("reply {index}"))).await;
    let app = with_provider(&provider).spawn().await;
    let conversation = app.create_conversation(None).await;
    let id = conversation["id"].as_str().unwrap();
    app.send(id, "first question").await;
    app.send(id, "second question").await;
    let messages = provider.requests()[1].body["messages"].clone();
    let contents: Vec<&str> = messages
        .as_array()
        .unwrap()
        .iter()
        .map(|message| message["content"].as_str().unwrap())
        .collect();
    assert_eq!(
        contents,
        ["Be brief.", "first question", "reply 0", "second question"]
    );
}

/// As operations.md promises: a plain send, or the seed route's, whose client hangs up while the
/// provider answers (a closed tab, a client timeout, a proxy whose client left) is still completed
/// and stored.
#[tokio::test]
async fn a_plain_send_whose_client_hangs_up_is_still_completed_and_stored() {
    let provider = FakeProvider::start(|_, _| {
        Reply::After(
            Duration::from_millis(600),
            Box::new(Reply::completion("Late but kept.")),
        )
    })
    .await;
    let app = with_provider(&provider).spawn().await;
    let id = app.new_conversation().await;
    let impatient = reqwest::Client::builder()
        .timeout(Duration::from_millis(200))
        .build()
        .unwrap();
    for (path, body) in [
        (
            format!("/api/v1/conversations/{id}/messages"),
            json!({"content": "Gone before the answer"}),
        ),
        (
            "/chat/message".to_owned(),
            json!({"message": "Seed, gone too"}),
        ),
    ] {
        let sent = impatient.post(app.url(&path)).json(&body).send().await;
        assert!(sent.is_err(), "{path}: the client gave up first");
    }

    let app = &app;
    let id = id.as_str();
    eventually(
        "the plain send of the client that left is stored",
        || async move { app.all_messages(id, 50).await.len() == 2 },
    )
    .await;
    eventually(
        "the seed send of the client that left is stored",
        || async move {
            let history: Value = app.get("/chat/history").await.json().await.unwrap();
            history == json!([{"user": "Seed, gone too", "AI": "Late but kept."}])
        },
    )
    .await;
}

async fn assert_failure_stores_nothing(app: &TestApp, status: u16, code: &str) {
    let conversation = app.create_conversation(None).await;
    let id = conversation["id"].as_str().unwrap();
    let response = app
        .post_json(
            &format!("/api/v1/conversations/{id}/messages"),
            &json!({"content": "hello"}),
        )
        .await;
    assert_eq!(response.status(), status);
    let body = response.text().await.unwrap();
    assert!(!body.contains(KEY), "{body}");
    let error: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(error["code"], code);
    assert!(app.all_messages(id, 50).await.is_empty(), "nothing stored");
    let seed = app
        .post_json("/chat/message", &json!({"message": "hello"}))
        .await;
    assert_eq!(seed.status(), status);
    assert!(app.history().await.is_empty());
}

#[tokio::test]
async fn a_failing_provider_is_a_502_and_stores_nothing() {
    let provider =
        FakeProvider::start(|_, _| Reply::json(500, r#"{"error":{"message":"boom"}}"#.to_owned()))
            .await;
    let app = with_provider(&provider).spawn().await;
    assert_failure_stores_nothing(&app, 502, "assistant_failed").await;
}

#[tokio::test]
async fn a_hanging_provider_is_a_504_and_stores_nothing() {
    let provider =
        FakeProvider::start(|_, _| Reply::Stream(vec![Part::Pause(Duration::from_secs(30))])).await;
    let app = with_provider(&provider).spawn().await;
    assert_failure_stores_nothing(&app, 504, "assistant_timeout").await;
}

#[tokio::test]
async fn a_reply_stopped_before_its_first_words_stores_nothing() {
    // Only white space so far: the stream has started, the reply has no text yet.
    let provider = FakeProvider::start(|_, _| {
        Reply::Stream(vec![
            Part::Data(event(" ")),
            Part::Pause(Duration::from_secs(30)),
        ])
    })
    .await;
    let app = patient_with(&provider).await;
    let id = app.new_conversation().await;
    let response = app
        .client
        .post(app.url(&format!("/api/v1/conversations/{id}/messages")))
        .header("accept", "text/event-stream")
        .json(&json!({"content": "never mind"}))
        .send()
        .await
        .unwrap();
    let mut reader = SseReader::raw(response);
    let start = reader.next_event().await.expect("the start event");
    let generation = start.data["generation_id"].as_str().unwrap();
    assert_eq!(app.stop_reply(&id, generation).await.status(), 200);
    let mut last = None;
    while let Some(event) = reader.next_event().await {
        last = Some(event);
    }
    let last = last.expect("a final event");
    assert_eq!(last.event, "error");
    assert_eq!(last.data["code"], "stopped");
    let page: Value = app
        .get(&format!("/api/v1/conversations/{id}/messages"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(page["items"], json!([]));
}

/// A client that chose its reply's generation id stops it while the provider has not answered
/// yet: its send is answered `409 stopped`, and nothing is stored.
#[tokio::test]
async fn a_reply_stopped_before_its_provider_answers_stores_nothing() {
    let provider = FakeProvider::start(|_, _| Reply::Hang).await;
    let app = patient_with(&provider).await;
    let id = app.new_conversation().await;
    let generation = domain::GenerationId::generate().to_string();
    let body = json!({"content": "never mind", "generation_id": generation});
    let (answer, ()) = tokio::join!(app.post_streamed(&id, &body), async {
        asked_once(&provider).await;
        let stopped = app.stop_reply(&id, &generation).await;
        assert_eq!(stopped.status(), 200);
        assert_eq!(
            stopped.json::<Value>().await.unwrap(),
            json!({"status": "stopped"})
        );
    });
    assert_eq!(answer.status(), 409);
    assert_eq!(answer.json::<Value>().await.unwrap()["code"], "stopped");
    assert!(app.all_messages(&id, 50).await.is_empty(), "nothing stored");
    // Sent again (a client that lost the answer), it is answered as the first send was.
    let again = app.post_streamed(&id, &body).await;
    assert_eq!(again.status(), 409);
    assert_eq!(again.json::<Value>().await.unwrap()["code"], "stopped");
    assert_eq!(provider.requests().len(), 1, "the provider was asked again");
}

/// The app asking `provider`, whose answer it waits a minute for.
async fn patient_with(provider: &FakeProvider) -> TestApp {
    with_provider(provider)
        .with("CHAT__ASSISTANT__TIMEOUT_SECS", 60)
        .spawn()
        .await
}

/// Returns once `provider` has been asked for a reply.
async fn asked_once(provider: &FakeProvider) {
    eventually("the provider is asked", || async move {
        provider.requests().len() == 1
    })
    .await;
}

/// Follows the conversation's reply in progress, as a reloaded page or another tab does.
async fn follow(app: &TestApp, conversation: &str) -> SseReader {
    let response = app
        .client
        .get(app.url(&format!("/api/v1/conversations/{conversation}/stream")))
        .header("accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "a reply in progress");
    SseReader::raw(response)
}

/// A provider that starts its answer only once the test says go, with these parts after it.
async fn answering_on_cue(parts: Vec<Part>) -> (FakeProvider, Arc<Notify>) {
    let go = Arc::new(Notify::new());
    let cue = Arc::clone(&go);
    let provider = FakeProvider::start(move |_, _| {
        let mut stream = vec![Part::WaitFor(Arc::clone(&cue))];
        stream.extend(parts.iter().cloned());
        Reply::Stream(stream)
    })
    .await;
    (provider, go)
}

/// A streamed send waiting for its model's first words is its conversation's reply in progress
/// from the start: another client (a reloaded page, another tab) follows it from its message,
/// then its words as they come, to the stored exchange.
#[tokio::test]
async fn a_send_waiting_for_its_model_is_followed_from_its_message_to_its_stored_reply() {
    let (provider, go) = answering_on_cue(vec![
        Part::Data(event("Worth ")),
        Part::Data(event("the wait.")),
        Part::Data(done()),
    ])
    .await;
    let app = patient_with(&provider).await;
    let id = app.new_conversation().await;
    let body = json!({"content": "take your time"});
    let (answer, followed) = tokio::join!(app.post_streamed(&id, &body), async {
        asked_once(&provider).await;
        let mut follower = follow(&app, &id).await;
        let start = follower.next_event().await.expect("the start event");
        go.notify_one();
        let mut events = vec![start];
        while let Some(event) = follower.next_event().await {
            events.push(event);
        }
        events
    });
    assert_eq!(answer.status(), 200);
    let names: Vec<&str> = followed.iter().map(|e| e.event.as_str()).collect();
    assert_eq!(names, ["start", "delta", "delta", "done"]);
    assert_eq!(followed[0].data["content"], "take your time");
    let sent: Vec<SseEvent> = {
        let mut reader = SseReader::raw(answer);
        let mut events = Vec::new();
        while let Some(event) = reader.next_event().await {
            events.push(event);
        }
        events
    };
    assert_eq!(sent, followed, "the sender and the follower see one reply");
    let stored = app.all_messages(&id, 50).await;
    assert_eq!(stored[1]["content"], "Worth the wait.");
    assert_eq!(followed[3].data["assistant_message"], stored[1]);
}

/// A send waiting for its model is stopped by another client, with the id its `start` event
/// names: the send is answered `409 stopped`, the follower's stream ends with that, and nothing
/// is stored.
#[tokio::test]
async fn a_send_waiting_for_its_model_is_stopped_by_a_client_that_follows_it() {
    let provider = FakeProvider::start(|_, _| Reply::Hang).await;
    let app = patient_with(&provider).await;
    let id = app.new_conversation().await;
    let body = json!({"content": "still thinking?"});
    let (answer, ()) = tokio::join!(app.post_streamed(&id, &body), async {
        asked_once(&provider).await;
        let mut follower = follow(&app, &id).await;
        let start = follower.next_event().await.expect("the start event");
        assert_eq!(start.data["content"], "still thinking?");
        let generation = start.data["generation_id"].as_str().unwrap();
        let stopped = app.stop_reply(&id, generation).await;
        assert_eq!(stopped.json::<Value>().await.unwrap()["status"], "stopped");
        let end = follower.next_event().await.expect("the final event");
        assert_eq!(end.event, "error");
        assert_eq!(end.data["code"], "stopped");
        assert!(follower.next_event().await.is_none());
    });
    assert_eq!(answer.status(), 409);
    assert_eq!(answer.json::<Value>().await.unwrap()["code"], "stopped");
    assert!(app.all_messages(&id, 50).await.is_empty(), "nothing stored");
}

/// A model that fails before its first words: its sender is answered with a plain error, and
/// a client that followed the send while it waited sees its stream end with that error.
#[tokio::test]
async fn a_model_failing_before_its_first_words_ends_its_followers_stream_with_the_senders_error() {
    let (provider, go) = answering_on_cue(vec![Part::Cut]).await;
    let app = patient_with(&provider).await;
    let id = app.new_conversation().await;
    let generation = domain::GenerationId::generate().to_string();
    let body = json!({"content": "will this work?", "generation_id": generation});
    let (answer, end) = tokio::join!(app.post_streamed(&id, &body), async {
        asked_once(&provider).await;
        let mut follower = follow(&app, &id).await;
        assert_eq!(follower.next_event().await.unwrap().event, "start");
        go.notify_one();
        let end = follower.next_event().await.expect("the final event");
        assert!(follower.next_event().await.is_none());
        end
    });
    assert_eq!(answer.status(), 502);
    let error: Value = answer.json().await.unwrap();
    assert_eq!(end.event, "error");
    assert_eq!(end.data["code"], error["code"]);
    assert_eq!(end.data["message"], error["message"]);
    assert!(app.all_messages(&id, 50).await.is_empty(), "nothing stored");

    // Sent again with its id, it is refused, not answered twice; read from its start by that id,
    // the log says how it ended.
    let again = app.post_streamed(&id, &body).await;
    assert_eq!(again.status(), 409);
    assert_eq!(
        again.json::<Value>().await.unwrap()["code"],
        "generation_id_in_use"
    );
    let replayed = app
        .client
        .get(app.url(&format!("/api/v1/conversations/{id}/stream")))
        .header("last-event-id", format!("{generation}:0"))
        .send()
        .await
        .unwrap();
    let mut replayed = SseReader::raw(replayed);
    assert_eq!(replayed.next_event().await.unwrap().event, "start");
    assert_eq!(replayed.next_event().await.unwrap(), end);
    assert!(replayed.next_event().await.is_none());
}

/// A send whose connection is reset while its model has not answered is dropped with it (the
/// model's request too, so nothing is stored): a client that follows it is told so, and the
/// request leaves `http_requests_in_flight`.
#[tokio::test]
async fn a_send_reset_while_its_model_has_not_answered_ends_its_followers_stream_and_its_count() {
    let provider = FakeProvider::start(|_, _| Reply::Hang).await;
    let app = patient_with(&provider).await;
    let id = app.new_conversation().await;
    let address = app
        .url("")
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_owned();
    let mut sender = tokio::net::TcpStream::connect(address).await.unwrap();
    let body = json!({"content": "cut me off"}).to_string();
    let head = format!(
        "POST /api/v1/conversations/{id}/messages HTTP/1.1\r\nHost: 127.0.0.1\r\n\
         Accept: text/event-stream\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    tokio::io::AsyncWriteExt::write_all(&mut sender, head.as_bytes())
        .await
        .unwrap();
    asked_once(&provider).await;
    let mut follower = follow(&app, &id).await;
    assert_eq!(follower.next_event().await.unwrap().event, "start");
    // Closed with a reset (not a FIN, after which a send goes on to its end).
    sender.set_zero_linger().unwrap();
    drop(sender);

    let end = follower.next_event().await.expect("the final event");
    assert_eq!(end.event, "error");
    assert_eq!(end.data["code"], "interrupted");
    assert!(
        end.data["message"]
            .as_str()
            .unwrap()
            .contains("nothing was stored"),
        "{end:?}"
    );
    let app = &app;
    eventually("only the metrics request is in flight", || async move {
        let metrics = app.get("/metrics").await.text().await.unwrap();
        metrics
            .lines()
            .any(|line| line == "http_requests_in_flight 1")
    })
    .await;
    assert!(app.all_messages(&id, 50).await.is_empty(), "nothing stored");
}

/// A stop may overtake its message (the client chose the id): the reply is stopped before its
/// provider is asked, and that stop ends no other reply.
#[tokio::test]
async fn a_stop_that_overtakes_its_message_stops_the_reply_before_the_provider_is_asked() {
    let provider = FakeProvider::start(|_, _| Reply::pieces(&["Asked ", "once."])).await;
    let app = with_provider(&provider).spawn().await;
    let id = app.new_conversation().await;
    let generation = domain::GenerationId::generate().to_string();
    let stopped = app.stop_reply(&id, &generation).await;
    assert_eq!(stopped.status(), 404);
    assert_eq!(
        stopped.json::<Value>().await.unwrap()["code"],
        "generation_not_found"
    );

    let overtaken = json!({"content": "never mind", "generation_id": generation});
    let answer = app.post_streamed(&id, &overtaken).await;
    assert_eq!(answer.status(), 409);
    assert_eq!(answer.json::<Value>().await.unwrap()["code"], "stopped");
    assert!(provider.requests().is_empty(), "the provider was asked");
    // Sent again (a client that lost the answer), it is stopped again.
    let again = app.post_streamed(&id, &overtaken).await;
    assert_eq!(again.status(), 409);
    assert_eq!(again.json::<Value>().await.unwrap()["code"], "stopped");
    assert!(provider.requests().is_empty(), "the provider was asked");

    let next = json!({
        "content": "and now?",
        "generation_id": domain::GenerationId::generate().to_string(),
    });
    let mut reader = SseReader::raw(app.post_streamed(&id, &next).await);
    let mut last = None;
    while let Some(event) = reader.next_event().await {
        last = Some(event);
    }
    assert_eq!(last.expect("a final event").event, "done");
    let stored: Vec<Value> = app.all_messages(&id, 50).await;
    let contents: Vec<&str> = stored
        .iter()
        .map(|m| m["content"].as_str().unwrap())
        .collect();
    assert_eq!(contents, ["and now?", "Asked once."]);
}

/// Deleting a conversation whose send waits for its model ends the send then, not at the model's
/// timeout: it is answered `404 conversation_not_found`, as a send to a deleted conversation is,
/// and so is a client that followed it.
#[tokio::test]
async fn deleting_a_conversation_ends_its_send_that_waits_for_the_model() {
    let provider = FakeProvider::start(|_, _| Reply::Hang).await;
    let app = patient_with(&provider).await;
    let id = app.new_conversation().await;
    let body = json!({"content": "are you there?"});
    let (answer, ()) = tokio::join!(app.post_streamed(&id, &body), async {
        asked_once(&provider).await;
        let mut follower = follow(&app, &id).await;
        follower.next_event().await.expect("the start event");
        assert_eq!(app.delete_conversation(&id).await.status(), 204);
        let end = follower.next_event().await.expect("the final event");
        assert_eq!(end.event, "error");
        assert_eq!(end.data["code"], "conversation_not_found");
        assert!(follower.next_event().await.is_none());
    });
    assert_eq!(answer.status(), 404);
    assert_eq!(
        answer.json::<Value>().await.unwrap()["code"],
        "conversation_not_found"
    );
}

/// Deleting a conversation in the middle of its reply ends the reply there, before the rest of its
/// model's answer: the stream ends with `conversation_not_found` rather than a `done` nothing holds.
#[tokio::test]
async fn deleting_a_conversation_ends_its_reply_in_the_middle() {
    let go = Arc::new(Notify::new());
    let cue = Arc::clone(&go);
    let provider = FakeProvider::start(move |_, _| {
        Reply::Stream(vec![
            Part::Data(event("The first words ")),
            Part::WaitFor(Arc::clone(&cue)),
            Part::Data(event("and the rest.")),
            Part::Data(done()),
        ])
    })
    .await;
    let app = patient_with(&provider).await;
    let id = app.new_conversation().await;
    let answer = app.post_streamed(&id, &json!({"content": "go on"})).await;
    assert_eq!(answer.status(), 200);
    let mut reader = SseReader::new(answer);
    let first = reader.next_event().await.expect("the first words");
    assert_eq!(first.event, "delta");
    assert_eq!(app.delete_conversation(&id).await.status(), 204);
    let end = reader.next_event().await.expect("the final event");
    assert_eq!(end.event, "error");
    assert_eq!(end.data["code"], "conversation_not_found");
    go.notify_one();
    assert!(reader.next_event().await.is_none());
}

#[tokio::test]
async fn a_stream_cut_in_the_middle_ends_with_an_error_event_and_stores_nothing() {
    let provider =
        FakeProvider::start(|_, _| Reply::Stream(vec![Part::Data(event("partial ")), Part::Cut]))
            .await;
    let app = with_provider(&provider).spawn().await;
    let conversation = app.create_conversation(None).await;
    let id = conversation["id"].as_str().unwrap();
    let response = app
        .client
        .post(app.url(&format!("/api/v1/conversations/{id}/messages")))
        .header("accept", "text/event-stream")
        .json(&json!({"content": "hello"}))
        .send()
        .await
        .unwrap();
    let mut reader = SseReader::new(response);
    let mut names = Vec::new();
    while let Some(event) = reader.next_event().await {
        names.push(event.event.clone());
        if event.event == "error" {
            assert_eq!(event.data["code"], "assistant_failed");
        }
    }
    assert_eq!(names, ["delta", "error"]);
    assert!(app.all_messages(id, 50).await.is_empty());
}
