//! Server-Sent Events for replies in progress.
//!
//! Every streamed reply is a background generation whose events (`start`, `delta`..., then `done`
//! or `error`) go to the generation log; the response follows the log, and each event carries
//! `id: <generation>:<sequence>`, so a client that lost the connection resumes from the last id
//! it saw, on this replica or another.

use std::sync::Arc;
use std::time::Duration;

use actix_web::http::header;
use actix_web::HttpResponse;
use bytes::Bytes;
use domain::{
    ChatError, Exchange, GenerationEvents, GenerationId, GenerationLog, GenerationLogError,
    Interruption, PendingReply, ReplyEvent,
};
use futures::channel::mpsc;
use futures::{future, sink, stream, FutureExt, Sink, SinkExt, StreamExt};
use serde::Serialize;

use crate::dto::{DeltaEvent, ExchangeDto, StreamErrorEvent, StreamStartEvent};
use crate::errors::ApiError;
use crate::generations::{Generations, RunningReply};
use crate::state::AppState;
use crate::stream_limit::HeldStreamSlot;

/// Deltas buffered for a slow log (or, without a log, a slow client) before generation waits
/// for it.
const DELTA_BUFFER: usize = 64;
/// Without a log, how long a reply waits for a client that reads none of its buffered deltas
/// before it goes on without sending it more. The client still gets what was buffered and then
/// the whole reply in `done`; the reply is stored without waiting for the client to read.
const CLIENT_PATIENCE: Duration = Duration::from_secs(10);
/// How often a running reply asks the log whether another replica was asked to stop it.
const STOP_POLL_INTERVAL: Duration = Duration::from_millis(250);

/// The client asked for Server-Sent Events (`Accept: text/event-stream`, among others or alone),
/// and did not rule them out with `q=0` (RFC 9110: "not acceptable").
pub(crate) fn accepts_event_stream(headers: &header::HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|media| {
            let mut parts = media.split(';');
            let is_event_stream = parts
                .next()
                .is_some_and(|essence| essence.trim().eq_ignore_ascii_case("text/event-stream"));
            is_event_stream && !parts.any(is_zero_quality)
        })
}

fn is_zero_quality(parameter: &str) -> bool {
    parameter.split_once('=').is_some_and(|(name, value)| {
        name.trim().eq_ignore_ascii_case("q") && value.trim().parse::<f32>() == Ok(0.0)
    })
}

fn json(data: &impl Serialize) -> String {
    serde_json::to_string(data).expect("event data always serialises")
}

fn frame(id: Option<&str>, name: &str, data: &str) -> Bytes {
    let id = id.map(|id| format!("id: {id}\n")).unwrap_or_default();
    Bytes::from(format!("{id}event: {name}\ndata: {data}\n\n"))
}

fn error_data(message: &str, code: &str) -> String {
    json(&StreamErrorEvent {
        message: message.to_owned(),
        code: code.to_owned(),
    })
}

/// The `code` of an `error` event's data.
pub(crate) fn error_code(data: &str) -> Option<String> {
    serde_json::from_str::<StreamErrorEvent>(data)
        .ok()
        .map(|error| error.code)
}

fn final_event(outcome: Result<Exchange, ChatError>) -> (&'static str, String) {
    match outcome {
        Ok(exchange) => ("done", json(&ExchangeDto::from(exchange))),
        Err(error) => {
            // A user's stop, or their deleting the conversation, is no failure.
            match error {
                ChatError::Stopped => {
                    tracing::info!("streamed reply stopped before its first words")
                }
                ChatError::ConversationNotFound => {
                    tracing::info!("streamed reply ended: its conversation was deleted");
                }
                _ => tracing::warn!(%error, "streamed reply failed"),
            }
            let error = ApiError::from(error);
            ("error", error_data(error.message(), error.code()))
        }
    }
}

/// A comment line: SSE clients ignore it (the spec says so), but it is bytes on the wire.
const KEEP_ALIVE_COMMENT: &[u8] = b": keep-alive\n\n";

fn event_stream(
    body: impl futures::Stream<Item = Bytes> + 'static,
    keep_alive: Option<Duration>,
) -> HttpResponse {
    let mut response = HttpResponse::Ok();
    response
        // The charset the format always has, said: clients that are not browsers (Python's
        // requests) read text without one as ISO-8859-1 and garble every other character.
        .insert_header((header::CONTENT_TYPE, "text/event-stream; charset=utf-8"))
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .insert_header(("X-Accel-Buffering", "no"));
    match keep_alive {
        Some(silence) => {
            response.streaming(with_keep_alive(body, silence).map(Ok::<_, actix_web::Error>))
        }
        None => response.streaming(body.map(Ok::<_, actix_web::Error>)),
    }
}

/// `body`, with a comment sent after every `silence` without a frame: a proxy in between (nginx
/// closes a response silent for 60 s by default) keeps the stream of a slow model or of a paused
/// reply open, and a client that went away is noticed when the comment cannot be written, which
/// frees its stream slot.
fn with_keep_alive(
    body: impl futures::Stream<Item = Bytes> + 'static,
    silence: Duration,
) -> impl futures::Stream<Item = Bytes> + 'static {
    stream::unfold(Box::pin(body), move |mut body| async move {
        match tokio::time::timeout(silence, body.next()).await {
            Ok(Some(frame)) => Some((frame, body)),
            Ok(None) => None,
            Err(_) => Some((Bytes::from_static(KEEP_ALIVE_COMMENT), body)),
        }
    })
}

/// The events of a generation after `after`, as an SSE response.
pub(crate) fn follow_response(
    generation_id: GenerationId,
    events: GenerationEvents,
    keep_alive: Option<Duration>,
) -> HttpResponse {
    let body = events.scan(false, move |failed, event| {
        if *failed {
            return future::ready(None);
        }
        let frame = match event {
            Ok(event) => frame(
                Some(&format!("{generation_id}:{}", event.sequence)),
                &event.name,
                &event.data,
            ),
            Err(error) => {
                tracing::warn!(%error, "following a generation failed");
                *failed = true;
                frame(
                    None,
                    "error",
                    &error_data(
                        "The reply stream was interrupted; reconnect to resume it.",
                        "interrupted",
                    ),
                )
            }
        };
        future::ready(Some(frame))
    });
    event_stream(body, keep_alive)
}

/// Waits before each repeated attempt at logging an event.
const LOG_RETRY_DELAYS: [Duration; 2] = [Duration::from_millis(100), Duration::from_millis(400)];

/// How long a reply's final event is tried: as long as a Redis fail-over may take. The sender's
/// stream and every follower wait for that event, until the log takes the generation for
/// abandoned (the Redis log stops keeping it alive at the first try, so followers there end with
/// `interrupted` within about 15 s, and a resume finds the reply finished and its exchange
/// (stored, if it was, before this event) in the messages).
const FINAL_EVENT_PATIENCE: Duration = Duration::from_secs(60);

/// The wait between attempts at a final event once those of [`LOG_RETRY_DELAYS`] are used.
const FINAL_EVENT_LATER_DELAY: Duration = Duration::from_secs(2);

/// Appends one event to the log, trying again briefly when the log fails (a Redis fail-over):
/// an adapter keeps the event's sequence until it is written, so a repeated attempt leaves
/// neither a hole nor a double.
async fn append_retrying(
    log: &dyn GenerationLog,
    generation_id: GenerationId,
    name: &str,
    data: &str,
) -> Result<u64, GenerationLogError> {
    let mut delays = LOG_RETRY_DELAYS.iter();
    loop {
        match log.append(generation_id, name, data, false).await {
            Err(GenerationLogError::Unavailable(error)) => match delays.next() {
                Some(delay) => {
                    tracing::debug!(%error, "logging a reply event failed; trying again");
                    tokio::time::sleep(*delay).await;
                }
                None => return Err(GenerationLogError::Unavailable(error)),
            },
            appended => return appended,
        }
    }
}

/// Appends a reply's final event: tried as any event, then every [`FINAL_EVENT_LATER_DELAY`]
/// until [`FINAL_EVENT_PATIENCE`] has passed, attempts included. Once replies are cut short the
/// server is about to stop, so it is tried no longer than any other event.
async fn append_final(
    log: &dyn GenerationLog,
    generation_id: GenerationId,
    name: &str,
    data: &str,
    generations: &Generations,
) -> Result<u64, GenerationLogError> {
    let deadline = tokio::time::Instant::now() + FINAL_EVENT_PATIENCE;
    let mut brief_delays = LOG_RETRY_DELAYS.iter();
    loop {
        let attempt = log.append(generation_id, name, data, true);
        let error = match tokio::time::timeout_at(deadline, attempt).await {
            Ok(Err(GenerationLogError::Unavailable(error))) => error,
            Ok(appended) => return appended,
            Err(_) => {
                return Err(GenerationLogError::Unavailable(
                    "the log did not answer in time".to_owned(),
                ))
            }
        };
        let delay = match brief_delays.next() {
            Some(delay) => *delay,
            None if generations.is_cut() => return Err(GenerationLogError::Unavailable(error)),
            None => FINAL_EVENT_LATER_DELAY,
        };
        if tokio::time::Instant::now() + delay >= deadline {
            return Err(GenerationLogError::Unavailable(error));
        }
        tracing::debug!(%error, "logging the end of a reply failed; trying again");
        if generations.is_cut() {
            tokio::time::sleep(delay).await;
        } else {
            // A cut ends a long wait at once, for a last attempt.
            let wait = std::pin::pin!(tokio::time::sleep(delay));
            future::select(wait, std::pin::pin!(generations.cut_signal())).await;
        }
    }
}

/// How often, at most, deltas the log refused are tried again, as more of the reply comes.
const UNLOGGED_RETRY_INTERVAL: Duration = Duration::from_secs(2);

/// How long each of those attempts may take: while the log is out of reach, the reply must not
/// wait on it (64 pieces fit in the channel meanwhile).
const UNLOGGED_ATTEMPT_TIMEOUT: Duration = Duration::from_millis(500);

/// Deltas of a reply that the log refused: the refused event as it was (an attempt that did
/// write it, its answer lost, makes a repeat of the same event neither a hole nor a double), and
/// the reply's text after it.
struct Unlogged {
    refused_event: String,
    text_after: String,
    next_try: tokio::time::Instant,
}

impl Unlogged {
    fn new(refused_event: String) -> Self {
        Self {
            refused_event,
            text_after: String::new(),
            next_try: tokio::time::Instant::now() + UNLOGGED_RETRY_INTERVAL,
        }
    }

    /// Logs the refused event and then the text after it as one delta, each tried once and
    /// briefly: the reply is not held up while the log stays out. An attempt given up may still
    /// have written its event; the next one repeats that same event.
    async fn log(&mut self, log: &dyn GenerationLog, generation_id: GenerationId) -> bool {
        if !append_briefly(log, generation_id, &self.refused_event).await {
            return false;
        }
        if !self.text_after.is_empty() {
            self.refused_event = json(&DeltaEvent {
                text: std::mem::take(&mut self.text_after),
            });
            if !append_briefly(log, generation_id, &self.refused_event).await {
                return false;
            }
        }
        true
    }
}

/// One attempt at logging a delta, given up after [`UNLOGGED_ATTEMPT_TIMEOUT`]; true once it is
/// in the log.
async fn append_briefly(log: &dyn GenerationLog, generation_id: GenerationId, data: &str) -> bool {
    let attempt = log.append(generation_id, "delta", data, false);
    matches!(
        tokio::time::timeout(UNLOGGED_ATTEMPT_TIMEOUT, attempt).await,
        Ok(Ok(_))
    )
}

/// A generation begun in the log whose final event has not been tried. Dropped so (the reply
/// went on without the log after its `begin`, or its task panicked), it tries the final event
/// once, an `interrupted` error: left open, it would stay the conversation's reply in progress,
/// kept alive by this process, for the hour its log lives.
struct OpenGeneration {
    log: Arc<dyn GenerationLog>,
    id: GenerationId,
    ended: bool,
    /// Its model has answered: the reply runs in the background from then on.
    answered: bool,
}

impl OpenGeneration {
    fn new(log: Arc<dyn GenerationLog>, id: GenerationId) -> Self {
        Self {
            log,
            id,
            ended: false,
            answered: false,
        }
    }
}

impl Drop for OpenGeneration {
    fn drop(&mut self) {
        if self.ended {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let (log, id) = (Arc::clone(&self.log), self.id);
        // Dropped before its model answered, the send took the model's request with it.
        let message = if self.answered {
            "The reply went on without its log; it shows in the messages once stored."
        } else {
            "The message was dropped before the model answered; nothing was stored."
        };
        runtime.spawn(async move {
            let data = error_data(message, "interrupted");
            if let Err(error) = log.append(id, "error", &data, true).await {
                tracing::debug!(%error, "ending a generation left open failed");
            }
        });
    }
}

/// What ends a reply before its assistant is done: the server stopping, its conversation deleted
/// here, or its user, through this replica or (`log`, asked every [`STOP_POLL_INTERVAL`]) another
/// one.
pub(crate) fn interruption(
    generations: &Generations,
    running: &RunningReply,
    log: Option<Arc<dyn GenerationLog>>,
) -> impl std::future::Future<Output = Interruption> + Send + 'static {
    let cut = generations.cut_signal().map(|()| Interruption::CutShort);
    let (conversation_id, generation_id) = (running.conversation_id(), running.generation_id());
    let stopped_elsewhere = async move {
        let Some(log) = log else {
            return future::pending().await;
        };
        loop {
            tokio::time::sleep(STOP_POLL_INTERVAL).await;
            match log.stop_requested(conversation_id, generation_id).await {
                Ok(true) => return Interruption::Stopped,
                Ok(false) => {}
                Err(error) => tracing::debug!(%error, "cannot ask the log for a stop"),
            }
        }
    };
    let stopped = future::select(Box::pin(running.stop_signal()), Box::pin(stopped_elsewhere))
        .map(|either| either.factor_first().0);
    future::select(Box::pin(cut), Box::pin(stopped)).map(|either| either.factor_first().0)
}

/// Runs the reply to its end, logging every event; the last one is `done` or `error`. The
/// client's stream `slot` goes back before that event is logged, so a client that saw it may
/// start its next reply at once. The reply counts as `running` until that event is logged.
async fn run_logged(
    mut open: OpenGeneration,
    pending: PendingReply,
    generations: Generations,
    running: RunningReply,
    slot: Option<HeldStreamSlot>,
) {
    let (log, generation_id) = (Arc::clone(&open.log), open.id);
    let (deltas, mut delta_events) = mpsc::channel::<ReplyEvent>(DELTA_BUFFER);
    let relay = async {
        // Once a delta cannot be logged, the ones after it wait with it and are logged once the
        // log answers again: the logged deltas stay the reply's text without a piece missing.
        // `done` still carries all of it.
        let mut unlogged: Option<Unlogged> = None;
        while let Some(ReplyEvent::Delta(text)) = delta_events.next().await {
            let Some(waiting) = unlogged.as_mut() else {
                let data = json(&DeltaEvent { text });
                if let Err(error) =
                    append_retrying(log.as_ref(), generation_id, "delta", &data).await
                {
                    tracing::warn!(%error, "logging a delta failed; the reply's deltas wait until the log answers");
                    unlogged = Some(Unlogged::new(data));
                }
                continue;
            };
            waiting.text_after.push_str(&text);
            if tokio::time::Instant::now() < waiting.next_try {
                continue;
            }
            if waiting.log(log.as_ref(), generation_id).await {
                tracing::info!("the log answers again: the reply's deltas are logged");
                unlogged = None;
            } else {
                waiting.next_try = tokio::time::Instant::now() + UNLOGGED_RETRY_INTERVAL;
            }
        }
    };
    let interrupted = interruption(&generations, &running, Some(Arc::clone(&log)));
    let (outcome, ()) = future::join(pending.complete(deltas, interrupted), relay).await;
    drop(slot);
    let (name, data) = final_event(outcome);
    open.ended = true;
    if let Err(error) = append_final(log.as_ref(), generation_id, name, &data, &generations).await {
        tracing::warn!(%error, "logging the end of a reply failed");
    }
    drop(running);
}

/// The `start` event of a reply: its ids and its user's message.
pub(crate) fn start_event(running: &RunningReply, content: String) -> String {
    json(&StreamStartEvent {
        generation_id: running.generation_id().to_string(),
        conversation_id: running.conversation_id().to_string(),
        content,
    })
}

/// A reply's log, opened with its `start` event before its model is asked: from then on the
/// reply is in progress for its conversation, so that a reload, another tab or another replica
/// shows its message waiting for the model, and can stop it, before the model's first words.
pub(crate) struct LoggedStart {
    open: OpenGeneration,
    events: GenerationEvents,
}

/// Opens the reply's log with `start`; `None` when the log fails, and the reply goes on
/// without it. Followed before anything is logged: a generation that has logged nothing is not
/// in progress, so if the log fails here no other client is shown a reply in progress that
/// would never finish.
pub(crate) async fn log_start(
    log: &Arc<dyn GenerationLog>,
    running: &RunningReply,
    start: &str,
) -> Option<LoggedStart> {
    let (conversation_id, generation_id) = (running.conversation_id(), running.generation_id());
    let logged = async {
        log.begin(conversation_id, generation_id).await?;
        let open = OpenGeneration::new(Arc::clone(log), generation_id);
        let events = log.follow(generation_id, 0).await?;
        append_retrying(log.as_ref(), generation_id, "start", start).await?;
        Ok::<_, GenerationLogError>(LoggedStart { open, events })
    };
    match logged.await {
        Ok(logged) => Some(logged),
        Err(error) => {
            // Without a log the reply still streams; it just cannot be resumed.
            tracing::warn!(%error, "generation log unavailable; streaming without resume");
            None
        }
    }
}

impl LoggedStart {
    /// Ends the log of a reply that failed before its model's first words with the error its
    /// sender is answered with, in the background (a log slow to take it must not hold that
    /// answer), holding the reply `running` until the log has it: a stop answers once its
    /// followers can see the end.
    pub(crate) fn fail(
        mut self,
        error: &ApiError,
        generations: &Generations,
        running: RunningReply,
    ) {
        self.open.ended = true;
        let data = error_data(error.message(), error.code());
        let (log, generation_id) = (Arc::clone(&self.open.log), self.open.id);
        let ending = generations.clone();
        generations.spawn(async move {
            let ended = append_final(log.as_ref(), generation_id, "error", &data, &ending).await;
            if let Err(error) = ended {
                tracing::warn!(%error, "logging the end of a reply failed");
            }
            drop(running);
        });
    }
}

/// Runs the reply as a background generation and answers with its event stream: the log's
/// (`logged`, which holds its `start` already) or, without a log, one of its own. The
/// generation does not depend on the response: if the client goes away it still runs to its end
/// and is stored, and its log lets the client pick the stream up again. It holds the client's
/// stream `slot` (if the request took one) until it ends.
pub(crate) fn stream_reply(
    state: &AppState,
    start: &str,
    logged: Option<LoggedStart>,
    pending: PendingReply,
    running: RunningReply,
    slot: Option<HeldStreamSlot>,
) -> HttpResponse {
    match logged {
        Some(LoggedStart { mut open, events }) => {
            open.answered = true;
            let generation_id = open.id;
            let generations = state.generations.clone();
            state
                .generations
                .spawn(run_logged(open, pending, generations, running, slot));
            follow_response(generation_id, events, state.settings.stream_keep_alive)
        }
        None => stream_unlogged(state, start, pending, running, slot),
    }
}

/// `deltas`, refusing an event (so that the reply sends no more) once one has waited
/// [`CLIENT_PATIENCE`] for room: a client that is connected but reads nothing would otherwise
/// hold its reply, and the provider's answer, for as long as it stays. Once a send has failed the
/// sink takes nothing more, and `PendingReply::complete` offers nothing more after a failed send.
fn impatient(deltas: mpsc::Sender<ReplyEvent>) -> impl Sink<ReplyEvent> + Unpin {
    Box::pin(sink::unfold(deltas, |mut deltas, event| async move {
        match tokio::time::timeout(CLIENT_PATIENCE, deltas.send(event)).await {
            Ok(Ok(())) => Ok(deltas),
            Ok(Err(_)) | Err(_) => Err(()),
        }
    }))
}

fn stream_unlogged(
    state: &AppState,
    start: &str,
    pending: PendingReply,
    running: RunningReply,
    slot: Option<HeldStreamSlot>,
) -> HttpResponse {
    let (deltas, delta_events) = mpsc::channel::<ReplyEvent>(DELTA_BUFFER);
    let (outcome_sender, outcome) = futures::channel::oneshot::channel();
    let interrupted = interruption(&state.generations, &running, None);
    state.generations.spawn(async move {
        let result = pending.complete(impatient(deltas), interrupted).await;
        // Back before the client can see the end, so its next reply may start at once.
        drop(slot);
        let _ = outcome_sender.send(final_event(result));
        drop(running);
    });
    let start = frame(None, "start", start);
    let body = stream::once(future::ready(start))
        .chain(
            delta_events
                .map(|ReplyEvent::Delta(text)| frame(None, "delta", &json(&DeltaEvent { text }))),
        )
        .chain(stream::once(outcome).map(|outcome| match outcome {
            Ok((name, data)) => frame(None, name, &data),
            Err(_) => frame(
                None,
                "error",
                &error_data("The reply was interrupted.", "interrupted"),
            ),
        }));
    event_stream(body, state.settings.stream_keep_alive)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accepting(value: &str) -> header::HeaderMap {
        let mut headers = header::HeaderMap::new();
        headers.insert(
            header::ACCEPT,
            header::HeaderValue::from_str(value).unwrap(),
        );
        headers
    }

    #[test]
    fn event_streams_are_asked_for_anywhere_in_accept_unless_ruled_out_with_q_0() {
        for asked in [
            "text/event-stream",
            "application/json, Text/Event-Stream",
            "text/event-stream;q=0.5",
            "text/event-stream; charset=utf-8",
        ] {
            assert!(accepts_event_stream(&accepting(asked)), "{asked}");
        }
        for not_asked in [
            "application/json",
            "text/event-stream;q=0",
            "application/json, text/event-stream; q=0.000",
            "*/*",
        ] {
            assert!(!accepts_event_stream(&accepting(not_asked)), "{not_asked}");
        }
    }
}
