//! Two `chat-server` processes on one PostgreSQL database behave as one service.

use std::collections::HashSet;

use serde_json::{json, Value};
use testkit::fake_openai::{FakeProvider, Reply};
use testkit::postgres::TestDatabase;
use testkit::process::ServerProcess;

use crate::{create_conversation, default_conversation_messages, deterministic, postgres, start};

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
    let conversation = create_conversation(&client, &first, Some("shared")).await;
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

    // Creates under one chosen id (a client retrying), through both replicas at once, make one
    // conversation.
    let chosen = "0190b5e0-3c2a-7d4e-9f10-2b3c4d5e6f80";
    let creates = (0..8).map(|i| {
        let client = client.clone();
        let url = replicas[i % 2].url("/api/v1/conversations");
        async move {
            let response = client
                .post(url)
                .json(&json!({ "id": chosen }))
                .send()
                .await
                .unwrap();
            response.status().as_u16()
        }
    });
    let mut statuses = futures::future::join_all(creates).await;
    statuses.sort_unstable();
    assert_eq!(statuses, [200, 200, 200, 200, 200, 200, 200, 201]);

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

/// Replicas' settings: PostgreSQL for storage, Redis Streams for the generation log, replies of
/// 40 ms a word.
fn sharing_redis(database: &TestDatabase) -> Vec<(&'static str, String)> {
    let mut variables = deterministic();
    variables.extend(postgres(database));
    variables.extend([
        ("CHAT__CACHE__KIND", "redis".to_owned()),
        ("CHAT__CACHE__URL", testkit::redis_url()),
        (
            "CHAT__CACHE__KEY_PREFIX",
            format!("chat-test-replicas-{}", std::process::id()),
        ),
        // Every key this test writes expires within seconds of its end.
        ("CHAT__CACHE__TTL_SECS", "5".to_owned()),
        ("CHAT__CACHE__STREAM_LOG_TTL_SECS", "5".to_owned()),
        ("CHAT__ASSISTANT__DUMMY__WORD_DELAY_MS", "40".to_owned()),
    ]);
    variables
}

/// Two replicas as [`sharing_redis`] sets them up, and a conversation made through the first.
struct TwoReplicas {
    first: ServerProcess,
    second: ServerProcess,
    client: reqwest::Client,
    conversation: String,
    // Dropped after the servers, which use them.
    _directories: (tempfile::TempDir, tempfile::TempDir),
    _database: TestDatabase,
}

impl TwoReplicas {
    async fn start() -> Option<Self> {
        Self::start_with(Vec::new()).await
    }

    /// With `settings` added to those of [`sharing_redis`].
    async fn start_with(settings: Vec<(&'static str, String)>) -> Option<Self> {
        let database = TestDatabase::create().await?;
        let mut variables = sharing_redis(&database);
        variables.extend(settings);
        let directories = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let first = start(directories.0.path(), &variables);
        let second = start(directories.1.path(), &variables);
        let client = reqwest::Client::new();
        let conversation = create_conversation(&client, &first, None).await["id"]
            .as_str()
            .unwrap()
            .to_owned();
        Some(Self {
            first,
            second,
            client,
            conversation,
            _directories: directories,
            _database: database,
        })
    }

    /// Sends `body` to the conversation through `replica`, asking for the reply's event stream.
    async fn post_streamed(&self, replica: &ServerProcess, body: &Value) -> reqwest::Response {
        let id = &self.conversation;
        self.client
            .post(replica.url(&format!("/api/v1/conversations/{id}/messages")))
            .header("accept", "text/event-stream")
            .json(body)
            .send()
            .await
            .unwrap()
    }

    async fn stop(&self, replica: &ServerProcess, generation: &str) -> reqwest::Response {
        let id = &self.conversation;
        self.client
            .post(replica.url(&format!(
                "/api/v1/conversations/{id}/generations/{generation}/stop"
            )))
            .send()
            .await
            .unwrap()
    }

    async fn delete(&self, replica: &ServerProcess) -> reqwest::Response {
        let id = &self.conversation;
        self.client
            .delete(replica.url(&format!("/api/v1/conversations/{id}")))
            .send()
            .await
            .unwrap()
    }

    /// Follows the conversation's reply in progress through `replica`.
    async fn follow(&self, replica: &ServerProcess) -> reqwest::Response {
        let id = &self.conversation;
        let following = self
            .client
            .get(replica.url(&format!("/api/v1/conversations/{id}/stream")))
            .header("accept", "text/event-stream")
            .send()
            .await
            .unwrap();
        assert_eq!(following.status(), 200, "a reply in progress");
        following
    }

    /// The newest page of the conversation's messages, read through `replica`.
    async fn messages(&self, replica: &ServerProcess) -> Value {
        let id = &self.conversation;
        self.client
            .get(replica.url(&format!("/api/v1/conversations/{id}/messages")))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }
}

/// A reply that started on one replica is resumed on another: both share PostgreSQL for storage
/// and Redis Streams for the generation log.
#[tokio::test]
async fn a_reply_started_on_one_replica_resumes_on_the_other_through_redis() {
    let Some(replicas) = TwoReplicas::start().await else {
        return;
    };
    let (first, second) = (&replicas.first, &replicas.second);
    let id = &replicas.conversation;

    // Read the start and two deltas from the first replica, then drop the connection.
    let mut response = replicas
        .post_streamed(first, &json!({"content": "continue on the other replica"}))
        .await;
    let mut received = String::new();
    while received.matches("\n\n").count() < 3 {
        received.push_str(std::str::from_utf8(&response.chunk().await.unwrap().unwrap()).unwrap());
    }
    drop(response);
    let frames: Vec<&str> = received
        .split("\n\n")
        .filter(|f| !f.is_empty())
        .take(3)
        .collect();
    let last_id = frames[2]
        .lines()
        .find_map(|line| line.strip_prefix("id: "))
        .unwrap()
        .to_owned();
    let text_of = |frames: &[&str]| -> String {
        frames
            .iter()
            .filter(|frame| frame.contains("event: delta"))
            .filter_map(|frame| frame.lines().find_map(|line| line.strip_prefix("data: ")))
            .map(|data| {
                serde_json::from_str::<Value>(data).unwrap()["text"]
                    .as_str()
                    .unwrap()
                    .to_owned()
            })
            .collect()
    };
    let before = text_of(&frames);

    // The second replica, which never saw this reply, serves the rest of it.
    let rest = replicas
        .client
        .get(second.url(&format!("/api/v1/conversations/{id}/stream")))
        .header("last-event-id", &last_id)
        .send()
        .await
        .unwrap();
    assert_eq!(rest.status(), 200);
    let rest = rest.text().await.unwrap();
    let rest_frames: Vec<&str> = rest.split("\n\n").filter(|f| !f.is_empty()).collect();
    assert!(
        rest_frames.last().unwrap().contains("event: done"),
        "{rest}"
    );
    let done: Value = serde_json::from_str(
        rest_frames
            .last()
            .unwrap()
            .lines()
            .find_map(|l| l.strip_prefix("data: "))
            .unwrap(),
    )
    .unwrap();
    let stored = done["assistant_message"]["content"].as_str().unwrap();
    assert_eq!(format!("{before}{}", text_of(&rest_frames)), stored);
    assert!(stored.ends_with("You said: continue on the other replica"));
}

/// A reply running on one replica is stopped through the other: the log carries the request.
#[tokio::test]
async fn a_reply_running_on_one_replica_is_stopped_through_the_other() {
    let Some(replicas) = TwoReplicas::start().await else {
        return;
    };
    let (first, second) = (&replicas.first, &replicas.second);
    let question = "stop me on the other replica ".repeat(10);

    let mut response = replicas
        .post_streamed(first, &json!({ "content": question }))
        .await;
    let mut received = String::new();
    while received.matches("\n\n").count() < 2 {
        received.push_str(std::str::from_utf8(&response.chunk().await.unwrap().unwrap()).unwrap());
    }
    let start_data: Value = serde_json::from_str(
        received
            .lines()
            .find_map(|line| line.strip_prefix("data: "))
            .unwrap(),
    )
    .unwrap();
    let generation = start_data["generation_id"].as_str().unwrap();

    let stopped = replicas.stop(second, generation).await;
    assert_eq!(stopped.status(), 200);
    assert_eq!(
        stopped.json::<Value>().await.unwrap(),
        json!({"status": "stopped"})
    );

    // The sender's stream, on the first replica, ends with the stored part of the reply.
    while let Some(chunk) = response.chunk().await.unwrap() {
        received.push_str(std::str::from_utf8(&chunk).unwrap());
    }
    let last = received
        .split("\n\n")
        .filter(|frame| !frame.is_empty())
        .last()
        .unwrap();
    assert!(last.contains("event: done"), "{received}");
    let done: Value =
        serde_json::from_str(last.lines().find_map(|l| l.strip_prefix("data: ")).unwrap()).unwrap();
    let stored = done["assistant_message"]["content"].as_str().unwrap();
    assert!(
        !stored.ends_with(&format!("You said: {question}")),
        "it ran to its end: {stored}"
    );
    let page = replicas.messages(second).await;
    assert_eq!(page["items"][1]["content"], stored);
}

/// A stop asked through one replica before the message reached the other (its client chose the
/// generation id) stops that reply there before it begins: the log carries the request.
#[tokio::test]
async fn a_stop_through_one_replica_overtakes_its_message_to_the_other() {
    let Some(replicas) = TwoReplicas::start().await else {
        return;
    };
    let (first, second) = (&replicas.first, &replicas.second);
    let generation = domain::GenerationId::generate().to_string();
    let message = json!({ "content": "never mind", "generation_id": generation });

    let stopped = replicas.stop(second, &generation).await;
    assert_eq!(stopped.status(), 404, "nothing of it is known yet");
    let answer = replicas.post_streamed(first, &message).await;
    assert_eq!(answer.status(), 409);
    assert_eq!(answer.json::<Value>().await.unwrap()["code"], "stopped");
    // Sent again, elsewhere, it is stopped again.
    let again = replicas.post_streamed(second, &message).await;
    assert_eq!(again.status(), 409);
    assert_eq!(again.json::<Value>().await.unwrap()["code"], "stopped");
    assert_eq!(replicas.messages(first).await["items"], json!([]));

    // The id is that message's on every replica: another message with it is refused.
    let other = json!({ "content": "another", "generation_id": generation });
    let refused = replicas.post_streamed(second, &other).await;
    assert_eq!(refused.status(), 409);
    let refused: Value = refused.json().await.unwrap();
    assert!(
        ["stopped", "generation_id_in_use"].contains(&refused["code"].as_str().unwrap()),
        "{refused}"
    );
}

/// A send waiting for its model on one replica is the conversation's reply in progress on the
/// other too, from its message on: followed there, and stopped there by the id its `start` names
/// (answered `200 stopped` once the log shows its end); the send is answered `409 stopped`, and
/// nothing is stored.
#[tokio::test]
async fn a_send_waiting_for_its_model_on_one_replica_is_followed_and_stopped_through_the_other() {
    let Some((provider, replicas)) = with_a_model_that_never_answers().await else {
        return;
    };
    let (first, second) = (&replicas.first, &replicas.second);
    let message = json!({ "content": "never mind" });

    let (answer, (stopped, followed)) =
        tokio::join!(replicas.post_streamed(first, &message), async {
            until_asked(&provider).await;
            let mut following = replicas.follow(second).await;
            let start = next_event(&mut following, "start").await;
            assert_eq!(start["content"], "never mind");
            let generation = start["generation_id"].as_str().unwrap().to_owned();
            let stopped = replicas.stop(second, &generation).await;
            (
                stopped,
                (generation, next_event(&mut following, "error").await),
            )
        });
    let (generation, end) = followed;
    assert_eq!(end["code"], "stopped");
    assert_eq!(stopped.status(), 200);
    assert_eq!(
        stopped.json::<Value>().await.unwrap(),
        json!({"status": "stopped"})
    );
    assert_eq!(answer.status(), 409);
    assert_eq!(answer.json::<Value>().await.unwrap()["code"], "stopped");
    assert_eq!(replicas.messages(second).await["items"], json!([]));
    let again = replicas.stop(second, &generation).await;
    assert_eq!(
        again.json::<Value>().await.unwrap(),
        json!({"status": "finished"})
    );
}

/// A conversation deleted through one replica while its send waits for its model on the other:
/// that send goes on (only its own replica can stop it), until the delete is asked again there,
/// as a client does that lost the first answer: `404`, and the send ends then.
#[tokio::test]
async fn a_delete_asked_again_on_the_replica_running_its_send_stops_it() {
    let Some((provider, replicas)) = with_a_model_that_never_answers().await else {
        return;
    };
    let (first, second) = (&replicas.first, &replicas.second);
    let message = json!({ "content": "anyone?" });

    let (answer, ()) = tokio::join!(replicas.post_streamed(first, &message), async {
        until_asked(&provider).await;
        assert_eq!(replicas.delete(second).await.status(), 204);
        assert_eq!(replicas.delete(first).await.status(), 404);
    });
    assert_eq!(answer.status(), 404);
    assert_eq!(
        answer.json::<Value>().await.unwrap()["code"],
        "conversation_not_found"
    );
}

/// Returns once `provider` has been asked for a reply.
async fn until_asked(provider: &FakeProvider) {
    while provider.requests().is_empty() {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// Reads `following` up to the end of its next event named `name`, and returns its data.
async fn next_event(following: &mut reqwest::Response, name: &str) -> Value {
    let mut received = String::new();
    loop {
        let chunk = tokio::time::timeout(std::time::Duration::from_secs(10), following.chunk())
            .await
            .expect("the stream keeps moving")
            .unwrap()
            .expect("an event before the end of the stream");
        received.push_str(std::str::from_utf8(&chunk).unwrap());
        let header = format!("event: {name}\n");
        if let Some(at) = received.find(&header) {
            if let Some(end) = received[at..].find("\n\n") {
                let data = received[at..at + end]
                    .lines()
                    .find_map(|line| line.strip_prefix("data: "))
                    .unwrap();
                return serde_json::from_str(data).unwrap();
            }
        }
    }
}

/// Two replicas whose model provider holds every request open without answering.
async fn with_a_model_that_never_answers() -> Option<(FakeProvider, TwoReplicas)> {
    let provider = FakeProvider::start(|_, _| Reply::Hang).await;
    let replicas = TwoReplicas::start_with(vec![
        ("CHAT__ASSISTANT__KIND", "openai".to_owned()),
        ("CHAT__ASSISTANT__BASE_URL", provider.base_url.clone()),
        ("CHAT__ASSISTANT__MODEL", "never-answers".to_owned()),
        ("CHAT__ASSISTANT__API_KEY", "sk-test".to_owned()),
        ("CHAT__ASSISTANT__MAX_RETRIES", "0".to_owned()),
        ("CHAT__ASSISTANT__TIMEOUT_SECS", "60".to_owned()),
    ])
    .await?;
    Some((provider, replicas))
}

/// A replica killed while a send waits for its model leaves no reply in progress behind for
/// long: within seconds the other replica takes it for dead (a stop of it says `finished`, not
/// `202 stopping`, and nothing is in progress), and its id stays taken.
#[tokio::test]
async fn a_send_whose_replica_was_killed_while_it_waited_is_taken_for_dead_within_seconds() {
    let Some((provider, mut replicas)) = with_a_model_that_never_answers().await else {
        return;
    };
    let generation = domain::GenerationId::generate().to_string();
    let message = json!({ "content": "anyone there?", "generation_id": generation });
    let id = &replicas.conversation;
    // Sent without holding on to the replicas, so the first can be killed meanwhile.
    let waiting = replicas
        .client
        .post(
            replicas
                .first
                .url(&format!("/api/v1/conversations/{id}/messages")),
        )
        .header("accept", "text/event-stream")
        .json(&message)
        .send();
    let killed = async {
        until_asked(&provider).await;
        replicas.first.kill_hard();
    };
    let (cut, ()) = tokio::join!(
        tokio::time::timeout(std::time::Duration::from_secs(5), waiting),
        killed
    );
    assert!(cut.is_ok(), "the send ends with its replica");

    let second = &replicas.second;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let stopped = replicas.stop(second, &generation).await;
        if stopped.status() == 200 {
            assert_eq!(
                stopped.json::<Value>().await.unwrap(),
                json!({"status": "finished"})
            );
            break;
        }
        assert_eq!(stopped.status(), 202, "a stop of the dead replica's send");
        assert!(
            std::time::Instant::now() < deadline,
            "the dead replica's send outlived 30 s"
        );
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
    let following = replicas
        .client
        .get(second.url(&format!("/api/v1/conversations/{id}/stream")))
        .send()
        .await
        .unwrap();
    assert_eq!(following.status(), 204, "nothing in progress");

    let again = replicas.post_streamed(second, &message).await;
    assert_eq!(again.status(), 409);
    assert_eq!(
        again.json::<Value>().await.unwrap()["code"],
        "generation_id_in_use"
    );
    assert_eq!(provider.requests().len(), 1);
    assert_eq!(replicas.messages(second).await["items"], json!([]));
}
