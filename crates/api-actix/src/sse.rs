//! Server-Sent Events for a reply in progress.

use actix_web::http::header;
use actix_web::HttpResponse;
use bytes::Bytes;
use domain::{ChatError, Exchange, PendingReply, ReplyEvent};
use futures::channel::{mpsc, oneshot};
use futures::{stream, StreamExt};
use serde::Serialize;

use crate::dto::{DeltaEvent, ExchangeDto, StreamErrorEvent};
use crate::errors::ApiError;
use crate::generations::Generations;

/// Deltas buffered for a slow client before generation waits for it.
const DELTA_BUFFER: usize = 64;

fn event(name: &str, data: &impl Serialize) -> Bytes {
    let data = serde_json::to_string(data).expect("event data always serialises");
    Bytes::from(format!("event: {name}\ndata: {data}\n\n"))
}

fn finished(outcome: Result<Result<Exchange, ChatError>, oneshot::Canceled>) -> Bytes {
    match outcome {
        Ok(Ok(exchange)) => event("done", &ExchangeDto::from(exchange)),
        Ok(Err(error)) => {
            let error = ApiError::from(error);
            event(
                "error",
                &StreamErrorEvent {
                    message: error.message().to_owned(),
                    code: error.code().to_owned(),
                },
            )
        }
        Err(oneshot::Canceled) => event(
            "error",
            &StreamErrorEvent {
                message: "The reply was interrupted.".to_owned(),
                code: "interrupted".to_owned(),
            },
        ),
    }
}

/// Starts the reply as a background generation and relays it to the client. The generation does
/// not depend on the response: if the client goes away, it still runs to its end and is stored.
pub(crate) fn stream_reply(generations: &Generations, pending: PendingReply) -> HttpResponse {
    let (deltas, delta_events) = mpsc::channel::<ReplyEvent>(DELTA_BUFFER);
    let (outcome_sender, outcome) = oneshot::channel();
    generations.spawn(async move {
        let result = pending.complete(deltas).await;
        if let Err(error) = &result {
            tracing::warn!(%error, "streamed reply failed");
        }
        let _ = outcome_sender.send(result);
    });
    let body = delta_events
        .map(|ReplyEvent::Delta(text)| event("delta", &DeltaEvent { text }))
        .chain(stream::once(outcome).map(finished))
        .map(Ok::<Bytes, actix_web::Error>);
    HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, "text/event-stream"))
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .insert_header(("X-Accel-Buffering", "no"))
        .streaming(body)
}
