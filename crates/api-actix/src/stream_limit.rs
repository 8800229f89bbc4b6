//! Open Server-Sent Event streams per client. A request that will be answered with an event
//! stream takes a slot before its handler runs (so no generation starts when the client is over
//! its limit); the slot is held by the response body and, for a new reply, by its generation too,
//! and given back once both are done. A client that hangs up does not get it back while its reply
//! still runs: otherwise hanging up at once would start any number of replies.
//!
//! The server learns that a client went away (a tab reloaded or closed) only when a write to it
//! fails, and while a model thinks nothing is written for seconds: a client at its limit would be
//! refused for its own dead streams. So before refusing, its open streams are asked to write a
//! comment twice, a moment apart; the second write to a closed connection fails and frees its slot.

use std::collections::HashMap;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use actix_web::body::{BodySize, BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header;
use actix_web::middleware::Next;
use actix_web::{web, Error, HttpMessage, HttpRequest};
use bytes::Bytes;
use futures::task::AtomicWaker;

use crate::client_ip::client_key;
use crate::rate_limit::too_many;
use crate::state::AppState;

/// Open streams by client; an entry exists only while its client has a stream open, so
/// the map is never larger than the number of open connections.
#[derive(Debug)]
pub(crate) struct StreamSlots {
    max_per_client: usize,
    open: Mutex<HashMap<IpAddr, ClientStreams>>,
}

#[derive(Debug, Default)]
struct ClientStreams {
    slots: usize,
    /// The response bodies among them, which can be asked to write.
    bodies: Vec<Weak<WriteRequest>>,
}

/// A response body's flag: write a comment at the next chance.
#[derive(Debug, Default)]
struct WriteRequest {
    asked: AtomicBool,
    waker: AtomicWaker,
}

/// What a probed stream writes; SSE clients skip comments.
const PROBE_COMMENT: &[u8] = b": are you there\n\n";

/// Between the two writes of a probe: the closed connection's reset must have come back by the
/// second (well under a millisecond on a LAN, a round trip across the internet).
const PROBE_PAUSE: Duration = Duration::from_millis(100);

/// One open stream of one client; dropping it frees the slot.
#[derive(Debug)]
pub(crate) struct StreamSlot {
    slots: Arc<StreamSlots>,
    client: IpAddr,
}

/// The slot a request took, in its extensions, for whatever its handler starts that outlives
/// the response (a reply's generation) to hold as well.
#[derive(Debug, Clone)]
pub(crate) struct HeldStreamSlot {
    _slot: Arc<StreamSlot>,
}

impl HeldStreamSlot {
    /// The slot `request` holds, if the stream limit gave it one.
    pub(crate) fn of(request: &HttpRequest) -> Option<Self> {
        request.extensions().get::<Self>().cloned()
    }
}

impl StreamSlots {
    /// `max_per_client` of 0 means no limit.
    pub(crate) fn new(max_per_client: usize) -> Self {
        Self {
            max_per_client,
            open: Mutex::default(),
        }
    }

    /// A slot for `client`, or `None` when it has `max_per_client` streams open already.
    pub(crate) fn try_acquire(self: &Arc<Self>, client: IpAddr) -> Option<StreamSlot> {
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        let streams = open.entry(client).or_default();
        if streams.slots >= self.max_per_client {
            return None;
        }
        streams.slots += 1;
        metrics::gauge!("http_streams_open").increment(1.0);
        Some(StreamSlot {
            slots: Arc::clone(self),
            client,
        })
    }

    /// [`Self::try_acquire`], after the client's open streams have each written twice, so that
    /// those whose connection is closed have given their slots back.
    async fn acquire_after_probing(self: &Arc<Self>, client: IpAddr) -> Option<StreamSlot> {
        for _ in 0..2 {
            self.ask_bodies_to_write(client);
            tokio::time::sleep(PROBE_PAUSE).await;
        }
        self.try_acquire(client)
    }

    fn ask_bodies_to_write(&self, client: IpAddr) {
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(streams) = open.get_mut(&client) else {
            return;
        };
        streams.bodies.retain(|body| match body.upgrade() {
            Some(body) => {
                body.asked.store(true, Ordering::Release);
                body.waker.wake();
                true
            }
            None => false,
        });
    }

    /// The flag by which the body of `slot`'s stream is asked to write.
    fn write_request(&self, slot: &StreamSlot) -> Arc<WriteRequest> {
        let request = Arc::new(WriteRequest::default());
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(streams) = open.get_mut(&slot.client) {
            streams.bodies.retain(|body| body.strong_count() > 0);
            streams.bodies.push(Arc::downgrade(&request));
        }
        request
    }

    #[cfg(test)]
    fn open_for(&self, client: IpAddr) -> usize {
        self.open
            .lock()
            .unwrap()
            .get(&client)
            .map_or(0, |streams| streams.slots)
    }
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        let mut open = self
            .slots
            .open
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(streams) = open.get_mut(&self.client) {
            streams.slots -= 1;
            if streams.slots == 0 {
                open.remove(&self.client);
            }
        }
        metrics::gauge!("http_streams_open").decrement(1.0);
    }
}

/// A response body that holds its client's stream slot until it is dropped, and writes a
/// comment between its events when asked to (when comments may be sent).
struct SlotBody {
    body: BoxBody,
    write_request: Option<Arc<WriteRequest>>,
    _slot: HeldStreamSlot,
}

impl MessageBody for SlotBody {
    type Error = Box<dyn std::error::Error>;

    fn size(&self) -> BodySize {
        self.body.size()
    }

    fn poll_next(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Bytes, Self::Error>>> {
        let this = self.get_mut();
        if let Some(request) = &this.write_request {
            request.waker.register(cx.waker());
            // Each item of the stream is a whole event, so a comment here falls between two.
            if request.asked.swap(false, Ordering::AcqRel) {
                return Poll::Ready(Some(Ok(Bytes::from_static(PROBE_COMMENT))));
            }
        }
        Pin::new(&mut this.body).poll_next(cx)
    }
}

fn is_event_stream(response: &ServiceResponse<impl MessageBody>) -> bool {
    response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.starts_with("text/event-stream"))
}

/// Route middleware of a route that answers with an event stream whatever it is asked for
/// (resuming a reply): `429 too_many_streams` when the client has as many open as it may.
pub(crate) async fn limit_streams(
    request: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, Error> {
    limit(request, next, true).await
}

/// Route middleware of a route that streams only when asked with `Accept: text/event-stream`
/// (sending a message); only such requests count.
pub(crate) async fn limit_streams_when_asked(
    request: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, Error> {
    let asked = crate::sse::accepts_event_stream(request.headers());
    limit(request, next, asked).await
}

async fn limit(
    request: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
    streams: bool,
) -> Result<ServiceResponse<BoxBody>, Error> {
    let wanted = request
        .app_data::<web::Data<AppState>>()
        .filter(|state| streams && state.limits.streams.max_per_client > 0)
        .and_then(|state| {
            let client = client_key(&request, &state.settings.trusted_proxies)?;
            // Comments are written only to clients that take them (as keep-alives).
            let probe = state.settings.stream_keep_alive.is_some();
            Some((Arc::clone(&state.limits.streams), client, probe))
        });
    let Some((slots, client, probe)) = wanted else {
        return next
            .call(request)
            .await
            .map(ServiceResponse::map_into_boxed_body);
    };
    let slot = match slots.try_acquire(client) {
        None if probe => slots.acquire_after_probing(client).await,
        acquired => acquired,
    };
    let Some(slot) = slot else {
        metrics::counter!("http_streams_rejected_total").increment(1);
        let response = too_many(
            &request,
            "too_many_streams",
            "Too many replies are streaming to this client; wait for one to finish.",
            Duration::from_secs(1),
        );
        return Ok(request.into_response(response));
    };
    let write_request = probe.then(|| slots.write_request(&slot));
    let slot = HeldStreamSlot {
        _slot: Arc::new(slot),
    };
    request.extensions_mut().insert(slot.clone());
    let response = next.call(request).await?;
    if !is_event_stream(&response) {
        // An error answer (404, 400, ...): nothing stays open.
        return Ok(response.map_into_boxed_body());
    }
    Ok(response.map_body(|_, body| {
        BoxBody::new(SlotBody {
            body: body.boxed(),
            write_request,
            _slot: slot,
        })
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_counted_per_client_and_freed_on_drop() {
        let slots = Arc::new(StreamSlots::new(2));
        let client: IpAddr = "192.0.2.1".parse().unwrap();
        let first = slots.try_acquire(client).unwrap();
        let _second = slots.try_acquire(client).unwrap();
        assert!(slots.try_acquire(client).is_none());
        assert!(slots.try_acquire("192.0.2.2".parse().unwrap()).is_some());
        drop(first);
        assert_eq!(slots.open_for(client), 1);
        assert!(slots.try_acquire(client).is_some());
    }

    #[tokio::test]
    async fn a_body_asked_to_write_sends_a_comment_between_its_events() {
        use futures::{FutureExt, StreamExt};

        let slots = Arc::new(StreamSlots::new(1));
        let client: IpAddr = "192.0.2.1".parse().unwrap();
        let slot = slots.try_acquire(client).unwrap();
        let write_request = slots.write_request(&slot);
        let (events, received) = futures::channel::mpsc::unbounded::<Bytes>();
        let mut body = SlotBody {
            body: BoxBody::new(actix_web::body::BodyStream::new(
                received.map(Ok::<_, std::convert::Infallible>),
            )),
            write_request: Some(write_request),
            _slot: HeldStreamSlot {
                _slot: Arc::new(slot),
            },
        };
        let next = |body: &mut SlotBody| {
            futures::future::poll_fn(|cx| Pin::new(&mut *body).poll_next(cx)).now_or_never()
        };

        assert!(next(&mut body).is_none(), "nothing to write yet");
        events
            .unbounded_send(Bytes::from_static(b"event: delta\n\n"))
            .unwrap();
        slots.ask_bodies_to_write(client);
        let written: Vec<Bytes> = [next(&mut body), next(&mut body)]
            .into_iter()
            .map(|item| item.flatten().unwrap().unwrap())
            .collect();
        assert_eq!(written, [PROBE_COMMENT, b"event: delta\n\n"]);
        assert!(next(&mut body).is_none(), "one comment per request");

        drop(body);
        assert_eq!(slots.open_for(client), 0);
        slots.ask_bodies_to_write(client);
    }
}
