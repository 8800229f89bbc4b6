//! What only PostgreSQL deployments see: several replicas on one database, start-up, outages.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use adapters_postgres::{PostgresChatRepository, PostgresSettings};
use domain::{
    ChatRepository, Conversation, ConversationId, ConversationTitle, Message, MessageCursor,
    MessageId, MessageWindow, NewExchange, NewMessage, PageLimit, RepositoryError, Role, Timestamp,
};
use testkit::postgres::TestDatabase;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{tcp, TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};

async fn connect(database: &TestDatabase) -> PostgresChatRepository {
    let mut settings = PostgresSettings::new(database.url());
    settings.pool_size = 4;
    PostgresChatRepository::connect(settings)
        .await
        .expect("connect to the test database")
}

/// A conversation titled `title`, created in `repository`.
async fn created_conversation(repository: &PostgresChatRepository, title: &str) -> Conversation {
    let conversation = Conversation::new(
        ConversationId::generate(),
        ConversationTitle::new(title).unwrap(),
        Timestamp::now(),
    );
    repository.create_conversation(&conversation).await.unwrap();
    conversation
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

/// The newest page (200 messages) of a conversation, oldest first.
async fn newest_messages(
    repository: &PostgresChatRepository,
    conversation_id: ConversationId,
) -> Vec<Message> {
    let newest = PageLimit::new(200).unwrap();
    let page = repository.list_messages(conversation_id, MessageWindow::Latest, newest);
    page.await.unwrap().items
}

/// A repository with one batch in flight, so appends queued meanwhile form the next batch
/// together, in queue order.
async fn one_batch_in_flight(database: &TestDatabase) -> Arc<PostgresChatRepository> {
    let mut settings = PostgresSettings::new(database.url());
    settings.pool_size = 2;
    Arc::new(PostgresChatRepository::connect(settings).await.unwrap())
}

/// Another session's transaction holding `conversation`'s row lock until it sends `COMMIT`, so a
/// batch appending to it waits and later appends queue behind it.
fn hold_row_lock(database: &TestDatabase, conversation: ConversationId) -> diesel::PgConnection {
    use diesel::connection::SimpleConnection;
    use diesel::Connection;

    let mut blocker = diesel::PgConnection::establish(database.url()).unwrap();
    blocker
        .batch_execute(&format!(
            "BEGIN; SELECT 1 FROM conversations WHERE id = '{conversation}' FOR UPDATE"
        ))
        .unwrap();
    blocker
}

/// A database whose sessions default to REPEATABLE READ (an administrator's `ALTER DATABASE`) and
/// a transaction of another session that updates `conversation` and holds it until `COMMIT`.
fn repeatable_read_with_a_concurrent_update(
    database: &TestDatabase,
    conversation: ConversationId,
) -> diesel::PgConnection {
    use diesel::connection::SimpleConnection;
    use diesel::Connection;

    let mut other = diesel::PgConnection::establish(database.url()).unwrap();
    // Its own statement: before a `BEGIN` in the same string it would join that transaction.
    other
        .batch_execute(
            "DO $$ BEGIN EXECUTE format('ALTER DATABASE %I SET default_transaction_isolation \
             = ''repeatable read''', current_database()); END $$",
        )
        .unwrap();
    other
        .batch_execute(&format!(
            "BEGIN; UPDATE conversations SET updated_at = updated_at WHERE id = '{conversation}'"
        ))
        .unwrap();
    other
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_append_that_waited_for_another_writer_succeeds_whatever_the_database_isolation_default()
{
    use diesel::connection::SimpleConnection;

    let Some(database) = TestDatabase::create().await else {
        return;
    };
    let conversation = Conversation::new(
        ConversationId::generate(),
        ConversationTitle::new("Isolation").unwrap(),
        Timestamp::now(),
    );
    connect(&database)
        .await
        .create_conversation(&conversation)
        .await
        .unwrap();
    let mut other = repeatable_read_with_a_concurrent_update(&database, conversation.id);
    // Connected after the change, so its sessions would start with the new default.
    let repository = Arc::new(connect(&database).await);
    let append = {
        let repository = Arc::clone(&repository);
        tokio::spawn(async move {
            repository
                .append_exchange(&exchange(conversation.id, "after the other writer"))
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    other.batch_execute("COMMIT").unwrap();
    let stored = append
        .await
        .unwrap()
        .expect("the append reads the committed row instead of failing to serialize");
    assert_eq!(stored.user_message.position, 1);
    assert_eq!(stored.assistant_message.position, 2);
}

/// A create under the id of a conversation whose deletion is being committed waits for the
/// deletion, then finds the id taken: a check made in the insert's own snapshot, from before the
/// deletion committed, would bring the conversation back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_create_racing_the_deletion_of_its_id_is_refused() {
    use diesel::connection::SimpleConnection;
    use diesel::Connection;

    let Some(database) = TestDatabase::create().await else {
        return;
    };
    let repository = Arc::new(connect(&database).await);
    let doomed = created_conversation(&repository, "Doomed").await;
    let mut deleting = diesel::PgConnection::establish(database.url()).unwrap();
    deleting
        .batch_execute(&format!(
            "BEGIN; DELETE FROM conversations WHERE id = '{id}'; \
             INSERT INTO deleted_conversations (id, deleted_at) VALUES ('{id}', 0)",
            id = doomed.id
        ))
        .unwrap();
    let create = {
        let repository = Arc::clone(&repository);
        let again = doomed.clone();
        tokio::spawn(async move { repository.create_conversation(&again).await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!create.is_finished(), "the create waits for the deletion");
    deleting.batch_execute("COMMIT").unwrap();

    let created = create.await.unwrap();
    assert!(
        matches!(created, Err(RepositoryError::Conflict)),
        "{created:?}"
    );
    assert!(matches!(
        repository.get_conversation(doomed.id).await,
        Err(RepositoryError::NotFound)
    ));
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
        ..PostgresSettings::new("")
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
async fn a_database_not_encoded_in_utf8_is_refused_at_start_saying_why() {
    let Some(database) = TestDatabase::create_encoded("LATIN1").await else {
        return;
    };
    let result = PostgresChatRepository::connect(PostgresSettings::new(database.url())).await;
    let Err(RepositoryError::Unknown(error)) = result else {
        panic!("a LATIN1 database was accepted: {result:?}");
    };
    let message = error.to_string();
    assert!(message.contains("LATIN1"), "{message}");
    assert!(message.contains("ENCODING 'UTF8'"), "{message}");
}

/// `SQL_ASCII` keeps the bytes it is sent: a database created so (the C locale's default) works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_in_sql_ascii_keeps_every_character() {
    let Some(database) = TestDatabase::create_encoded("SQL_ASCII").await else {
        return;
    };
    let repository = connect(&database).await;
    let conversation = created_conversation(&repository, "Ünïcödé 🎉").await;
    let text = "日本語 and 🎉 émoji";
    repository
        .append_exchange(&exchange(conversation.id, text))
        .await
        .unwrap();
    let stored = repository.get_conversation(conversation.id).await.unwrap();
    assert_eq!(stored.title, "Ünïcödé 🎉");
    let stored = newest_messages(&repository, conversation.id).await;
    assert_eq!(stored[0].content, text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reply_already_shown_waits_for_room_in_a_full_queue_where_others_are_refused() {
    use diesel::connection::SimpleConnection;

    let Some(database) = TestDatabase::create().await else {
        return;
    };
    let mut settings = PostgresSettings::new(database.url());
    settings.pool_size = 2;
    settings.write_queue_capacity = 1;
    let repository = Arc::new(PostgresChatRepository::connect(settings).await.unwrap());
    let conversation = created_conversation(&repository, "Full").await;
    let mut blocker = hold_row_lock(&database, conversation.id);
    // Appends wait behind the held batch until one finds the queue full.
    let mut queued = JoinSet::new();
    loop {
        assert!(queued.len() < 10, "the queue never filled");
        let repository = Arc::clone(&repository);
        let label = format!("queued {}", queued.len());
        let append = tokio::spawn(async move {
            repository
                .append_exchange(&exchange(conversation.id, &label))
                .await
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
        if append.is_finished() {
            assert!(matches!(
                append.await.unwrap(),
                Err(RepositoryError::Overloaded)
            ));
            break;
        }
        queued.spawn(async move { append.await.unwrap() });
    }
    let shown = {
        let repository = Arc::clone(&repository);
        tokio::spawn(async move {
            repository
                .append_exchange_waiting_for_room(&exchange(conversation.id, "shown"))
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!shown.is_finished(), "it waits while the queue is full");
    blocker.batch_execute("COMMIT").unwrap();
    let stored = shown.await.unwrap().expect("stored once there was room");
    assert_eq!(stored.user_message.content, "shown");
    while let Some(append) = queued.join_next().await {
        append.unwrap().expect("a queued append is stored");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_work_with_a_statement_timeout_set() {
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

#[tokio::test]
async fn a_database_emptied_under_the_server_is_unavailable_and_not_ready() {
    use diesel::connection::SimpleConnection;
    use diesel::Connection;

    let Some(database) = TestDatabase::create().await else {
        return;
    };
    let repository = connect(&database).await;
    let conversation = created_conversation(&repository, "Soon gone").await;
    repository
        .health_check()
        .await
        .expect("ready with its tables");
    // What dropping the database and creating it again leaves: no tables, no functions.
    diesel::PgConnection::establish(database.url())
        .unwrap()
        .batch_execute(
            "DROP TABLE messages, conversations CASCADE; DROP FUNCTION append_exchange_batch",
        )
        .unwrap();

    let says_why = |outcome: Result<(), RepositoryError>, what: &str| match outcome {
        Err(RepositoryError::Unavailable(message)) => {
            assert!(message.contains("no chat tables"), "{what}: {message}");
        }
        other => panic!("{what}: {other:?}"),
    };
    let started = Instant::now();
    says_why(repository.health_check().await, "readiness");
    says_why(
        repository.get_conversation(conversation.id).await.map(drop),
        "a read",
    );
    says_why(
        repository
            .append_exchange(&exchange(conversation.id, "into nothing"))
            .await
            .map(drop),
        "an append",
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "answered at once, not after asking whether the append was stored for {:?}",
        started.elapsed()
    );
}

/// A TCP proxy in front of PostgreSQL. Aborting `task` is an outage (listener gone, every open
/// connection cut), starting a proxy again on the same port is the recovery. Frozen, it takes
/// what either side sends and passes none of it on, as a hung server behind live connections
/// would: the kernel still acknowledges every packet, so the connections look alive.
struct Proxy {
    port: u16,
    task: JoinHandle<()>,
    frozen: watch::Sender<bool>,
    /// How many connections it has accepted.
    accepted: Arc<AtomicUsize>,
}

async fn start_proxy(port: u16, target: String) -> Proxy {
    let listener = TcpListener::bind(("127.0.0.1", port))
        .await
        .expect("bind the proxy");
    let port = listener.local_addr().unwrap().port();
    let (frozen, thawed) = watch::channel(false);
    let accepted = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&accepted);
    let task = tokio::spawn(async move {
        let mut connections = JoinSet::new();
        loop {
            let Ok((inbound, _)) = listener.accept().await else {
                continue;
            };
            counted.fetch_add(1, Ordering::SeqCst);
            let target = target.clone();
            let thawed = thawed.clone();
            connections.spawn(async move {
                if let Ok(outbound) = TcpStream::connect(target).await {
                    let (from_client, to_client) = inbound.into_split();
                    let (from_server, to_server) = outbound.into_split();
                    tokio::join!(
                        forward(from_client, to_server, thawed.clone()),
                        forward(from_server, to_client, thawed),
                    );
                }
            });
        }
    });
    Proxy {
        port,
        task,
        frozen,
        accepted,
    }
}

async fn forward(
    mut from: tcp::OwnedReadHalf,
    mut to: tcp::OwnedWriteHalf,
    mut thawed: watch::Receiver<bool>,
) {
    let mut buffer = vec![0; 16 * 1024];
    while let Ok(read @ 1..) = from.read(&mut buffer).await {
        if thawed.wait_for(|frozen| !frozen).await.is_err()
            || to.write_all(&buffer[..read]).await.is_err()
        {
            return;
        }
    }
}

/// A repository reaching `database` through a proxy of its own (connect timeout 1 s), and a
/// conversation titled `title` holding one exchange ("before").
async fn behind_a_proxy(
    database: &TestDatabase,
    pool_size: u32,
    statement_timeout: Duration,
    title: &str,
) -> (Proxy, PostgresChatRepository, Conversation) {
    let (target, via) = split_authority(database.url());
    let proxy = start_proxy(0, target).await;
    let settings = PostgresSettings {
        url: via(&format!("127.0.0.1:{}", proxy.port)),
        pool_size,
        connect_timeout: Duration::from_secs(1),
        statement_timeout: Some(statement_timeout),
        ..PostgresSettings::new("")
    };
    let repository = PostgresChatRepository::connect(settings).await.unwrap();
    let conversation = Conversation::new(
        ConversationId::generate(),
        ConversationTitle::new(title).unwrap(),
        Timestamp::now(),
    );
    repository.create_conversation(&conversation).await.unwrap();
    repository
        .append_exchange(&exchange(conversation.id, "before"))
        .await
        .unwrap();
    (proxy, repository, conversation)
}

/// A proxy in front of PostgreSQL that, once `armed`, passes on the next message of a client
/// holding `needle` and then cuts that client's connection without passing on the answer: the
/// statement runs to its end and commits, and the client learns only that its connection is gone.
async fn start_answer_losing_proxy(
    target: String,
    needle: &'static [u8],
    armed: Arc<AtomicBool>,
) -> u16 {
    let listener = TcpListener::bind(("127.0.0.1", 0)).await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            let target = target.clone();
            let armed = Arc::clone(&armed);
            tokio::spawn(async move {
                let Ok(mut server) = TcpStream::connect(target).await else {
                    return;
                };
                let (mut from_client, mut from_server) = (vec![0; 16 * 1024], vec![0; 16 * 1024]);
                loop {
                    tokio::select! {
                        read = client.read(&mut from_client) => {
                            let Ok(read @ 1..) = read else { return };
                            let message = &from_client[..read];
                            let losing = armed.load(Ordering::SeqCst)
                                && message.windows(needle.len()).any(|window| window == needle);
                            if server.write_all(message).await.is_err() {
                                return;
                            }
                            if losing {
                                armed.store(false, Ordering::SeqCst);
                                // Long enough for the statement to commit; its answer is dropped
                                // with both connections.
                                tokio::time::sleep(Duration::from_millis(500)).await;
                                return;
                            }
                        }
                        read = server.read(&mut from_server) => {
                            let Ok(read @ 1..) = read else { return };
                            if client.write_all(&from_server[..read]).await.is_err() {
                                return;
                            }
                        }
                    }
                }
            });
        }
    });
    port
}

/// A repository reaching `database` through [`start_answer_losing_proxy`], which loses the answer
/// to the next append batch once the returned flag is set.
async fn losing_batch_answers(
    database: &TestDatabase,
) -> (Arc<AtomicBool>, PostgresChatRepository) {
    let (target, via) = split_authority(database.url());
    let armed = Arc::new(AtomicBool::new(false));
    let port =
        start_answer_losing_proxy(target, b"append_exchange_batch", Arc::clone(&armed)).await;
    let settings = PostgresSettings {
        url: via(&format!("127.0.0.1:{port}")),
        pool_size: 2,
        connect_timeout: Duration::from_secs(2),
        ..PostgresSettings::new("")
    };
    (
        armed,
        PostgresChatRepository::connect(settings).await.unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_append_committed_before_its_answer_was_lost_is_answered_as_stored() {
    let Some(database) = TestDatabase::create().await else {
        return;
    };
    let (armed, repository) = losing_batch_answers(&database).await;
    let conversation = created_conversation(&repository, "Answer lost").await;

    armed.store(true, Ordering::SeqCst);
    let sent = exchange(conversation.id, "committed, then the answer was lost");
    let stored = repository
        .append_exchange(&sent)
        .await
        .expect("answered as stored: told otherwise, a client would send it again");
    assert!(!armed.load(Ordering::SeqCst), "the answer was not lost");
    assert_eq!(stored.user_message.id, sent.user.id);
    let messages = newest_messages(&repository, conversation.id).await;
    assert_eq!(messages.len(), 2, "stored once");
    assert_eq!(messages[0], stored.user_message);
    assert_eq!(messages[1], stored.assistant_message);
}

/// The batch's connection is cut while its statement waits for a row lock: the statement runs on
/// in its backend, which does not notice the missing client, and commits once the lock is free.
/// Looking right away would find nothing and answer "not stored" for an exchange that will be.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_append_whose_client_vanished_while_it_waited_is_answered_once_it_committed() {
    use diesel::connection::SimpleConnection;

    let Some(database) = TestDatabase::create().await else {
        return;
    };
    let (armed, repository) = losing_batch_answers(&database).await;
    let repository = Arc::new(repository);
    let conversation = created_conversation(&repository, "Orphaned statement").await;
    let mut blocker = hold_row_lock(&database, conversation.id);

    armed.store(true, Ordering::SeqCst);
    let sent = exchange(conversation.id, "committed after its client was gone");
    let appending = {
        let repository = Arc::clone(&repository);
        let sent = sent.clone();
        tokio::spawn(async move { repository.append_exchange(&sent).await })
    };
    // The proxy cuts the connection half a second after passing the statement on.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(!armed.load(Ordering::SeqCst), "the statement was not sent");
    blocker.batch_execute("COMMIT").unwrap();

    let stored = appending
        .await
        .unwrap()
        .expect("answered as stored once the orphaned statement committed");
    assert_eq!(stored.user_message.id, sent.user.id);
    let messages = newest_messages(&repository, conversation.id).await;
    assert_eq!(messages.len(), 2, "stored once");
    assert_eq!(messages[0], stored.user_message);
}

/// `host:port` of a URL, and the URL with that part replaced.
fn split_authority(url: &str) -> (String, impl Fn(&str) -> String + '_) {
    let start = url
        .find('@')
        .map_or_else(|| url.find("://").unwrap() + 3, |at| at + 1);
    let end = start + url[start..].find('/').unwrap_or(url.len() - start);
    let host_port = url[start..end].to_owned();
    (host_port, move |replacement: &str| {
        format!("{}{replacement}{}", &url[..start], &url[end..])
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn outage_fails_fast_as_unavailable_and_recovers_by_itself() {
    let Some(database) = TestDatabase::create().await else {
        return;
    };
    let (target, _) = split_authority(database.url());
    let (proxy, repository, conversation) =
        behind_a_proxy(&database, 3, Duration::from_secs(5), "Survives outages").await;
    let port = proxy.port;

    proxy.task.abort();
    let _ = proxy.task.await;
    let started = Instant::now();
    let health = repository.health_check().await;
    assert!(
        matches!(health, Err(RepositoryError::Unavailable(_))),
        "{health:?}"
    );
    let read = repository.get_conversation(conversation.id).await;
    assert!(
        matches!(read, Err(RepositoryError::Unavailable(_))),
        "{read:?}"
    );
    let write = repository
        .append_exchange(&exchange(conversation.id, "during"))
        .await;
    assert!(
        matches!(write, Err(RepositoryError::Unavailable(_))),
        "{write:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(6),
        "three calls during the outage took {:?}",
        started.elapsed()
    );

    let proxy = start_proxy(port, target).await;
    repository
        .health_check()
        .await
        .expect("healthy again once the database is back");
    let stored = repository
        .append_exchange(&exchange(conversation.id, "after"))
        .await
        .expect("writes work again");
    assert_eq!(
        stored.user_message.position, 3,
        "the failed write stored nothing"
    );
    assert_eq!(
        repository
            .get_conversation(conversation.id)
            .await
            .unwrap()
            .title,
        "Survives outages"
    );
    proxy.task.abort();
}

async fn gave_up<T>(read: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(10), read)
        .await
        .expect("the read gave up")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reads_from_a_database_that_stopped_answering_give_up_and_work_again_once_it_answers() {
    let Some(database) = TestDatabase::create().await else {
        return;
    };
    let (proxy, repository, conversation) =
        behind_a_proxy(&database, 4, Duration::from_secs(1), "Outlives a hang").await;

    proxy.frozen.send_replace(true);
    let started = Instant::now();
    // Without a deadline of their own, these would wait for as long as the database hangs.
    let (messages, found, conversations) = tokio::join!(
        gave_up(async {
            repository
                .list_messages(
                    conversation.id,
                    MessageWindow::Latest,
                    PageLimit::new(20).unwrap(),
                )
                .await
                .map(drop)
        }),
        gave_up(async { repository.get_conversation(conversation.id).await.map(drop) }),
        gave_up(async {
            repository
                .list_conversations(None, PageLimit::new(20).unwrap())
                .await
                .map(drop)
        }),
    );
    for read in [messages, found, conversations] {
        assert!(
            matches!(read, Err(RepositoryError::Unavailable(_))),
            "{read:?}"
        );
    }
    assert!(
        started.elapsed() < Duration::from_secs(6),
        "reads of a hung database took {:?}, past their deadline of 3 s",
        started.elapsed()
    );

    proxy.frozen.send_replace(false);
    assert_eq!(
        newest_messages(&repository, conversation.id).await.len(),
        2,
        "reads work again once the database answers"
    );
    assert_eq!(
        repository
            .get_conversation(conversation.id)
            .await
            .unwrap()
            .title,
        "Outlives a hang"
    );
    proxy.task.abort();
}

/// A database that refuses writes (a standby promoted away from, a read-only default) fails
/// them as unavailable, which clients may retry, and keeps serving reads.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_database_refusing_writes_fails_them_as_unavailable_and_still_serves_reads() {
    use diesel::connection::SimpleConnection;
    use diesel::Connection;

    let Some(database) = TestDatabase::create().await else {
        return;
    };
    let repository = connect(&database).await;
    let conversation = created_conversation(&repository, "Read-only later").await;
    // New sessions start read-only; ending the pool's sessions makes it open new ones.
    diesel::PgConnection::establish(database.url())
        .unwrap()
        .batch_execute(
            "DO $$ BEGIN EXECUTE format('ALTER DATABASE %I SET default_transaction_read_only = on', \
             current_database()); END $$; \
             SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE datname = current_database() AND pid <> pg_backend_pid()",
        )
        .unwrap();

    let mut write = Ok(());
    for _ in 0..10 {
        write = repository
            .append_exchange(&exchange(conversation.id, "refused"))
            .await
            .map(|_| ());
        match &write {
            Err(RepositoryError::Unavailable(reason)) if reason.contains("connection lost") => {}
            _ => break,
        }
    }
    match &write {
        Err(RepositoryError::Unavailable(reason)) => {
            assert!(reason.contains("refuses writes"), "{reason}");
        }
        other => panic!("a refused write must be unavailable (503): {other:?}"),
    }
    let read = repository.get_conversation(conversation.id).await.unwrap();
    assert_eq!(read.title, "Read-only later");
    assert!(
        newest_messages(&repository, conversation.id)
            .await
            .is_empty(),
        "the refused write stored nothing"
    );
}

/// Appends per second, one hot conversation and one conversation per task. Run with
/// `cargo test --release -p adapters-postgres --test operations -- --ignored --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "a measurement, not a check"]
async fn append_throughput() {
    let Some(database) = TestDatabase::create().await else {
        return;
    };
    let mut settings = PostgresSettings::new(database.url());
    settings.pool_size = 16;
    let repository = Arc::new(PostgresChatRepository::connect(settings).await.unwrap());
    for shared in [true, false] {
        let conversations: Vec<ConversationId> =
            (0..16).map(|_| ConversationId::generate()).collect();
        for id in &conversations {
            let conversation = Conversation::new(
                *id,
                ConversationTitle::new("Bench").unwrap(),
                Timestamp::now(),
            );
            repository.create_conversation(&conversation).await.unwrap();
        }
        let started = Instant::now();
        let mut tasks = Vec::new();
        for task in 0..16 {
            let repository = Arc::clone(&repository);
            let id = if shared {
                conversations[0]
            } else {
                conversations[task]
            };
            tasks.push(tokio::spawn(async move {
                for index in 0..100 {
                    repository
                        .append_exchange(&exchange(id, &format!("{task} {index}")))
                        .await
                        .unwrap();
                }
            }));
        }
        for task in tasks {
            task.await.unwrap();
        }
        let rate = 1600.0 / started.elapsed().as_secs_f64();
        eprintln!("shared conversation: {shared}, 16 tasks: {rate:.0} exchanges/s");
    }
}

/// Group commit, seen from the requesters: appends queued while a batch waits share the next
/// one, yet each gets its own outcome. Another connection holds the conversation's row lock, so
/// the first batch waits and every later append queues behind it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_append_in_a_batch_fails_alone_and_the_rest_commit_in_order() {
    use diesel::connection::SimpleConnection;

    const WRITES: usize = 120;
    let Some(database) = TestDatabase::create().await else {
        return;
    };
    // Without them, a writer committing one append at a time would pass this test too.
    let histograms = testkit::histograms::record().await;
    let repository = one_batch_in_flight(&database).await;
    let conversation = created_conversation(&repository, "Batch").await;
    let first = repository
        .append_exchange(&exchange(conversation.id, "question 0"))
        .await
        .unwrap();

    let mut blocker = hold_row_lock(&database, conversation.id);

    let reuses_a_stored_id = |index: usize| index % 10 == 3;
    let targets_a_missing_conversation = |index: usize| index % 10 == 7;
    // PostgreSQL's text cannot hold NUL; the domain keeps it out, but any refusal of what one
    // append holds must stay that append's own.
    let holds_text_postgres_refuses = |index: usize| index % 10 == 5;
    let mut writes = Vec::new();
    for index in 1..=WRITES {
        let mut new = exchange(conversation.id, &format!("question {index}"));
        if reuses_a_stored_id(index) {
            new.assistant.id = first.user_message.id;
        }
        if holds_text_postgres_refuses(index) {
            new.assistant.content = "a reply with a \0 in it".to_owned();
        }
        if targets_a_missing_conversation(index) {
            new.conversation_id = ConversationId::generate();
        }
        let repository = Arc::clone(&repository);
        writes.push(async move { (index, repository.append_exchange(&new).await) });
    }
    // join_all polls the appends in order the first time, so they queue in index order.
    let outcomes = tokio::spawn(futures::future::join_all(writes));
    tokio::time::sleep(Duration::from_millis(300)).await;
    blocker.batch_execute("COMMIT").unwrap();
    let outcomes = outcomes.await.unwrap();
    let largest = histograms.largest("storage_writer_batch_size");
    assert!(
        largest >= Some((WRITES / 2) as f64),
        "the appends shared a batch (largest: {largest:?})"
    );

    let mut positions = Vec::new();
    for (index, outcome) in outcomes {
        match outcome {
            Ok(stored)
                if !reuses_a_stored_id(index)
                    && !targets_a_missing_conversation(index)
                    && !holds_text_postgres_refuses(index) =>
            {
                assert_eq!(stored.user_message.content, format!("question {index}"));
                assert_eq!(
                    stored.assistant_message.position,
                    stored.user_message.position + 1
                );
                positions.push(stored.user_message.position);
            }
            Err(RepositoryError::Conflict) if reuses_a_stored_id(index) => {}
            Err(RepositoryError::NotFound) if targets_a_missing_conversation(index) => {}
            Err(RepositoryError::Unknown(_)) if holds_text_postgres_refuses(index) => {}
            other => panic!("append {index} ended with {other:?}"),
        }
    }
    let expected: Vec<i64> = (0..positions.len())
        .map(|n| 3 + 2 * i64::try_from(n).unwrap())
        .collect();
    assert_eq!(positions, expected, "queued order, no gaps");
    let stored = newest_messages(&repository, conversation.id).await;
    assert_eq!(stored.len(), 2 + 2 * positions.len());
    assert!(stored
        .chunks(2)
        .all(|pair| pair[0].role == Role::User && pair[1].role == Role::Assistant));
}

/// One batch over several conversations, some of them missing: each existing conversation gets
/// its exchanges at consecutive positions in queue order, and only the appends to a missing one
/// are refused. Another connection holds the first conversation's row lock, so the first append
/// waits alone and all the others form the next batch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_across_conversations_claims_each_in_order_and_refuses_only_the_missing() {
    use diesel::connection::SimpleConnection;

    const WRITES: usize = 60;
    let Some(database) = TestDatabase::create().await else {
        return;
    };
    let repository = one_batch_in_flight(&database).await;
    let mut conversations = Vec::new();
    for title in ["First", "Second", "Third"] {
        let conversation = Conversation::new(
            ConversationId::generate(),
            ConversationTitle::new(title).unwrap(),
            Timestamp::now(),
        );
        repository.create_conversation(&conversation).await.unwrap();
        conversations.push(conversation.id);
    }
    let missing = [ConversationId::generate(), ConversationId::generate()];

    let mut blocker = hold_row_lock(&database, conversations[0]);
    let target = |index: usize| match index % 5 {
        3 => missing[index % 2],
        existing => conversations[existing % 3],
    };
    let mut writes = Vec::new();
    for index in 0..WRITES {
        let new = exchange(target(index), &format!("question {index}"));
        let repository = Arc::clone(&repository);
        writes.push(async move { (index, repository.append_exchange(&new).await) });
    }
    // join_all polls the appends in order the first time, so they queue in index order.
    let outcomes = tokio::spawn(futures::future::join_all(writes));
    tokio::time::sleep(Duration::from_millis(300)).await;
    blocker.batch_execute("COMMIT").unwrap();
    let outcomes = outcomes.await.unwrap();

    let mut positions = vec![Vec::new(); conversations.len()];
    for (index, outcome) in outcomes {
        match outcome {
            Ok(stored) if !missing.contains(&target(index)) => {
                assert_eq!(stored.user_message.conversation_id, target(index));
                assert_eq!(stored.user_message.content, format!("question {index}"));
                assert_eq!(
                    stored.assistant_message.position,
                    stored.user_message.position + 1
                );
                let slot = conversations.iter().position(|id| *id == target(index));
                positions[slot.unwrap()].push(stored.user_message.position);
            }
            Err(RepositoryError::NotFound) if missing.contains(&target(index)) => {}
            other => panic!("append {index} ended with {other:?}"),
        }
    }
    for (conversation, positions) in conversations.iter().zip(&positions) {
        let expected: Vec<i64> = (0..positions.len())
            .map(|n| 1 + 2 * i64::try_from(n).unwrap())
            .collect();
        assert_eq!(
            positions, &expected,
            "queued order, no gaps in {conversation}"
        );
        let stored = newest_messages(&repository, *conversation).await;
        assert_eq!(stored.len(), 2 * positions.len());
    }
    for conversation in missing {
        assert!(matches!(
            repository.get_conversation(conversation).await,
            Err(RepositoryError::NotFound)
        ));
    }
}

/// Readiness probes of a database that stopped answering, every 400 ms and each given up after
/// 300 ms (as `/readyz` gives up), wait for one check for as long as a read may take (3 s here):
/// they do not each leave a thread and a connection waiting.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn probes_of_a_hung_database_share_one_check_and_never_find_it_ready() {
    let Some(database) = TestDatabase::create().await else {
        return;
    };
    let (proxy, repository, _) =
        behind_a_proxy(&database, 3, Duration::from_secs(1), "Probed while hung").await;

    proxy.frozen.send_replace(true);
    let accepted_before = proxy.accepted.load(Ordering::SeqCst);
    for _ in 0..5 {
        let probe = tokio::time::timeout(Duration::from_millis(300), repository.health_check());
        let probed = probe.await;
        assert!(
            !matches!(probed, Ok(Ok(()) | Err(RepositoryError::Overloaded))),
            "a hung database is not ready: {probed:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let opened = proxy.accepted.load(Ordering::SeqCst) - accepted_before;
    assert!(
        opened <= 1,
        "the probes opened {opened} connections to wait on the hung database"
    );

    proxy.frozen.send_replace(false);
    tokio::time::timeout(Duration::from_secs(10), repository.health_check())
        .await
        .expect("the check answers once the database does")
        .expect("ready again");
    proxy.task.abort();
}

/// Every pooled connection held by work a hung database does not answer: a check that finds no
/// connection free is `Unavailable` once nothing has been answered for as long as a read may
/// take (3 s here), not the `Overloaded` of a busy pool, which would count as ready.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_pool_full_of_work_a_hung_database_does_not_answer_is_not_busy() {
    use diesel::connection::SimpleConnection;
    use diesel::Connection;

    let Some(database) = TestDatabase::create().await else {
        return;
    };
    let (proxy, repository, _) =
        behind_a_proxy(&database, 3, Duration::from_secs(1), "Held while hung").await;
    let repository = Arc::new(repository);
    let create_three = || {
        let mut creating = JoinSet::new();
        for label in ["one", "two", "three"] {
            let repository = Arc::clone(&repository);
            creating.spawn(async move {
                let conversation = Conversation::new(
                    ConversationId::generate(),
                    ConversationTitle::new(label).unwrap(),
                    Timestamp::now(),
                );
                repository.create_conversation(&conversation).await
            });
        }
        creating
    };
    // Three creations held up by a table lock make the pool open all its connections.
    let mut blocker = diesel::PgConnection::establish(database.url()).unwrap();
    blocker
        .batch_execute("BEGIN; LOCK TABLE conversations IN ACCESS EXCLUSIVE MODE")
        .unwrap();
    let mut warming = create_three();
    tokio::time::sleep(Duration::from_millis(500)).await;
    blocker.batch_execute("COMMIT").unwrap();
    while let Some(created) = warming.join_next().await {
        created.unwrap().expect("created once the lock is gone");
    }

    proxy.frozen.send_replace(true);
    let mut stuck = create_three();
    tokio::time::sleep(Duration::from_millis(3500)).await;
    let checked = tokio::time::timeout(Duration::from_secs(5), repository.health_check()).await;
    assert!(
        matches!(checked, Ok(Err(RepositoryError::Unavailable(_)))),
        "{checked:?}"
    );

    proxy.frozen.send_replace(false);
    while let Some(created) = stuck.join_next().await {
        created.unwrap().expect("created once the database answers");
    }
    tokio::time::timeout(Duration::from_secs(10), repository.health_check())
        .await
        .expect("the check answers once the database does")
        .expect("ready again");
    proxy.task.abort();
}
