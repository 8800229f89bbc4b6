//! The chat domain: what a conversation is, what may be said in one, and the use cases that tie
//! storage and assistant together. It knows no database, no HTTP framework and no model provider;
//! those arrive through the ports in [`ports`].

pub mod errors;
pub mod ids;
pub mod model;
pub mod paging;
pub mod ports;
pub mod service;
pub mod text;
pub mod time;

pub use errors::{AssistantError, ChatError, GenerationLogError, RepositoryError};
pub use ids::{ConversationId, GenerationId, MessageId};
pub use model::{Conversation, Exchange, Message, NewExchange, NewMessage, Role};
pub use paging::{
    ConversationCursor, CursorError, HistoryCursor, MessageCursor, MessageWindow, Page, PageLimit,
};
pub use ports::{
    Assistant, ChatRepository, ChosenId, DeltaStream, GenerationEvent, GenerationEvents,
    GenerationLog, GenerationState, ReplyContext, WAIT_FOR_ROOM_LIMIT,
};
pub use service::{
    ChatService, ChatServiceConfig, Creation, Interruption, PendingReply, ReplyEvent, ReplyRequest,
};
pub use text::{is_blank_reply, stream_pieces, ConversationTitle, MessageText, TextError};
pub use time::Timestamp;
