//! The JSON of the chat-completions API, only the parts this adapter reads or writes.

use domain::{ReplyContext, Role};
use serde::{Deserialize, Serialize};
use serde_json::Value;

#[derive(Serialize)]
pub(crate) struct ChatRequest<'a> {
    pub(crate) model: &'a str,
    pub(crate) messages: Vec<WireMessage<'a>>,
    pub(crate) stream: bool,
}

#[derive(Serialize)]
pub(crate) struct WireMessage<'a> {
    pub(crate) role: &'static str,
    pub(crate) content: &'a str,
}

impl<'a> ChatRequest<'a> {
    /// System prompt (if any), then the history oldest first, then the new user text.
    pub(crate) fn new(
        model: &'a str,
        system_prompt: Option<&'a str>,
        context: &'a ReplyContext,
        stream: bool,
    ) -> Self {
        let system = system_prompt
            .filter(|prompt| !prompt.trim().is_empty())
            .map(|content| WireMessage {
                role: "system",
                content,
            });
        let history = context.history.iter().map(|message| WireMessage {
            role: match message.role {
                Role::User => "user",
                Role::Assistant => "assistant",
            },
            content: &message.content,
        });
        let user = WireMessage {
            role: "user",
            content: context.user_text.as_str(),
        };
        Self {
            model,
            messages: system.into_iter().chain(history).chain([user]).collect(),
            stream,
        }
    }
}

/// A non-streamed answer: `choices[0].message.content`.
#[derive(Deserialize)]
pub(crate) struct Completion {
    #[serde(default)]
    choices: Vec<CompletionChoice>,
}

#[derive(Deserialize)]
struct CompletionChoice {
    message: Option<ContentHolder>,
}

#[derive(Deserialize)]
struct ContentHolder {
    content: Option<String>,
}

impl Completion {
    pub(crate) fn into_text(self) -> Option<String> {
        self.choices.into_iter().next()?.message?.content
    }
}

/// One streamed event: `choices[0].delta.content`, or an `error` some servers send mid-stream.
#[derive(Deserialize)]
pub(crate) struct Chunk {
    #[serde(default)]
    choices: Vec<ChunkChoice>,
    #[serde(default)]
    error: Option<Value>,
}

#[derive(Deserialize)]
struct ChunkChoice {
    delta: Option<Delta>,
    /// Why the reply ended (`stop`, `length`, ...); set on its last chunk only.
    finish_reason: Option<String>,
}

/// What a streamed chunk adds: the reply's text, or a reasoning model's thinking, which servers
/// stream beside it (`reasoning_content` from vLLM and DeepSeek, `reasoning` from OpenRouter) and
/// which is not part of the reply.
#[derive(Deserialize)]
struct Delta {
    content: Option<String>,
    reasoning_content: Option<String>,
    reasoning: Option<String>,
}

impl Chunk {
    pub(crate) fn error_message(&self) -> Option<String> {
        self.error
            .as_ref()
            .map(|error| describe_error(error).unwrap_or_else(|| "unknown error".to_owned()))
    }

    /// Whether the chunk carries a reasoning model's thinking: progress, though not text.
    pub(crate) fn is_reasoning(&self) -> bool {
        let delta = self
            .choices
            .first()
            .and_then(|choice| choice.delta.as_ref());
        delta.is_some_and(|delta| {
            [&delta.reasoning_content, &delta.reasoning]
                .into_iter()
                .any(|thinking| thinking.as_deref().is_some_and(|text| !text.is_empty()))
        })
    }

    /// Whether this is the reply's last chunk: it says why the reply finished.
    pub(crate) fn is_last(&self) -> bool {
        self.choices
            .first()
            .is_some_and(|choice| choice.finish_reason.is_some())
    }

    pub(crate) fn into_content(self) -> Option<String> {
        self.choices.into_iter().next()?.delta?.content
    }
}

/// The provider's explanation in an error body: `{"error":{"message":...}}` (OpenAI, vLLM),
/// `{"error":"..."}` (TGI, Ollama) or `{"message":...}`.
pub(crate) fn error_message_from_body(body: &[u8]) -> Option<String> {
    let value: Value = serde_json::from_slice(body).ok()?;
    match value.get("error") {
        Some(error) => describe_error(error),
        None => value.get("message")?.as_str().map(str::to_owned),
    }
}

fn describe_error(error: &Value) -> Option<String> {
    match error {
        Value::String(message) => Some(message.clone()),
        Value::Object(fields) => fields.get("message")?.as_str().map(str::to_owned),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_messages_in_the_usual_shapes() {
        let openai = br#"{"error":{"message":"Invalid model","type":"invalid_request_error"}}"#;
        assert_eq!(
            error_message_from_body(openai).as_deref(),
            Some("Invalid model")
        );
        let tgi = br#"{"error":"Input validation error","error_type":"validation"}"#;
        assert_eq!(
            error_message_from_body(tgi).as_deref(),
            Some("Input validation error")
        );
        assert_eq!(error_message_from_body(b"<html>bad gateway</html>"), None);
    }

    #[test]
    fn chunk_content_and_usage_chunks() {
        let chunk: Chunk =
            serde_json::from_str(r#"{"choices":[{"delta":{"content":"Hi"},"index":0}]}"#).unwrap();
        assert_eq!(chunk.into_content().as_deref(), Some("Hi"));
        let usage: Chunk =
            serde_json::from_str(r#"{"choices":[],"usage":{"total_tokens":3}}"#).unwrap();
        assert_eq!(usage.into_content(), None);
        let role_only: Chunk =
            serde_json::from_str(r#"{"choices":[{"delta":{"role":"assistant","content":null}}]}"#)
                .unwrap();
        assert_eq!(role_only.into_content(), None);
        let thinking: Chunk = serde_json::from_str(
            r#"{"choices":[{"delta":{"content":null,"reasoning_content":"Let me see"}}]}"#,
        )
        .unwrap();
        assert!(thinking.is_reasoning());
        assert_eq!(thinking.into_content(), None);
        let routed: Chunk =
            serde_json::from_str(r#"{"choices":[{"delta":{"reasoning":"Hmm"}}]}"#).unwrap();
        assert!(routed.is_reasoning());
    }
}
