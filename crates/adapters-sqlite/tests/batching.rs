//! Group commit, seen from the requesters: writes queued together share one transaction, yet each
//! gets its own outcome. The batch is forced by holding SQLite's write lock from another
//! connection while the writes queue up, so the writes below land in one batch (but the first
//! few, which the writer took before it met the lock).

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
    // Without them, a writer committing one write at a time would pass this test too.
    let histograms = testkit::histograms::record().await;
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
    let largest = histograms.largest("storage_writer_batch_size");
    assert!(
        largest >= Some((WRITES / 2) as f64),
        "the writes shared a batch (largest: {largest:?})"
    );

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

/// One write of the mixed batch below, queued in order.
type Queued =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), RepositoryError>> + Send>>;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_in_a_batch_see_the_renames_and_deletes_queued_between_them() {
    let histograms = testkit::histograms::record().await;
    let directory = tempfile::tempdir().expect("a temporary directory");
    let path = directory.path().join("chat.db");
    let repository = Arc::new(
        SqliteChatRepository::open(&SqliteSettings::new(&path)).expect("open a fresh database"),
    );
    let [kept, deleted] = ["Kept", "Deleted"].map(|title| {
        Conversation::new(
            ConversationId::generate(),
            ConversationTitle::new(title).expect("a valid title"),
            Timestamp::now(),
        )
    });
    for conversation in [&kept, &deleted] {
        repository.create_conversation(conversation).await.unwrap();
    }

    let mut blocker =
        SqliteConnection::establish(&path.to_string_lossy()).expect("a second connection");
    blocker.batch_execute("BEGIN IMMEDIATE").unwrap();

    let append = |conversation: ConversationId, index: usize| -> Queued {
        let repository = Arc::clone(&repository);
        let new = exchange(conversation, index);
        Box::pin(async move { repository.append_exchange(&new).await.map(|_| ()) })
    };
    let renamed = ConversationTitle::new("Renamed").unwrap();
    let rename: Queued = {
        let repository = Arc::clone(&repository);
        let renamed = renamed.clone();
        // Taken now, so the appends queued after the rename are later still.
        let at = Timestamp::now();
        Box::pin(async move {
            repository
                .rename_conversation(kept.id, &renamed, at)
                .await
                .map(|_| ())
        })
    };
    let delete: Queued = {
        let repository = Arc::clone(&repository);
        Box::pin(async move { repository.delete_conversation(deleted.id).await })
    };
    let writes: Vec<Queued> = vec![
        append(kept.id, 1),
        append(deleted.id, 2),
        append(kept.id, 3),
        rename,
        append(kept.id, 4),
        append(deleted.id, 5),
        delete,
        append(kept.id, 6),
        append(deleted.id, 7),
    ];
    let queued = writes.len();
    let outcomes = tokio::spawn(futures::future::join_all(writes));
    tokio::time::sleep(Duration::from_millis(300)).await;
    blocker.batch_execute("COMMIT").unwrap();
    let outcomes = outcomes.await.expect("the writes panicked");
    let largest = histograms.largest("storage_writer_batch_size");
    assert!(
        largest >= Some((queued / 2) as f64),
        "the writes shared a batch (largest: {largest:?})"
    );

    let (last, earlier) = outcomes.split_last().unwrap();
    assert!(
        earlier.iter().all(Result::is_ok),
        "every write before the append to the deleted conversation: {outcomes:?}"
    );
    assert!(matches!(last, Err(RepositoryError::NotFound)), "{last:?}");

    let page = repository
        .list_messages(kept.id, MessageWindow::Latest, PageLimit::new(50).unwrap())
        .await
        .unwrap();
    let stored: Vec<(i64, &str)> = page
        .items
        .iter()
        .map(|message| (message.position, message.content.as_str()))
        .collect();
    let expected: Vec<(i64, String)> = [1, 3, 4, 6]
        .iter()
        .enumerate()
        .flat_map(|(n, index)| {
            let user = 1 + 2 * i64::try_from(n).unwrap();
            [
                (user, format!("question {index}")),
                (user + 1, format!("answer {index}")),
            ]
        })
        .collect();
    let expected: Vec<(i64, &str)> = expected
        .iter()
        .map(|(position, content)| (*position, content.as_str()))
        .collect();
    assert_eq!(stored, expected, "queued order, no gaps");

    let kept_now = repository.get_conversation(kept.id).await.unwrap();
    assert_eq!(kept_now.title, renamed.as_str());
    assert_eq!(
        kept_now.updated_at,
        page.items.last().unwrap().created_at,
        "the appends after the rename moved updated_at on"
    );
    assert!(matches!(
        repository.get_conversation(deleted.id).await,
        Err(RepositoryError::NotFound)
    ));
    assert!(matches!(
        repository
            .list_messages(
                deleted.id,
                MessageWindow::Latest,
                PageLimit::new(50).unwrap()
            )
            .await,
        Err(RepositoryError::NotFound)
    ));
}
