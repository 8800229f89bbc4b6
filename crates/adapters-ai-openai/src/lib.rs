//! An [`domain::Assistant`] for any OpenAI-compatible chat-completions endpoint: OpenAI, Azure-style
//! gateways, vLLM, Ollama, llama.cpp server, TGI.
//!
//! - `reply` sends one non-streamed request and reads `choices[0].message.content`;
//!   `reply_stream` sends `stream: true` and yields `choices[0].delta.content` of each SSE event
//!   until `data: [DONE]`.
//! - Rate limits (429), 408, 5xx, timeouts and connection failures are retried with exponential
//!   backoff and full jitter, honouring `Retry-After`; a stream is retried only while it has
//!   produced no text.
//! - A reply over 1 MiB of text is refused; a streamed request answered with anything but
//!   `text/event-stream` or a whole JSON completion is a malformed answer. Neither is retried.
//! - At most `max_concurrency` requests are in flight; at most `max_queue` callers wait for one,
//!   the next is refused with [`domain::AssistantError::Overloaded`].
//! - The API key is a [`secrecy::SecretString`]: it never appears in `Debug`, logs or errors.

mod assistant;
mod metrics;
mod retry;
mod settings;
mod sse;
mod wire;

pub use assistant::OpenAiAssistant;
pub use metrics::describe_metrics;
pub use settings::{OpenAiConfigError, OpenAiSettings};
