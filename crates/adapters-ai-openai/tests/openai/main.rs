//! The adapter against a fake provider on 127.0.0.1: requests sent, replies read, failures retried
//! or surfaced as the `Assistant` contract says.

mod capture;
use testkit::fake_openai as fake;

use std::sync::Arc;
use std::time::{Duration, Instant};

use adapters_ai_openai::{OpenAiAssistant, OpenAiConfigError, OpenAiSettings};
use domain::{
    Assistant, AssistantError, ConversationId, Message, MessageId, MessageText, ReplyContext, Role,
    Timestamp,
};
use futures::StreamExt;
use secrecy::SecretString;
use tokio::sync::Notify;

use fake::{done, event, FakeProvider, Part, Reply};

const KEY: &str = "sk-test-7f3a9c1e5b";

fn settings(base_url: &str) -> OpenAiSettings {
    OpenAiSettings {
        timeout: Duration::from_secs(5),
        initial_backoff: Duration::from_millis(5),
        max_backoff: Duration::from_millis(20),
        ..OpenAiSettings::new(base_url, "test-model")
    }
}

fn assistant(settings: OpenAiSettings) -> OpenAiAssistant {
    OpenAiAssistant::new(settings).expect("valid settings")
}

fn context(history: &[(Role, &str)], text: &str) -> ReplyContext {
    let conversation_id = ConversationId::generate();
    let history = history
        .iter()
        .zip(1..)
        .map(|((role, content), position)| Message {
            id: MessageId::generate(),
            conversation_id,
            position,
            role: *role,
            content: (*content).to_owned(),
            created_at: Timestamp::now(),
        })
        .collect();
    ReplyContext {
        conversation_id,
        history,
        user_text: MessageText::new(text, 10_000).unwrap(),
    }
}

/// Every item of the stream a fresh assistant on `fake` answers "Hi" with.
async fn streamed_from(fake: &FakeProvider) -> Vec<Result<String, AssistantError>> {
    collect(
        assistant(settings(&fake.base_url))
            .reply_stream(&context(&[], "Hi"))
            .await
            .unwrap(),
    )
    .await
}

/// Every item of a stream, errors included.
async fn collect(stream: domain::DeltaStream) -> Vec<Result<String, AssistantError>> {
    tokio::time::timeout(Duration::from_secs(10), stream.collect())
        .await
        .expect("the stream ends")
}

fn provider_message(error: AssistantError) -> String {
    match error {
        AssistantError::Provider(message) => message,
        other => panic!("expected a Provider error, got {other:?}"),
    }
}

#[tokio::test]
async fn a_plain_reply_is_the_first_choice_content() {
    let fake = FakeProvider::start(|_, _| Reply::completion("Hello there")).await;
    let reply = assistant(settings(&fake.base_url))
        .reply(&context(&[], "Hi"))
        .await
        .unwrap();
    assert_eq!(reply, "Hello there");
    let requests = fake.requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].path, "/v1/chat/completions");
    assert_eq!(requests[0].body["stream"], false);
}

/// Azure-style gateways take the API version as a query parameter of the base URL.
#[tokio::test]
async fn a_query_in_the_base_url_stays_after_the_joined_path() {
    let fake = FakeProvider::start(|_, _| Reply::completion("ok")).await;
    let settings = settings(&format!("{}/?api-version=2024-06-01", fake.base_url));
    assistant(settings)
        .reply(&context(&[], "hello"))
        .await
        .unwrap();
    assert_eq!(
        fake.requests()[0].path,
        "/v1/chat/completions?api-version=2024-06-01"
    );
}

#[tokio::test]
async fn the_request_carries_model_key_system_prompt_history_and_new_text_in_order() {
    let fake = FakeProvider::start(|_, _| Reply::completion("ok")).await;
    let mut settings = settings(&format!("{}/", fake.base_url));
    settings.api_key = Some(SecretString::from(KEY));
    settings.system_prompt = Some("Be brief.".to_owned());
    let history = [
        (Role::User, "first"),
        (Role::Assistant, "second"),
        (Role::User, "third"),
    ];
    assistant(settings)
        .reply(&context(&history, "fourth"))
        .await
        .unwrap();

    let request = &fake.requests()[0];
    assert_eq!(request.path, "/v1/chat/completions", "no double slash");
    assert_eq!(
        request.header("authorization"),
        Some(format!("Bearer {KEY}").as_str())
    );
    assert_eq!(request.header("content-type"), Some("application/json"));
    assert_eq!(request.body["model"], "test-model");
    assert_eq!(
        request.body["messages"],
        serde_json::json!([
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "first"},
            {"role": "assistant", "content": "second"},
            {"role": "user", "content": "third"},
            {"role": "user", "content": "fourth"},
        ])
    );
}

#[tokio::test]
async fn without_a_key_no_authorization_is_sent() {
    let fake = FakeProvider::start(|_, _| Reply::completion("ok")).await;
    assistant(settings(&fake.base_url))
        .reply(&context(&[], "Hi"))
        .await
        .unwrap();
    let request = &fake.requests()[0];
    assert_eq!(request.header("authorization"), None);
    assert_eq!(
        request.body["messages"],
        serde_json::json!([{"role": "user", "content": "Hi"}])
    );
}

#[tokio::test]
async fn context_messages_is_the_setting() {
    let mut settings = settings("http://127.0.0.1:9/v1");
    settings.context_messages = 7;
    assert_eq!(assistant(settings).context_messages(), 7);
}

#[tokio::test]
async fn streamed_pieces_arrive_while_the_provider_is_still_writing() {
    let gate = Arc::new(Notify::new());
    let provider_gate = Arc::clone(&gate);
    let fake = FakeProvider::start(move |_, _| {
        Reply::Stream(vec![
            Part::Data(event("Hel")),
            Part::WaitFor(Arc::clone(&provider_gate)),
            Part::Data(event("lo")),
            Part::Data(done()),
        ])
    })
    .await;
    let mut stream = assistant(settings(&fake.base_url))
        .reply_stream(&context(&[], "Hi"))
        .await
        .unwrap();
    // The provider writes the rest only after we have the first piece: no buffering of the reply.
    let first = tokio::time::timeout(Duration::from_secs(5), stream.next())
        .await
        .expect("the first piece comes before the provider finishes");
    assert_eq!(first.unwrap().unwrap(), "Hel");
    gate.notify_one();
    let rest: Vec<String> = collect(stream)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    assert_eq!(rest, ["lo"]);
    let request = &fake.requests()[0];
    assert_eq!(request.body["stream"], true);
    assert_eq!(request.header("accept"), Some("text/event-stream"));
}

#[tokio::test]
async fn sse_split_anywhere_with_crlf_comments_and_multiline_data_is_parsed() {
    let fake = FakeProvider::start(|_, _| {
        Reply::Stream(vec![
            Part::Data(
                ": keep-alive\r\n\r\ndata: {\"choices\":[{\"delta\":{\"content\":\"He".to_owned(),
            ),
            Part::Data("llo\"}}]}\r".to_owned()),
            Part::Data(
                "\n\r\ndata: {\"choices\":[{\"delta\":\ndata: {\"content\":\" wörld\"}}]}\n"
                    .to_owned(),
            ),
            Part::Data("\ndata: {\"choices\":[],\"usage\":{\"total_tokens\":4}}\n\nda".to_owned()),
            Part::Data("ta: [DONE]\n\n".to_owned()),
        ])
    })
    .await;
    let stream = assistant(settings(&fake.base_url))
        .reply_stream(&context(&[], "Hi"))
        .await
        .unwrap();
    let pieces: Vec<String> = collect(stream)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    assert_eq!(pieces.concat(), "Hello wörld");
}

#[tokio::test]
async fn rate_limits_are_retried_after_retry_after() {
    let fake = FakeProvider::start(|index, _| match index {
        0 => Reply::Json {
            status: 429,
            headers: vec![("retry-after", "1".to_owned())],
            body: r#"{"error":{"message":"slow down"}}"#.to_owned(),
        },
        _ => Reply::completion("after the wait"),
    })
    .await;
    let reply = assistant(settings(&fake.base_url))
        .reply(&context(&[], "Hi"))
        .await
        .unwrap();
    assert_eq!(reply, "after the wait");
    let requests = fake.requests();
    assert_eq!(requests.len(), 2);
    let waited = requests[1].at.duration_since(requests[0].at);
    assert!(waited >= Duration::from_secs(1), "retried after {waited:?}");
}

#[tokio::test]
async fn a_persistent_server_error_gives_up_after_max_retries_plus_one_attempts() {
    let fake = FakeProvider::start(|_, _| {
        Reply::json(500, r#"{"error":{"message":"model crashed"}}"#.to_owned())
    })
    .await;
    let mut settings = settings(&fake.base_url);
    settings.max_retries = 3;
    let error = assistant(settings)
        .reply(&context(&[], "Hi"))
        .await
        .unwrap_err();
    let message = provider_message(error);
    assert_eq!(fake.requests().len(), 4);
    assert!(message.contains("4 attempts"), "{message}");
    assert!(message.contains("500"), "{message}");
    assert!(message.contains("model crashed"), "{message}");
}

#[tokio::test]
async fn a_stream_start_is_retried_like_a_reply() {
    let fake = FakeProvider::start(|index, _| match index {
        0 => Reply::json(503, "overloaded".to_owned()),
        1 => Reply::Stream(vec![Part::Cut]),
        _ => Reply::pieces(&["third ", "time"]),
    })
    .await;
    let stream = assistant(settings(&fake.base_url))
        .reply_stream(&context(&[], "Hi"))
        .await
        .unwrap();
    let pieces: Vec<String> = collect(stream)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    assert_eq!(pieces.concat(), "third time");
    assert_eq!(fake.requests().len(), 3);
}

#[tokio::test]
async fn other_client_errors_are_not_retried_and_quote_the_provider() {
    let fake = FakeProvider::start(|_, _| {
        Reply::json(
            404,
            r#"{"error":{"message":"The model `gpt-9` does not exist","type":"invalid_request_error"}}"#
                .to_owned(),
        )
    })
    .await;
    let error = assistant(settings(&fake.base_url))
        .reply_stream(&context(&[], "Hi"))
        .await
        .err()
        .expect("a refused request fails before any piece");
    let message = provider_message(error);
    assert_eq!(fake.requests().len(), 1);
    assert!(message.contains("404"), "{message}");
    assert!(
        message.contains("The model `gpt-9` does not exist"),
        "{message}"
    );
}

#[tokio::test]
async fn long_provider_messages_are_truncated() {
    let long = "x".repeat(5_000);
    let body = serde_json::json!({"error": {"message": long}}).to_string();
    let fake = FakeProvider::start(move |_, _| Reply::json(400, body.clone())).await;
    let message = provider_message(
        assistant(settings(&fake.base_url))
            .reply(&context(&[], "Hi"))
            .await
            .unwrap_err(),
    );
    assert!(message.len() < 600, "{} characters", message.len());
}

#[tokio::test]
async fn an_empty_reply_is_a_provider_error() {
    let fake = FakeProvider::start(|index, _| match index {
        0 => Reply::completion(""),
        _ => Reply::pieces(&[]),
    })
    .await;
    let assistant = assistant(settings(&fake.base_url));
    let error = assistant.reply(&context(&[], "Hi")).await.unwrap_err();
    assert!(provider_message(error).contains("empty"));
    let error = assistant
        .reply_stream(&context(&[], "Hi"))
        .await
        .err()
        .unwrap();
    assert!(provider_message(error).contains("empty"));
    assert_eq!(fake.requests().len(), 2, "an empty reply is not retried");
}

#[tokio::test]
async fn a_hanging_provider_times_out_after_every_attempt() {
    let fake = FakeProvider::start(|_, _| Reply::Hang).await;
    let mut settings = settings(&fake.base_url);
    settings.timeout = Duration::from_millis(200);
    settings.max_retries = 1;
    let assistant = assistant(settings);

    let started = Instant::now();
    let error = assistant.reply(&context(&[], "Hi")).await.unwrap_err();
    assert!(matches!(error, AssistantError::Timeout), "{error:?}");
    let error = assistant
        .reply_stream(&context(&[], "Hi"))
        .await
        .err()
        .unwrap();
    assert!(matches!(error, AssistantError::Timeout), "{error:?}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(fake.requests().len(), 4, "two attempts per call");
}

/// What a stream of `parts` from a fake provider gives with `timeout`, and the fake, to count its
/// requests.
async fn streamed(
    parts: Vec<Part>,
    timeout: Duration,
) -> (Vec<Result<String, AssistantError>>, FakeProvider) {
    let fake = FakeProvider::start(move |_, _| Reply::Stream(parts.clone())).await;
    let mut settings = settings(&fake.base_url);
    settings.timeout = timeout;
    let stream = assistant(settings)
        .reply_stream(&context(&[], "Hi"))
        .await
        .unwrap();
    (collect(stream).await, fake)
}

/// Streams "Hel" and then `after`, with a 300 ms timeout: the stream must end with a timeout
/// within a few seconds, after one attempt only (text was shown, so nothing is retried).
async fn assert_times_out_after_hel(after: Vec<Part>) {
    let started = Instant::now();
    let mut parts = vec![Part::Data(event("Hel"))];
    parts.extend(after);
    let (items, fake) = streamed(parts, Duration::from_millis(300)).await;
    assert_eq!(items.len(), 2, "{items:?}");
    assert_eq!(items[0].as_ref().unwrap(), "Hel");
    assert!(
        matches!(items[1], Err(AssistantError::Timeout)),
        "{items:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(fake.requests().len(), 1);
}

#[tokio::test]
async fn a_stream_that_goes_silent_ends_with_a_timeout_and_is_not_retried() {
    assert_times_out_after_hel(vec![Part::Pause(Duration::from_secs(30))]).await;
}

/// `count` copies of `part`, each followed by a pause: bytes that keep the connection busy.
fn repeated(part: &str, count: usize, pause: Duration) -> Vec<Part> {
    (0..count)
        .flat_map(|_| [Part::Data(part.to_owned()), Part::Pause(pause)])
        .collect()
}

#[tokio::test]
async fn keep_alives_and_role_only_chunks_do_not_hold_off_the_timeout_before_text() {
    let role_only =
        "data: {\"choices\":[{\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}]}\n\n";
    let fake = FakeProvider::start(move |index, _| match index {
        0 => Reply::Stream(repeated(": keep-alive\n\n", 50, Duration::from_millis(100))),
        _ => Reply::Stream(repeated(role_only, 50, Duration::from_millis(100))),
    })
    .await;
    let mut settings = settings(&fake.base_url);
    settings.timeout = Duration::from_millis(400);
    settings.max_retries = 1;

    let started = Instant::now();
    let error = assistant(settings)
        .reply_stream(&context(&[], "Hi"))
        .await
        .err()
        .expect("no text ever comes");
    assert!(matches!(error, AssistantError::Timeout), "{error:?}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(fake.requests().len(), 2, "a timeout before text is retried");
}

#[tokio::test]
async fn keep_alives_after_text_do_not_hold_off_the_timeout() {
    assert_times_out_after_hel(repeated(": keep-alive\n\n", 50, Duration::from_millis(100))).await;
}

#[tokio::test]
async fn a_reasoning_model_thinking_longer_than_the_timeout_is_not_cut() {
    let thinking =
        "data: {\"choices\":[{\"delta\":{\"content\":null,\"reasoning_content\":\"hmm\"}}]}\n\n";
    let mut parts = repeated(thinking, 10, Duration::from_millis(100));
    parts.push(Part::Data(event("Answer")));
    parts.push(Part::Data(done()));
    let (items, fake) = streamed(parts, Duration::from_millis(400)).await;
    let pieces: Vec<String> = items.into_iter().map(Result::unwrap).collect();
    assert_eq!(
        pieces.concat(),
        "Answer",
        "the thinking is not part of the reply"
    );
    assert_eq!(fake.requests().len(), 1);
}

#[tokio::test]
async fn a_reply_that_keeps_producing_text_outlasts_the_timeout() {
    let mut parts = repeated(&event("word "), 8, Duration::from_millis(100));
    parts.push(Part::Data(done()));
    let (items, _fake) = streamed(parts, Duration::from_millis(400)).await;
    let pieces: Vec<String> = items.into_iter().map(Result::unwrap).collect();
    assert_eq!(pieces.concat(), "word ".repeat(8));
}

/// A provider that answers every request with these raw bytes, for answers the fake cannot give.
async fn raw_provider(response: &'static str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let mut request = [0u8; 64 * 1024];
            let _ = socket.read(&mut request).await;
            let _ = socket.write_all(response.as_bytes()).await;
            let _ = socket.shutdown().await;
        }
    });
    format!("http://{address}/v1")
}

#[tokio::test]
async fn a_streamed_request_answered_with_html_is_refused_without_retry() {
    let base_url = raw_provider(
        "HTTP/1.1 200 OK\r\ncontent-type: text/html; charset=utf-8\r\ncontent-length: 20\r\nconnection: close\r\n\r\n<html>gateway</html>",
    )
    .await;
    let started = Instant::now();
    let error = assistant(settings(&base_url))
        .reply_stream(&context(&[], "Hi"))
        .await
        .err()
        .expect("HTML is no event stream");
    let message = provider_message(error);
    assert!(message.contains("text/html"), "{message}");
    assert!(!message.contains("attempts"), "not retried: {message}");
    assert!(started.elapsed() < Duration::from_secs(1));
}

#[tokio::test]
async fn a_streamed_request_answered_with_a_whole_completion_is_one_piece() {
    let fake = FakeProvider::start(|index, _| match index {
        0 => Reply::completion("a whole reply"),
        _ => Reply::json(200, "<html>gateway</html>".to_owned()),
    })
    .await;
    let assistant = assistant(settings(&fake.base_url));
    let stream = assistant.reply_stream(&context(&[], "Hi")).await.unwrap();
    let pieces: Vec<String> = collect(stream)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    assert_eq!(pieces, ["a whole reply"]);

    let error = assistant
        .reply_stream(&context(&[], "Hi"))
        .await
        .err()
        .expect("JSON that is no completion");
    assert!(provider_message(error).contains("malformed"));
    assert_eq!(
        fake.requests().len(),
        2,
        "a malformed answer is not retried"
    );
}

#[tokio::test]
async fn replies_over_a_mebibyte_are_refused_without_retry() {
    let piece = "a".repeat(50_000);
    let fake = FakeProvider::start(move |index, _| {
        let streamed = |count: usize| {
            let mut parts: Vec<Part> = (0..count).map(|_| Part::Data(event(&piece))).collect();
            parts.push(Part::Data(done()));
            Reply::Stream(parts)
        };
        match index {
            0 => Reply::completion(&piece.repeat(20)),
            1 => Reply::completion(&piece.repeat(22)),
            2 => streamed(20),
            _ => streamed(22),
        }
    })
    .await;
    let assistant = assistant(settings(&fake.base_url));

    let whole = assistant.reply(&context(&[], "Hi")).await.unwrap();
    assert_eq!(whole.len(), 1_000_000);
    let error = assistant.reply(&context(&[], "Hi")).await.unwrap_err();
    assert!(provider_message(error).contains("longer than"));

    let stream = assistant.reply_stream(&context(&[], "Hi")).await.unwrap();
    let streamed: usize = collect(stream)
        .await
        .into_iter()
        .map(|item| item.unwrap().len())
        .sum();
    assert_eq!(streamed, 1_000_000);
    let items = collect(assistant.reply_stream(&context(&[], "Hi")).await.unwrap()).await;
    let Some(Err(AssistantError::Provider(message))) = items.last() else {
        panic!("expected a Provider error at the end");
    };
    assert!(message.contains("longer than"), "{message}");
    let shown: usize = items.iter().flatten().map(String::len).sum();
    assert!(shown <= 1 << 20, "{shown} bytes passed on");
    assert_eq!(fake.requests().len(), 4, "nothing is retried");
}

#[tokio::test]
async fn an_endless_line_is_refused_as_malformed_without_retry() {
    let fake = FakeProvider::start(|_, _| {
        let mut parts = vec![Part::Data(": ".to_owned())];
        parts.extend((0..80).map(|_| Part::Data("x".repeat(64 * 1024))));
        parts.extend([
            Part::Data("\n\n".to_owned()),
            Part::Data(event("ok")),
            Part::Data(done()),
        ]);
        Reply::Stream(parts)
    })
    .await;
    let error = assistant(settings(&fake.base_url))
        .reply_stream(&context(&[], "Hi"))
        .await
        .err()
        .expect("a 5 MiB line is refused");
    let message = provider_message(error);
    assert!(message.contains("malformed"), "{message}");
    assert_eq!(fake.requests().len(), 1);
}

#[tokio::test]
async fn a_malformed_stream_ends_with_a_provider_error() {
    let fake = FakeProvider::start(|index, _| match index {
        0 => Reply::Stream(vec![
            Part::Data(event("Hel")),
            Part::Data("data: {\"choices\": [oops\n\n".to_owned()),
            Part::Data(done()),
        ]),
        _ => Reply::Stream(vec![Part::Data("data: not json\n\n".to_owned())]),
    })
    .await;
    let assistant = assistant(settings(&fake.base_url));
    let items = collect(assistant.reply_stream(&context(&[], "Hi")).await.unwrap()).await;
    assert_eq!(items.len(), 2, "{items:?}");
    assert_eq!(items[0].as_ref().unwrap(), "Hel");
    let Err(AssistantError::Provider(message)) = &items[1] else {
        panic!("expected a Provider error at the end: {items:?}");
    };
    assert!(message.contains("malformed"), "{message}");

    // Malformed before any text: a plain error from reply_stream, not retried.
    let error = assistant
        .reply_stream(&context(&[], "Hi"))
        .await
        .err()
        .unwrap();
    assert!(provider_message(error).contains("malformed"));
    assert_eq!(fake.requests().len(), 2);
}

/// Before any text was shown, an error event is tried again, like a 5xx.
#[tokio::test]
async fn an_error_event_before_the_first_piece_is_retried() {
    let fake = FakeProvider::start(|index, _| match index {
        0 => Reply::Stream(vec![Part::Data(
            "data: {\"error\":{\"message\":\"engine overloaded\"}}\n\n".to_owned(),
        )]),
        _ => Reply::pieces(&["fine"]),
    })
    .await;
    let items = streamed_from(&fake).await;
    assert_eq!(items.len(), 1, "{items:?}");
    assert_eq!(items[0].as_ref().unwrap(), "fine");
    assert_eq!(fake.requests().len(), 2);
}

#[tokio::test]
async fn an_error_event_inside_the_stream_is_a_provider_error() {
    let fake = FakeProvider::start(|_, _| {
        Reply::Stream(vec![
            Part::Data(event("Hel")),
            Part::Data("data: {\"error\":{\"message\":\"out of memory\"}}\n\n".to_owned()),
        ])
    })
    .await;
    let items = streamed_from(&fake).await;
    let Some(Err(AssistantError::Provider(message))) = items.last() else {
        panic!("{items:?}");
    };
    assert!(message.contains("out of memory"), "{message}");
}

#[tokio::test]
async fn a_stream_cut_after_text_ends_with_an_error_and_is_never_retried() {
    let fake = FakeProvider::start(|index, _| match index {
        // The connection drops in the middle of the chunked body.
        0 => Reply::Stream(vec![
            Part::Data(event("Hel")),
            Part::Data(event("lo")),
            Part::Cut,
        ]),
        // The body ends cleanly, but without [DONE].
        _ => Reply::Stream(vec![Part::Data(event("Hel")), Part::Data(event("lo"))]),
    })
    .await;
    let assistant = assistant(settings(&fake.base_url));
    for expected_requests in [1, 2] {
        let items = collect(assistant.reply_stream(&context(&[], "Hi")).await.unwrap()).await;
        assert_eq!(items.len(), 3, "{items:?}");
        assert_eq!(items[0].as_ref().unwrap(), "Hel");
        assert_eq!(items[1].as_ref().unwrap(), "lo");
        assert!(
            matches!(items[2], Err(AssistantError::Provider(_))),
            "{items:?}"
        );
        assert_eq!(
            fake.requests().len(),
            expected_requests,
            "no retry after text"
        );
    }
}

/// Some servers end the body after the chunk giving the finish reason, without `[DONE]`: that
/// reply is whole.
#[tokio::test]
async fn a_stream_ending_after_its_finish_reason_without_done_is_whole() {
    let finish = r#"data: {"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}"#;
    let fake = FakeProvider::start(move |_, _| {
        Reply::Stream(vec![
            Part::Data(event("Hel")),
            Part::Data(event("lo")),
            Part::Data(format!("{finish}\n\n")),
        ])
    })
    .await;
    let items = streamed_from(&fake).await;
    let pieces: Vec<&str> = items
        .iter()
        .map(|item| item.as_deref().expect("no error"))
        .collect();
    assert_eq!(pieces, ["Hel", "lo"]);
}

/// After the chunk giving the finish reason the reply is whole, however the body then ends: cut
/// (a proxy closing the connection), or held open without `[DONE]`, which ends it within a
/// moment rather than the whole timeout.
#[tokio::test]
async fn a_stream_cut_or_gone_silent_after_its_finish_reason_is_whole() {
    let finish = r#"data: {"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}"#;
    for end in [Part::Cut, Part::Pause(Duration::from_secs(30))] {
        let parts = vec![
            Part::Data(event("Hel")),
            Part::Data(event("lo")),
            Part::Data(format!("{finish}\n\n")),
            end,
        ];
        let started = Instant::now();
        let (items, _fake) = streamed(parts, Duration::from_secs(60)).await;
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
        let pieces: Vec<&str> = items
            .iter()
            .map(|item| item.as_deref().expect("no error"))
            .collect();
        assert_eq!(pieces, ["Hel", "lo"]);
    }
}

#[tokio::test]
async fn callers_beyond_the_queue_are_refused_and_slots_come_back_when_a_stream_is_dropped() {
    let fake = FakeProvider::start(|index, _| match index {
        0 => Reply::Stream(vec![
            Part::Data(event("holding")),
            Part::Pause(Duration::from_secs(30)),
        ]),
        _ => Reply::completion("my turn"),
    })
    .await;
    let mut settings = settings(&fake.base_url);
    settings.max_concurrency = 1;
    settings.max_queue = 1;
    let assistant = assistant(settings);

    let mut holding = assistant.reply_stream(&context(&[], "Hi")).await.unwrap();
    assert_eq!(holding.next().await.unwrap().unwrap(), "holding");

    let waiting = tokio::spawn({
        let assistant = assistant.clone();
        async move { assistant.reply(&context(&[], "Hi")).await }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        !waiting.is_finished(),
        "the second caller waits for the slot"
    );

    let refused =
        tokio::time::timeout(Duration::from_secs(1), assistant.reply(&context(&[], "Hi")))
            .await
            .expect("refused at once, not queued");
    assert!(
        matches!(refused, Err(AssistantError::Overloaded)),
        "{refused:?}"
    );

    drop(holding);
    let reply = tokio::time::timeout(Duration::from_secs(5), waiting)
        .await
        .expect("the slot is released when the stream is dropped")
        .unwrap()
        .unwrap();
    assert_eq!(reply, "my turn");
    assert_eq!(fake.requests().len(), 2, "the refused caller sent nothing");
}

#[tokio::test]
async fn an_unreachable_provider_is_retried_then_a_provider_error() {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let mut settings = settings(&format!("http://127.0.0.1:{port}/v1"));
    settings.api_key = Some(SecretString::from(KEY));
    settings.max_retries = 1;
    let message = provider_message(
        assistant(settings)
            .reply(&context(&[], "Hi"))
            .await
            .unwrap_err(),
    );
    assert!(message.contains("2 attempts"), "{message}");
    assert!(message.contains("could not reach"), "{message}");
    assert!(!message.contains(KEY));
}

#[test]
fn invalid_settings_are_refused_with_the_key_named() {
    let check = |settings: OpenAiSettings, expected: OpenAiConfigError| {
        let error = OpenAiAssistant::new(settings).unwrap_err();
        assert_eq!(error, expected);
        assert!(error.to_string().contains("assistant."), "{error}");
    };
    check(
        OpenAiSettings::new("ftp://example.com/v1", "m"),
        OpenAiConfigError::BaseUrl,
    );
    check(
        OpenAiSettings::new("localhost:11434", "m"),
        OpenAiConfigError::BaseUrl,
    );
    check(
        OpenAiSettings::new("http://localhost/v1", " "),
        OpenAiConfigError::EmptyModel,
    );
    let mut settings = OpenAiSettings::new("http://localhost/v1", "m");
    settings.max_concurrency = 0;
    check(settings, OpenAiConfigError::MaxConcurrency);
    let mut settings = OpenAiSettings::new("http://localhost/v1", "m");
    settings.api_key = Some(SecretString::from("sk-bad\nkey"));
    let error = OpenAiAssistant::new(settings).unwrap_err();
    assert_eq!(error, OpenAiConfigError::ApiKey);
    assert!(!error.to_string().contains("sk-bad"));
}

#[test]
fn credentials_in_the_base_url_stay_out_of_debug_output() {
    let settings = settings("https://gateway:url-secret@llm.example/v1");
    let assistant = assistant(settings.clone());
    for shown in [format!("{settings:?}"), format!("{assistant:?}")] {
        assert!(!shown.contains("url-secret"), "{shown}");
        assert!(!shown.contains("gateway"), "{shown}");
        assert!(shown.contains("https://llm.example/v1"), "{shown}");
    }
}

#[tokio::test]
async fn the_key_stays_out_of_debug_output_errors_and_logs() {
    let logs = capture::LogBuffer::default();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(logs.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let fake = FakeProvider::start(|index, _| match index {
        0 => Reply::json(503, "{}".to_owned()),
        1 => Reply::completion("fine"),
        2 => Reply::pieces(&["streamed"]),
        3 => Reply::Stream(vec![
            Part::Data(event("partial")),
            Part::Data(format!(
                "data: {{\"error\":{{\"message\":\"Key {KEY} over quota\"}}}}\n\n"
            )),
        ]),
        _ => Reply::json(
            401,
            format!(r#"{{"error":{{"message":"Incorrect API key provided: {KEY}"}}}}"#),
        ),
    })
    .await;
    let mut settings = settings(&fake.base_url);
    settings.api_key = Some(SecretString::from(KEY));
    let assistant = assistant(settings.clone());

    assert!(!format!("{settings:?}").contains(KEY));
    assert!(!format!("{assistant:?}").contains(KEY));

    assert_eq!(assistant.reply(&context(&[], "Hi")).await.unwrap(), "fine");
    let stream = assistant.reply_stream(&context(&[], "Hi")).await.unwrap();
    assert_eq!(collect(stream).await.len(), 1);
    let stream = assistant.reply_stream(&context(&[], "Hi")).await.unwrap();
    let mid_stream = collect(stream).await.pop().unwrap().unwrap_err();
    let shown = format!("{mid_stream} {mid_stream:?}");
    assert!(!shown.contains(KEY), "{shown}");
    assert!(shown.contains("[REDACTED]"), "{shown}");
    let error = assistant.reply(&context(&[], "Hi")).await.unwrap_err();
    let shown = format!("{error} {error:?}");
    assert!(!shown.contains(KEY), "{shown}");
    assert!(shown.contains("[REDACTED]"), "{shown}");

    let logs = logs.contents();
    assert!(logs.contains("provider_call"), "the capture works: {logs}");
    assert!(logs.contains("retrying"), "{logs}");
    assert!(!logs.contains(KEY), "{logs}");
    assert_eq!(
        fake.requests()[0].header("authorization"),
        Some(format!("Bearer {KEY}").as_str())
    );
}

#[tokio::test]
async fn metrics_describe_latency_first_token_rate_and_retries() {
    capture::install_metrics();
    let fake = FakeProvider::start(|index, _| match index {
        0 => Reply::json(502, "{}".to_owned()),
        1 => Reply::completion("whole"),
        _ => Reply::Stream(vec![
            Part::Data(event("a")),
            Part::Pause(Duration::from_millis(20)),
            Part::Data(event("bc")),
            Part::Data(done()),
        ]),
    })
    .await;
    let mut settings = settings(&fake.base_url);
    settings.model = "metrics-model".to_owned();
    let assistant = assistant(settings);
    assistant.reply(&context(&[], "Hi")).await.unwrap();
    collect(assistant.reply_stream(&context(&[], "Hi")).await.unwrap()).await;

    let samples = capture::samples_for("metrics-model");
    let named = |name: &str| {
        samples
            .iter()
            .filter(|s| s.name == name)
            .cloned()
            .collect::<Vec<_>>()
    };
    let durations = named("assistant_request_duration_seconds");
    assert_eq!(durations.len(), 2, "{samples:?}");
    assert!(durations
        .iter()
        .all(|s| s.label("outcome") == Some("success")));
    assert_eq!(named("assistant_time_to_first_token_seconds").len(), 1);
    let rate = named("assistant_stream_chars_per_second");
    assert_eq!(rate.len(), 1);
    assert!(rate[0].value > 0.0);
    let retries = named("assistant_retries_total");
    assert_eq!(retries.len(), 1);
    assert_eq!(retries[0].label("reason"), Some("server_error"));
}

/// What the testkit's assistant conformance suite checks, until that crate is in this branch:
/// many callers at once, each getting a whole reply and a streamed one.
#[tokio::test]
async fn replies_concurrently_in_both_forms() {
    let fake = FakeProvider::start(|_, request| {
        if request.body["stream"] == true {
            Reply::Stream(vec![
                Part::Data(event("streamed ")),
                Part::Pause(Duration::from_millis(20)),
                Part::Data(event("reply")),
                Part::Data(done()),
            ])
        } else {
            Reply::completion("whole reply")
        }
    })
    .await;
    let mut settings = settings(&fake.base_url);
    settings.max_concurrency = 3;
    let assistant = assistant(settings);
    let tasks: Vec<_> = (0..8)
        .map(|index| {
            let assistant = assistant.clone();
            tokio::spawn(async move {
                let context = context(&[], &format!("Question {index}?"));
                let whole = assistant.reply(&context).await.unwrap();
                let stream = assistant.reply_stream(&context).await.unwrap();
                let streamed: Vec<String> = collect(stream)
                    .await
                    .into_iter()
                    .map(Result::unwrap)
                    .collect();
                (whole, streamed.concat())
            })
        })
        .collect();
    for task in tasks {
        let (whole, streamed) = task.await.unwrap();
        assert_eq!(whole, "whole reply");
        assert_eq!(streamed, "streamed reply");
    }
    assert_eq!(fake.requests().len(), 16);
}

/// The shared Assistant contracts, against a provider that answers every request well.
mod conformance {
    use super::*;

    async fn healthy_provider() -> (Arc<OpenAiAssistant>, FakeProvider) {
        let provider = FakeProvider::start(|_, request| {
            if request.body["stream"] == true {
                Reply::pieces(&["Hello ", "from ", "the model."])
            } else {
                Reply::completion("Hello from the model.")
            }
        })
        .await;
        let assistant = Arc::new(assistant(settings(&provider.base_url)));
        (assistant, provider)
    }

    testkit::assistant_conformance!(healthy_provider());
}
