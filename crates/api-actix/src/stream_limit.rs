//! Open Server-Sent Event streams per client. A request that will be answered with an event
//! stream takes a slot before its handler runs (so no generation starts when the client is over
//! its limit); the slot is held by the response body and, for a new reply, by its generation too,
//! and given back once both are done. A client that hangs up does not get it back while its reply
//! still runs: otherwise hanging up at once would start any number of replies.

use std::collections::HashMap;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use actix_web::body::{BodySize, BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header;
use actix_web::middleware::Next;
use actix_web::{web, Error, HttpMessage, HttpRequest};
use bytes::Bytes;

use crate::client_ip::client_key;
use crate::rate_limit::too_many;
use crate::state::AppState;

/// Open streams by client; an entry exists only while its client has a stream open, so
/// the map is never larger than the number of open connections.
#[derive(Debug)]
pub(crate) struct StreamSlots {
    max_per_client: usize,
    open: Mutex<HashMap<IpAddr, usize>>,
}

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
        let count = open.entry(client).or_insert(0);
        if *count >= self.max_per_client {
            return None;
        }
        *count += 1;
        metrics::gauge!("http_streams_open").increment(1.0);
        Some(StreamSlot {
            slots: Arc::clone(self),
            client,
        })
    }

    #[cfg(test)]
    fn open_for(&self, client: IpAddr) -> usize {
        self.open.lock().unwrap().get(&client).copied().unwrap_or(0)
    }
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        let mut open = self
            .slots
            .open
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(count) = open.get_mut(&self.client) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.client);
            }
        }
        metrics::gauge!("http_streams_open").decrement(1.0);
    }
}

/// A response body that holds its client's stream slot until it is dropped.
struct SlotBody {
    body: BoxBody,
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
        Pin::new(&mut self.get_mut().body).poll_next(cx)
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
            Some((Arc::clone(&state.limits.streams), client))
        });
    let Some((slots, client)) = wanted else {
        return next
            .call(request)
            .await
            .map(ServiceResponse::map_into_boxed_body);
    };
    let Some(slot) = slots.try_acquire(client) else {
        metrics::counter!("http_streams_rejected_total").increment(1);
        let response = too_many(
            &request,
            "too_many_streams",
            "Too many replies are streaming to this client; wait for one to finish.",
            Duration::from_secs(1),
        );
        return Ok(request.into_response(response));
    };
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
}
