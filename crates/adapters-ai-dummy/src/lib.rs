//! The assistant of the original app, kept so the service runs with nothing else installed: it
//! answers with canned sentences and streams them a word at a time like a model would.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::time::Duration;

use async_trait::async_trait;
use domain::{Assistant, AssistantError, DeltaStream, ReplyContext};
use futures::stream::{self, StreamExt};

const REPLIES: [&str; 6] = [
    "Hi there! I'm a simulated AI assistant.",
    "That's an interesting question! Let me think about it... I'm only a simulated assistant, so my answer is canned.",
    "Thanks for your message! I'm a dummy AI assistant, here to show how the chat works.",
    "I'm here to help. Could you tell me more about what you need?",
    "Great point! Connect a real model provider to get real answers; until then I reply with canned text.",
    "Hello! I received your message. This reply comes from the built-in dummy assistant.",
];

/// How the reply is chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DummyMode {
    /// A canned sentence picked at random, as a demo.
    Canned,
    /// A canned sentence picked by the text, followed by the text itself: the same question always
    /// gets the same answer, and a test can tell which reply belongs to which message.
    Deterministic,
}

#[derive(Debug, Clone)]
pub struct DummyAssistant {
    mode: DummyMode,
    word_delay: Duration,
}

impl DummyAssistant {
    /// `word_delay` paces the stream; `reply` answers at once whatever it is.
    pub fn new(mode: DummyMode, word_delay: Duration) -> Self {
        Self { mode, word_delay }
    }

    fn compose(&self, context: &ReplyContext) -> String {
        let text = context.user_text.as_str();
        match self.mode {
            DummyMode::Canned => {
                let pick = domain::MessageId::generate().as_uuid().as_u128() as usize;
                REPLIES[pick % REPLIES.len()].to_owned()
            }
            DummyMode::Deterministic => {
                let mut hasher = DefaultHasher::new();
                text.hash(&mut hasher);
                let canned = REPLIES[hasher.finish() as usize % REPLIES.len()];
                format!("{canned} You said: {text}")
            }
        }
    }
}

#[async_trait]
impl Assistant for DummyAssistant {
    fn context_messages(&self) -> usize {
        0
    }

    async fn reply(&self, context: &ReplyContext) -> Result<String, AssistantError> {
        Ok(self.compose(context))
    }

    async fn reply_stream(&self, context: &ReplyContext) -> Result<DeltaStream, AssistantError> {
        let delay = self.word_delay;
        let pieces = domain::stream_pieces(&self.compose(context));
        Ok(stream::iter(pieces)
            .enumerate()
            .then(move |(index, piece)| async move {
                if index > 0 && !delay.is_zero() {
                    tokio::time::sleep(delay).await;
                }
                Ok(piece)
            })
            .boxed())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use domain::{ConversationId, MessageText};

    fn context(text: &str) -> ReplyContext {
        ReplyContext {
            conversation_id: ConversationId::DEFAULT,
            history: Vec::new(),
            user_text: MessageText::new(text, 1000).unwrap(),
        }
    }

    #[tokio::test]
    async fn deterministic_replies_depend_only_on_the_text() {
        let assistant = DummyAssistant::new(DummyMode::Deterministic, Duration::ZERO);
        let first = assistant.reply(&context("hello")).await.unwrap();
        assert_eq!(first, assistant.reply(&context("hello")).await.unwrap());
        assert!(first.ends_with("You said: hello"));
    }

    #[tokio::test]
    async fn canned_replies_come_from_the_list() {
        let assistant = DummyAssistant::new(DummyMode::Canned, Duration::ZERO);
        let reply = assistant.reply(&context("hello")).await.unwrap();
        assert!(REPLIES.contains(&reply.as_str()));
    }

    #[tokio::test]
    async fn the_stream_is_the_reply_word_by_word() {
        let assistant = DummyAssistant::new(DummyMode::Deterministic, Duration::from_millis(1));
        let whole = assistant.reply(&context("stream me")).await.unwrap();
        let pieces: Vec<String> = assistant
            .reply_stream(&context("stream me"))
            .await
            .unwrap()
            .map(Result::unwrap)
            .collect()
            .await;
        assert!(pieces.len() > 3);
        assert_eq!(pieces.concat(), whole);
    }
}
