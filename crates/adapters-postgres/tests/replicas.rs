//! Behaviour specific to running several replicas against one PostgreSQL, and to start-up.

use std::sync::Arc;
use std::time::{Duration, Instant};

use adapters_postgres::{PostgresChatRepository, PostgresSettings};
use domain::{
    ChatRepository, Conversation, ConversationId, ConversationTitle, MessageCursor, MessageId,
    MessageWindow, NewExchange, NewMessage, PageLimit, RepositoryError, Role, Timestamp,
};
use testkit::postgres::TestDatabase;

async fn connect(database: &TestDatabase) -> PostgresChatRepository {
    let mut settings = PostgresSettings::new(database.url());
    settings.pool_size = 4;
    PostgresChatRepository::connect(settings)
        .await
        .expect("connect to the test database")
}

fn exchange(conversation_id: ConversationId, label: &str) -> NewExchange {
    let message = |content: String| NewMessage {
        id: MessageId::generate(),
        content,
        created_at: Timestamp::now(),
    };
    NewExchange {
        conversation_id,
        user: message(label.to_owned()),
        assistant: message(format!("reply to {label}")),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_replicas_appending_to_one_conversation_keep_positions_gap_free() {
    let Some(database) = TestDatabase::create().await else {
        return;
    };
    let replicas = [
        Arc::new(connect(&database).await),
        Arc::new(connect(&database).await),
    ];
    let conversation = Conversation::new(
        ConversationId::generate(),
        ConversationTitle::new("Shared").unwrap(),
        Timestamp::now(),
    );
    replicas[0]
        .create_conversation(&conversation)
        .await
        .unwrap();

    let mut tasks = Vec::new();
    for task in 0..8 {
        let replica = Arc::clone(&replicas[task % 2]);
        tasks.push(tokio::spawn(async move {
            for index in 0..25 {
                let label = format!("replica {} task {task} message {index}", task % 2);
                replica
                    .append_exchange(&exchange(conversation.id, &label))
                    .await
                    .expect("append from a replica");
            }
        }));
    }
    for task in tasks {
        task.await.expect("an appending task panicked");
    }

    let mut messages = Vec::new();
    let mut window = MessageWindow::After(MessageCursor { position: 0 });
    loop {
        // Read through the other replica than the one that created the conversation.
        let page = replicas[1]
            .list_messages(conversation.id, window, PageLimit::new(200).unwrap())
            .await
            .unwrap();
        messages.extend(page.items);
        match page.next_cursor {
            Some(cursor) => window = MessageWindow::After(cursor),
            None => break,
        }
    }
    let positions: Vec<i64> = messages.iter().map(|message| message.position).collect();
    assert_eq!(positions, (1..=400).collect::<Vec<_>>());
    for pair in messages.chunks(2) {
        assert_eq!(pair[0].role, Role::User);
        assert_eq!(pair[1].role, Role::Assistant);
        assert_eq!(pair[1].content, format!("reply to {}", pair[0].content));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replicas_starting_together_migrate_once_without_failing() {
    let Some(database) = TestDatabase::create().await else {
        return;
    };
    let starts = (0..6).map(|_| {
        let mut settings = PostgresSettings::new(database.url());
        settings.pool_size = 2;
        tokio::spawn(PostgresChatRepository::connect(settings))
    });
    let mut replicas = Vec::new();
    for start in starts.collect::<Vec<_>>() {
        replicas.push(
            start
                .await
                .expect("connect task panicked")
                .expect("a concurrent start succeeds"),
        );
    }
    let conversation = Conversation::new(
        ConversationId::generate(),
        ConversationTitle::new("After migrations").unwrap(),
        Timestamp::now(),
    );
    replicas[0]
        .create_conversation(&conversation)
        .await
        .unwrap();
    for replica in &replicas {
        replica.health_check().await.unwrap();
        assert_eq!(
            replica.get_conversation(conversation.id).await.unwrap(),
            conversation
        );
    }
}

#[tokio::test]
async fn unreachable_database_fails_fast_as_unavailable_without_leaking_the_password() {
    let settings = PostgresSettings {
        url: "postgres://chat:hunter2-secret@127.0.0.1:1/chat".to_owned(),
        pool_size: 2,
        connect_timeout: Duration::from_millis(500),
        statement_timeout: Some(Duration::from_secs(5)),
    };
    assert!(!format!("{settings:?}").contains("hunter2"));
    let started = Instant::now();
    match PostgresChatRepository::connect(settings).await {
        Err(RepositoryError::Unavailable(message)) => {
            assert!(!message.contains("hunter2"), "{message}");
        }
        other => panic!("expected Unavailable, got {other:?}"),
    }
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn urls_of_other_schemes_are_refused() {
    let result = PostgresChatRepository::connect(PostgresSettings::new("mysql://x@y/z")).await;
    assert!(
        matches!(result, Err(RepositoryError::Unknown(_))),
        "{result:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statement_timeout_applies_and_calls_keep_working() {
    let Some(database) = TestDatabase::create().await else {
        return;
    };
    let mut settings = PostgresSettings::new(database.url());
    settings.pool_size = 2;
    settings.statement_timeout = Some(Duration::from_secs(3));
    let repository = PostgresChatRepository::connect(settings).await.unwrap();
    repository.health_check().await.unwrap();
    assert!(matches!(
        repository
            .get_conversation(ConversationId::generate())
            .await,
        Err(RepositoryError::NotFound)
    ));
}
