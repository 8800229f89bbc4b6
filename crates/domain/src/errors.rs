use thiserror::Error;

use crate::paging::CursorError;
use crate::text::TextError;

/// What a [`crate::ChatRepository`] can fail with. Adapters translate their library errors into these
/// at their edge; nothing from a database driver crosses into the domain.
#[derive(Debug, Error)]
pub enum RepositoryError {
    #[error("the conversation does not exist")]
    NotFound,
    #[error("an entity with this id already exists")]
    Conflict,
    /// The database cannot be reached or refuses work right now; retrying later may succeed.
    #[error("storage is unavailable: {0}")]
    Unavailable(String),
    /// The write queue is full; the request was not accepted and nothing was written.
    #[error("storage is overloaded")]
    Overloaded,
    #[error(transparent)]
    Unknown(#[from] anyhow::Error),
}

impl RepositoryError {
    /// A short stable name of the variant, for metric labels and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            RepositoryError::NotFound => "not_found",
            RepositoryError::Conflict => "conflict",
            RepositoryError::Unavailable(_) => "unavailable",
            RepositoryError::Overloaded => "overloaded",
            RepositoryError::Unknown(_) => "error",
        }
    }

    /// The same failure for one more caller: a batching adapter answers every request of a batch
    /// that failed as a whole with it. `Unknown` keeps its message and cause chain as text.
    pub fn for_another_caller(&self) -> Self {
        match self {
            RepositoryError::NotFound => RepositoryError::NotFound,
            RepositoryError::Conflict => RepositoryError::Conflict,
            RepositoryError::Unavailable(reason) => RepositoryError::Unavailable(reason.clone()),
            RepositoryError::Overloaded => RepositoryError::Overloaded,
            RepositoryError::Unknown(error) => {
                RepositoryError::Unknown(anyhow::anyhow!("{error:#}"))
            }
        }
    }
}

/// What an [`crate::Assistant`] can fail with.
#[derive(Debug, Error)]
pub enum AssistantError {
    /// The provider failed or could not be reached (after any retries the adapter makes).
    #[error("the assistant provider failed: {0}")]
    Provider(String),
    /// The provider did not answer in time.
    #[error("the assistant provider timed out")]
    Timeout,
    /// Too many requests toward the provider are already waiting.
    #[error("the assistant is overloaded")]
    Overloaded,
    #[error(transparent)]
    Unknown(#[from] anyhow::Error),
}

/// What a [`crate::GenerationLog`] can fail with.
#[derive(Debug, Error)]
pub enum GenerationLogError {
    #[error("no such generation, or its log expired")]
    NotFound,
    #[error("the generation log is unavailable: {0}")]
    Unavailable(String),
}

/// What a use case of [`crate::ChatService`] can fail with.
#[derive(Debug, Error)]
pub enum ChatError {
    #[error("invalid text: {0}")]
    InvalidText(#[from] TextError),
    #[error("invalid page request: {0}")]
    InvalidPage(#[from] CursorError),
    #[error("conversation not found")]
    ConversationNotFound,
    /// A create under an id chosen by its client: a conversation had the id and was deleted, and
    /// ids are not used again. Nothing was stored.
    #[error("a conversation with this id was deleted")]
    DeletedConversationId,
    #[error(transparent)]
    Storage(RepositoryError),
    #[error(transparent)]
    Assistant(#[from] AssistantError),
    /// The server stopped before the assistant wrote any of the reply; nothing was stored.
    #[error("the server stopped before the reply began")]
    CutShort,
    /// The user stopped the reply before the assistant wrote any of it; nothing was stored.
    #[error("the reply was stopped before it began")]
    Stopped,
}

impl From<RepositoryError> for ChatError {
    fn from(error: RepositoryError) -> Self {
        match error {
            RepositoryError::NotFound => ChatError::ConversationNotFound,
            other => ChatError::Storage(other),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_copy_for_another_caller_keeps_the_variant_and_the_message() {
        let cause = anyhow::anyhow!("disk gone").context("writing the batch");
        let originals = [
            RepositoryError::NotFound,
            RepositoryError::Conflict,
            RepositoryError::Unavailable("read-only file".to_owned()),
            RepositoryError::Overloaded,
            RepositoryError::Unknown(cause),
        ];
        for original in &originals {
            let copy = original.for_another_caller();
            assert_eq!(copy.kind(), original.kind());
            assert_eq!(format!("{copy:#}"), format!("{original:#}"));
        }
    }
}
