//! The product API (`/api/v1`): every route and every error, streamed replies, pagination.

use std::collections::HashSet;
use std::time::Duration;

use serde_json::{json, Value};

use crate::helpers::{eventually, SseReader, TestApp};

const DEFAULT_ID: &str = "00000000-0000-7000-8000-000000000000";

// ---- helpers ----

fn is_uuid(text: &str) -> bool {
    let groups: Vec<&str> = text.split('-').collect();
    groups.len() == 5
        && groups.iter().zip([8, 4, 4, 4, 12]).all(|(group, len)| {
            group.len() == len
                && group
                    .bytes()
                    .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        })
}

/// Microseconds since the epoch of an RFC 3339 UTC timestamp (`YYYY-MM-DDTHH:MM:SS[.f]Z`);
/// panics on anything else, so a wrong format fails the test.
fn micros(text: &str) -> i64 {
    let bytes = text.as_bytes();
    assert!(
        text.len() >= 20 && text.ends_with('Z'),
        "not RFC 3339 UTC: {text}"
    );
    assert!(
        bytes[4] == b'-'
            && bytes[7] == b'-'
            && bytes[10] == b'T'
            && bytes[13] == b':'
            && bytes[16] == b':',
        "not RFC 3339: {text}"
    );
    let number = |range: std::ops::Range<usize>| -> i64 {
        let part = &text[range];
        assert!(
            part.bytes().all(|b| b.is_ascii_digit()),
            "not RFC 3339: {text}"
        );
        part.parse().unwrap()
    };
    let (year, month, day) = (number(0..4), number(5..7), number(8..10));
    let (hour, minute, second) = (number(11..13), number(14..16), number(17..19));
    assert!(
        (1..=12).contains(&month) && (1..=31).contains(&day),
        "{text}"
    );
    assert!(hour < 24 && minute < 60 && second < 61, "{text}");
    let rest = &text[19..text.len() - 1];
    let fraction = if rest.is_empty() {
        0
    } else {
        let digits = rest
            .strip_prefix('.')
            .unwrap_or_else(|| panic!("not RFC 3339: {text}"));
        assert!(
            !digits.is_empty() && digits.len() <= 9 && digits.bytes().all(|b| b.is_ascii_digit()),
            "{text}"
        );
        let padded = format!("{digits:0<6}");
        padded[..6].parse::<i64>().unwrap()
    };
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    ((days * 86_400 + hour * 3600 + minute * 60 + second) * 1_000_000) + fraction
}

fn assert_conversation_shape(conversation: &Value) {
    let object = conversation.as_object().expect("a conversation object");
    let mut keys: Vec<&str> = object.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        ["created_at", "id", "title", "updated_at"],
        "{conversation}"
    );
    assert!(
        is_uuid(conversation["id"].as_str().unwrap()),
        "{conversation}"
    );
    assert!(conversation["title"].is_string());
    micros(conversation["created_at"].as_str().unwrap());
    micros(conversation["updated_at"].as_str().unwrap());
}

fn assert_message_shape(message: &Value, conversation_id: &str, role: &str) {
    let object = message.as_object().expect("a message object");
    let mut keys: Vec<&str> = object.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        ["content", "conversation_id", "created_at", "id", "role"],
        "{message}"
    );
    assert!(is_uuid(message["id"].as_str().unwrap()), "{message}");
    assert_eq!(message["conversation_id"], conversation_id, "{message}");
    assert_eq!(message["role"], role, "{message}");
    micros(message["created_at"].as_str().unwrap());
}

/// Asserts a product API error: status, JSON content type, exact shape and code.
async fn assert_error(response: reqwest::Response, status: u16, code: &str) -> Value {
    assert_eq!(response.status(), status, "expected {status} {code}");
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        content_type.starts_with("application/json"),
        "{content_type}"
    );
    let error: Value = response.json().await.unwrap();
    assert_eq!(error["status"], "error", "{error}");
    assert_eq!(error["code"], code, "{error}");
    assert!(!error["message"].as_str().unwrap().is_empty(), "{error}");
    assert_eq!(error.as_object().unwrap().len(), 3, "{error}");
    error
}

fn messages_path(id: &str) -> String {
    format!("/api/v1/conversations/{id}/messages")
}

async fn list_conversations(app: &TestApp, query: &str) -> Value {
    let response = app.get(&format!("/api/v1/conversations{query}")).await;
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

/// Ids of all conversations, walking every page.
async fn all_conversation_ids(app: &TestApp, limit: u32) -> Vec<String> {
    let mut ids = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let query = match &cursor {
            Some(cursor) => format!("?limit={limit}&cursor={cursor}"),
            None => format!("?limit={limit}"),
        };
        let page = list_conversations(app, &query).await;
        let items = page["items"].as_array().unwrap();
        assert!(items.len() <= limit as usize);
        for item in items {
            assert_conversation_shape(item);
            ids.push(item["id"].as_str().unwrap().to_owned());
        }
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    ids
}

async fn message_page(app: &TestApp, id: &str, query: &str) -> Value {
    let response = app.get(&format!("{}{query}", messages_path(id))).await;
    assert_eq!(response.status(), 200, "{query}");
    response.json().await.unwrap()
}

fn streaming_request(app: &TestApp, id: &str, content: &str) -> reqwest::RequestBuilder {
    app.client
        .post(app.url(&messages_path(id)))
        .header("accept", "text/event-stream")
        .json(&json!({ "content": content }))
}

// ---- conversations ----

#[tokio::test]
async fn creating_a_conversation_returns_201_with_the_conversation() {
    let app = TestApp::spawn().await;
    let response = app
        .post_json("/api/v1/conversations", &json!({"title": "Trip plans"}))
        .await;
    assert_eq!(response.status(), 201);
    assert!(response.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/json"));
    let conversation: Value = response.json().await.unwrap();
    assert_conversation_shape(&conversation);
    assert_eq!(conversation["title"], "Trip plans");
    assert_eq!(conversation["created_at"], conversation["updated_at"]);
    let now_micros = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros() as i64;
    let created = micros(conversation["created_at"].as_str().unwrap());
    assert!(
        (now_micros - created).abs() < 60_000_000,
        "created_at {created} is not now {now_micros}"
    );

    let fetched = app
        .get(&format!(
            "/api/v1/conversations/{}",
            conversation["id"].as_str().unwrap()
        ))
        .await;
    assert_eq!(fetched.status(), 200);
    assert_eq!(fetched.json::<Value>().await.unwrap(), conversation);
}

#[tokio::test]
async fn the_title_is_optional_and_defaults_to_new_chat() {
    let app = TestApp::spawn().await;
    let empty_object = app.create_conversation(None).await;
    assert_eq!(empty_object["title"], "New chat");
    assert_conversation_shape(&empty_object);

    let null_title = app
        .post_json("/api/v1/conversations", &json!({"title": null}))
        .await;
    assert_eq!(null_title.status(), 201);
    assert_eq!(
        null_title.json::<Value>().await.unwrap()["title"],
        "New chat"
    );

    let no_body = app
        .client
        .post(app.url("/api/v1/conversations"))
        .send()
        .await
        .unwrap();
    assert_eq!(no_body.status(), 201);
    let no_body: Value = no_body.json().await.unwrap();
    assert_eq!(no_body["title"], "New chat");
    assert_ne!(no_body["id"], empty_object["id"]);

    let typed_but_empty = app
        .client
        .post(app.url("/api/v1/conversations"))
        .header("content-type", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(typed_but_empty.status(), 201);
    assert_eq!(
        typed_but_empty.json::<Value>().await.unwrap()["title"],
        "New chat"
    );

    let empty_chunked = post_chunked_without_content_type(&app, b"").await;
    assert_eq!(empty_chunked.status(), 201);
    assert_eq!(
        empty_chunked.json::<Value>().await.unwrap()["title"],
        "New chat"
    );

    // Only white space is not JSON, and not no body either: refused, saying what would do.
    let blank = post_chunked_without_content_type(&app, b" \r\n").await;
    assert_eq!(blank.status(), 400);
    let error: Value = blank.json().await.unwrap();
    assert_eq!(error["code"], "invalid_body");
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("or no body at all"),
        "{error}"
    );

    // The OpenAPI description's optional body is an object or null; generated clients send null.
    let null_body = app.post_json("/api/v1/conversations", &json!(null)).await;
    assert_eq!(null_body.status(), 201);
    assert_eq!(
        null_body.json::<Value>().await.unwrap()["title"],
        "New chat"
    );
}

/// A body sent in chunks declares no length, and here no type either.
async fn post_chunked_without_content_type(
    app: &TestApp,
    body: &'static [u8],
) -> reqwest::Response {
    let chunks = futures::stream::iter([Ok::<_, std::io::Error>(bytes::Bytes::from_static(body))]);
    app.client
        .post(app.url("/api/v1/conversations"))
        .body(reqwest::Body::wrap_stream(chunks))
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn a_chunked_body_without_a_content_type_is_read_as_json() {
    let app = TestApp::spawn().await;
    let titled = post_chunked_without_content_type(&app, br#"{"title": "sent in chunks"}"#).await;
    assert_eq!(titled.status(), 201);
    assert_eq!(
        titled.json::<Value>().await.unwrap()["title"],
        "sent in chunks"
    );

    let garbage = post_chunked_without_content_type(&app, b"not json").await;
    assert_error(garbage, 400, "invalid_body").await;
    assert_eq!(all_conversation_ids(&app, 200).await.len(), 2);
}

#[tokio::test]
async fn creating_with_a_bad_body_is_rejected() {
    let app = TestApp::builder()
        .with("CHAT__LIMITS__MAX_BODY_BYTES", 1024)
        .spawn()
        .await;
    let json = Some("application/json");
    let path = "/api/v1/conversations";
    assert_error(
        app.post_raw(path, json, b"{not json".to_vec()).await,
        400,
        "invalid_body",
    )
    .await;
    assert_error(
        app.post_raw(path, json, br#"{"title": 5}"#.to_vec()).await,
        400,
        "invalid_body",
    )
    .await;
    assert_error(
        app.post_raw(path, json, br#"{"title": "   "}"#.to_vec())
            .await,
        400,
        "invalid_text",
    )
    .await;
    // A title over its documented maxLength is an invalid field, not an oversized payload.
    // Whitespace that trimming would remove still counts, as maxLength counts it.
    for long_title in ["t".repeat(201), format!("\r{}", "t".repeat(200))] {
        let body = serde_json::to_vec(&json!({ "title": long_title })).unwrap();
        assert_error(app.post_raw(path, json, body).await, 400, "text_too_long").await;
    }
    let big = serde_json::to_vec(&json!({"title": "x", "pad": "p".repeat(2000)})).unwrap();
    assert_error(app.post_raw(path, json, big).await, 413, "body_too_large").await;
    assert_error(
        app.post_raw(path, Some("text/plain"), br#"{"title": "x"}"#.to_vec())
            .await,
        415,
        "unsupported_media_type",
    )
    .await;
    // A body in a content coding: compressed, it would be taken for malformed JSON; in a coding
    // nobody knows, for plain JSON.
    for coding in ["gzip", "x-unknown", "identity, br"] {
        let refused = app
            .client
            .post(app.url(path))
            .header("content-type", "application/json")
            .header("content-encoding", coding)
            .body(r#"{"title": "x"}"#)
            .send()
            .await
            .unwrap();
        assert_eq!(refused.headers()["accept-encoding"], "identity");
        assert_error(refused, 415, "unsupported_media_type").await;
    }
    let identity = app
        .client
        .post(app.url(path))
        .header("content-type", "application/json")
        .header("content-encoding", "identity")
        .body(r#"{"title": "plain"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(identity.status(), 201);
    let plain: serde_json::Value = identity.json().await.unwrap();
    let plain_id = plain["id"].as_str().unwrap().to_owned();
    app.client
        .delete(app.url(&format!("{path}/{plain_id}")))
        .send()
        .await
        .unwrap();
    // Only the default conversation exists: nothing was created by the refused requests.
    let ids = all_conversation_ids(&app, 200).await;
    assert_eq!(ids, [DEFAULT_ID]);
}

#[tokio::test]
async fn a_create_retried_under_its_chosen_id_finds_the_conversation_it_made() {
    let app = TestApp::spawn().await;
    let chosen = "0190b5e0-3c2a-4d4e-9f10-2b3c4d5e6f70";
    let first = app
        .post_json(
            "/api/v1/conversations",
            &json!({"id": chosen, "title": "Lisbon"}),
        )
        .await;
    assert_eq!(first.status(), 201);
    assert_eq!(
        first.headers()["location"],
        format!("/api/v1/conversations/{chosen}").as_str()
    );
    let first: Value = first.json().await.unwrap();
    assert_conversation_shape(&first);
    assert_eq!(first["id"], chosen);
    app.send(chosen, "hello").await;
    let stored: Value = app
        .get(&format!("/api/v1/conversations/{chosen}"))
        .await
        .json()
        .await
        .unwrap();

    let retried = app
        .post_json(
            "/api/v1/conversations",
            &json!({"id": chosen, "title": "Another title"}),
        )
        .await;
    assert_eq!(retried.status(), 200);
    assert_eq!(
        retried.headers()["location"],
        format!("/api/v1/conversations/{chosen}").as_str()
    );
    assert_eq!(retried.json::<Value>().await.unwrap(), stored);
    assert_eq!(all_conversation_ids(&app, 200).await, [chosen, DEFAULT_ID]);
    assert_eq!(app.all_messages(chosen, 100).await.len(), 2);
}

#[tokio::test]
async fn concurrent_creates_under_one_chosen_id_make_one_conversation() {
    let app = TestApp::spawn().await;
    let chosen = "0190b5e0-3c2a-7d4e-9f10-2b3c4d5e6f71";
    let bodies: Vec<Value> = (0..16)
        .map(|i| json!({"id": chosen, "title": format!("try {i}")}))
        .collect();
    let creates = bodies
        .iter()
        .map(|body| app.post_json("/api/v1/conversations", body));
    let mut statuses = Vec::new();
    let mut titles = std::collections::BTreeSet::new();
    for response in futures::future::join_all(creates).await {
        statuses.push(response.status().as_u16());
        let conversation: Value = response.json().await.unwrap();
        titles.insert(conversation["title"].as_str().unwrap().to_owned());
    }
    statuses.sort_unstable();
    assert_eq!(statuses, [[200; 15].as_slice(), &[201]].concat());
    assert_eq!(
        titles.len(),
        1,
        "every answer is the one conversation: {titles:?}"
    );
    assert_eq!(all_conversation_ids(&app, 200).await, [chosen, DEFAULT_ID]);
}

#[tokio::test]
async fn a_deleted_conversations_id_is_not_used_again() {
    let app = TestApp::spawn().await;
    let chosen = "0190b5e0-3c2a-7d4e-9f10-2b3c4d5e6f72";
    let body = json!({"id": chosen});
    assert_eq!(
        app.post_json("/api/v1/conversations", &body).await.status(),
        201
    );
    app.send(chosen, "gone with it").await;
    assert_eq!(app.delete_conversation(chosen).await.status(), 204);

    // A create retried late does not bring it back, nor give a late reply somewhere to land.
    assert_error(
        app.post_json("/api/v1/conversations", &body).await,
        409,
        "conversation_deleted",
    )
    .await;
    assert_error(
        app.get(&format!("/api/v1/conversations/{chosen}")).await,
        404,
        "conversation_not_found",
    )
    .await;
    assert_eq!(all_conversation_ids(&app, 200).await, [DEFAULT_ID]);

    // A server-chosen id is no different.
    let made = app.new_conversation().await;
    assert_eq!(app.delete_conversation(&made).await.status(), 204);
    assert_error(
        app.post_json("/api/v1/conversations", &json!({ "id": made }))
            .await,
        409,
        "conversation_deleted",
    )
    .await;

    // The seed routes' conversation is made again after a deletion, as `POST /chat/message` does.
    assert_eq!(app.delete_conversation(DEFAULT_ID).await.status(), 204);
    let default = app
        .post_json("/api/v1/conversations", &json!({ "id": DEFAULT_ID }))
        .await;
    assert_eq!(default.status(), 201);
}

#[tokio::test]
async fn a_chosen_id_that_is_no_uuid_or_nil_creates_nothing() {
    let app = TestApp::spawn().await;
    for (id, code) in [
        (json!("not-a-uuid"), "invalid_id"),
        (json!("00000000-0000-0000-0000-000000000000"), "invalid_id"),
        (json!(""), "invalid_id"),
        (json!(42), "invalid_body"),
        (
            json!({"uuid": "0190b5e0-3c2a-7d4e-9f10-2b3c4d5e6f73"}),
            "invalid_body",
        ),
    ] {
        let refused = app
            .post_json("/api/v1/conversations", &json!({ "id": id }))
            .await;
        assert_error(refused, 400, code).await;
    }
    let bad_title = app
        .post_json(
            "/api/v1/conversations",
            &json!({"id": "0190b5e0-3c2a-7d4e-9f10-2b3c4d5e6f74", "title": " "}),
        )
        .await;
    assert_error(bad_title, 400, "invalid_text").await;
    assert_eq!(all_conversation_ids(&app, 200).await, [DEFAULT_ID]);
}

#[tokio::test]
async fn conversations_are_listed_most_recently_updated_first() {
    let app = TestApp::spawn().await;
    let first = app.create_conversation(Some("first")).await;
    let second = app.create_conversation(Some("second")).await;
    let third = app.create_conversation(Some("third")).await;
    let id = |c: &Value| c["id"].as_str().unwrap().to_owned();

    let page = list_conversations(&app, "").await;
    assert_eq!(page["next_cursor"], Value::Null);
    let ids: Vec<String> = page["items"].as_array().unwrap().iter().map(id).collect();
    assert_eq!(
        ids,
        [id(&third), id(&second), id(&first), DEFAULT_ID.to_owned()]
    );
    for item in page["items"].as_array().unwrap() {
        assert_conversation_shape(item);
    }
    assert_eq!(page["items"][0], third);

    // Sending a message moves a conversation to the top.
    tokio::time::sleep(Duration::from_millis(2)).await;
    let exchange = app.send(&id(&first), "bump").await;
    let page = list_conversations(&app, "").await;
    let ids: Vec<String> = page["items"].as_array().unwrap().iter().map(id).collect();
    assert_eq!(
        ids,
        [id(&first), id(&third), id(&second), DEFAULT_ID.to_owned()]
    );
    let bumped = &page["items"][0];
    assert_eq!(bumped["created_at"], first["created_at"]);
    assert!(
        micros(bumped["updated_at"].as_str().unwrap())
            > micros(first["updated_at"].as_str().unwrap())
    );
    assert!(
        micros(bumped["updated_at"].as_str().unwrap())
            >= micros(
                exchange["assistant_message"]["created_at"]
                    .as_str()
                    .unwrap()
            )
    );
}

#[tokio::test]
async fn conversation_pages_cover_every_conversation_once() {
    let app = TestApp::spawn().await;
    let mut created = vec![DEFAULT_ID.to_owned()];
    for i in 0..11 {
        let conversation = app.create_conversation(Some(&format!("c{i}"))).await;
        created.push(conversation["id"].as_str().unwrap().to_owned());
    }
    created.reverse();
    for limit in [1, 2, 5, 12, 200] {
        assert_eq!(
            all_conversation_ids(&app, limit).await,
            created,
            "limit {limit}"
        );
    }
    // A full last page announces no further page.
    let page = list_conversations(&app, "?limit=12").await;
    assert_eq!(page["items"].as_array().unwrap().len(), 12);
    assert_eq!(page["next_cursor"], Value::Null);
    let page = list_conversations(&app, "?limit=11").await;
    assert_eq!(page["items"].as_array().unwrap().len(), 11);
    assert!(page["next_cursor"].is_string());
    // The default limit is 50.
    for i in 0..45 {
        app.create_conversation(Some(&format!("more {i}"))).await;
    }
    let page = list_conversations(&app, "").await;
    assert_eq!(page["items"].as_array().unwrap().len(), 50);
    assert!(page["next_cursor"].is_string());
}

#[tokio::test]
async fn bad_conversation_list_queries_are_400() {
    let app = TestApp::spawn().await;
    for query in ["?limit=0", "?limit=201", "?limit=-1"] {
        assert_error(
            app.get(&format!("/api/v1/conversations{query}")).await,
            400,
            "invalid_limit",
        )
        .await;
    }
    assert_error(
        app.get("/api/v1/conversations?limit=abc").await,
        400,
        "invalid_query",
    )
    .await;
    let message_cursor = message_page_cursor(&app).await;
    // The messages list's parameter name would be ignored and give the first page again.
    assert_error(
        app.get(&format!("/api/v1/conversations?before={message_cursor}"))
            .await,
        400,
        "invalid_query",
    )
    .await;
    for cursor in [
        "garbage",
        "!!!!",
        "YzE6MTIzOm5vdC1hLXV1aWQ",
        message_cursor.as_str(),
    ] {
        assert_error(
            app.get(&format!("/api/v1/conversations?cursor={cursor}"))
                .await,
            400,
            "invalid_cursor",
        )
        .await;
    }
    assert_eq!(
        list_conversations(&app, "?limit=200").await["items"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
}

/// A valid message cursor (from a real page), to check cursors of one list are refused by another.
async fn message_page_cursor(app: &TestApp) -> String {
    let conversation = app.create_conversation(None).await;
    let id = conversation["id"].as_str().unwrap();
    app.send(id, "one").await;
    let page = message_page(app, id, "?limit=1").await;
    let cursor = page["next_cursor"]
        .as_str()
        .expect("an older message exists")
        .to_owned();
    app.delete_conversation(id).await;
    cursor
}

#[tokio::test]
async fn renaming_changes_the_title_updated_at_and_list_order() {
    let app = TestApp::spawn().await;
    let older = app.create_conversation(Some("older")).await;
    let newer = app.create_conversation(Some("newer")).await;
    let older_id = older["id"].as_str().unwrap();
    let ids = all_conversation_ids(&app, 50).await;
    assert_eq!(ids[0], newer["id"].as_str().unwrap());

    tokio::time::sleep(Duration::from_millis(2)).await;
    let response = app
        .client
        .patch(app.url(&format!("/api/v1/conversations/{older_id}")))
        .json(&json!({"title": "  Renamed  "}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let renamed: Value = response.json().await.unwrap();
    assert_conversation_shape(&renamed);
    assert_eq!(renamed["id"], older["id"]);
    assert_eq!(renamed["title"], "Renamed");
    assert_eq!(renamed["created_at"], older["created_at"]);
    assert!(
        micros(renamed["updated_at"].as_str().unwrap())
            > micros(older["updated_at"].as_str().unwrap()),
        "{renamed} vs {older}"
    );

    let fetched: Value = app
        .get(&format!("/api/v1/conversations/{older_id}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(fetched, renamed);
    let page = list_conversations(&app, "").await;
    assert_eq!(page["items"][0], renamed);
    assert_eq!(page["items"][1]["id"], newer["id"]);
}

#[tokio::test]
async fn renaming_errors() {
    let app = TestApp::spawn().await;
    let conversation = app.create_conversation(Some("keep")).await;
    let path = format!(
        "/api/v1/conversations/{}",
        conversation["id"].as_str().unwrap()
    );
    let patch = |path: String, content_type: &'static str, body: &'static str| {
        app.client
            .patch(app.url(&path))
            .header("content-type", content_type)
            .body(body)
            .send()
    };
    let json = "application/json";
    assert_error(
        patch(path.clone(), json, r#"{"title": " "}"#)
            .await
            .unwrap(),
        400,
        "invalid_text",
    )
    .await;
    assert_error(
        patch(path.clone(), json, r#"{}"#).await.unwrap(),
        400,
        "invalid_body",
    )
    .await;
    assert_error(
        patch(path.clone(), json, r#"{"title": "#).await.unwrap(),
        400,
        "invalid_body",
    )
    .await;
    assert_error(
        patch(path.clone(), json, "").await.unwrap(),
        400,
        "invalid_body",
    )
    .await;
    assert_error(
        patch(path.clone(), "text/plain", r#"{"title": "x"}"#)
            .await
            .unwrap(),
        415,
        "unsupported_media_type",
    )
    .await;
    let unknown = "/api/v1/conversations/0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b".to_owned();
    assert_error(
        patch(unknown, json, r#"{"title": "x"}"#).await.unwrap(),
        404,
        "conversation_not_found",
    )
    .await;
    assert_error(
        patch(
            "/api/v1/conversations/not-a-uuid".to_owned(),
            json,
            r#"{"title": "x"}"#,
        )
        .await
        .unwrap(),
        400,
        "invalid_id",
    )
    .await;
    let fetched: Value = app.get(&path).await.json().await.unwrap();
    assert_eq!(fetched, conversation);
}

#[tokio::test]
async fn deleting_a_conversation_removes_it_and_its_messages() {
    let app = TestApp::spawn().await;
    let doomed = app.create_conversation(Some("doomed")).await;
    let kept = app.create_conversation(Some("kept")).await;
    let doomed_id = doomed["id"].as_str().unwrap();
    let kept_id = kept["id"].as_str().unwrap();
    app.send(doomed_id, "to be deleted").await;
    app.send(kept_id, "to be kept").await;

    let response = app
        .client
        .delete(app.url(&format!("/api/v1/conversations/{doomed_id}")))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 204);
    assert!(response.bytes().await.unwrap().is_empty());

    assert_error(
        app.get(&format!("/api/v1/conversations/{doomed_id}")).await,
        404,
        "conversation_not_found",
    )
    .await;
    assert_error(
        app.get(&messages_path(doomed_id)).await,
        404,
        "conversation_not_found",
    )
    .await;
    assert_error(
        app.post_json(&messages_path(doomed_id), &json!({"content": "hello?"}))
            .await,
        404,
        "conversation_not_found",
    )
    .await;
    let again = app
        .client
        .delete(app.url(&format!("/api/v1/conversations/{doomed_id}")))
        .send()
        .await
        .unwrap();
    assert_error(again, 404, "conversation_not_found").await;
    let ids = all_conversation_ids(&app, 200).await;
    assert_eq!(ids, [kept_id, DEFAULT_ID]);
    // The other conversation keeps its messages.
    let kept_messages = app.all_messages(kept_id, 50).await;
    assert_eq!(kept_messages.len(), 2);
    assert_eq!(kept_messages[0]["content"], "to be kept");
}

#[tokio::test]
async fn unknown_and_malformed_conversation_ids() {
    let app = TestApp::spawn().await;
    let unknown = "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b";
    assert_error(
        app.get(&format!("/api/v1/conversations/{unknown}")).await,
        404,
        "conversation_not_found",
    )
    .await;
    assert_error(
        app.get(&messages_path(unknown)).await,
        404,
        "conversation_not_found",
    )
    .await;
    assert_error(
        app.post_json(&messages_path(unknown), &json!({"content": "hi"}))
            .await,
        404,
        "conversation_not_found",
    )
    .await;
    let streamed = streaming_request(&app, unknown, "hi").send().await.unwrap();
    assert_error(streamed, 404, "conversation_not_found").await;

    for bad in ["not-a-uuid", "123", "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5"] {
        assert_error(
            app.get(&format!("/api/v1/conversations/{bad}")).await,
            400,
            "invalid_id",
        )
        .await;
        assert_error(app.get(&messages_path(bad)).await, 400, "invalid_id").await;
        assert_error(
            app.post_json(&messages_path(bad), &json!({"content": "hi"}))
                .await,
            400,
            "invalid_id",
        )
        .await;
        let deleted = app
            .client
            .delete(app.url(&format!("/api/v1/conversations/{bad}")))
            .send()
            .await
            .unwrap();
        assert_error(deleted, 400, "invalid_id").await;
    }
}

#[tokio::test]
async fn unknown_paths_and_wrong_methods_are_json_404_and_405() {
    let app = TestApp::spawn().await;
    assert_error(app.get("/api/v1/nothing-here").await, 404, "not_found").await;
    assert_error(app.get("/api/v2/conversations").await, 404, "not_found").await;
    let id = app.new_conversation().await;
    assert_error(
        app.get(&format!("/api/v1/conversations/{id}/nothing"))
            .await,
        404,
        "not_found",
    )
    .await;

    let put = app
        .client
        .put(app.url("/api/v1/conversations"))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_error(put, 405, "method_not_allowed").await;
    let delete_all = app
        .client
        .delete(app.url("/api/v1/conversations"))
        .send()
        .await
        .unwrap();
    assert_error(delete_all, 405, "method_not_allowed").await;
    let post_one = app
        .post_json(&format!("/api/v1/conversations/{id}"), &json!({}))
        .await;
    assert_error(post_one, 405, "method_not_allowed").await;
    let delete_messages = app
        .client
        .delete(app.url(&messages_path(&id)))
        .send()
        .await
        .unwrap();
    assert_error(delete_messages, 405, "method_not_allowed").await;
    for documentation in ["/openapi.json", "/docs/", "/docs/index.html"] {
        let post = app.post_json(documentation, &json!({})).await;
        assert_eq!(
            post.headers().get("allow").unwrap(),
            "GET, HEAD",
            "{documentation}"
        );
        assert_error(post, 405, "method_not_allowed").await;
    }
    // Nothing was deleted by the refused requests.
    assert_eq!(
        app.get(&format!("/api/v1/conversations/{id}"))
            .await
            .status(),
        200
    );
}

// ---- messages ----

#[tokio::test]
async fn sending_a_message_returns_201_with_the_stored_exchange() {
    let app = TestApp::spawn().await;
    let conversation = app.create_conversation(Some("chat")).await;
    let id = conversation["id"].as_str().unwrap();
    let response = app
        .post_json(&messages_path(id), &json!({"content": "What is Rust?"}))
        .await;
    assert_eq!(response.status(), 201);
    let exchange: Value = response.json().await.unwrap();
    assert_eq!(exchange.as_object().unwrap().len(), 2, "{exchange}");
    let user = &exchange["user_message"];
    let assistant = &exchange["assistant_message"];
    assert_message_shape(user, id, "user");
    assert_message_shape(assistant, id, "assistant");
    assert_eq!(user["content"], "What is Rust?");
    let reply = assistant["content"].as_str().unwrap();
    assert!(reply.ends_with(" You said: What is Rust?"), "{reply}");
    assert!(reply.len() > " You said: What is Rust?".len());
    assert_ne!(user["id"], assistant["id"]);
    assert!(
        micros(assistant["created_at"].as_str().unwrap())
            >= micros(user["created_at"].as_str().unwrap())
    );

    let page = message_page(&app, id, "").await;
    assert_eq!(page["next_cursor"], Value::Null);
    assert_eq!(page["items"], json!([user, assistant]));
}

#[tokio::test]
async fn the_limits_a_client_can_check_before_sending_are_the_ones_enforced() {
    let app = TestApp::builder()
        .with("CHAT__LIMITS__MAX_MESSAGE_CHARS", 100)
        .spawn()
        .await;
    let limits: Value = app.get("/api/v1/limits").await.json().await.unwrap();
    assert_eq!(
        limits,
        json!({"max_message_chars": 100, "max_title_chars": 200})
    );
    let id = app.new_conversation().await;
    let path = messages_path(&id);
    let sized = |chars: u64| json!({"content": "é".repeat(chars as usize)});
    let max = limits["max_message_chars"].as_u64().unwrap();
    assert_eq!(app.post_json(&path, &sized(max)).await.status(), 201);
    assert_eq!(app.post_json(&path, &sized(max + 1)).await.status(), 413);
    let title = |chars: u64| json!({"title": "é".repeat(chars as usize)});
    let max = limits["max_title_chars"].as_u64().unwrap();
    let rename = |body: Value| {
        app.client
            .patch(app.url(&format!("/api/v1/conversations/{id}")))
            .json(&body)
            .send()
    };
    assert_eq!(rename(title(max)).await.unwrap().status(), 200);
    assert_eq!(rename(title(max + 1)).await.unwrap().status(), 400);
}

#[tokio::test]
async fn sending_errors_are_reported_and_store_nothing() {
    let app = TestApp::builder()
        .with("CHAT__LIMITS__MAX_MESSAGE_CHARS", 100)
        .with("CHAT__LIMITS__MAX_BODY_BYTES", 1024)
        .spawn()
        .await;
    let conversation = app.create_conversation(None).await;
    let id = conversation["id"].as_str().unwrap();
    let path = messages_path(id);
    let json = Some("application/json");
    for (body, code) in [
        (&br#"{"content": ""}"#[..], "invalid_text"),
        (br#"{"content": "  \n\t "}"#, "invalid_text"),
        (br#"{"content": "a\u0000b"}"#, "invalid_text"),
        (br#"{}"#, "invalid_body"),
        (br#"{"content": 5}"#, "invalid_body"),
        (br#"{"content": null}"#, "invalid_body"),
        (b"{not json", "invalid_body"),
        (b"", "invalid_body"),
    ] {
        let response = app.post_raw(&path, json, body.to_vec()).await;
        assert_eq!(
            response.status(),
            400,
            "body {:?}",
            String::from_utf8_lossy(body)
        );
        assert_error(response, 400, code).await;
    }
    let at_limit = serde_json::to_vec(&json!({"content": "é".repeat(100)})).unwrap();
    assert_eq!(app.post_raw(&path, json, at_limit).await.status(), 201);
    let over_text = serde_json::to_vec(&json!({"content": "é".repeat(101)})).unwrap();
    assert_error(
        app.post_raw(&path, json, over_text).await,
        413,
        "text_too_long",
    )
    .await;
    let over_body = serde_json::to_vec(&json!({"content": "a", "pad": "x".repeat(2000)})).unwrap();
    assert_error(
        app.post_raw(&path, json, over_body).await,
        413,
        "body_too_large",
    )
    .await;
    assert_error(
        app.post_raw(&path, Some("text/plain"), br#"{"content": "hi"}"#.to_vec())
            .await,
        415,
        "unsupported_media_type",
    )
    .await;
    assert_error(
        app.post_raw(
            &path,
            Some("application/x-www-form-urlencoded"),
            b"content=hi".to_vec(),
        )
        .await,
        415,
        "unsupported_media_type",
    )
    .await;
    // Streaming requests are validated the same way, before any stream starts.
    let blank = streaming_request(&app, id, "   ").send().await.unwrap();
    assert_error(blank, 400, "invalid_text").await;
    let long = streaming_request(&app, id, &"é".repeat(101))
        .send()
        .await
        .unwrap();
    assert_error(long, 413, "text_too_long").await;

    let messages = app.all_messages(id, 200).await;
    assert_eq!(messages.len(), 2, "only the accepted message was stored");
    assert_eq!(messages[0]["content"], "é".repeat(100));
}

#[tokio::test]
async fn a_json_array_is_not_a_valid_body() {
    let app = TestApp::spawn().await;
    let id = app.new_conversation().await;
    let response = app
        .post_raw(
            &messages_path(&id),
            Some("application/json"),
            br#"["hi"]"#.to_vec(),
        )
        .await;
    assert_error(response, 400, "invalid_body").await;
    let response = app
        .post_raw(
            "/api/v1/conversations",
            Some("application/json"),
            br#"["a title"]"#.to_vec(),
        )
        .await;
    assert_error(response, 400, "invalid_body").await;
    assert_eq!(app.all_messages(&id, 50).await.len(), 0);
}

#[tokio::test]
async fn the_newest_page_comes_first_and_before_walks_back() {
    let app = TestApp::spawn().await;
    let id = app.new_conversation().await;
    for i in 0..5 {
        app.send(&id, &format!("m{i}")).await;
    }
    // 10 messages: u0 a0 u1 a1 ... u4 a4.
    let content = |page: &Value| -> Vec<String> {
        page["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| {
                let text = m["content"].as_str().unwrap();
                match m["role"].as_str().unwrap() {
                    "user" => format!("u:{text}"),
                    _ => format!("a:{}", text.rsplit("You said: ").next().unwrap()),
                }
            })
            .collect()
    };
    let newest = message_page(&app, &id, "?limit=3").await;
    assert_eq!(content(&newest), ["a:m3", "u:m4", "a:m4"]);
    let cursor = newest["next_cursor"].as_str().unwrap();
    let older = message_page(&app, &id, &format!("?limit=3&before={cursor}")).await;
    assert_eq!(content(&older), ["u:m2", "a:m2", "u:m3"]);
    let cursor = older["next_cursor"].as_str().unwrap();
    let oldest = message_page(&app, &id, &format!("?limit=4&before={cursor}")).await;
    assert_eq!(content(&oldest), ["u:m0", "a:m0", "u:m1", "a:m1"]);
    assert_eq!(
        oldest["next_cursor"],
        Value::Null,
        "a full last page has no next page"
    );
    // Reading a page twice gives the same page.
    assert_eq!(message_page(&app, &id, "?limit=3").await, newest);
    // Default limit 50 covers everything here.
    let all = message_page(&app, &id, "").await;
    assert_eq!(all["items"].as_array().unwrap().len(), 10);
    assert_eq!(all["next_cursor"], Value::Null);
    // An empty conversation has an empty page.
    let empty = app.new_conversation().await;
    assert_eq!(
        message_page(&app, &empty, "").await,
        json!({"items": [], "next_cursor": null})
    );
}

#[tokio::test]
async fn the_default_message_limit_is_50() {
    let app = &TestApp::spawn().await;
    let id = app.new_conversation().await;
    let sends = (0..30).map(|i| {
        let id = id.clone();
        async move { app.send(&id, &format!("n{i}")).await }
    });
    futures::future::join_all(sends).await;
    let page = message_page(app, &id, "").await;
    assert_eq!(page["items"].as_array().unwrap().len(), 50);
    let cursor = page["next_cursor"].as_str().unwrap();
    let rest = message_page(app, &id, &format!("?before={cursor}")).await;
    assert_eq!(rest["items"].as_array().unwrap().len(), 10);
    assert_eq!(rest["next_cursor"], Value::Null);
}

#[tokio::test]
async fn bad_message_queries_are_400() {
    let app = TestApp::spawn().await;
    let id = app.new_conversation().await;
    app.send(&id, "one").await;
    for query in ["?limit=0", "?limit=201", "?limit=-5", "?limit=99999999999"] {
        assert_error(
            app.get(&format!("{}{query}", messages_path(&id))).await,
            400,
            "invalid_limit",
        )
        .await;
    }
    for query in ["?limit=abc", "?limit=1.5", "?limit="] {
        assert_error(
            app.get(&format!("{}{query}", messages_path(&id))).await,
            400,
            "invalid_query",
        )
        .await;
    }
    let conversation_cursor = {
        app.create_conversation(None).await;
        let page = list_conversations(&app, "?limit=1").await;
        page["next_cursor"].as_str().unwrap().to_owned()
    };
    let long = "A".repeat(300);
    for cursor in [
        "garbage",
        "%00%01",
        "bTE6LTE",  // "m1:-1"
        "bTE6MDA3", // "m1:007"
        "bTE6YWJj", // "m1:abc"
        conversation_cursor.as_str(),
        long.as_str(),
    ] {
        assert_error(
            app.get(&format!("{}?before={cursor}", messages_path(&id)))
                .await,
            400,
            "invalid_cursor",
        )
        .await;
    }
    assert_eq!(
        message_page(&app, &id, "?limit=200").await["items"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
}

#[tokio::test]
async fn pagination_over_thousands_of_messages_sees_every_message_once() {
    let app = &TestApp::spawn().await;
    let id = app.create_conversation(Some("big")).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let texts: Vec<String> = (0..1500).map(|i| format!("bulk {i}")).collect();
    let mut replies = std::collections::HashMap::new();
    for batch in texts.chunks(50) {
        let sends = batch.iter().map(|text| {
            let id = id.clone();
            async move { (text.clone(), app.send(&id, text).await) }
        });
        for (text, exchange) in futures::future::join_all(sends).await {
            replies.insert(text, exchange);
        }
    }
    assert_eq!(replies.len(), 1500);

    let by_200 = app.all_messages(&id, 200).await;
    let by_7 = app.all_messages(&id, 7).await;
    assert_eq!(by_200.len(), 3000);
    assert_eq!(by_7.len(), 3000);
    assert_eq!(
        by_200, by_7,
        "both page sizes see the same messages in the same order"
    );

    let mut seen = HashSet::new();
    for message in &by_200 {
        assert!(
            seen.insert(message["id"].as_str().unwrap().to_owned()),
            "seen twice: {message}"
        );
        assert_eq!(message["conversation_id"], id.as_str());
    }
    // Storage order: each user message is followed by its own reply, and the returned exchange
    // is exactly what is stored.
    let mut users = HashSet::new();
    for pair in by_200.chunks(2) {
        let (user, assistant) = (&pair[0], &pair[1]);
        assert_eq!(user["role"], "user");
        assert_eq!(assistant["role"], "assistant");
        let text = user["content"].as_str().unwrap();
        assert!(users.insert(text.to_owned()), "{text} stored twice");
        let exchange = &replies[text];
        assert_eq!(&exchange["user_message"], user);
        assert_eq!(&exchange["assistant_message"], assistant);
    }
    assert_eq!(users.len(), 1500);

    // Page shapes: pages of 200 are all full (3000 = 15 × 200) and the last says so; pages of 7
    // are full except the oldest.
    let mut before: Option<String> = None;
    let mut sizes = Vec::new();
    loop {
        let query = match &before {
            Some(cursor) => format!("?limit=7&before={cursor}"),
            None => "?limit=7".to_owned(),
        };
        let page = message_page(app, &id, &query).await;
        sizes.push(page["items"].as_array().unwrap().len());
        match page["next_cursor"].as_str() {
            Some(cursor) => before = Some(cursor.to_owned()),
            None => break,
        }
    }
    assert_eq!(sizes.len(), 429);
    assert!(sizes[..428].iter().all(|&size| size == 7));
    assert_eq!(sizes[428], 3000 - 428 * 7);

    let mut pages_of_200 = 0;
    let mut before: Option<String> = None;
    loop {
        let query = match &before {
            Some(cursor) => format!("?limit=200&before={cursor}"),
            None => "?limit=200".to_owned(),
        };
        let page = message_page(app, &id, &query).await;
        assert_eq!(page["items"].as_array().unwrap().len(), 200);
        pages_of_200 += 1;
        match page["next_cursor"].as_str() {
            Some(cursor) => before = Some(cursor.to_owned()),
            None => break,
        }
    }
    assert_eq!(pages_of_200, 15);

    for query in ["?limit=0", "?limit=201"] {
        assert_error(
            app.get(&format!("{}{query}", messages_path(&id))).await,
            400,
            "invalid_limit",
        )
        .await;
    }
    assert_error(
        app.get(&format!("{}?limit=abc", messages_path(&id))).await,
        400,
        "invalid_query",
    )
    .await;
    let first_page: Value = app.get(&messages_path(&id)).await.json().await.unwrap();
    let older = first_page["next_cursor"].as_str().unwrap();
    assert_error(
        app.get(&format!("{}?cursor={older}", messages_path(&id)))
            .await,
        400,
        "invalid_query",
    )
    .await;
}

#[tokio::test]
async fn concurrent_sends_to_one_conversation_each_get_their_own_reply() {
    let app = &TestApp::spawn().await;
    let id = app.new_conversation().await;
    let sends = (0..40).map(|i| {
        let id = id.clone();
        async move {
            let text = format!("parallel {i}");
            let exchange = app.send(&id, &text).await;
            assert_eq!(exchange["user_message"]["content"], text.as_str());
            let reply = exchange["assistant_message"]["content"].as_str().unwrap();
            assert!(reply.ends_with(&format!("You said: {text}")), "{reply}");
            exchange
        }
    });
    let exchanges = futures::future::join_all(sends).await;
    let messages = app.all_messages(&id, 200).await;
    assert_eq!(messages.len(), 80);
    for pair in messages.chunks(2) {
        assert_eq!(pair[0]["role"], "user");
        assert_eq!(pair[1]["role"], "assistant");
        let text = pair[0]["content"].as_str().unwrap();
        let reply = pair[1]["content"].as_str().unwrap();
        assert!(
            reply.ends_with(&format!("You said: {text}")),
            "{text} / {reply}"
        );
    }
    for exchange in &exchanges {
        let position = messages
            .iter()
            .position(|m| m["id"] == exchange["user_message"]["id"])
            .expect("the user message is stored");
        assert_eq!(position % 2, 0);
        assert_eq!(messages[position], exchange["user_message"]);
        assert_eq!(messages[position + 1], exchange["assistant_message"]);
    }
}

// ---- streaming ----

#[tokio::test]
async fn a_streamed_reply_arrives_event_by_event_then_done() {
    let app = TestApp::builder()
        .with("CHAT__ASSISTANT__DUMMY__WORD_DELAY_MS", 60)
        .spawn()
        .await;
    let id = app.new_conversation().await;
    let response = streaming_request(&app, &id, "tell me a story")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["content-type"],
        "text/event-stream; charset=utf-8"
    );
    assert_eq!(response.headers()["cache-control"], "no-cache");
    assert_eq!(response.headers()["x-accel-buffering"], "no");
    let mut reader = SseReader::new(response);

    let first = reader.next_event().await.expect("a first event");
    assert_eq!(first.event, "delta");
    assert_eq!(first.data.as_object().unwrap().len(), 1, "{:?}", first.data);
    let mut text = first.data["text"].as_str().unwrap().to_owned();
    // The first piece arrived while the reply is still being written: nothing is stored yet.
    let page = message_page(&app, &id, "").await;
    assert_eq!(
        page["items"],
        json!([]),
        "stored before the stream finished"
    );

    let mut deltas = 1;
    let done = loop {
        let event = reader
            .next_event()
            .await
            .expect("the stream ends with done");
        match event.event.as_str() {
            "delta" => {
                text.push_str(event.data["text"].as_str().unwrap());
                deltas += 1;
            }
            "done" => break event.data,
            other => panic!("unexpected event {other}: {:?}", event.data),
        }
    };
    assert!(
        deltas > 3,
        "the reply came word by word, got {deltas} pieces"
    );
    assert_eq!(reader.next_event().await, None, "done is the last event");

    assert_eq!(done.as_object().unwrap().len(), 2, "{done}");
    assert_message_shape(&done["user_message"], &id, "user");
    assert_message_shape(&done["assistant_message"], &id, "assistant");
    assert_eq!(done["user_message"]["content"], "tell me a story");
    assert_eq!(done["assistant_message"]["content"], text.as_str());
    assert!(text.ends_with("You said: tell me a story"), "{text}");

    let page = message_page(&app, &id, "").await;
    assert_eq!(
        page["items"],
        json!([done["user_message"], done["assistant_message"]])
    );
}

#[tokio::test]
async fn a_streamed_reply_equals_the_non_streamed_one() {
    let app = TestApp::spawn().await;
    let id = app.new_conversation().await;
    let plain = app.send(&id, "same question").await;
    let response = app
        .client
        .post(app.url(&messages_path(&id)))
        .header("accept", "application/json, text/event-stream;q=0.9")
        .json(&json!({"content": "same question"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let mut reader = SseReader::new(response);
    let mut events = Vec::new();
    while let Some(event) = reader.next_event().await {
        events.push(event);
    }
    let (last, deltas) = events.split_last().unwrap();
    assert_eq!(last.event, "done");
    assert!(deltas.iter().all(|event| event.event == "delta"));
    let text: String = deltas
        .iter()
        .map(|event| event.data["text"].as_str().unwrap())
        .collect();
    assert_eq!(
        text,
        plain["assistant_message"]["content"].as_str().unwrap()
    );
    assert_eq!(
        events.iter().filter(|event| event.event == "done").count(),
        1
    );
    assert_eq!(app.all_messages(&id, 50).await.len(), 4);
}

#[tokio::test]
async fn a_client_that_disconnects_mid_stream_does_not_lose_the_exchange() {
    let app = TestApp::builder()
        .with("CHAT__ASSISTANT__DUMMY__WORD_DELAY_MS", 80)
        .spawn()
        .await;
    let id = app.new_conversation().await;
    let response = streaming_request(&app, &id, "I will hang up early")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let mut reader = SseReader::new(response);
    let first = reader.next_event().await.unwrap();
    assert_eq!(first.event, "delta");
    drop(reader);

    // Not stored yet: the reply was still being generated when the client left.
    assert_eq!(message_page(&app, &id, "").await["items"], json!([]));

    let app_ref = &app;
    let id_ref = id.as_str();
    eventually("the abandoned exchange is stored", || async move {
        message_page(app_ref, id_ref, "").await["items"]
            .as_array()
            .unwrap()
            .len()
            == 2
    })
    .await;
    let messages = app.all_messages(&id, 50).await;
    assert_eq!(messages[0]["role"], "user");
    assert_eq!(messages[0]["content"], "I will hang up early");
    assert_eq!(messages[1]["role"], "assistant");
    let reply = messages[1]["content"].as_str().unwrap();
    assert!(
        reply.starts_with(first.data["text"].as_str().unwrap()),
        "{reply}"
    );
    assert!(reply.ends_with("You said: I will hang up early"), "{reply}");
    // The conversation moved to the top of the list as for any exchange.
    assert_eq!(
        list_conversations(&app, "").await["items"][0]["id"],
        id.as_str()
    );
}

// ---- the default conversation ----

#[tokio::test]
async fn the_default_conversation_is_visible_in_both_apis() {
    let app = TestApp::spawn().await;
    let seeded = app
        .post_json("/chat/message", &json!({"message": "from the seed API"}))
        .await;
    assert_eq!(seeded.status(), 200);
    let seeded: Value = seeded.json().await.unwrap();
    let other = app.create_conversation(Some("other")).await;

    // Listed like any other conversation.
    let page = list_conversations(&app, "").await;
    let items = page["items"].as_array().unwrap();
    assert_eq!(items.len(), 2);
    assert_eq!(items[0]["id"], other["id"]);
    assert_eq!(items[1]["id"], DEFAULT_ID);
    let fetched = app
        .get(&format!("/api/v1/conversations/{DEFAULT_ID}"))
        .await;
    assert_eq!(fetched.status(), 200);
    let fetched: Value = fetched.json().await.unwrap();
    assert_conversation_shape(&fetched);
    assert_eq!(fetched, items[1]);

    // Its seed exchange shows through v1.
    let page = message_page(&app, DEFAULT_ID, "").await;
    let messages = page["items"].as_array().unwrap();
    assert_eq!(messages.len(), 2);
    assert_message_shape(&messages[0], DEFAULT_ID, "user");
    assert_message_shape(&messages[1], DEFAULT_ID, "assistant");
    assert_eq!(messages[0]["content"], "from the seed API");
    assert_eq!(messages[1]["content"], seeded["response"]);

    // An exchange sent through v1 shows in the seed history, and moves it to the top.
    let exchange = app.send(DEFAULT_ID, "from the product API").await;
    assert_eq!(exchange["user_message"]["conversation_id"], DEFAULT_ID);
    let history = app.history().await;
    assert_eq!(
        history,
        [
            json!({"user": "from the seed API", "AI": seeded["response"]}),
            json!({"user": "from the product API", "AI": exchange["assistant_message"]["content"]}),
        ]
    );
    assert_eq!(
        list_conversations(&app, "").await["items"][0]["id"],
        DEFAULT_ID
    );

    // And a streamed one too.
    let response = streaming_request(&app, DEFAULT_ID, "streamed into the default")
        .send()
        .await
        .unwrap();
    let mut reader = SseReader::new(response);
    let mut done = None;
    while let Some(event) = reader.next_event().await {
        if event.event == "done" {
            done = Some(event.data);
        }
    }
    let done = done.expect("a done event");
    let history = app.history().await;
    assert_eq!(history.len(), 3);
    assert_eq!(history[2]["user"], "streamed into the default");
    assert_eq!(history[2]["AI"], done["assistant_message"]["content"]);
}

#[tokio::test]
async fn a_deleted_default_conversation_comes_back_only_through_the_seed_api() {
    let app = TestApp::spawn().await;
    let sent = app
        .post_json("/chat/message", &json!({"message": "before the delete"}))
        .await;
    assert_eq!(sent.status(), 200);
    let default_path = format!("/api/v1/conversations/{DEFAULT_ID}");
    let deleted = app
        .client
        .delete(app.url(&default_path))
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 204);

    // Through v1 it is an ordinary deleted conversation: sending or streaming to it is refused
    // and does not bring it back.
    assert_error(
        app.post_json(&messages_path(DEFAULT_ID), &json!({"content": "hello?"}))
            .await,
        404,
        "conversation_not_found",
    )
    .await;
    let streamed = streaming_request(&app, DEFAULT_ID, "hello?")
        .send()
        .await
        .unwrap();
    assert_error(streamed, 404, "conversation_not_found").await;
    assert_error(app.get(&default_path).await, 404, "conversation_not_found").await;
    assert!(app.history().await.is_empty());

    // The seed API, which cannot create conversations, starts it again, empty but for this message.
    let sent = app
        .post_json("/chat/message", &json!({"message": "after the delete"}))
        .await;
    assert_eq!(sent.status(), 200);
    assert_eq!(app.get(&default_path).await.status(), 200);
    let history = app.history().await;
    assert_eq!(history.len(), 1);
    assert_eq!(history[0]["user"], "after the delete");
}
