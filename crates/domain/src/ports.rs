//! The ports: what the domain needs from the outside world. Each method's doc comment is the contract
//! every adapter MUST honour; `testkit` checks those contracts for any implementation.

use async_trait::async_trait;
use futures::stream::BoxStream;

use crate::errors::{AssistantError, GenerationLogError, RepositoryError};
use crate::ids::{ConversationId, GenerationId};
use crate::model::{Conversation, Exchange, Message, NewExchange};
use crate::paging::{ConversationCursor, MessageCursor, MessageWindow, Page, PageLimit};
use crate::text::{ConversationTitle, MessageText};
use crate::time::Timestamp;

/// How long [`ChatRepository::append_exchange_waiting_for_room`] waits out a full write queue: a
/// queue drains in milliseconds, so a wait this long means storage has stopped keeping up.
pub const WAIT_FOR_ROOM_LIMIT: std::time::Duration = std::time::Duration::from_secs(30);

/// Persistent storage of conversations and their messages.
#[cfg_attr(any(test, feature = "mock"), mockall::automock)]
#[async_trait]
pub trait ChatRepository: Send + Sync {
    /// Stores a new conversation with no messages.
    /// MUST return `Conflict` if a conversation with this id exists, or existed and was deleted
    /// (see [`Self::delete_conversation`]), and then store nothing.
    async fn create_conversation(&self, conversation: &Conversation)
        -> Result<(), RepositoryError>;

    /// MUST return `NotFound` if the conversation does not exist.
    async fn get_conversation(&self, id: ConversationId) -> Result<Conversation, RepositoryError>;

    /// Conversations ordered by `(updated_at, id)` descending, at most `limit` of them, starting
    /// strictly after `after` in that order. `next_cursor` is the position of the last item when more
    /// items follow, `None` otherwise. The cost MUST NOT grow with the number of conversations
    /// skipped (keyset pagination on an index).
    async fn list_conversations(
        &self,
        after: Option<ConversationCursor>,
        limit: PageLimit,
    ) -> Result<Page<Conversation, ConversationCursor>, RepositoryError>;

    /// Sets the title and `updated_at` to `now`, or leaves `updated_at` where it is when that is
    /// later (`now` from a clock behind the last exchange's), returning the updated conversation.
    /// MUST return `NotFound` if the conversation does not exist.
    async fn rename_conversation(
        &self,
        id: ConversationId,
        title: &ConversationTitle,
        now: Timestamp,
    ) -> Result<Conversation, RepositoryError>;

    /// Deletes the conversation and every message in it: once it returns `Ok`, none is left.
    /// A large conversation MAY go in several steps, its oldest messages first, so that one
    /// deletion cannot hold the storage for long; a failure part way MAY leave it without some
    /// of its oldest messages, and deleting it again finishes.
    /// An id names one conversation, ever: once deleted, its id MUST stay taken, so that a create
    /// retried late under a client's chosen id, or a reply that finishes after the deletion, never
    /// lands in a new conversation of the same id. The one exception is
    /// [`ConversationId::DEFAULT`], which the seed API creates again.
    /// MUST return `NotFound` if the conversation does not exist.
    async fn delete_conversation(&self, id: ConversationId) -> Result<(), RepositoryError>;

    /// A page of a conversation's messages, items oldest first (ascending position).
    /// `Latest` gives the newest `limit` messages; `Before(c)` the newest `limit` older than `c`;
    /// `After(c)` the oldest `limit` newer than `c`. `next_cursor` continues in the same direction
    /// (older for `Latest`/`Before`, newer for `After`) and is `None` when nothing is left that way.
    /// The cost MUST NOT grow with the size of the conversation.
    /// MUST return `NotFound` if the conversation does not exist.
    async fn list_messages(
        &self,
        conversation_id: ConversationId,
        window: MessageWindow,
        limit: PageLimit,
    ) -> Result<Page<Message, MessageCursor>, RepositoryError>;

    /// Stores the user message and the reply atomically (both or neither) as the next two positions
    /// of the conversation (user first), and moves the conversation's `updated_at` to the reply's
    /// `created_at` if that is later. Positions MUST be gap-free and follow the order in which
    /// exchanges are stored, also under concurrent calls, from one process or many.
    /// MUST return `NotFound` (and store nothing) if the conversation does not exist,
    /// `Conflict` (and store nothing) if a message id exists, `Overloaded` (and store nothing)
    /// if the adapter's write queue is full.
    async fn append_exchange(&self, exchange: &NewExchange) -> Result<Exchange, RepositoryError>;

    /// [`Self::append_exchange`] for a reply the user has already read as it streamed: a full
    /// write queue is waited out (for up to [`WAIT_FOR_ROOM_LIMIT`]), not refused at once, since
    /// refusing would throw away text that was shown. MUST NOT return `Overloaded` before that
    /// wait. An adapter whose appends are never `Overloaded` answers as `append_exchange` does.
    async fn append_exchange_waiting_for_room(
        &self,
        exchange: &NewExchange,
    ) -> Result<Exchange, RepositoryError>;

    /// Succeeds when storage can serve reads and writes now; `Unavailable` otherwise.
    async fn health_check(&self) -> Result<(), RepositoryError>;

    /// Called once at a clean stop, after the last write was answered: leaves storage as a
    /// copy or backup tool expects to find it. Nothing acknowledged depends on it. Most
    /// backends have nothing to do.
    async fn close(&self) {}
}

/// A reply arriving piece by piece. Concatenated, the pieces are the whole reply.
pub type DeltaStream = BoxStream<'static, Result<String, AssistantError>>;

/// What an assistant is asked to reply to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplyContext {
    pub conversation_id: ConversationId,
    /// Earlier messages of the conversation, oldest first: at most
    /// [`Assistant::context_messages`] of the most recent ones.
    pub history: Vec<Message>,
    pub user_text: MessageText,
}

/// Something that answers a user: a model provider, a canned responder, a cache in front of either.
#[cfg_attr(any(test, feature = "mock"), mockall::automock)]
#[async_trait]
pub trait Assistant: Send + Sync {
    /// How many earlier messages this assistant wants in [`ReplyContext::history`]; 0 for none.
    /// The history is one page of the conversation, so it holds at most [`PageLimit::MAX`].
    fn context_messages(&self) -> usize;

    /// The whole reply. MUST NOT return an empty reply: an empty answer is a `Provider` error.
    /// Nor one past 1 MiB of text: the rest of the system (storage, the reply cache) sizes for
    /// that, and a longer one is a `Provider` error too (`reply_stream` likewise ends in one).
    async fn reply(&self, context: &ReplyContext) -> Result<String, AssistantError>;

    /// The reply as a stream of pieces. Errors that happen before any piece exists (provider
    /// unreachable, overloaded) MUST be returned here rather than inside the stream, so that callers
    /// can answer with a plain error. A stream that ends with an `Err` item ended in failure: the
    /// pieces before it are not a reply.
    async fn reply_stream(&self, context: &ReplyContext) -> Result<DeltaStream, AssistantError>;
}

/// One event of a streamed reply as clients receive it: a name (`start`, `delta`, `done`, `error`)
/// and its data, numbered from 1 within its generation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GenerationEvent {
    pub sequence: u64,
    pub name: String,
    pub data: String,
}

/// What [`GenerationLog::claim`] found for an id a client chose for its reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChosenId {
    /// New: the send goes on, and the id is its own on every replica until it gives the claim
    /// up ([`GenerationLog::release`]); a generation it logged meanwhile holds the id from then on.
    Claimed,
    /// The conversation's reply of this id was asked to stop (the stop overtook the message).
    Stopped,
    /// A logged generation, or another send, has it.
    Taken,
}

/// Where a generation stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GenerationState {
    /// The conversation the reply belongs to.
    pub conversation_id: ConversationId,
    /// Sequence of the last event appended so far (0 if reported before the first).
    pub last_sequence: u64,
    /// Nothing more will come: the final event has been appended, or (in a log shared by
    /// replicas) its writer has logged nothing for so long that it is taken for dead.
    pub finished: bool,
}

/// Events appended as they happen.
pub type GenerationEvents = BoxStream<'static, Result<GenerationEvent, GenerationLogError>>;

/// The log of every streamed reply, so a client that lost its connection (a reload, a switch to
/// another conversation, another replica behind the load balancer) can replay what it missed and
/// follow the rest. Logs expire some time after their generation finished.
#[cfg_attr(any(test, feature = "mock"), mockall::automock)]
#[async_trait]
pub trait GenerationLog: Send + Sync {
    /// Opens the log of a new generation, the conversation's newest generation in progress.
    async fn begin(
        &self,
        conversation_id: ConversationId,
        generation_id: GenerationId,
    ) -> Result<(), GenerationLogError>;

    /// Appends the next event and returns its sequence (1 for the first). `last` marks the final
    /// event: the generation is then finished and no longer in progress for its conversation.
    ///
    /// After `Unavailable` the caller may append the same event again: the sequence must not move
    /// on until the event is in the log, and an attempt that reached the log before failing must
    /// not make the repeat a second copy.
    async fn append(
        &self,
        generation_id: GenerationId,
        name: &str,
        data: &str,
        last: bool,
    ) -> Result<u64, GenerationLogError>;

    /// The conversation's generation in progress, if any: the newest of those still running, so
    /// that when a newer one finishes an older one still running is in progress again. A
    /// generation that has logged nothing yet is not in progress: its reply may have gone on
    /// without the log, which would then never see it finish.
    async fn in_progress(
        &self,
        conversation_id: ConversationId,
    ) -> Result<Option<GenerationId>, GenerationLogError>;

    /// Where the generation stands; `None` when it is unknown or its log expired. Before its first
    /// event a generation may be either (a log shared by replicas may learn of it only from that
    /// event); callers ask only about generations they saw an event of, or about an id a client
    /// chose for its reply, to tell whether it is new (`None` counts as new).
    async fn state(
        &self,
        generation_id: GenerationId,
    ) -> Result<Option<GenerationState>, GenerationLogError>;

    /// The events after sequence `after` that are already logged, then each new one as it is
    /// appended; the stream ends after the final event. MUST return `NotFound` when the
    /// generation is unknown or expired. A generation begun in this process is known from `begin`
    /// on: the server follows a reply before its first event.
    async fn follow(
        &self,
        generation_id: GenerationId,
        after: u64,
    ) -> Result<GenerationEvents, GenerationLogError>;

    /// Claims an id a client chose for a new generation of the conversation, before its model is
    /// asked: [`ChosenId::Taken`] when a logged generation has it, [`ChosenId::Stopped`] when
    /// [`Self::request_stop`] was asked for it in this conversation, [`ChosenId::Taken`] when
    /// another send claimed it, on any replica. A log shared by replicas must claim atomically
    /// (of two sends of one id at once, on two replicas, one only is `Claimed`), and let a claim
    /// hold for as long as the process holding it lives, however long its model is silent, but
    /// lapse within seconds once that process died without [`Self::release`]. The default
    /// answers from [`Self::state`] and [`Self::stop_requested`], enough for a log only one
    /// process uses (the server refuses an id that runs in it before it asks).
    async fn claim(
        &self,
        conversation_id: ConversationId,
        generation_id: GenerationId,
    ) -> Result<ChosenId, GenerationLogError> {
        if self.state(generation_id).await?.is_some() {
            return Ok(ChosenId::Taken);
        }
        if self.stop_requested(conversation_id, generation_id).await? {
            return Ok(ChosenId::Stopped);
        }
        Ok(ChosenId::Claimed)
    }

    /// Gives up a claim once its send has ended (answered, stopped, failed, or dropped before the
    /// model answered); a generation it logged holds the id from then on. No replica takes the id
    /// for a send that waits for its model any more. The default does nothing, as the default
    /// [`Self::claim`] holds nothing.
    async fn release(&self, generation_id: GenerationId) -> Result<(), GenerationLogError> {
        let _ = generation_id;
        Ok(())
    }

    /// The conversation whose send holds a claim of the id ([`Self::claim`]), on any replica: a
    /// send waiting for its model. `None` for an id nobody holds. A log only one process uses may
    /// keep the default, `None`: the server knows its own sends.
    async fn claimant(
        &self,
        generation_id: GenerationId,
    ) -> Result<Option<ConversationId>, GenerationLogError> {
        let _ = generation_id;
        Ok(None)
    }

    /// Asks the writer of the conversation's generation to stop it, for a replica that does not
    /// run it, also before the generation began (its client chose the id). The writer asks
    /// [`Self::stop_requested`] before the reply begins and while it runs. A log only one process
    /// writes and reads needs neither: the server stops its own generations without the log.
    async fn request_stop(
        &self,
        conversation_id: ConversationId,
        generation_id: GenerationId,
    ) -> Result<(), GenerationLogError> {
        let _ = (conversation_id, generation_id);
        Ok(())
    }

    /// Whether [`Self::request_stop`] was called for the generation of this conversation, by any
    /// replica; a stop asked under another conversation does not count.
    async fn stop_requested(
        &self,
        conversation_id: ConversationId,
        generation_id: GenerationId,
    ) -> Result<bool, GenerationLogError> {
        let _ = (conversation_id, generation_id);
        Ok(false)
    }
}
