//! The original app's contract, byte for byte.

use serde_json::{json, Value};

use crate::helpers::TestApp;

#[tokio::test]
async fn history_starts_empty() {
    let app = TestApp::spawn().await;
    let response = app.get("/chat/history").await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/json");
    assert_eq!(response.text().await.unwrap(), "[]");
}

#[tokio::test]
async fn a_message_is_answered_and_stored_before_the_response() {
    let app = TestApp::spawn().await;
    let response = app
        .post_json("/chat/message", &json!({"message": "Hello, AI assistant!"}))
        .await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["status"], "Success");
    let reply = body["response"].as_str().unwrap().to_owned();
    assert!(reply.ends_with("You said: Hello, AI assistant!"), "{reply}");
    assert_eq!(body.as_object().unwrap().len(), 2);

    let history = app.get("/chat/history").await.text().await.unwrap();
    let expected = format!(
        r#"[{{"user":"Hello, AI assistant!","AI":{}}}]"#,
        serde_json::to_string(&reply).unwrap()
    );
    assert_eq!(history, expected);
}

#[tokio::test]
async fn history_is_oldest_first() {
    let app = TestApp::spawn().await;
    for text in ["first", "second", "third"] {
        assert_eq!(
            app.post_json("/chat/message", &json!({"message": text}))
                .await
                .status(),
            200
        );
    }
    let users = app.history_users().await;
    assert_eq!(users, ["first", "second", "third"]);
}

#[tokio::test]
async fn a_long_history_is_streamed_whole_across_pages() {
    let app = &TestApp::spawn().await;
    // More than two storage pages (200 messages each) to cross page boundaries.
    let texts: Vec<String> = (0..230).map(|i| format!("message {i}")).collect();
    for chunk in texts.chunks(50) {
        let sends = chunk.iter().map(|text| {
            let body = json!({ "message": text });
            async move { app.post_json("/chat/message", &body).await }
        });
        for response in futures::future::join_all(sends).await {
            assert_eq!(response.status(), 200);
        }
    }
    let history = app.history().await;
    assert_eq!(history.len(), 230);
    for entry in &history {
        let user = entry["user"].as_str().unwrap();
        assert!(entry["AI"]
            .as_str()
            .unwrap()
            .ends_with(&format!("You said: {user}")));
    }
}

#[tokio::test]
async fn an_http10_client_gets_the_history_unchunked_ended_by_the_close() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let app = TestApp::spawn().await;
    app.post_json("/chat/message", &json!({"message": "over HTTP/1.0"}))
        .await;
    let authority = app.address.trim_start_matches("http://");
    let mut connection = tokio::net::TcpStream::connect(authority).await.unwrap();
    connection
        .write_all(b"GET /chat/history HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(
        std::time::Duration::from_secs(5),
        connection.read_to_end(&mut answer),
    )
    .await
    .expect("the body ends with the connection")
    .unwrap();
    let answer = String::from_utf8(answer).unwrap();
    let (head, body) = answer.split_once("\r\n\r\n").expect("a head and a body");
    assert!(head.starts_with("HTTP/1.0 200"), "{head}");
    assert!(
        !head.to_ascii_lowercase().contains("transfer-encoding"),
        "{head}"
    );
    let history: Vec<Value> = serde_json::from_str(body).expect("the body is the bare array");
    assert_eq!(history.len(), 1);
    assert_eq!(history[0]["user"], "over HTTP/1.0");
}

async fn assert_rejected(app: &TestApp, content_type: Option<&str>, body: &[u8], status: u16) {
    let response = app
        .post_raw("/chat/message", content_type, body.to_vec())
        .await;
    assert_eq!(
        response.status(),
        status,
        "body {:?}",
        String::from_utf8_lossy(body)
    );
    assert!(response.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/json"));
    let error: Value = response.json().await.unwrap();
    assert_eq!(error["status"], "error", "{error}");
    assert!(!error["message"].as_str().unwrap().is_empty());
    assert_eq!(error.as_object().unwrap().len(), 2, "{error}");
}

#[tokio::test]
async fn bad_requests_get_400_and_leave_no_trace() {
    let app = TestApp::spawn().await;
    let json = Some("application/json");
    for body in [
        &b"{not json"[..],
        b"",
        b"   ",
        b"{}",
        b"{\"msg\": \"hi\"}",
        b"{\"message\": 5}",
        b"{\"message\": null}",
        b"{\"message\": [\"hi\"]}",
        b"[{\"message\": \"hi\"}]",
        b"\"hi\"",
        b"{\"message\": \"\"}",
        b"{\"message\": \"   \\n\\t \"}",
        b"{\"message\": \"\xff\xfe\"}",
        b"{\"message\": \"a\\u0000b\"}",
    ] {
        assert_rejected(&app, json, body, 400).await;
    }
    assert_eq!(app.history().await, Vec::<Value>::new());
}

/// What the original app's `json.loads` of the body read, this one reads: a body saved with a
/// byte order mark (Windows Notepad's UTF-8), UTF-16, a field given twice (the last counts).
#[tokio::test]
async fn bodies_the_original_app_read_are_read_alike() {
    let app = TestApp::spawn().await;
    let json = Some("application/json");
    let with_bom = [
        b"\xEF\xBB\xBF".as_slice(),
        br#"{"message": "from notepad"}"#,
    ]
    .concat();
    let utf16: Vec<u8> = [0xFF, 0xFE]
        .into_iter()
        .chain(r#"{"message": "in UTF-16 😀"}"#.encode_utf16().flat_map(u16::to_le_bytes))
        .collect();
    let twice = br#"{"message": "first", "message": "second"}"#.to_vec();
    for body in [with_bom, utf16, twice] {
        let response = app.post_raw("/chat/message", json, body).await;
        assert_eq!(response.status(), 200);
    }
    let users = app.history_users().await;
    assert_eq!(users, ["from notepad", "in UTF-16 😀", "second"]);
}

#[tokio::test]
async fn a_wrong_content_type_is_refused() {
    let app = TestApp::spawn().await;
    assert_rejected(&app, Some("text/plain"), br#"{"message": "hi"}"#, 415).await;
    assert_rejected(
        &app,
        Some("application/x-www-form-urlencoded"),
        b"message=hi",
        415,
    )
    .await;
    assert_eq!(app.history().await.len(), 0);
}

#[tokio::test]
async fn text_or_body_over_the_limit_is_413() {
    let app = TestApp::builder()
        .with("CHAT__LIMITS__MAX_MESSAGE_CHARS", 100)
        .with("CHAT__LIMITS__MAX_BODY_BYTES", 1024)
        .spawn()
        .await;
    let json = Some("application/json");
    let at_limit = serde_json::to_vec(&json!({"message": "é".repeat(100)})).unwrap();
    assert_eq!(
        app.post_raw("/chat/message", json, at_limit).await.status(),
        200
    );
    let over_text = serde_json::to_vec(&json!({"message": "é".repeat(101)})).unwrap();
    assert_rejected(&app, json, &over_text, 413).await;
    let over_body =
        serde_json::to_vec(&json!({"message": "a", "padding": "x".repeat(2000)})).unwrap();
    assert_rejected(&app, json, &over_body, 413).await;
    assert_eq!(app.history().await.len(), 1);
}

#[tokio::test]
async fn text_round_trips_exactly() {
    let app = TestApp::spawn().await;
    let texts = [
        "emoji 😀👩‍👩‍👧 and ∑ maths",
        "RTL \u{200F}שלום\u{200E} marks",
        "quotes \" ' ` and backslash \\",
        "'); DROP TABLE messages; --",
        "<script>alert('x')</script><b>bold</b>",
        "line one\nline two\r\n\ttabbed",
        "  leading and trailing spaces  ",
    ];
    for text in texts {
        assert_eq!(
            app.post_json("/chat/message", &json!({"message": text}))
                .await
                .status(),
            200
        );
    }
    let users = app.history_users().await;
    assert_eq!(users, texts);
}

#[tokio::test]
async fn a_hundred_concurrent_posts_are_each_stored_once_with_their_own_reply() {
    let app = TestApp::spawn().await;
    let sends = (0..100).map(|i| {
        let text = format!("concurrent {i}");
        let app = &app;
        async move {
            let response = app
                .post_json("/chat/message", &json!({"message": text}))
                .await;
            assert_eq!(response.status(), 200);
            let body: Value = response.json().await.unwrap();
            (text, body["response"].as_str().unwrap().to_owned())
        }
    });
    let answered = futures::future::join_all(sends).await;
    let history = app.history().await;
    assert_eq!(history.len(), 100);
    for (text, reply) in answered {
        let stored: Vec<&Value> = history
            .iter()
            .filter(|entry| entry["user"] == text)
            .collect();
        assert_eq!(stored.len(), 1, "{text} stored once");
        assert_eq!(stored[0]["AI"], reply);
        assert!(reply.ends_with(&format!("You said: {text}")));
    }
}

#[tokio::test]
async fn every_error_is_json_including_404_and_405() {
    let app = TestApp::spawn().await;
    let response = app.get("/no/such/route").await;
    assert_eq!(response.status(), 404);
    let error: Value = response.json().await.unwrap();
    assert_eq!(error["status"], "error");

    let response = app
        .client
        .delete(app.url("/chat/history"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 405);
    let error: Value = response.json().await.unwrap();
    assert_eq!(error["status"], "error");

    let response = app.get("/chat/message").await;
    assert_eq!(response.status(), 405);
    let error: Value = response.json().await.unwrap();
    assert_eq!(error["status"], "error");

    // Under the seed routes' prefix, a 404 has their shape too.
    let response = app.get("/chat/messages").await;
    assert_eq!(response.status(), 404);
    let error: Value = response.json().await.unwrap();
    assert_eq!(error["status"], "error");
    assert!(error.get("code").is_none(), "{error}");
}

/// FastAPI redirected a seed route asked for with a trailing slash, so clients written that way
/// kept working.
#[tokio::test]
async fn a_seed_route_with_a_trailing_slash_redirects_there_keeping_the_method() {
    let app = TestApp::spawn().await;
    let not_following = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let response = not_following
        .get(app.url("/chat/history/?page=2"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 307);
    assert_eq!(response.headers()["location"], "/chat/history?page=2");

    let response = app
        .post_json("/chat/message/", &json!({"message": "with a slash"}))
        .await;
    assert_eq!(response.status(), 200);
    let history = app.history().await;
    assert_eq!(history.len(), 1);
    assert_eq!(history[0]["user"], "with a slash");

    let response = app.get("/chat/history/").await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.json::<Vec<Value>>().await.unwrap().len(), 1);
}

#[tokio::test]
async fn a_cors_preflight_from_the_dev_client_is_allowed() {
    let app = TestApp::spawn().await;
    let response = app
        .client
        .request(reqwest::Method::OPTIONS, app.url("/chat/message"))
        .header("origin", "http://localhost:3000")
        .header("access-control-request-method", "POST")
        .header("access-control-request-headers", "content-type")
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success(), "{}", response.status());
    assert_eq!(
        response.headers()["access-control-allow-origin"],
        "http://localhost:3000"
    );
    assert!(response
        .headers()
        .get("access-control-allow-credentials")
        .is_none());
}
