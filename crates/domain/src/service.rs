use std::future::Future;
use std::sync::Arc;

use futures::future::{self, Either};
use futures::{FutureExt, Sink, SinkExt, StreamExt};

use crate::errors::{AssistantError, ChatError, RepositoryError};
use crate::ids::ConversationId;
use crate::model::{Conversation, Exchange, Message, NewExchange};
use crate::paging::{
    ConversationCursor, HistoryCursor, MessageCursor, MessageWindow, Page, PageLimit,
};
use crate::ports::{Assistant, ChatRepository, DeltaStream, ReplyContext};
use crate::text::{is_blank_reply, ConversationTitle, MessageText};
use crate::time::Timestamp;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChatServiceConfig {
    /// Longest message text accepted, in characters.
    pub max_message_chars: usize,
}

impl Default for ChatServiceConfig {
    fn default() -> Self {
        Self {
            max_message_chars: 16_000,
        }
    }
}

/// What creating a conversation under an id its client chose did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Creation {
    /// Stored by this call.
    Created(Conversation),
    /// A conversation had the id already: most likely made by an earlier try of the same create.
    Existing(Conversation),
}

/// What a streamed reply reports while it is produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplyEvent {
    Delta(String),
}

/// The use cases of the chat service, over whichever storage and assistant it was given.
pub struct ChatService {
    repository: Arc<dyn ChatRepository>,
    assistant: Arc<dyn Assistant>,
    config: ChatServiceConfig,
}

impl std::fmt::Debug for ChatService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatService")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl ChatService {
    pub fn new(
        repository: Arc<dyn ChatRepository>,
        assistant: Arc<dyn Assistant>,
        config: ChatServiceConfig,
    ) -> Self {
        Self {
            repository,
            assistant,
            config,
        }
    }

    pub fn config(&self) -> ChatServiceConfig {
        self.config
    }

    pub fn message_text(&self, text: impl Into<String>) -> Result<MessageText, ChatError> {
        Ok(MessageText::new(text, self.config.max_message_chars)?)
    }

    /// Whether storage can serve requests now. Storage too busy to answer the check (its queue
    /// full) is serving: taking the replica out of the load balancer for being busy would make
    /// one replica an outage, and move the load of several onto fewer.
    pub async fn health(&self) -> Result<(), RepositoryError> {
        match self.repository.health_check().await {
            Err(RepositoryError::Overloaded) => Ok(()),
            checked => checked,
        }
    }

    /// Closes storage at a clean stop, once nothing more will be written.
    pub async fn close(&self) {
        self.repository.close().await;
    }

    /// Creates the default conversation unless it exists.
    pub async fn ensure_default_conversation(&self) -> Result<(), ChatError> {
        ensure_default_conversation(self.repository.as_ref(), Timestamp::now()).await
    }

    pub async fn create_conversation(
        &self,
        title: Option<&str>,
    ) -> Result<Conversation, ChatError> {
        let conversation = new_conversation(ConversationId::generate(), title)?;
        self.repository.create_conversation(&conversation).await?;
        Ok(conversation)
    }

    /// Creates the conversation under the id its client chose, unless one has it already: a
    /// create retried after its answer was lost (or cut off by a reload) finds the conversation
    /// the first one made instead of making a second. One that exists is returned as stored,
    /// whatever title this call gave. A deleted conversation's id is not used again.
    pub async fn create_conversation_with_id(
        &self,
        id: ConversationId,
        title: Option<&str>,
    ) -> Result<Creation, ChatError> {
        let conversation = new_conversation(id, title)?;
        // Found taken, then not there: deleted, before this create or since it found the id
        // taken; for good, except the default conversation, which is made again.
        let attempts = if id == ConversationId::DEFAULT {
            DEFAULT_CONVERSATION_CREATIONS
        } else {
            1
        };
        for _ in 0..attempts {
            match self.repository.create_conversation(&conversation).await {
                Ok(()) => return Ok(Creation::Created(conversation)),
                Err(RepositoryError::Conflict) => {}
                Err(other) => return Err(other.into()),
            }
            match self.repository.get_conversation(id).await {
                Ok(existing) => return Ok(Creation::Existing(existing)),
                Err(RepositoryError::NotFound) => {}
                Err(other) => return Err(other.into()),
            }
        }
        if id == ConversationId::DEFAULT {
            return Err(RepositoryError::Unavailable(
                "the default conversation was deleted each time it was found to exist".to_owned(),
            )
            .into());
        }
        Err(ChatError::DeletedConversationId)
    }

    pub async fn get_conversation(&self, id: ConversationId) -> Result<Conversation, ChatError> {
        Ok(self.repository.get_conversation(id).await?)
    }

    pub async fn list_conversations(
        &self,
        cursor: Option<&str>,
        limit: Option<i64>,
    ) -> Result<Page<Conversation, ConversationCursor>, ChatError> {
        let after = cursor.map(ConversationCursor::decode).transpose()?;
        let limit = limit.map(PageLimit::new).transpose()?.unwrap_or_default();
        Ok(self.repository.list_conversations(after, limit).await?)
    }

    pub async fn rename_conversation(
        &self,
        id: ConversationId,
        title: &str,
    ) -> Result<Conversation, ChatError> {
        let title = ConversationTitle::new(title)?;
        Ok(self
            .repository
            .rename_conversation(id, &title, Timestamp::now())
            .await?)
    }

    pub async fn delete_conversation(&self, id: ConversationId) -> Result<(), ChatError> {
        Ok(self.repository.delete_conversation(id).await?)
    }

    /// A page of messages: the newest ones, or those older than the `before` cursor.
    pub async fn list_messages(
        &self,
        id: ConversationId,
        before: Option<&str>,
        limit: Option<i64>,
    ) -> Result<Page<Message, MessageCursor>, ChatError> {
        let window = match before {
            Some(token) => MessageWindow::Before(MessageCursor::decode(token)?),
            None => MessageWindow::Latest,
        };
        let limit = limit.map(PageLimit::new).transpose()?.unwrap_or_default();
        Ok(self.repository.list_messages(id, window, limit).await?)
    }

    /// The default conversation from the beginning, a page at a time (pass the previous page's
    /// cursor). Empty when the default conversation does not exist yet; `NotFound` when it was
    /// deleted after an earlier page, or deleted and created again, so that a history cut there
    /// is not taken for a whole one.
    pub async fn history_page(
        &self,
        after: Option<HistoryCursor>,
    ) -> Result<Page<Message, HistoryCursor>, ChatError> {
        let nothing = Page {
            items: Vec::new(),
            next_cursor: None,
        };
        let (window, incarnation) = match after {
            Some(cursor) => (MessageWindow::After(cursor.after), cursor.incarnation),
            // Read before the first page: a page read after it is then of this conversation only
            // if the conversation is still this one once the page is read.
            None => match self
                .repository
                .get_conversation(ConversationId::DEFAULT)
                .await
            {
                Ok(conversation) => (
                    MessageWindow::After(MessageCursor { position: 0 }),
                    conversation.created_at,
                ),
                Err(RepositoryError::NotFound) => return Ok(nothing),
                Err(other) => return Err(other.into()),
            },
        };
        let limit = PageLimit::new(i64::from(PageLimit::MAX)).expect("the maximum is in range");
        let page = match self
            .repository
            .list_messages(ConversationId::DEFAULT, window, limit)
            .await
        {
            Err(RepositoryError::NotFound) if after.is_none() => return Ok(nothing),
            other => other?,
        };
        // Checked once, after the last page: an incarnation never comes back, so if the
        // conversation is still the one the history began in, every page before was read from
        // it too. (A first page that is also the last is one read: whole in itself.)
        if after.is_some() && page.next_cursor.is_none() {
            let now = self
                .repository
                .get_conversation(ConversationId::DEFAULT)
                .await?;
            if now.created_at != incarnation {
                return Err(ChatError::ConversationNotFound);
            }
        }
        Ok(Page {
            items: page.items,
            next_cursor: page
                .next_cursor
                .map(|after| HistoryCursor { after, incarnation }),
        })
    }

    /// Asks the assistant and stores the exchange in an existing conversation; returns once it is
    /// stored.
    pub async fn send_message(
        &self,
        id: ConversationId,
        text: MessageText,
    ) -> Result<Exchange, ChatError> {
        self.exchange(id, text, WhenMissing::NotFound).await
    }

    /// [`Self::send_message`] to the default conversation, which is created again if it was
    /// deleted: the seed API, the only one that cannot name a conversation, has no way to create it.
    pub async fn send_default_message(&self, text: MessageText) -> Result<Exchange, ChatError> {
        self.exchange(ConversationId::DEFAULT, text, WhenMissing::CreateDefault)
            .await
    }

    async fn exchange(
        &self,
        id: ConversationId,
        text: MessageText,
        when_missing: WhenMissing,
    ) -> Result<Exchange, ChatError> {
        let context = self.reply_context(id, text, when_missing).await?;
        let reply = self.assistant.reply(&context).await?;
        if is_blank_reply(&reply) {
            return Err(empty_reply().into());
        }
        let exchange = NewExchange::new(id, context.user_text, without_nul(reply));
        let mut creations = 0;
        loop {
            match self.repository.append_exchange(&exchange).await {
                Err(RepositoryError::NotFound) if when_missing == WhenMissing::CreateDefault => {
                    // Deleted again between its creation and the append (other clients may delete
                    // it at any time): the seed API has no "not found", so create it once more.
                    if creations == DEFAULT_CONVERSATION_CREATIONS {
                        return Err(RepositoryError::Unavailable(
                            "the default conversation was deleted each time it was created"
                                .to_owned(),
                        )
                        .into());
                    }
                    // Each incarnation has a `created_at` of its own, by which a history being read
                    // tells them apart.
                    let created_at = Timestamp::from_unix_micros(
                        exchange.user.created_at.unix_micros() + i64::from(creations),
                    );
                    creations += 1;
                    ensure_default_conversation(self.repository.as_ref(), created_at).await?;
                }
                other => return Ok(other?),
            }
        }
    }

    /// Checks the conversation and gathers the context of a streamed reply, before the assistant
    /// is asked ([`ReplyRequest::start`]), so that a caller can tell others of the reply between
    /// the two steps only once its conversation is known to exist.
    pub async fn prepare_reply(
        &self,
        id: ConversationId,
        text: MessageText,
    ) -> Result<ReplyRequest, ChatError> {
        let context = self.reply_context(id, text, WhenMissing::NotFound).await?;
        Ok(ReplyRequest {
            repository: Arc::clone(&self.repository),
            assistant: Arc::clone(&self.assistant),
            context,
        })
    }

    async fn reply_context(
        &self,
        id: ConversationId,
        user_text: MessageText,
        when_missing: WhenMissing,
    ) -> Result<ReplyContext, ChatError> {
        let wanted = self.assistant.context_messages();
        let history = if wanted == 0 {
            // A conversation that would be created on demand needs no check before the assistant
            // is asked.
            if when_missing == WhenMissing::NotFound {
                self.repository.get_conversation(id).await?;
            }
            Vec::new()
        } else {
            let limit = i64::try_from(wanted.min(PageLimit::MAX as usize)).unwrap_or(1);
            let limit = PageLimit::new(limit)?;
            match self
                .repository
                .list_messages(id, MessageWindow::Latest, limit)
                .await
            {
                Ok(page) => page.items,
                Err(RepositoryError::NotFound) if when_missing == WhenMissing::CreateDefault => {
                    Vec::new()
                }
                Err(other) => return Err(other.into()),
            }
        };
        Ok(ReplyContext {
            conversation_id: id,
            history,
            user_text,
        })
    }
}

fn new_conversation(id: ConversationId, title: Option<&str>) -> Result<Conversation, ChatError> {
    let title = match title {
        Some(title) => ConversationTitle::new(title)?,
        None => ConversationTitle::default_title(),
    };
    Ok(Conversation::new(id, title, Timestamp::now()))
}

/// The seed API's conversation; a concurrent creator winning the race is as good as creating it.
async fn ensure_default_conversation(
    repository: &dyn ChatRepository,
    now: Timestamp,
) -> Result<(), ChatError> {
    let title = ConversationTitle::new(DEFAULT_CONVERSATION_TITLE).expect("a valid constant title");
    let conversation = Conversation::new(ConversationId::DEFAULT, title, now);
    match repository.create_conversation(&conversation).await {
        Ok(()) | Err(RepositoryError::Conflict) => Ok(()),
        Err(other) => Err(other.into()),
    }
}

const DEFAULT_CONVERSATION_TITLE: &str = "Chat";

/// How many times one seed send creates the default conversation again before it gives up (503):
/// only a client deleting it over and over, in step with the sends, gets that far.
const DEFAULT_CONVERSATION_CREATIONS: u32 = 4;

/// A reply with nothing but whitespace is no answer, as a message of only whitespace is blank.
fn empty_reply() -> AssistantError {
    AssistantError::Provider("the assistant returned an empty reply".to_owned())
}

/// A reply without NUL characters, which carry nothing readable and which not every backend can
/// store (PostgreSQL's text refuses them): a model that emits one should not lose its whole answer.
fn without_nul(text: String) -> String {
    if text.contains('\0') {
        text.replace('\0', "")
    } else {
        text
    }
}

/// What storing an exchange does when its conversation does not exist.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum WhenMissing {
    NotFound,
    CreateDefault,
}

/// A streamed reply whose conversation exists, its assistant not asked yet.
pub struct ReplyRequest {
    repository: Arc<dyn ChatRepository>,
    assistant: Arc<dyn Assistant>,
    context: ReplyContext,
}

impl std::fmt::Debug for ReplyRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplyRequest")
            .field("conversation_id", &self.context.conversation_id)
            .finish_non_exhaustive()
    }
}

impl ReplyRequest {
    /// Asks the assistant and waits for its stream to start, which a slow model may take long
    /// to do. Failures that happen before any text exists come back here;
    /// [`PendingReply::complete`] does the rest.
    pub async fn start(self) -> Result<PendingReply, ChatError> {
        let deltas = self.assistant.reply_stream(&self.context).await?;
        Ok(PendingReply {
            repository: self.repository,
            context: self.context,
            deltas,
        })
    }
}

/// A reply whose stream has started but is not finished or stored yet.
pub struct PendingReply {
    repository: Arc<dyn ChatRepository>,
    context: ReplyContext,
    deltas: DeltaStream,
}

impl std::fmt::Debug for PendingReply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PendingReply")
            .field("conversation_id", &self.context.conversation_id)
            .finish_non_exhaustive()
    }
}

/// What ends a reply before its assistant is done.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interruption {
    /// The user asked for it: the reply ends where it got to and that much is stored, as any
    /// reply is (waiting for room in a full write queue).
    Stopped,
    /// The server is stopping and cannot wait any longer: that much is stored too, but a full
    /// write queue refuses it at once.
    CutShort,
    /// Its conversation was deleted: nothing of it is stored, however much it had.
    ConversationDeleted,
}

impl PendingReply {
    /// Drives the reply to its end and stores the exchange, offering every piece to `events` as it
    /// arrives. When the receiving side goes away (the client disconnected) the reply still runs to
    /// the end and is stored, so nothing the user asked for is lost. When the assistant fails,
    /// nothing is stored.
    ///
    /// When `interrupted` resolves first, the reply ends where it got to (the assistant is asked
    /// for no more) and that much is stored; a reply with no text yet stores nothing and fails with
    /// [`ChatError::Stopped`] or [`ChatError::CutShort`]. Only an [`Interruption::CutShort`] makes
    /// the exchange refused at once by a full write queue. After
    /// [`Interruption::ConversationDeleted`] nothing is stored: the reply fails with
    /// [`ChatError::ConversationNotFound`].
    pub async fn complete<S, I>(self, mut events: S, interrupted: I) -> Result<Exchange, ChatError>
    where
        S: Sink<ReplyEvent> + Unpin,
        I: Future<Output = Interruption>,
    {
        let PendingReply {
            repository,
            context,
            deltas,
        } = self;
        let interrupted = Box::pin(interrupted).shared();
        let mut deltas = deltas.take_until(interrupted.clone());
        let mut reply = String::new();
        let mut listening = true;
        while let Some(piece) = deltas.next().await {
            let piece = without_nul(piece?);
            if piece.is_empty() {
                continue;
            }
            reply.push_str(&piece);
            if listening {
                // A listener that lags (its buffer full) must not hold the interruption off: it
                // ends the offers, and the stored reply carries every piece.
                let send = events.send(ReplyEvent::Delta(piece));
                listening = match future::select(send, interrupted.clone()).await {
                    Either::Left((sent, _)) => sent.is_ok(),
                    Either::Right((_, _)) => false,
                };
            }
        }
        let interruption = deltas.take_result();
        // The provider's call (and its slot of the provider's concurrency) goes now, not once the
        // exchange is stored, which may wait for room in the write queue.
        drop(deltas);
        if is_blank_reply(&reply) || interruption == Some(Interruption::ConversationDeleted) {
            return Err(match interruption {
                Some(Interruption::Stopped) => ChatError::Stopped,
                Some(Interruption::CutShort) => ChatError::CutShort,
                Some(Interruption::ConversationDeleted) => ChatError::ConversationNotFound,
                None => empty_reply().into(),
            });
        }
        let exchange = NewExchange::new(context.conversation_id, context.user_text, reply);
        // Shown as it came, the reply waits out a full write queue; but not once the server is
        // stopping, which cannot wait that long: refused at once, its stream still says so.
        let stopping = interrupted.clone().now_or_never() == Some(Interruption::CutShort);
        Ok(if stopping {
            repository.append_exchange(&exchange).await?
        } else {
            repository
                .append_exchange_waiting_for_room(&exchange)
                .await?
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::MessageId;
    use crate::ports::{MockAssistant, MockChatRepository};
    use crate::Role;
    use futures::stream;

    fn stored(exchange: &NewExchange) -> Exchange {
        let message = |role, new: &crate::NewMessage, position| Message {
            id: new.id,
            conversation_id: exchange.conversation_id,
            position,
            role,
            content: new.content.clone(),
            created_at: new.created_at,
        };
        Exchange {
            user_message: message(Role::User, &exchange.user, 1),
            assistant_message: message(Role::Assistant, &exchange.assistant, 2),
        }
    }

    fn existing_conversations(repository: &mut MockChatRepository) {
        repository.expect_get_conversation().returning(|id| {
            Ok(Conversation::new(
                id,
                ConversationTitle::default_title(),
                Timestamp::now(),
            ))
        });
    }

    fn assistant_replying(reply: &'static str) -> MockAssistant {
        let mut assistant = MockAssistant::new();
        assistant.expect_context_messages().return_const(0usize);
        assistant
            .expect_reply()
            .returning(move |_| Ok(reply.to_owned()));
        assistant.expect_reply_stream().returning(move |_| {
            let pieces: Vec<Result<String, AssistantError>> = reply
                .split_inclusive(' ')
                .map(|piece| Ok(piece.to_owned()))
                .collect();
            Ok(stream::iter(pieces).boxed())
        });
        assistant
    }

    /// The reply to "hello" in the default conversation, started.
    async fn pending_reply(service: ChatService) -> PendingReply {
        let text = service.message_text("hello").unwrap();
        service
            .prepare_reply(ConversationId::DEFAULT, text)
            .await
            .unwrap()
            .start()
            .await
            .unwrap()
    }

    fn service(repository: MockChatRepository, assistant: MockAssistant) -> ChatService {
        ChatService::new(
            Arc::new(repository),
            Arc::new(assistant),
            ChatServiceConfig {
                max_message_chars: 100,
            },
        )
    }

    #[tokio::test]
    async fn sending_stores_the_user_text_with_its_reply() {
        let mut repository = MockChatRepository::new();
        repository
            .expect_append_exchange()
            .withf(|exchange| {
                exchange.user.content == "hello" && exchange.assistant.content == "Hi there!"
            })
            .times(1)
            .returning(|exchange| Ok(stored(exchange)));
        let service = service(repository, assistant_replying("Hi there!"));
        let text = service.message_text("hello").unwrap();

        let exchange = service.send_default_message(text).await.unwrap();

        assert_eq!(exchange.user_message.content, "hello");
        assert_eq!(exchange.assistant_message.content, "Hi there!");
    }

    #[tokio::test]
    async fn the_default_conversation_is_created_on_first_use() {
        let mut repository = MockChatRepository::new();
        let mut seq = mockall::Sequence::new();
        repository
            .expect_append_exchange()
            .times(1)
            .in_sequence(&mut seq)
            .returning(|_| Err(RepositoryError::NotFound));
        repository
            .expect_create_conversation()
            .withf(|conversation| conversation.id == ConversationId::DEFAULT)
            .times(1)
            .in_sequence(&mut seq)
            .returning(|_| Ok(()));
        repository
            .expect_append_exchange()
            .times(1)
            .in_sequence(&mut seq)
            .returning(|exchange| Ok(stored(exchange)));
        let service = service(repository, assistant_replying("ok"));

        let text = service.message_text("first").unwrap();
        assert!(service.send_default_message(text).await.is_ok());
    }

    /// A repository whose default conversation is deleted before each of the first `deletions`
    /// appends; counts the creations the service makes.
    fn default_deleted_before_appends(
        deletions: usize,
    ) -> (MockChatRepository, Arc<std::sync::atomic::AtomicUsize>) {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let mut repository = MockChatRepository::new();
        let appends = AtomicUsize::new(0);
        repository
            .expect_append_exchange()
            .returning(move |exchange| {
                if appends.fetch_add(1, Ordering::SeqCst) < deletions {
                    Err(RepositoryError::NotFound)
                } else {
                    Ok(stored(exchange))
                }
            });
        let creations = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&creations);
        repository.expect_create_conversation().returning(move |_| {
            counted.fetch_add(1, Ordering::SeqCst);
            Ok(())
        });
        (repository, creations)
    }

    #[tokio::test]
    async fn a_seed_send_creates_the_default_conversation_again_as_often_as_it_is_deleted_meanwhile(
    ) {
        let (repository, creations) = default_deleted_before_appends(3);
        let service = service(repository, assistant_replying("ok"));
        let text = service.message_text("between deletions").unwrap();
        assert!(service.send_default_message(text).await.is_ok());
        assert_eq!(creations.load(std::sync::atomic::Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn a_seed_send_whose_conversation_is_deleted_every_time_gives_up_as_unavailable() {
        let (repository, creations) = default_deleted_before_appends(usize::MAX);
        let service = service(repository, assistant_replying("ok"));
        let text = service.message_text("never stored").unwrap();
        let sent = service.send_default_message(text).await;
        assert!(
            matches!(
                sent,
                Err(ChatError::Storage(RepositoryError::Unavailable(_)))
            ),
            "{sent:?}"
        );
        assert_eq!(
            creations.load(std::sync::atomic::Ordering::SeqCst),
            DEFAULT_CONVERSATION_CREATIONS as usize
        );
    }

    fn chosen_id() -> ConversationId {
        "0190b5e0-3c2a-7d4e-9f10-2b3c4d5e6f70".parse().unwrap()
    }

    #[tokio::test]
    async fn a_conversation_is_created_under_the_id_its_client_chose() {
        let mut repository = MockChatRepository::new();
        repository
            .expect_create_conversation()
            .withf(|conversation| {
                conversation.id == chosen_id() && conversation.title.as_str() == "Lisbon"
            })
            .times(1)
            .returning(|_| Ok(()));
        repository.expect_get_conversation().never();
        let service = service(repository, assistant_replying("ok"));

        let created = service
            .create_conversation_with_id(chosen_id(), Some("Lisbon"))
            .await
            .unwrap();
        assert!(matches!(created, Creation::Created(c) if c.id == chosen_id()));
    }

    #[tokio::test]
    async fn creating_under_an_id_in_use_gives_the_stored_conversation_unchanged() {
        let stored = Conversation::new(
            chosen_id(),
            ConversationTitle::new("Renamed since").unwrap(),
            Timestamp::from_unix_micros(1_000_000),
        );
        let mut repository = MockChatRepository::new();
        repository
            .expect_create_conversation()
            .times(1)
            .returning(|_| Err(RepositoryError::Conflict));
        let found = stored.clone();
        repository
            .expect_get_conversation()
            .withf(|id| *id == chosen_id())
            .times(1)
            .returning(move |_| Ok(found.clone()));
        repository.expect_rename_conversation().never();
        let service = service(repository, assistant_replying("ok"));

        let again = service
            .create_conversation_with_id(chosen_id(), Some("Lisbon"))
            .await
            .unwrap();
        assert_eq!(again, Creation::Existing(stored));
    }

    #[tokio::test]
    async fn a_deleted_conversations_id_is_refused_as_such() {
        let mut repository = MockChatRepository::new();
        repository
            .expect_create_conversation()
            .times(1)
            .returning(|_| Err(RepositoryError::Conflict));
        repository
            .expect_get_conversation()
            .times(1)
            .returning(|_| Err(RepositoryError::NotFound));
        let service = service(repository, assistant_replying("ok"));

        let created = service.create_conversation_with_id(chosen_id(), None).await;
        assert!(
            matches!(created, Err(ChatError::DeletedConversationId)),
            "{created:?}"
        );
    }

    #[tokio::test]
    async fn the_default_conversation_deleted_as_a_create_finds_it_is_made_again() {
        let mut repository = MockChatRepository::new();
        let mut seq = mockall::Sequence::new();
        repository
            .expect_create_conversation()
            .times(1)
            .in_sequence(&mut seq)
            .returning(|_| Err(RepositoryError::Conflict));
        repository
            .expect_get_conversation()
            .times(1)
            .in_sequence(&mut seq)
            .returning(|_| Err(RepositoryError::NotFound));
        repository
            .expect_create_conversation()
            .times(1)
            .in_sequence(&mut seq)
            .returning(|_| Ok(()));
        let service = service(repository, assistant_replying("ok"));

        let created = service
            .create_conversation_with_id(ConversationId::DEFAULT, None)
            .await;
        assert!(matches!(created, Ok(Creation::Created(_))), "{created:?}");
    }

    #[tokio::test]
    async fn a_bad_title_with_a_chosen_id_stores_nothing() {
        let mut repository = MockChatRepository::new();
        repository.expect_create_conversation().never();
        let service = service(repository, assistant_replying("ok"));
        let created = service
            .create_conversation_with_id(chosen_id(), Some("  "))
            .await;
        assert!(
            matches!(created, Err(ChatError::InvalidText(_))),
            "{created:?}"
        );
    }

    #[tokio::test]
    async fn only_the_seed_route_creates_the_default_conversation_again() {
        let mut repository = MockChatRepository::new();
        repository
            .expect_get_conversation()
            .returning(|_| Err(RepositoryError::NotFound));
        repository.expect_create_conversation().never();
        repository.expect_append_exchange().never();
        let service = service(repository, assistant_replying("ok"));

        let text = service.message_text("after the delete").unwrap();
        let sent = service
            .send_message(ConversationId::DEFAULT, text.clone())
            .await;
        assert!(matches!(sent, Err(ChatError::ConversationNotFound)));
        let streamed = service.prepare_reply(ConversationId::DEFAULT, text).await;
        assert!(matches!(streamed, Err(ChatError::ConversationNotFound)));
    }

    #[tokio::test]
    async fn a_conversation_deleted_while_the_assistant_answers_is_not_created_again() {
        let mut repository = MockChatRepository::new();
        existing_conversations(&mut repository);
        repository
            .expect_append_exchange()
            .times(1)
            .returning(|_| Err(RepositoryError::NotFound));
        repository.expect_create_conversation().never();
        let service = service(repository, assistant_replying("too late"));

        let text = service.message_text("hello").unwrap();
        let result = service.send_message(ConversationId::DEFAULT, text).await;
        assert!(matches!(result, Err(ChatError::ConversationNotFound)));
    }

    #[tokio::test]
    async fn an_unknown_conversation_is_reported_before_the_assistant_is_asked() {
        let mut repository = MockChatRepository::new();
        repository
            .expect_get_conversation()
            .returning(|_| Err(RepositoryError::NotFound));
        let mut assistant = MockAssistant::new();
        assistant.expect_context_messages().return_const(0usize);
        assistant.expect_reply().never();
        let service = service(repository, assistant);

        let text = service.message_text("hello").unwrap();
        let result = service.send_message(ConversationId::generate(), text).await;
        assert!(matches!(result, Err(ChatError::ConversationNotFound)));
    }

    #[tokio::test]
    async fn a_failing_assistant_stores_nothing() {
        let mut repository = MockChatRepository::new();
        repository.expect_append_exchange().never();
        let mut assistant = MockAssistant::new();
        assistant.expect_context_messages().return_const(0usize);
        assistant
            .expect_reply()
            .returning(|_| Err(AssistantError::Timeout));
        let service = service(repository, assistant);

        let text = service.message_text("hello").unwrap();
        let result = service.send_default_message(text).await;
        assert!(matches!(
            result,
            Err(ChatError::Assistant(AssistantError::Timeout))
        ));
    }

    #[tokio::test]
    async fn context_is_the_latest_messages_the_assistant_asks_for() {
        let conversation_id = ConversationId::generate();
        let earlier = |position, role, content: &str| Message {
            id: MessageId::generate(),
            conversation_id,
            position,
            role,
            content: content.to_owned(),
            created_at: Timestamp::now(),
        };
        let history = vec![
            earlier(1, Role::User, "earlier question"),
            earlier(2, Role::Assistant, "earlier answer"),
        ];
        let mut repository = MockChatRepository::new();
        let latest = history.clone();
        repository
            .expect_list_messages()
            .withf(|_, window, limit| *window == MessageWindow::Latest && limit.get() == 6)
            .times(1)
            .returning(move |_, _, _| {
                Ok(Page {
                    items: latest.clone(),
                    next_cursor: None,
                })
            });
        repository
            .expect_append_exchange()
            .returning(|exchange| Ok(stored(exchange)));
        let mut assistant = MockAssistant::new();
        assistant.expect_context_messages().return_const(6usize);
        assistant
            .expect_reply()
            .withf(move |context| {
                context.user_text.as_str() == "question" && context.history == history
            })
            .times(1)
            .returning(|_| Ok("answer".to_owned()));
        let service = service(repository, assistant);

        let text = service.message_text("question").unwrap();
        service.send_message(conversation_id, text).await.unwrap();
    }

    #[tokio::test]
    async fn a_reply_of_only_whitespace_is_no_answer_and_nothing_is_stored() {
        let mut repository = MockChatRepository::new();
        existing_conversations(&mut repository);
        repository.expect_append_exchange().never();
        let service = service(repository, assistant_replying(" \n\t "));
        let text = service.message_text("hello").unwrap();

        let sent = service
            .send_message(ConversationId::DEFAULT, text.clone())
            .await;
        assert!(matches!(
            sent,
            Err(ChatError::Assistant(AssistantError::Provider(_)))
        ));
        let pending = service
            .prepare_reply(ConversationId::DEFAULT, text)
            .await
            .unwrap()
            .start()
            .await
            .unwrap();
        let streamed = pending
            .complete(futures::sink::drain(), future::pending())
            .await;
        assert!(matches!(
            streamed,
            Err(ChatError::Assistant(AssistantError::Provider(_)))
        ));
    }

    #[tokio::test]
    async fn nul_characters_in_a_reply_are_dropped_so_every_backend_can_store_it() {
        let mut repository = MockChatRepository::new();
        existing_conversations(&mut repository);
        repository
            .expect_append_exchange()
            .withf(|exchange| exchange.assistant.content == "one two")
            .times(1)
            .returning(|exchange| Ok(stored(exchange)));
        repository
            .expect_append_exchange_waiting_for_room()
            .withf(|exchange| exchange.assistant.content == "one two")
            .times(1)
            .returning(|exchange| Ok(stored(exchange)));
        let service = service(repository, assistant_replying("one\0 two\0"));
        let text = service.message_text("hello").unwrap();

        let sent = service
            .send_message(ConversationId::DEFAULT, text.clone())
            .await
            .unwrap();
        assert_eq!(sent.assistant_message.content, "one two");
        let pending = service
            .prepare_reply(ConversationId::DEFAULT, text)
            .await
            .unwrap()
            .start()
            .await
            .unwrap();
        let (sender, receiver) = futures::channel::mpsc::channel(16);
        let streamed = pending.complete(sender, future::pending()).await.unwrap();
        let events: Vec<ReplyEvent> = receiver.collect().await;
        assert_eq!(streamed.assistant_message.content, "one two");
        assert_eq!(
            events,
            vec![
                ReplyEvent::Delta("one ".to_owned()),
                ReplyEvent::Delta("two".to_owned())
            ]
        );
    }

    #[tokio::test]
    async fn a_streamed_reply_is_stored_as_the_concatenated_pieces() {
        let mut repository = MockChatRepository::new();
        existing_conversations(&mut repository);
        // Shown as it streamed: a full write queue is waited out, not refused.
        repository
            .expect_append_exchange_waiting_for_room()
            .withf(|exchange| exchange.assistant.content == "one two three")
            .times(1)
            .returning(|exchange| Ok(stored(exchange)));
        let service = service(repository, assistant_replying("one two three"));
        let text = service.message_text("count").unwrap();
        let pending = service
            .prepare_reply(ConversationId::DEFAULT, text)
            .await
            .unwrap()
            .start()
            .await
            .unwrap();

        let (sender, receiver) = futures::channel::mpsc::channel(16);
        let exchange = pending.complete(sender, future::pending()).await.unwrap();
        let events: Vec<ReplyEvent> = receiver.collect().await;

        assert_eq!(
            events,
            vec![
                ReplyEvent::Delta("one ".into()),
                ReplyEvent::Delta("two ".into()),
                ReplyEvent::Delta("three".into())
            ]
        );
        assert_eq!(exchange.assistant_message.content, "one two three");
    }

    #[tokio::test]
    async fn a_reply_is_stored_even_when_nobody_listens() {
        let mut repository = MockChatRepository::new();
        existing_conversations(&mut repository);
        repository
            .expect_append_exchange_waiting_for_room()
            .times(1)
            .returning(|exchange| Ok(stored(exchange)));
        let pending = pending_reply(service(repository, assistant_replying("still stored"))).await;

        let (sender, receiver) = futures::channel::mpsc::channel(1);
        drop(receiver);
        let exchange = pending.complete(sender, future::pending()).await.unwrap();
        assert_eq!(exchange.assistant_message.content, "still stored");
    }

    #[tokio::test]
    async fn a_stream_that_fails_midway_stores_nothing() {
        let mut repository = MockChatRepository::new();
        existing_conversations(&mut repository);
        repository.expect_append_exchange().never();
        let mut assistant = MockAssistant::new();
        assistant.expect_context_messages().return_const(0usize);
        assistant.expect_reply_stream().returning(|_| {
            Ok(stream::iter(vec![
                Ok("partial ".to_owned()),
                Err(AssistantError::Provider("cut".into())),
            ])
            .boxed())
        });
        let pending = pending_reply(service(repository, assistant)).await;

        let (sender, _receiver) = futures::channel::mpsc::channel(16);
        assert!(matches!(
            pending.complete(sender, future::pending()).await,
            Err(ChatError::Assistant(AssistantError::Provider(_)))
        ));
    }

    /// A started reply whose assistant sends `pieces`, then waits for ever.
    async fn reply_sending_then_waiting(
        repository: MockChatRepository,
        pieces: &'static [&'static str],
    ) -> PendingReply {
        let mut assistant = MockAssistant::new();
        assistant.expect_context_messages().return_const(0usize);
        assistant.expect_reply_stream().returning(move |_| {
            let pieces = pieces.iter().map(|piece| Ok((*piece).to_owned()));
            Ok(stream::iter(pieces).chain(stream::pending()).boxed())
        });
        pending_reply(service(repository, assistant)).await
    }

    /// A repository that expects exactly one exchange, whose reply is `reply`, stored as a
    /// stopping server stores it: refused at once when the write queue is full, not waiting.
    fn storing_once(reply: &'static str) -> MockChatRepository {
        let mut repository = MockChatRepository::new();
        existing_conversations(&mut repository);
        repository
            .expect_append_exchange()
            .withf(move |exchange| exchange.assistant.content == reply)
            .times(1)
            .returning(|exchange| Ok(stored(exchange)));
        repository
    }

    #[tokio::test]
    async fn a_reply_cut_short_is_stored_as_far_as_it_got() {
        let pending =
            reply_sending_then_waiting(storing_once("the first words "), &["the first words "])
                .await;

        let (sender, mut receiver) = futures::channel::mpsc::channel(16);
        let cut_after_the_first_piece = async move {
            receiver.next().await;
            Interruption::CutShort
        };
        let exchange = pending
            .complete(sender, cut_after_the_first_piece)
            .await
            .unwrap();
        assert_eq!(exchange.assistant_message.content, "the first words ");
    }

    #[tokio::test]
    async fn a_listener_that_lags_does_not_hold_the_cut_off() {
        let pending =
            reply_sending_then_waiting(storing_once("one "), &["one ", "two ", "three "]).await;

        // Nobody reads: the first offer waits for good (a bounded channel's send completes
        // only once the piece is taken).
        let (sender, _never_read) = futures::channel::mpsc::channel(0);
        let cut = tokio::time::sleep(std::time::Duration::from_millis(50));
        let exchange = tokio::time::timeout(
            std::time::Duration::from_secs(5),
            pending.complete(sender, cut.map(|()| Interruption::CutShort)),
        )
        .await
        .expect("the cut ends the reply although its listener lags")
        .unwrap();
        assert_eq!(exchange.assistant_message.content, "one ");
    }

    #[tokio::test]
    async fn a_reply_cut_short_before_any_text_stores_nothing() {
        let mut repository = MockChatRepository::new();
        existing_conversations(&mut repository);
        repository.expect_append_exchange().never();
        let pending = reply_sending_then_waiting(repository, &["the first words "]).await;

        let (sender, _receiver) = futures::channel::mpsc::channel(16);
        assert!(matches!(
            pending
                .complete(sender, future::ready(Interruption::CutShort))
                .await,
            Err(ChatError::CutShort)
        ));
    }

    #[tokio::test]
    async fn a_reply_stopped_by_its_user_is_stored_as_far_as_it_got_waiting_for_room() {
        let mut repository = MockChatRepository::new();
        existing_conversations(&mut repository);
        repository.expect_append_exchange().never();
        repository
            .expect_append_exchange_waiting_for_room()
            .withf(|exchange| exchange.assistant.content == "the first words ")
            .times(1)
            .returning(|exchange| Ok(stored(exchange)));
        let pending = reply_sending_then_waiting(repository, &["the first words "]).await;

        let (sender, mut receiver) = futures::channel::mpsc::channel(16);
        let stop_after_the_first_piece = async move {
            receiver.next().await;
            Interruption::Stopped
        };
        let exchange = pending
            .complete(sender, stop_after_the_first_piece)
            .await
            .unwrap();
        assert_eq!(exchange.assistant_message.content, "the first words ");
    }

    #[tokio::test]
    async fn a_stopped_reply_lets_the_provider_go_before_it_is_stored() {
        struct SetOnDrop(Arc<std::sync::atomic::AtomicBool>);
        impl Drop for SetOnDrop {
            fn drop(&mut self) {
                self.0.store(true, std::sync::atomic::Ordering::SeqCst);
            }
        }
        let provider_gone = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut assistant = MockAssistant::new();
        assistant.expect_context_messages().return_const(0usize);
        let held = Arc::clone(&provider_gone);
        assistant.expect_reply_stream().returning(move |_| {
            let call = SetOnDrop(Arc::clone(&held));
            Ok(stream::iter([Ok("the first words ".to_owned())])
                .chain(stream::pending())
                .map(move |piece| {
                    let _call = &call;
                    piece
                })
                .boxed())
        });
        let mut repository = MockChatRepository::new();
        existing_conversations(&mut repository);
        let seen = Arc::clone(&provider_gone);
        repository
            .expect_append_exchange_waiting_for_room()
            .times(1)
            .returning(move |exchange| {
                assert!(
                    seen.load(std::sync::atomic::Ordering::SeqCst),
                    "the provider's call is still open while the exchange waits to be stored"
                );
                Ok(stored(exchange))
            });
        let pending = pending_reply(service(repository, assistant)).await;

        let (sender, mut receiver) = futures::channel::mpsc::channel(16);
        let stop_after_the_first_piece = async move {
            receiver.next().await;
            Interruption::Stopped
        };
        pending
            .complete(sender, stop_after_the_first_piece)
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn a_reply_whose_conversation_was_deleted_stores_nothing_of_what_it_had() {
        let mut repository = MockChatRepository::new();
        existing_conversations(&mut repository);
        repository.expect_append_exchange().never();
        repository.expect_append_exchange_waiting_for_room().never();
        let pending = reply_sending_then_waiting(repository, &["the first words "]).await;

        let (sender, mut receiver) = futures::channel::mpsc::channel(16);
        let deleted_after_the_first_piece = async move {
            receiver.next().await;
            Interruption::ConversationDeleted
        };
        assert!(matches!(
            pending
                .complete(sender, deleted_after_the_first_piece)
                .await,
            Err(ChatError::ConversationNotFound)
        ));
    }

    #[tokio::test]
    async fn a_reply_stopped_before_any_text_stores_nothing() {
        let mut repository = MockChatRepository::new();
        existing_conversations(&mut repository);
        repository.expect_append_exchange().never();
        repository.expect_append_exchange_waiting_for_room().never();
        let pending = reply_sending_then_waiting(repository, &["the first words "]).await;

        let (sender, _receiver) = futures::channel::mpsc::channel(16);
        assert!(matches!(
            pending
                .complete(sender, future::ready(Interruption::Stopped))
                .await,
            Err(ChatError::Stopped)
        ));
    }

    #[tokio::test]
    async fn invalid_page_requests_are_rejected_without_touching_storage() {
        let service = service(MockChatRepository::new(), MockAssistant::new());
        let id = ConversationId::generate();
        assert!(matches!(
            service.list_messages(id, Some("garbage"), None).await,
            Err(ChatError::InvalidPage(_))
        ));
        assert!(matches!(
            service.list_messages(id, None, Some(0)).await,
            Err(ChatError::InvalidPage(_))
        ));
        assert!(matches!(
            service.list_conversations(None, Some(201)).await,
            Err(ChatError::InvalidPage(_))
        ));
    }

    #[tokio::test]
    async fn history_of_a_missing_default_conversation_is_empty() {
        let mut repository = MockChatRepository::new();
        repository
            .expect_get_conversation()
            .returning(|_| Err(RepositoryError::NotFound));
        repository
            .expect_list_messages()
            .returning(|_, _, _| Err(RepositoryError::NotFound));
        let service = service(repository, MockAssistant::new());
        let page = service.history_page(None).await.unwrap();
        assert!(page.items.is_empty());
        assert_eq!(page.next_cursor, None);
        let after_a_page = HistoryCursor {
            after: MessageCursor { position: 200 },
            incarnation: Timestamp::from_unix_micros(1),
        };
        assert!(
            matches!(
                service.history_page(Some(after_a_page)).await,
                Err(ChatError::ConversationNotFound)
            ),
            "deleted after the first page: the history is cut, not complete"
        );
    }

    /// The default conversation as it is after `created_at`'s deletion and re-creation, if any.
    fn default_conversation(created_at: Timestamp) -> Conversation {
        Conversation::new(
            ConversationId::DEFAULT,
            ConversationTitle::new("Chat").unwrap(),
            created_at,
        )
    }

    #[tokio::test]
    async fn a_history_whose_conversation_is_created_again_between_pages_is_cut() {
        let first = Timestamp::from_unix_micros(1_000);
        let again = Timestamp::from_unix_micros(2_000);
        let mut repository = MockChatRepository::new();
        // Read when the history begins, and after its last page: created again in between.
        let mut reads = vec![first, again].into_iter();
        repository
            .expect_get_conversation()
            .times(2)
            .returning(move |_| Ok(default_conversation(reads.next().unwrap())));
        repository.expect_list_messages().returning(|_, window, _| {
            let at = match window {
                MessageWindow::After(cursor) => cursor.position,
                _ => unreachable!("the history reads forwards"),
            };
            // Three pages: the last one is read from the conversation created again, which has
            // fewer messages than the history had already sent.
            Ok(Page {
                items: Vec::new(),
                next_cursor: (at < 400).then_some(MessageCursor { position: at + 200 }),
            })
        });
        let service = service(repository, MockAssistant::new());
        let page = service.history_page(None).await.unwrap();
        let cursor = page.next_cursor.expect("a first page of many");
        assert_eq!(cursor.incarnation, first);
        let page = service.history_page(Some(cursor)).await.unwrap();
        let cursor = page.next_cursor.expect("a second page of many");
        assert!(
            matches!(
                service.history_page(Some(cursor)).await,
                Err(ChatError::ConversationNotFound)
            ),
            "created again meanwhile: positions start over, so the history is cut, not complete"
        );
    }
}
