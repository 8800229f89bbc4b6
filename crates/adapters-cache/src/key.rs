use std::fmt::Write as _;

use domain::ReplyContext;
use sha2::{Digest, Sha256};

/// What, besides the conversation, decides a reply: a cached reply is reused only from the same
/// provider, for the same model and the same system prompt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheScope {
    /// Who answers: a provider's address, or a canned responder's mode. Two providers may serve
    /// different models under one name, and replicas sharing a Redis may be set up differently.
    pub provider: String,
    pub model: String,
    pub system_prompt: String,
}

/// Bumped whenever the encoding below changes, so old entries are never read with a new meaning.
const VERSION: &[u8] = b"chat-reply-cache/2";

/// The cache key of a reply: the lowercase hex SHA-256 of a canonical encoding of the scope, the
/// history sent (each message's role and content, in order) and the new user text.
///
/// Every variable-length field is prefixed by its length in bytes and the history by its number of
/// messages, so two different inputs never encode to the same bytes (no `("ab", "c")` against
/// `("a", "bc")`). The conversation id is not part of the key: the same question after the same
/// messages gets the same reply wherever it is asked.
pub fn cache_key(scope: &CacheScope, context: &ReplyContext) -> String {
    let mut hasher = Sha256::new();
    field(&mut hasher, VERSION);
    field(&mut hasher, scope.provider.as_bytes());
    field(&mut hasher, scope.model.as_bytes());
    field(&mut hasher, scope.system_prompt.as_bytes());
    hasher.update((context.history.len() as u64).to_be_bytes());
    for message in &context.history {
        field(&mut hasher, message.role.as_str().as_bytes());
        field(&mut hasher, message.content.as_bytes());
    }
    field(&mut hasher, context.user_text.as_str().as_bytes());
    let digest = hasher.finalize();
    let mut hex = String::with_capacity(digest.len() * 2);
    for byte in digest {
        // Writing to a String cannot fail.
        let _ = write!(hex, "{byte:02x}");
    }
    hex
}

fn field(hasher: &mut Sha256, bytes: &[u8]) {
    hasher.update((bytes.len() as u64).to_be_bytes());
    hasher.update(bytes);
}
