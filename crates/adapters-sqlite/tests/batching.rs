//! Group commit, seen from the requesters: writes queued together share one transaction, yet each
//! gets its own outcome. The batch is forced by holding SQLite's write lock from another
//! connection while the writes queue up, so every write below lands in one batch.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use adapters_sqlite::{SqliteChatRepository, SqliteSettings};
use diesel::connection::SimpleConnection;
use diesel::{Connection, SqliteConnection};
use domain::{
    ChatRepository, Conversation, ConversationId, ConversationTitle, MessageId, MessageWindow,
    NewExchange, NewMessage, PageLimit, RepositoryError, Role, Timestamp,
};

const WRITES: usize = 120;

fn exchange(conversation_id: ConversationId, index: usize) -> NewExchange {
    NewExchange {
        conversation_id,
        user: NewMessage {
            id: MessageId::generate(),
            content: format!("question {index}"),
            created_at: Timestamp::now(),
        },
        assistant: NewMessage {
            id: MessageId::generate(),
            content: format!("answer {index}"),
            created_at: Timestamp::now(),
        },
    }
}

/// What a write in the batch is made to do.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    Succeeds,
    ReusesAStoredId,
    TargetsAMissingConversation,
}

fn kind(index: usize) -> Kind {
    match index % 10 {
        3 => Kind::ReusesAStoredId,
        7 => Kind::TargetsAMissingConversation,
        _ => Kind::Succeeds,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_write_in_a_batch_fails_alone_and_the_rest_commit_in_order() {
    let directory = tempfile::tempdir().expect("a temporary directory");
    let path = directory.path().join("chat.db");
    let repository = Arc::new(
        SqliteChatRepository::open(&SqliteSettings::new(&path)).expect("open a fresh database"),
    );
    let conversation = Conversation::new(
        ConversationId::generate(),
        ConversationTitle::new("Batch").expect("a valid title"),
        Timestamp::now(),
    );
    repository.create_conversation(&conversation).await.unwrap();
    let first = repository
        .append_exchange(&exchange(conversation.id, 0))
        .await
        .unwrap();

    // Hold the write lock: the writer blocks on its next BEGIN while every write below queues.
    let mut blocker =
        SqliteConnection::establish(&path.to_string_lossy()).expect("a second connection");
    blocker.batch_execute("BEGIN IMMEDIATE").unwrap();

    let mut writes = Vec::new();
    for index in 1..=WRITES {
        let mut new = exchange(conversation.id, index);
        match kind(index) {
            Kind::Succeeds => {}
            Kind::ReusesAStoredId => new.assistant.id = first.user_message.id,
            Kind::TargetsAMissingConversation => new.conversation_id = ConversationId::generate(),
        }
        let repository = Arc::clone(&repository);
        writes.push(async move { (index, repository.append_exchange(&new).await) });
    }
    // join_all polls the writes in order the first time, so they queue in index order.
    let outcomes = tokio::spawn(futures::future::join_all(writes));
    // Time for the task to queue them all while the writer waits for the lock (its busy timeout
    // is 5 s). Were it slower, the writes would still queue in order, only in more batches.
    tokio::time::sleep(Duration::from_millis(300)).await;
    blocker.batch_execute("COMMIT").unwrap();
    let outcomes = outcomes.await.expect("the writes panicked");

    let mut stored_positions = Vec::new();
    for (index, outcome) in outcomes {
        match (kind(index), outcome) {
            (Kind::Succeeds, Ok(stored)) => {
                assert_eq!(stored.user_message.content, format!("question {index}"));
                assert_eq!(stored.assistant_message.content, format!("answer {index}"));
                assert_eq!(
                    stored.assistant_message.position,
                    stored.user_message.position + 1
                );
                stored_positions.push((index, stored.user_message.position));
            }
            (Kind::ReusesAStoredId, Err(RepositoryError::Conflict)) => {}
            (Kind::TargetsAMissingConversation, Err(RepositoryError::NotFound)) => {}
            (expected, outcome) => {
                panic!("write {index} ({expected:?}) ended with {outcome:?}")
            }
        }
    }

    // The successful writes hold the positions after the first exchange, gap-free, in the order
    // they were queued.
    let succeeded = (1..=WRITES)
        .filter(|index| kind(*index) == Kind::Succeeds)
        .count();
    let positions: Vec<i64> = stored_positions
        .iter()
        .map(|(_, position)| *position)
        .collect();
    let expected: Vec<i64> = (0..succeeded)
        .map(|n| 3 + 2 * i64::try_from(n).unwrap())
        .collect();
    assert_eq!(positions, expected, "queued order, no gaps");

    let page = repository
        .list_messages(
            conversation.id,
            MessageWindow::Latest,
            PageLimit::new(200).unwrap(),
        )
        .await
        .unwrap();
    let contents: HashSet<&str> = page.items.iter().map(|m| m.content.as_str()).collect();
    assert_eq!(page.items.len(), 2 + 2 * succeeded);
    for index in 1..=WRITES {
        let stored = contents.contains(format!("question {index}").as_str());
        assert_eq!(
            stored,
            kind(index) == Kind::Succeeds,
            "question {index} stored: {stored}"
        );
    }
    assert!(page
        .items
        .chunks(2)
        .all(|pair| pair[0].role == Role::User && pair[1].role == Role::Assistant));
}
