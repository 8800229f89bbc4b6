//! Per-client rate limiting of the API: a token bucket per client (an IPv4 address or an IPv6
//! /64), refilled at `per_second` up to `burst`. A client over its rate gets `429` with
//! `Retry-After`. Only the API is limited: probes and scrapes keep working under load, and a
//! limited user reloading the page still gets the web client (whose API calls then say how long
//! to wait) rather than a JSON error.

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::BuildHasher;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::StatusCode;
use actix_web::middleware::Next;
use actix_web::{web, Error};

use crate::client_ip::client_key;
use crate::errors::{response_for_route, ApiError};
use crate::state::{ApiSettings, AppState};
use crate::stream_limit::StreamSlots;

/// Allowed request rate per client.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimit {
    /// Tokens added per second; above 0.
    pub per_second: f64,
    /// Bucket size: requests a client may make at once after being idle; at least 1.
    pub burst: u32,
}

/// The routes that are limited: the seed contract and the product API.
const LIMITED_PREFIXES: [&str; 2] = ["/chat/", "/api/"];

/// Whether requests to `path` count against the client's rate.
pub(crate) fn is_limited_path(path: &str) -> bool {
    LIMITED_PREFIXES
        .iter()
        .any(|prefix| path.starts_with(prefix))
}

/// Most clients remembered at once; past it idle (full) buckets are forgotten first, then the
/// least recently seen, so memory stays bounded whatever addresses arrive.
const MAX_CLIENTS: usize = 100_000;
const SHARDS: usize = 16;

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    updated: Instant,
}

/// Token buckets by client, in shards so workers rarely wait for each other.
#[derive(Debug)]
pub(crate) struct RateLimiter {
    limit: RateLimit,
    shards: Vec<Mutex<HashMap<IpAddr, Bucket>>>,
    hasher: RandomState,
    per_shard: usize,
}

impl RateLimiter {
    pub(crate) fn new(limit: RateLimit) -> Self {
        Self::with_capacity(limit, MAX_CLIENTS)
    }

    fn with_capacity(limit: RateLimit, clients: usize) -> Self {
        Self {
            limit,
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            hasher: RandomState::new(),
            per_shard: clients.div_ceil(SHARDS).max(1),
        }
    }

    fn refilled(&self, bucket: Bucket, now: Instant) -> f64 {
        let elapsed = now.saturating_duration_since(bucket.updated).as_secs_f64();
        (bucket.tokens + elapsed * self.limit.per_second).min(f64::from(self.limit.burst))
    }

    /// Takes one token for `client`; when none is left, how long until one is.
    pub(crate) fn check(&self, client: IpAddr, now: Instant) -> Result<(), Duration> {
        let shard = self.hasher.hash_one(client) as usize % SHARDS;
        let mut buckets = self.shards[shard]
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if !buckets.contains_key(&client) && buckets.len() >= self.per_shard {
            self.evict(&mut buckets, now);
        }
        let burst = f64::from(self.limit.burst);
        let bucket = buckets.entry(client).or_insert(Bucket {
            tokens: burst,
            updated: now,
        });
        let tokens = self.refilled(*bucket, now);
        if tokens >= 1.0 {
            *bucket = Bucket {
                tokens: tokens - 1.0,
                updated: now,
            };
            Ok(())
        } else {
            *bucket = Bucket {
                tokens,
                updated: now,
            };
            Err(Duration::from_secs_f64(
                (1.0 - tokens) / self.limit.per_second,
            ))
        }
    }

    /// Forgets clients whose bucket has refilled (forgetting them changes nothing); if every
    /// client is active, forgets the one seen longest ago.
    fn evict(&self, buckets: &mut HashMap<IpAddr, Bucket>, now: Instant) {
        let burst = f64::from(self.limit.burst);
        buckets.retain(|_, bucket| self.refilled(*bucket, now) < burst);
        if buckets.len() >= self.per_shard {
            let oldest = buckets
                .iter()
                .min_by_key(|(_, bucket)| bucket.updated)
                .map(|(client, _)| *client);
            if let Some(oldest) = oldest {
                buckets.remove(&oldest);
            }
        }
    }

    #[cfg(test)]
    fn remembered(&self) -> usize {
        self.shards
            .iter()
            .map(|shard| shard.lock().unwrap().len())
            .sum()
    }
}

/// Shared by every worker: the rate limiter (when configured) and open streams per client.
#[derive(Debug, Clone)]
pub struct ClientLimits {
    pub(crate) rate: Option<Arc<RateLimiter>>,
    pub(crate) streams: Arc<StreamSlots>,
}

impl ClientLimits {
    /// `rate` of `None` turns rate limiting off; `max_streams_per_client` of 0 turns the stream
    /// limit off.
    pub fn new(rate: Option<RateLimit>, max_streams_per_client: usize) -> Self {
        // Published from zero, not from the first refusal: an alert on their increase would
        // miss that first one.
        metrics::counter!("http_rate_limited_total").increment(0);
        metrics::counter!("http_streams_rejected_total").increment(0);
        Self {
            rate: rate.map(|limit| Arc::new(RateLimiter::new(limit))),
            streams: Arc::new(StreamSlots::new(max_streams_per_client)),
        }
    }
}

impl From<&ApiSettings> for ClientLimits {
    fn from(settings: &ApiSettings) -> Self {
        Self::new(settings.rate_limit, settings.max_streams_per_client)
    }
}

/// The path as the router matches it, percent-encoding decoded: the raw `path()` would let
/// `/%61pi/...` reach the API while looking like no API path at all.
fn routed_path(request: &ServiceRequest) -> &str {
    request.match_info().as_str()
}

/// A 429 in the shape of the route asked for.
pub(crate) fn too_many(
    request: &ServiceRequest,
    code: &'static str,
    message: &str,
    wait: Duration,
) -> actix_web::HttpResponse {
    let seconds = wait.as_secs_f64().ceil().max(1.0) as u64;
    let error =
        ApiError::new(StatusCode::TOO_MANY_REQUESTS, code, message).retry_after_secs(seconds);
    response_for_route(routed_path(request), error)
}

/// Middleware: answers 429 at once when the client is over its rate.
pub(crate) async fn limit_rate(
    request: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, Error> {
    let rejected = request.app_data::<web::Data<AppState>>().and_then(|state| {
        let limiter = state.limits.rate.as_ref()?;
        let path = routed_path(&request);
        if !is_limited_path(path) {
            return None;
        }
        let client = client_key(&request, &state.settings.trusted_proxies)?;
        limiter.check(client, Instant::now()).err()
    });
    if let Some(wait) = rejected {
        metrics::counter!("http_rate_limited_total").increment(1);
        let response = too_many(
            &request,
            "rate_limited",
            "Too many requests; slow down and try again shortly.",
            wait,
        );
        return Ok(request.into_response(response).map_into_right_body());
    }
    next.call(request)
        .await
        .map(ServiceResponse::map_into_left_body)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter(per_second: f64, burst: u32) -> RateLimiter {
        RateLimiter::new(RateLimit { per_second, burst })
    }

    #[test]
    fn a_burst_is_allowed_then_the_rate() {
        let limiter = limiter(2.0, 3);
        let client: IpAddr = "192.0.2.1".parse().unwrap();
        let start = Instant::now();
        for _ in 0..3 {
            assert!(limiter.check(client, start).is_ok());
        }
        let wait = limiter.check(client, start).unwrap_err();
        assert!((wait.as_secs_f64() - 0.5).abs() < 1e-6, "{wait:?}");
        let later = start + Duration::from_millis(500);
        assert!(limiter.check(client, later).is_ok());
        assert!(limiter.check(client, later).is_err());
        let other: IpAddr = "192.0.2.2".parse().unwrap();
        assert!(limiter.check(other, later).is_ok(), "clients are separate");
    }

    #[test]
    fn memory_stays_bounded_under_many_addresses() {
        let limiter = RateLimiter::with_capacity(
            RateLimit {
                per_second: 0.001,
                burst: 1,
            },
            160,
        );
        let now = Instant::now();
        for i in 0..10_000u32 {
            let client = IpAddr::from(i.to_be_bytes());
            let _ = limiter.check(client, now);
        }
        assert!(limiter.remembered() <= 160, "{}", limiter.remembered());
    }
}
