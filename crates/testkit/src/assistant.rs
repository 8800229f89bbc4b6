//! The [`Assistant`] conformance suite. Any assistant, from a canned responder to a remote model
//! behind a test double, must pass it.

use std::sync::Arc;

use domain::{Assistant, ConversationId, MessageText, ReplyContext};
use futures::StreamExt;

fn context(text: &str) -> ReplyContext {
    ReplyContext {
        conversation_id: ConversationId::generate(),
        history: Vec::new(),
        user_text: MessageText::new(text, 16_000).expect("a valid message"),
    }
}

async fn streamed_reply<A: Assistant + ?Sized>(assistant: &A, context: &ReplyContext) -> String {
    let mut stream = assistant
        .reply_stream(context)
        .await
        .expect("reply_stream starts");
    let mut reply = String::new();
    let mut pieces = 0;
    while let Some(piece) = stream.next().await {
        reply.push_str(&piece.expect("a piece of the reply, not an error"));
        pieces += 1;
    }
    assert!(pieces > 0, "a stream must yield at least one piece");
    reply
}

pub async fn reply_is_not_empty<A: Assistant + ?Sized>(assistant: Arc<A>) {
    let reply = assistant
        .reply(&context("Hello! What can you do?"))
        .await
        .expect("reply succeeds");
    assert!(!reply.is_empty(), "a reply must not be empty");
}

pub async fn reply_stream_pieces_make_a_non_empty_reply<A: Assistant + ?Sized>(assistant: Arc<A>) {
    let reply = streamed_reply(&*assistant, &context("Tell me a short story.")).await;
    assert!(
        !reply.is_empty(),
        "the pieces of a stream make a non-empty reply"
    );
}

pub async fn context_messages_is_stable<A: Assistant + ?Sized>(assistant: Arc<A>) {
    let first = assistant.context_messages();
    assistant
        .reply(&context("Does asking change anything?"))
        .await
        .expect("reply succeeds");
    for _ in 0..10 {
        assert_eq!(
            assistant.context_messages(),
            first,
            "context_messages must not change between calls"
        );
    }
}

pub async fn replies_concurrently<A: Assistant + ?Sized + 'static>(assistant: Arc<A>) {
    let mut handles = Vec::new();
    for index in 0..8 {
        let assistant = Arc::clone(&assistant);
        handles.push(tokio::spawn(async move {
            let context = context(&format!("Question number {index}?"));
            let whole = assistant.reply(&context).await.expect("reply succeeds");
            let streamed = streamed_reply(&*assistant, &context).await;
            (whole, streamed)
        }));
    }
    for handle in handles {
        let (whole, streamed) = handle.await.expect("a replying task panicked");
        assert!(!whole.is_empty(), "concurrent replies are not empty");
        assert!(!streamed.is_empty(), "concurrent streams are not empty");
    }
}
