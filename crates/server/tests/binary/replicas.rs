//! Two `chat-server` processes on one PostgreSQL database behave as one service.

use std::collections::HashSet;

use serde_json::{json, Value};
use testkit::postgres::TestDatabase;

use crate::{default_conversation_messages, deterministic, postgres, start};

#[tokio::test]
async fn two_replicas_on_one_database_see_each_others_writes_in_one_order() {
    let Some(database) = TestDatabase::create().await else {
        return;
    };
    let mut variables = deterministic();
    variables.extend(postgres(&database));
    let (first_directory, second_directory) =
        (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    // Both start at once: migrations must be safe to run concurrently.
    let (first, second) = std::thread::scope(|scope| {
        let first = scope.spawn(|| start(first_directory.path(), &variables));
        let second = scope.spawn(|| start(second_directory.path(), &variables));
        (first.join().unwrap(), second.join().unwrap())
    });
    let replicas = [&first, &second];
    let client = reqwest::Client::new();

    // A conversation created through one replica is visible through the other.
    let conversation: Value = client
        .post(first.url("/api/v1/conversations"))
        .json(&json!({"title": "shared"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = conversation["id"].as_str().unwrap().to_owned();
    let seen: Value = client
        .get(second.url(&format!("/api/v1/conversations/{id}")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(seen["title"], "shared");

    // Concurrent writes split across both replicas, to the seed route and to one v1 conversation.
    let sends = (0..120).map(|i| {
        let client = client.clone();
        let replica = replicas[i % 2];
        let (url, body) = if i % 3 == 0 {
            (
                replica.url("/chat/message"),
                json!({"message": format!("seed {i}")}),
            )
        } else {
            (
                replica.url(&format!("/api/v1/conversations/{id}/messages")),
                json!({"content": format!("v1 {i}")}),
            )
        };
        async move {
            let response = client.post(url).json(&body).send().await.unwrap();
            assert!(response.status().is_success(), "{}", response.status());
        }
    });
    futures::future::join_all(sends).await;

    let mut orders = Vec::new();
    for replica in replicas {
        let page: Value = client
            .get(replica.url(&format!("/api/v1/conversations/{id}/messages?limit=200")))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let items = page["items"].as_array().unwrap().clone();
        assert_eq!(items.len(), 160, "80 exchanges, nothing lost or duplicated");
        let users: HashSet<&str> = items
            .iter()
            .filter(|message| message["role"] == "user")
            .map(|message| message["content"].as_str().unwrap())
            .collect();
        assert_eq!(users.len(), 80);
        for pair in items.chunks(2) {
            assert_eq!(pair[0]["role"], "user");
            let user = pair[0]["content"].as_str().unwrap();
            assert!(pair[1]["content"]
                .as_str()
                .unwrap()
                .ends_with(&format!("You said: {user}")));
        }
        orders.push(items.iter().map(|m| m["id"].clone()).collect::<Vec<_>>());

        let seed = default_conversation_messages(replica).await;
        assert_eq!(seed.len(), 80, "40 seed exchanges through either replica");
    }
    assert_eq!(orders[0], orders[1], "both replicas report one order");
}
