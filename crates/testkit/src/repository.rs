//! The [`ChatRepository`] conformance suite: one function per contract of the port's doc comments.
//! Every function takes a fresh, empty repository and panics when the contract is broken.

use std::collections::HashSet;
use std::sync::Arc;

use domain::{
    ChatRepository, Conversation, ConversationCursor, ConversationId, ConversationTitle, Exchange,
    Message, MessageCursor, MessageId, MessageWindow, NewExchange, NewMessage, Page, PageLimit,
    RepositoryError, Role, Timestamp,
};

/// A fixed, recent base time, so that expected orders do not depend on the clock.
const BASE_MICROS: i64 = 1_763_900_000_123_457;

fn at(offset_micros: i64) -> Timestamp {
    Timestamp::from_unix_micros(BASE_MICROS + offset_micros)
}

fn limit(value: i64) -> PageLimit {
    PageLimit::new(value).expect("a valid page limit")
}

fn conversation(title: &str, created_at: Timestamp) -> Conversation {
    Conversation::new(
        ConversationId::generate(),
        ConversationTitle::new(title).expect("a valid title"),
        created_at,
    )
}

fn new_exchange(
    conversation_id: ConversationId,
    user: &str,
    reply: &str,
    created_at: Timestamp,
) -> NewExchange {
    NewExchange {
        conversation_id,
        user: NewMessage {
            id: MessageId::generate(),
            content: user.to_owned(),
            created_at,
        },
        assistant: NewMessage {
            id: MessageId::generate(),
            content: reply.to_owned(),
            created_at: Timestamp::from_unix_micros(created_at.unix_micros() + 1),
        },
    }
}

/// The exchange as the repository must store it when it lands at `user_position`.
fn expected_exchange(exchange: &NewExchange, user_position: i64) -> Exchange {
    let message = |new: &NewMessage, role, position| Message {
        id: new.id,
        conversation_id: exchange.conversation_id,
        position,
        role,
        content: new.content.clone(),
        created_at: new.created_at,
    };
    Exchange {
        user_message: message(&exchange.user, Role::User, user_position),
        assistant_message: message(&exchange.assistant, Role::Assistant, user_position + 1),
    }
}

async fn create<R: ChatRepository + ?Sized>(repo: &R, conversation: &Conversation) {
    repo.create_conversation(conversation)
        .await
        .expect("create_conversation of a new id succeeds");
}

/// Appends `count` exchanges with distinct texts and returns every stored message, oldest first.
async fn append_many<R: ChatRepository + ?Sized>(
    repo: &R,
    conversation_id: ConversationId,
    count: usize,
) -> Vec<Message> {
    let mut stored = Vec::with_capacity(count * 2);
    for index in 0..count {
        let offset = i64::try_from(index).expect("small") * 10 + 1_000;
        let exchange = new_exchange(
            conversation_id,
            &format!("question {index}"),
            &format!("answer {index}"),
            at(offset),
        );
        let result = repo
            .append_exchange(&exchange)
            .await
            .expect("append_exchange to an existing conversation succeeds");
        stored.push(result.user_message);
        stored.push(result.assistant_message);
    }
    stored
}

/// Every message of a conversation, read forwards from the start one full page at a time.
async fn all_messages<R: ChatRepository + ?Sized>(
    repo: &R,
    conversation_id: ConversationId,
) -> Vec<Message> {
    let mut messages = Vec::new();
    let mut window = MessageWindow::After(MessageCursor { position: 0 });
    loop {
        let page = repo
            .list_messages(conversation_id, window, limit(i64::from(PageLimit::MAX)))
            .await
            .expect("list_messages of an existing conversation succeeds");
        messages.extend(page.items);
        match page.next_cursor {
            Some(cursor) => window = MessageWindow::After(cursor),
            None => return messages,
        }
    }
}

fn positions(messages: &[Message]) -> Vec<i64> {
    messages.iter().map(|message| message.position).collect()
}

fn assert_not_found<T: std::fmt::Debug>(result: Result<T, RepositoryError>, operation: &str) {
    match result {
        Err(RepositoryError::NotFound) => {}
        other => panic!("{operation} on a missing conversation must be NotFound, got {other:?}"),
    }
}

fn assert_conflict<T: std::fmt::Debug>(result: Result<T, RepositoryError>, operation: &str) {
    match result {
        Err(RepositoryError::Conflict) => {}
        other => panic!("{operation} must be Conflict, got {other:?}"),
    }
}

pub async fn create_then_get_returns_the_conversation<R: ChatRepository + ?Sized>(repo: Arc<R>) {
    let mut created = conversation("Plans for the weekend", at(0));
    created.updated_at = at(5);
    create(&*repo, &created).await;
    let fetched = repo
        .get_conversation(created.id)
        .await
        .expect("get_conversation of a stored conversation succeeds");
    assert_eq!(fetched, created);
    let messages = repo
        .list_messages(created.id, MessageWindow::Latest, PageLimit::DEFAULT)
        .await
        .expect("a new conversation can be listed");
    assert!(
        messages.items.is_empty(),
        "a new conversation has no messages"
    );
}

pub async fn create_with_an_existing_id_conflicts<R: ChatRepository + ?Sized>(repo: Arc<R>) {
    let original = conversation("Original", at(0));
    create(&*repo, &original).await;
    let mut duplicate = conversation("Impostor", at(100));
    duplicate.id = original.id;
    assert_conflict(
        repo.create_conversation(&duplicate).await,
        "create_conversation with an existing id",
    );
    assert_eq!(
        repo.get_conversation(original.id).await.unwrap(),
        original,
        "a conflicting create must not change the stored conversation"
    );
}

pub async fn a_deleted_conversations_id_is_not_used_again<R: ChatRepository + ?Sized>(
    repo: Arc<R>,
) {
    let deleted = conversation("Deleted", at(0));
    create(&*repo, &deleted).await;
    repo.delete_conversation(deleted.id)
        .await
        .expect("delete_conversation of a stored conversation succeeds");
    let mut again = conversation("Same id, later", at(100));
    again.id = deleted.id;
    assert_conflict(
        repo.create_conversation(&again).await,
        "create_conversation with a deleted conversation's id",
    );
    assert_not_found(
        repo.get_conversation(deleted.id).await,
        "get_conversation after a create refused for a deleted id",
    );
    assert_not_found(
        repo.append_exchange(&new_exchange(deleted.id, "late", "reply", at(200)))
            .await,
        "append_exchange to a deleted conversation",
    );

    // The seed API's conversation is the exception: it is created again after a deletion.
    let mut default = conversation("Chat", at(300));
    default.id = ConversationId::DEFAULT;
    create(&*repo, &default).await;
    repo.delete_conversation(ConversationId::DEFAULT)
        .await
        .expect("the default conversation can be deleted");
    default.created_at = at(400);
    default.updated_at = at(400);
    create(&*repo, &default).await;
    assert_eq!(
        repo.get_conversation(ConversationId::DEFAULT)
            .await
            .unwrap(),
        default
    );
}

pub async fn get_missing_conversation_is_not_found<R: ChatRepository + ?Sized>(repo: Arc<R>) {
    assert_not_found(
        repo.get_conversation(ConversationId::generate()).await,
        "get_conversation",
    );
}

pub async fn rename_missing_conversation_is_not_found<R: ChatRepository + ?Sized>(repo: Arc<R>) {
    let title = ConversationTitle::new("Anything").unwrap();
    let missing = ConversationId::generate();
    assert_not_found(
        repo.rename_conversation(missing, &title, at(0)).await,
        "rename_conversation",
    );
    assert_not_found(
        repo.get_conversation(missing).await,
        "get_conversation after a failed rename",
    );
}

pub async fn delete_missing_conversation_is_not_found<R: ChatRepository + ?Sized>(repo: Arc<R>) {
    assert_not_found(
        repo.delete_conversation(ConversationId::generate()).await,
        "delete_conversation",
    );
}

pub async fn list_messages_of_missing_conversation_is_not_found<R: ChatRepository + ?Sized>(
    repo: Arc<R>,
) {
    let missing = ConversationId::generate();
    for window in [
        MessageWindow::Latest,
        MessageWindow::Before(MessageCursor { position: 10 }),
        MessageWindow::After(MessageCursor { position: 0 }),
    ] {
        assert_not_found(
            repo.list_messages(missing, window, PageLimit::DEFAULT)
                .await,
            &format!("list_messages({window:?})"),
        );
    }
}

pub async fn append_to_missing_conversation_is_not_found_and_stores_nothing<
    R: ChatRepository + ?Sized,
>(
    repo: Arc<R>,
) {
    let mut later = conversation("Created later", at(0));
    let exchange = new_exchange(later.id, "hello?", "nobody here", at(10));
    assert_not_found(repo.append_exchange(&exchange).await, "append_exchange");

    // Nothing was stored: once the conversation exists it is empty, and the very same message ids
    // are still free.
    later.updated_at = at(1);
    create(&*repo, &later).await;
    assert!(all_messages(&*repo, later.id).await.is_empty());
    let stored = repo
        .append_exchange(&exchange)
        .await
        .expect("the ids of a refused exchange must still be free");
    assert_eq!(stored, expected_exchange(&exchange, 1));
}

pub async fn rename_changes_title_and_updated_at<R: ChatRepository + ?Sized>(repo: Arc<R>) {
    let original = conversation("Before", at(0));
    let other = conversation("Bystander", at(0));
    create(&*repo, &original).await;
    create(&*repo, &other).await;

    let title = ConversationTitle::new("After: « renamed » ✓").unwrap();
    let renamed = repo
        .rename_conversation(original.id, &title, at(777))
        .await
        .expect("rename_conversation of a stored conversation succeeds");
    let expected = Conversation {
        id: original.id,
        title: "After: « renamed » ✓".to_owned(),
        created_at: original.created_at,
        updated_at: at(777),
    };
    assert_eq!(renamed, expected, "rename returns the updated conversation");
    assert_eq!(repo.get_conversation(original.id).await.unwrap(), expected);
    assert_eq!(
        repo.get_conversation(other.id).await.unwrap(),
        other,
        "rename must not touch other conversations"
    );
}

/// A rename whose clock is behind the conversation's last activity (another replica's clock, or a
/// `now` taken before an exchange committed) must not move it back: a client walking the list
/// would meet it twice.
pub async fn rename_never_moves_updated_at_back<R: ChatRepository + ?Sized>(repo: Arc<R>) {
    let original = conversation("Busy", at(0));
    create(&*repo, &original).await;
    let exchange = new_exchange(original.id, "hi", "hello", at(1_000));
    repo.append_exchange(&exchange).await.unwrap();
    let last_activity = exchange.assistant.created_at;
    let title = ConversationTitle::new("Renamed late").unwrap();
    let renamed = repo
        .rename_conversation(original.id, &title, at(500))
        .await
        .unwrap();
    assert_eq!(renamed.title, "Renamed late");
    assert_eq!(renamed.updated_at, last_activity);
    assert_eq!(
        repo.get_conversation(original.id).await.unwrap().updated_at,
        last_activity
    );
}

pub async fn delete_cascades_to_messages_and_nothing_else<R: ChatRepository + ?Sized>(
    repo: Arc<R>,
) {
    let doomed = conversation("Doomed", at(0));
    let kept = conversation("Kept", at(1));
    create(&*repo, &doomed).await;
    create(&*repo, &kept).await;
    let doomed_exchange = new_exchange(doomed.id, "first", "reply", at(10));
    repo.append_exchange(&doomed_exchange).await.unwrap();
    append_many(&*repo, doomed.id, 3).await;
    let kept_messages = append_many(&*repo, kept.id, 4).await;
    let kept_now = repo.get_conversation(kept.id).await.unwrap();

    repo.delete_conversation(doomed.id)
        .await
        .expect("delete_conversation of a stored conversation succeeds");

    assert_not_found(
        repo.get_conversation(doomed.id).await,
        "get_conversation after delete",
    );
    assert_not_found(
        repo.list_messages(doomed.id, MessageWindow::Latest, PageLimit::DEFAULT)
            .await,
        "list_messages after delete",
    );
    assert_not_found(
        repo.delete_conversation(doomed.id).await,
        "a second delete_conversation",
    );
    let listed = repo
        .list_conversations(None, PageLimit::DEFAULT)
        .await
        .unwrap();
    assert_eq!(
        listed.items,
        vec![kept_now.clone()],
        "only the other conversation is listed"
    );
    assert_eq!(repo.get_conversation(kept.id).await.unwrap(), kept_now);
    assert_eq!(all_messages(&*repo, kept.id).await, kept_messages);

    // The messages are really gone: their ids are free again, in another conversation.
    let successor = conversation("Successor", at(20));
    create(&*repo, &successor).await;
    let again = NewExchange {
        conversation_id: successor.id,
        ..doomed_exchange
    };
    let stored = repo
        .append_exchange(&again)
        .await
        .expect("message ids of a deleted conversation are free");
    assert_eq!(stored, expected_exchange(&again, 1));
}

/// For an adapter that deletes a large conversation in steps (the port allows it), with a step of
/// three messages: `delete_in_steps` deletes a conversation that way, `one_step` takes one step
/// and says whether the conversation is gone. It ends with none of its messages, the oldest go
/// first, and no other conversation loses any.
pub async fn deleting_in_steps_goes_oldest_first_and_leaves_nothing<
    R,
    D,
    DeleteFuture,
    S,
    StepFuture,
>(
    repo: Arc<R>,
    delete_in_steps: D,
    one_step: S,
) where
    R: ChatRepository + ?Sized,
    D: Fn(ConversationId) -> DeleteFuture,
    DeleteFuture: std::future::Future<Output = Result<(), RepositoryError>>,
    S: Fn(ConversationId) -> StepFuture,
    StepFuture: std::future::Future<Output = Result<bool, RepositoryError>>,
{
    let [doomed, kept, cut] = ["Doomed", "Kept", "Cut"].map(|title| conversation(title, at(0)));
    for conversation in [&doomed, &kept, &cut] {
        create(&*repo, conversation).await;
    }
    let doomed_messages = append_many(&*repo, doomed.id, 5).await;
    let kept_messages = append_many(&*repo, kept.id, 5).await;
    append_many(&*repo, cut.id, 5).await;

    delete_in_steps(doomed.id)
        .await
        .expect("a conversation of ten messages is deleted in steps of three");

    assert_not_found(
        repo.get_conversation(doomed.id).await,
        "get_conversation after delete",
    );
    assert_not_found(delete_in_steps(doomed.id).await, "a second delete");
    assert_eq!(all_messages(&*repo, kept.id).await, kept_messages);
    // No message of it is left: the ids of its first and last are free again.
    let successor = conversation("Successor", at(1));
    create(&*repo, &successor).await;
    let [first, .., last] = doomed_messages.as_slice() else {
        panic!("ten messages were appended");
    };
    let mut reused = new_exchange(successor.id, "again", "again", at(2));
    reused.user.id = first.id;
    reused.assistant.id = last.id;
    repo.append_exchange(&reused)
        .await
        .expect("message ids of a deleted conversation are free");

    let gone = one_step(cut.id).await.expect("one step of a deletion");
    assert!(!gone, "ten messages are more than a step");
    assert_eq!(
        positions(&all_messages(&*repo, cut.id).await),
        (4..=10).collect::<Vec<_>>(),
        "the oldest went first"
    );
}

/// Conversations with ties on `updated_at` and ids whose order differs from creation order.
async fn seed_conversations<R: ChatRepository + ?Sized>(
    repo: &R,
    count: usize,
) -> Vec<Conversation> {
    let mut ids: Vec<ConversationId> = (0..count).map(|_| ConversationId::generate()).collect();
    // Interleave so that neither creation order nor id order matches the expected order.
    ids.reverse();
    let half = count / 2;
    ids.rotate_left(half);
    let mut conversations = Vec::with_capacity(count);
    for (index, id) in ids.into_iter().enumerate() {
        let index = i64::try_from(index).expect("small");
        // Groups of three share one updated_at; the groups are created in a shuffled order.
        let group = (index * 7) % 11 / 3;
        let mut conversation = conversation(&format!("Conversation {index}"), at(group));
        conversation.id = id;
        conversation.updated_at = at(100 + group * 10);
        create(repo, &conversation).await;
        conversations.push(conversation);
    }
    conversations.sort_by_key(|c| std::cmp::Reverse((c.updated_at, c.id)));
    conversations
}

fn cursor_of(conversation: &Conversation) -> ConversationCursor {
    ConversationCursor {
        updated_at: conversation.updated_at,
        id: conversation.id,
    }
}

pub async fn list_conversations_orders_by_updated_at_then_id_descending<
    R: ChatRepository + ?Sized,
>(
    repo: Arc<R>,
) {
    let expected = seed_conversations(&*repo, 11).await;
    let ties = expected
        .windows(2)
        .filter(|pair| pair[0].updated_at == pair[1].updated_at)
        .count();
    assert!(ties >= 3, "the seed must contain ties on updated_at");

    let page = repo
        .list_conversations(None, PageLimit::DEFAULT)
        .await
        .expect("list_conversations succeeds");
    assert_eq!(
        page.items, expected,
        "ordered by (updated_at, id) descending"
    );
    assert_eq!(page.next_cursor, None, "everything fit on one page");

    // Starting strictly after an item inside a group of ties.
    let tied = expected
        .windows(2)
        .position(|pair| pair[0].updated_at == pair[1].updated_at)
        .expect("a tie");
    let page = repo
        .list_conversations(Some(cursor_of(&expected[tied])), limit(3))
        .await
        .unwrap();
    assert_eq!(page.items, expected[tied + 1..tied + 4].to_vec());
    assert_eq!(page.next_cursor, Some(cursor_of(&expected[tied + 3])));
}

pub async fn list_conversations_pages_cover_every_conversation_once<R: ChatRepository + ?Sized>(
    repo: Arc<R>,
) {
    let expected = seed_conversations(&*repo, 20).await;
    for page_size in [1_i64, 3, 5, 7, 20, 21] {
        let mut seen = Vec::new();
        let mut after = None;
        let mut pages = 0;
        loop {
            pages += 1;
            assert!(pages <= 21, "pagination with limit {page_size} never ends");
            let page: Page<Conversation, ConversationCursor> = repo
                .list_conversations(after, limit(page_size))
                .await
                .unwrap();
            assert!(
                page.items.len() <= usize::try_from(page_size).unwrap(),
                "a page holds at most limit items"
            );
            match page.next_cursor {
                Some(cursor) => {
                    assert_eq!(
                        Some(cursor),
                        page.items.last().map(cursor_of),
                        "next_cursor is the position of the last item"
                    );
                    seen.extend(page.items);
                    after = Some(cursor);
                }
                None => {
                    seen.extend(page.items);
                    break;
                }
            }
        }
        assert_eq!(
            seen, expected,
            "pages of {page_size} list every conversation exactly once, in order"
        );
        let expected_pages = expected.len().div_ceil(usize::try_from(page_size).unwrap());
        assert_eq!(
            pages, expected_pages,
            "with limit {page_size}, the last full page must already say there is no next page"
        );
    }
}

pub async fn list_conversations_of_empty_repository_is_empty<R: ChatRepository + ?Sized>(
    repo: Arc<R>,
) {
    let page = repo
        .list_conversations(None, PageLimit::DEFAULT)
        .await
        .unwrap();
    assert_eq!(page.items, Vec::new());
    assert_eq!(page.next_cursor, None);
    let nowhere = ConversationCursor {
        updated_at: at(0),
        id: ConversationId::generate(),
    };
    let page = repo
        .list_conversations(Some(nowhere), PageLimit::DEFAULT)
        .await
        .unwrap();
    assert_eq!(page.items, Vec::new());
    assert_eq!(page.next_cursor, None);
}

pub async fn append_moves_updated_at_and_list_order<R: ChatRepository + ?Sized>(repo: Arc<R>) {
    let older = conversation("Older", at(0));
    let newer = conversation("Newer", at(50));
    create(&*repo, &older).await;
    create(&*repo, &newer).await;
    let ids = |page: Page<Conversation, ConversationCursor>| {
        page.items
            .into_iter()
            .map(|conversation| conversation.id)
            .collect::<Vec<_>>()
    };
    let before = repo
        .list_conversations(None, PageLimit::DEFAULT)
        .await
        .unwrap();
    assert_eq!(ids(before), vec![newer.id, older.id]);

    let exchange = new_exchange(older.id, "bump", "bumped", at(100));
    repo.append_exchange(&exchange).await.unwrap();
    let bumped = repo.get_conversation(older.id).await.unwrap();
    assert_eq!(
        bumped.updated_at, exchange.assistant.created_at,
        "updated_at moves to the reply's created_at"
    );
    assert_eq!(bumped.created_at, older.created_at);
    assert_eq!(bumped.title, older.title);
    let after = repo
        .list_conversations(None, PageLimit::DEFAULT)
        .await
        .unwrap();
    assert_eq!(ids(after), vec![older.id, newer.id]);
}

pub async fn append_never_moves_updated_at_backwards<R: ChatRepository + ?Sized>(repo: Arc<R>) {
    let mut recent = conversation("Recently renamed", at(0));
    recent.updated_at = at(1_000_000);
    create(&*repo, &recent).await;
    let exchange = new_exchange(recent.id, "late", "delivery", at(10));
    repo.append_exchange(&exchange).await.unwrap();
    assert_eq!(
        repo.get_conversation(recent.id).await.unwrap().updated_at,
        at(1_000_000),
        "an earlier reply leaves updated_at alone"
    );
}

pub async fn append_stores_exchange_at_next_positions<R: ChatRepository + ?Sized>(repo: Arc<R>) {
    let target = conversation("Target", at(0));
    create(&*repo, &target).await;
    let first = new_exchange(target.id, "What is 2 + 2?", "4", at(10));
    let second = new_exchange(target.id, "And 3 + 3?", "6", at(20));

    let stored_first = repo.append_exchange(&first).await.unwrap();
    assert_eq!(stored_first, expected_exchange(&first, 1));
    let stored_second = repo.append_exchange(&second).await.unwrap();
    assert_eq!(stored_second, expected_exchange(&second, 3));

    assert_eq!(
        all_messages(&*repo, target.id).await,
        vec![
            stored_first.user_message,
            stored_first.assistant_message,
            stored_second.user_message,
            stored_second.assistant_message,
        ],
        "the stored messages are exactly those append_exchange returned"
    );
}

/// The append for a reply already shown keeps every promise of `append_exchange`: the next
/// positions, between plain appends; `NotFound` for a missing conversation, storing nothing.
pub async fn append_waiting_for_room_stores_as_append_does<R: ChatRepository + ?Sized>(
    repo: Arc<R>,
) {
    let target = conversation("Target", at(0));
    create(&*repo, &target).await;
    let elsewhere = new_exchange(ConversationId::generate(), "Anyone?", "No", at(5));
    assert_not_found(
        repo.append_exchange_waiting_for_room(&elsewhere).await,
        "append_exchange_waiting_for_room",
    );
    let plain = new_exchange(target.id, "Plain?", "Yes", at(10));
    let shown = new_exchange(target.id, "Streamed?", "Yes", at(20));
    let after = new_exchange(target.id, "Plain again?", "Yes", at(30));

    let stored_plain = repo.append_exchange(&plain).await.unwrap();
    let stored_shown = repo.append_exchange_waiting_for_room(&shown).await.unwrap();
    let stored_after = repo.append_exchange(&after).await.unwrap();
    assert_eq!(stored_shown, expected_exchange(&shown, 3));
    assert_eq!(
        all_messages(&*repo, target.id).await,
        vec![
            stored_plain.user_message,
            stored_plain.assistant_message,
            stored_shown.user_message,
            stored_shown.assistant_message,
            stored_after.user_message,
            stored_after.assistant_message,
        ]
    );
}

pub async fn append_with_duplicate_message_id_conflicts_and_stores_nothing<
    R: ChatRepository + ?Sized,
>(
    repo: Arc<R>,
) {
    let target = conversation("Target", at(0));
    let other = conversation("Other", at(0));
    create(&*repo, &target).await;
    create(&*repo, &other).await;
    let first = new_exchange(target.id, "one", "two", at(10));
    let stored_first = repo.append_exchange(&first).await.unwrap();
    let target_after_first = repo.get_conversation(target.id).await.unwrap();

    let mut reused_user = new_exchange(target.id, "dup user", "fresh reply", at(1_000));
    reused_user.user.id = first.user.id;
    assert_conflict(
        repo.append_exchange(&reused_user).await,
        "append_exchange reusing a user message id",
    );
    let mut reused_reply = new_exchange(target.id, "fresh user", "dup reply", at(1_000));
    reused_reply.assistant.id = first.assistant.id;
    assert_conflict(
        repo.append_exchange(&reused_reply).await,
        "append_exchange reusing an assistant message id",
    );
    let mut same_twice = new_exchange(target.id, "same", "same", at(1_000));
    same_twice.assistant.id = same_twice.user.id;
    assert_conflict(
        repo.append_exchange(&same_twice).await,
        "append_exchange whose two messages share an id",
    );
    let mut elsewhere = new_exchange(other.id, "elsewhere", "reply", at(1_000));
    elsewhere.assistant.id = first.user.id;
    assert_conflict(
        repo.append_exchange(&elsewhere).await,
        "append_exchange reusing an id of another conversation",
    );

    assert_eq!(
        all_messages(&*repo, target.id).await,
        vec![
            stored_first.user_message.clone(),
            stored_first.assistant_message.clone()
        ],
        "a conflicting exchange stores neither message"
    );
    assert!(all_messages(&*repo, other.id).await.is_empty());
    assert_eq!(
        repo.get_conversation(target.id).await.unwrap(),
        target_after_first,
        "a conflicting exchange does not move updated_at"
    );
    assert_eq!(repo.get_conversation(other.id).await.unwrap(), other);

    // Refused exchanges leave no gap in the positions.
    let next = new_exchange(target.id, "three", "four", at(2_000));
    assert_eq!(
        repo.append_exchange(&next).await.unwrap(),
        expected_exchange(&next, 3)
    );
    let next_elsewhere = new_exchange(other.id, "a", "b", at(2_000));
    assert_eq!(
        repo.append_exchange(&next_elsewhere).await.unwrap(),
        expected_exchange(&next_elsewhere, 1)
    );
}

pub async fn list_messages_of_empty_conversation_is_empty<R: ChatRepository + ?Sized>(
    repo: Arc<R>,
) {
    let empty = conversation("Empty", at(0));
    create(&*repo, &empty).await;
    for window in [
        MessageWindow::Latest,
        MessageWindow::Before(MessageCursor { position: 5 }),
        MessageWindow::After(MessageCursor { position: 0 }),
    ] {
        let page = repo
            .list_messages(empty.id, window, PageLimit::DEFAULT)
            .await
            .unwrap();
        assert_eq!(page.items, Vec::new(), "{window:?}");
        assert_eq!(page.next_cursor, None, "{window:?}");
    }
}

fn cursor(position: i64) -> MessageCursor {
    MessageCursor { position }
}

/// Checks one page of a conversation of 20 messages against the stored messages.
async fn assert_window<R: ChatRepository + ?Sized>(
    repo: &R,
    stored: &[Message],
    window: MessageWindow,
    page_size: i64,
    expected_positions: impl IntoIterator<Item = i64>,
    expected_next: Option<i64>,
) {
    let conversation_id = stored[0].conversation_id;
    let page = repo
        .list_messages(conversation_id, window, limit(page_size))
        .await
        .unwrap();
    let expected_positions: Vec<i64> = expected_positions.into_iter().collect();
    let expected: Vec<Message> = stored
        .iter()
        .filter(|message| expected_positions.contains(&message.position))
        .cloned()
        .collect();
    assert_eq!(
        positions(&page.items),
        positions(&expected),
        "positions of {window:?} limit {page_size}, oldest first"
    );
    assert_eq!(
        page.items, expected,
        "{window:?} returns the stored messages"
    );
    assert_eq!(
        page.next_cursor,
        expected_next.map(cursor),
        "next_cursor of {window:?} limit {page_size}"
    );
}

pub async fn list_messages_latest_window<R: ChatRepository + ?Sized>(repo: Arc<R>) {
    let target = conversation("Twenty messages", at(0));
    create(&*repo, &target).await;
    let stored = append_many(&*repo, target.id, 10).await;
    assert_eq!(positions(&stored), (1..=20).collect::<Vec<_>>());
    let latest = MessageWindow::Latest;
    assert_window(&*repo, &stored, latest, 6, 15..=20, Some(15)).await;
    assert_window(&*repo, &stored, latest, 1, 20..=20, Some(20)).await;
    assert_window(&*repo, &stored, latest, 19, 2..=20, Some(2)).await;
    assert_window(&*repo, &stored, latest, 20, 1..=20, None).await;
    assert_window(&*repo, &stored, latest, 50, 1..=20, None).await;
}

pub async fn list_messages_before_window<R: ChatRepository + ?Sized>(repo: Arc<R>) {
    let target = conversation("Twenty messages", at(0));
    create(&*repo, &target).await;
    let stored = append_many(&*repo, target.id, 10).await;
    let before = |position| MessageWindow::Before(cursor(position));
    assert_window(&*repo, &stored, before(15), 6, 9..=14, Some(9)).await;
    assert_window(&*repo, &stored, before(8), 6, 2..=7, Some(2)).await;
    assert_window(&*repo, &stored, before(7), 6, 1..=6, None).await;
    assert_window(&*repo, &stored, before(4), 6, 1..=3, None).await;
    assert_window(&*repo, &stored, before(21), 3, 18..=20, Some(18)).await;
    assert_window(&*repo, &stored, before(1000), 50, 1..=20, None).await;
    assert_window(&*repo, &stored, before(1), 6, [], None).await;
}

pub async fn list_messages_after_window<R: ChatRepository + ?Sized>(repo: Arc<R>) {
    let target = conversation("Twenty messages", at(0));
    create(&*repo, &target).await;
    let stored = append_many(&*repo, target.id, 10).await;
    let after = |position| MessageWindow::After(cursor(position));
    assert_window(&*repo, &stored, after(0), 6, 1..=6, Some(6)).await;
    assert_window(&*repo, &stored, after(6), 6, 7..=12, Some(12)).await;
    assert_window(&*repo, &stored, after(13), 6, 14..=19, Some(19)).await;
    assert_window(&*repo, &stored, after(14), 6, 15..=20, None).await;
    assert_window(&*repo, &stored, after(17), 6, 18..=20, None).await;
    assert_window(&*repo, &stored, after(0), 50, 1..=20, None).await;
    assert_window(&*repo, &stored, after(20), 6, [], None).await;
}

pub async fn list_messages_pages_cover_every_message_once<R: ChatRepository + ?Sized>(
    repo: Arc<R>,
) {
    let target = conversation("Long", at(0));
    let neighbour = conversation("Neighbour", at(0));
    create(&*repo, &target).await;
    create(&*repo, &neighbour).await;
    let stored = append_many(&*repo, target.id, 150).await;
    append_many(&*repo, neighbour.id, 5).await;
    assert_eq!(positions(&stored), (1..=300).collect::<Vec<_>>());

    for page_size in [7_i64, 50, 150, 200] {
        let expected_pages = 300_usize.div_ceil(usize::try_from(page_size).unwrap());

        // Backwards: Latest, then Before(next_cursor) until None.
        let mut pages: Vec<Vec<Message>> = Vec::new();
        let mut window = MessageWindow::Latest;
        loop {
            assert!(pages.len() <= expected_pages, "backward paging never ends");
            let page = repo
                .list_messages(target.id, window, limit(page_size))
                .await
                .unwrap();
            let first_position = page.items.first().map(|message| message.position);
            assert_eq!(
                page.next_cursor.map(|cursor| cursor.position),
                first_position.filter(|position| *position > 1),
                "backward next_cursor is the oldest item when older ones exist"
            );
            let next = page.next_cursor;
            pages.push(page.items);
            match next {
                Some(cursor) => window = MessageWindow::Before(cursor),
                None => break,
            }
        }
        assert_eq!(pages.len(), expected_pages, "backward pages of {page_size}");
        let backwards: Vec<Message> = pages.into_iter().rev().flatten().collect();
        assert_eq!(
            backwards, stored,
            "backward pages of {page_size} hold every message exactly once"
        );

        // Forwards: After(0), then After(next_cursor) until None.
        let mut forwards = Vec::new();
        let mut window = MessageWindow::After(cursor(0));
        let mut count = 0;
        loop {
            count += 1;
            assert!(count <= expected_pages, "forward paging never ends");
            let page = repo
                .list_messages(target.id, window, limit(page_size))
                .await
                .unwrap();
            let last_position = page.items.last().map(|message| message.position);
            assert_eq!(
                page.next_cursor.map(|cursor| cursor.position),
                last_position.filter(|position| *position < 300),
                "forward next_cursor is the newest item when newer ones exist"
            );
            forwards.extend(page.items);
            match page.next_cursor {
                Some(cursor) => window = MessageWindow::After(cursor),
                None => break,
            }
        }
        assert_eq!(count, expected_pages, "forward pages of {page_size}");
        assert_eq!(
            forwards, stored,
            "forward pages of {page_size} hold every message exactly once"
        );
    }
}

/// Texts that break naive storage: quoting, encodings, markup, whitespace, length.
pub fn awkward_texts() -> Vec<String> {
    vec![
        "plain".to_owned(),
        "emoji 😀👩‍👩‍👧‍👦🏳️‍🌈 and CJK 漢字かなカナ 한국어".to_owned(),
        "RTL \u{202B}مرحبا بالعالم\u{202C} \u{200F}שלום\u{200E} mixed".to_owned(),
        "quotes ' \" ` ’ “ ” and backslashes \\ \\\\ \\n".to_owned(),
        "Robert'); DROP TABLE messages;-- SELECT * FROM conversations WHERE 1=1 OR ''=''"
            .to_owned(),
        "$1 $$ dollar $$ quoting ? :name %s %%".to_owned(),
        "<script>alert('x')</script><b>bold</b> &amp; &lt;".to_owned(),
        "lines\nand\r\nwindows\rand\ttabs\u{2028}separator\u{2029}".to_owned(),
        "  leading and trailing whitespace kept  \n".to_owned(),
        "zero\u{200B}width, combining e\u{301}, BOM \u{FEFF}, replacement \u{FFFD}".to_owned(),
        "Ω≈ç√∫˜µ≤≥÷ 𝕳𝖊𝖑𝖑𝖔 \u{10FFFF}".to_owned(),
        "abcdéfgh😀".repeat(1_600),
        "x".repeat(16_000),
    ]
}

pub async fn text_round_trips_exactly<R: ChatRepository + ?Sized>(repo: Arc<R>) {
    let target = conversation("Texts", at(0));
    create(&*repo, &target).await;
    let texts = awkward_texts();
    for (index, text) in texts.iter().enumerate() {
        let reply = format!("{text}{index}");
        let exchange = new_exchange(target.id, text, &reply, at(10));
        let stored = repo.append_exchange(&exchange).await.unwrap();
        assert_eq!(&stored.user_message.content, text);
        assert_eq!(stored.assistant_message.content, reply);
    }
    let messages = all_messages(&*repo, target.id).await;
    assert_eq!(messages.len(), texts.len() * 2);
    for (index, text) in texts.iter().enumerate() {
        assert_eq!(
            &messages[index * 2].content,
            text,
            "user text {index} comes back byte for byte"
        );
        assert_eq!(messages[index * 2 + 1].content, format!("{text}{index}"));
    }

    for title in [
        "Ünïcödé 😀 \u{202B}עברית\u{202C}",
        "'; DROP TABLE conversations;--",
        "<i>html</i> & \"quotes\"",
    ] {
        let mut titled = conversation(title, at(0));
        titled.title = title.to_owned();
        create(&*repo, &titled).await;
        assert_eq!(repo.get_conversation(titled.id).await.unwrap().title, title);
        let renamed = format!("{title} (2)");
        let new_title = ConversationTitle::new(&renamed).unwrap();
        repo.rename_conversation(titled.id, &new_title, at(1))
            .await
            .unwrap();
        assert_eq!(
            repo.get_conversation(titled.id).await.unwrap().title,
            renamed
        );
    }
    let long_title = "é".repeat(ConversationTitle::MAX_CHARS);
    let titled = conversation(&long_title, at(0));
    create(&*repo, &titled).await;
    assert_eq!(
        repo.get_conversation(titled.id).await.unwrap().title,
        long_title
    );
}

pub async fn timestamps_round_trip_exactly<R: ChatRepository + ?Sized>(repo: Arc<R>) {
    let moments = [
        Timestamp::from_unix_micros(1),
        Timestamp::from_unix_micros(999_999),
        Timestamp::from_unix_micros(1_700_000_000_000_001),
        Timestamp::from_unix_micros(1_763_912_345_678_901),
        Timestamp::from_unix_micros(4_102_444_800_999_999),
        Timestamp::now(),
    ];
    for moment in moments {
        let mut stamped = conversation("Stamped", moment);
        stamped.updated_at = Timestamp::from_unix_micros(moment.unix_micros() + 1);
        create(&*repo, &stamped).await;
        let fetched = repo.get_conversation(stamped.id).await.unwrap();
        assert_eq!(
            fetched.created_at, stamped.created_at,
            "created_at of {moment:?}"
        );
        assert_eq!(
            fetched.updated_at, stamped.updated_at,
            "updated_at of {moment:?}"
        );

        let exchange = new_exchange(stamped.id, "when?", "now", moment);
        repo.append_exchange(&exchange).await.unwrap();
        let messages = all_messages(&*repo, stamped.id).await;
        assert_eq!(messages[0].created_at, moment);
        assert_eq!(messages[1].created_at, exchange.assistant.created_at);
        assert_eq!(
            repo.get_conversation(stamped.id).await.unwrap().updated_at,
            exchange.assistant.created_at.max(stamped.updated_at)
        );

        // Past the exchange's time, so that the rename's own time is what is stored.
        let later = Timestamp::from_unix_micros(moment.unix_micros() + 2);
        let renamed = repo
            .rename_conversation(stamped.id, &ConversationTitle::new("Later").unwrap(), later)
            .await
            .unwrap();
        assert_eq!(renamed.updated_at, later);
        assert_eq!(
            repo.get_conversation(stamped.id).await.unwrap().updated_at,
            later
        );
    }
}

/// Many lookups at once, hits and misses interleaved: an adapter that groups lookups must hand
/// each caller its own answer.
pub async fn concurrent_gets_each_answer_their_own_conversation<
    R: ChatRepository + ?Sized + 'static,
>(
    repo: Arc<R>,
) {
    const LOOKUPS: usize = 600;
    let mut existing = Vec::new();
    for title in ["first", "second", "third"] {
        let stored = conversation(title, at(0));
        create(&*repo, &stored).await;
        existing.push(stored);
    }
    let missing: Vec<ConversationId> = (0..3).map(|_| ConversationId::generate()).collect();

    let mut handles = Vec::with_capacity(LOOKUPS);
    for index in 0..LOOKUPS {
        let repo = Arc::clone(&repo);
        let expected = (index % 2 == 0).then(|| existing[index % 3].clone());
        let id = expected
            .as_ref()
            .map_or(missing[index % 3], |conversation| conversation.id);
        handles.push(tokio::spawn(async move {
            (id, expected, repo.get_conversation(id).await)
        }));
    }
    for handle in handles {
        match handle.await.expect("a looking-up task panicked") {
            (_, Some(expected), Ok(found)) => assert_eq!(found, expected),
            (_, None, Err(RepositoryError::NotFound)) => {}
            (id, expected, answer) => {
                panic!("get_conversation({id}) expected {expected:?}, answered {answer:?}")
            }
        }
    }
}

pub async fn concurrent_appends_are_gap_free_and_paired<R: ChatRepository + ?Sized + 'static>(
    repo: Arc<R>,
) {
    const TASKS: usize = 8;
    const APPENDS: usize = 25;
    let target = conversation("Busy", at(0));
    create(&*repo, &target).await;

    let mut handles = Vec::new();
    for task in 0..TASKS {
        let repo = Arc::clone(&repo);
        handles.push(tokio::spawn(async move {
            let mut stored = Vec::with_capacity(APPENDS);
            for index in 0..APPENDS {
                let exchange = NewExchange {
                    conversation_id: target.id,
                    user: NewMessage {
                        id: MessageId::generate(),
                        content: format!("task {task} message {index}"),
                        created_at: Timestamp::now(),
                    },
                    assistant: NewMessage {
                        id: MessageId::generate(),
                        content: format!("reply to task {task} message {index}"),
                        created_at: Timestamp::now(),
                    },
                };
                let result = repo
                    .append_exchange(&exchange)
                    .await
                    .unwrap_or_else(|error| panic!("concurrent append failed: {error:?}"));
                assert_eq!(
                    result.assistant_message.position,
                    result.user_message.position + 1,
                    "the reply directly follows its user message"
                );
                assert_eq!(result.user_message.content, exchange.user.content);
                stored.push(result);
            }
            stored
        }));
    }
    let mut returned = Vec::new();
    for handle in handles {
        let stored = handle.await.expect("an appending task panicked");
        // One task appends sequentially, so its exchanges land in the order it sent them.
        let user_positions: Vec<i64> = stored.iter().map(|e| e.user_message.position).collect();
        let mut sorted = user_positions.clone();
        sorted.sort_unstable();
        assert_eq!(user_positions, sorted, "a task's exchanges keep its order");
        returned.extend(stored);
    }

    let messages = all_messages(&*repo, target.id).await;
    let total = i64::try_from(TASKS * APPENDS * 2).unwrap();
    assert_eq!(
        positions(&messages),
        (1..=total).collect::<Vec<_>>(),
        "positions are gap-free"
    );
    for pair in messages.chunks(2) {
        assert_eq!(pair[0].role, Role::User, "odd positions hold user messages");
        assert_eq!(pair[1].role, Role::Assistant, "even positions hold replies");
        assert_eq!(
            pair[1].content,
            format!("reply to {}", pair[0].content),
            "each user message is directly followed by its own reply"
        );
    }
    let distinct: HashSet<MessageId> = messages.iter().map(|message| message.id).collect();
    assert_eq!(distinct.len(), messages.len());
    let mut returned_messages: Vec<Message> = returned
        .into_iter()
        .flat_map(|exchange| [exchange.user_message, exchange.assistant_message])
        .collect();
    returned_messages.sort_by_key(|message| message.position);
    assert_eq!(
        returned_messages, messages,
        "append_exchange returned exactly what was stored"
    );
}

pub async fn health_check_succeeds<R: ChatRepository + ?Sized>(repo: Arc<R>) {
    repo.health_check()
        .await
        .expect("health_check of a working repository succeeds");
}
