//! The exporter thread: collects finished spans into batches and POSTs them to the collector.
//! It owns its own single-threaded runtime, so exporting takes nothing from the threads that
//! serve requests, and a failing collector costs dropped spans, never a slower answer.

use std::error::Error as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::header::CONTENT_TYPE;
use tokio::sync::mpsc::Receiver;
use tokio::sync::oneshot;
use tokio::time::MissedTickBehavior;

use super::layer::ignore_spans_of_this_thread;
use super::wire::{self, KeyValue, Span};
use crate::settings::url_without_credentials;

/// Longest a finished span waits for a batch to fill.
const BATCH_INTERVAL: Duration = Duration::from_secs(1);

/// A failing collector is reported at most this often, with a count of what happened meanwhile.
const WARNING_INTERVAL: Duration = Duration::from_secs(60);

const SPANS_EXPORTED: &str = "otlp_spans_exported_total";
const SPANS_DROPPED: &str = "otlp_spans_dropped_total";
const EXPORT_FAILURES: &str = "otlp_export_failures_total";

/// Registers descriptions of the exporter's metrics with the installed recorder.
pub(crate) fn describe_metrics() {
    use metrics::describe_counter;
    describe_counter!(SPANS_EXPORTED, "Spans the OTLP collector accepted");
    describe_counter!(
        SPANS_DROPPED,
        "Spans not exported, by reason: queue_full (telemetry.queue_capacity reached) or export_failed (their batch failed)"
    );
    describe_counter!(
        EXPORT_FAILURES,
        "OTLP export requests that failed: collector unreachable, too slow or answering an error"
    );
}

#[derive(Debug, thiserror::Error)]
enum ExportError {
    #[error("cannot encode the spans: {0}")]
    Encode(#[from] serde_json::Error),
    #[error("{}", with_causes(.0))]
    Send(reqwest::Error),
    #[error("the collector answered {status}: {body}")]
    Rejected {
        status: reqwest::StatusCode,
        body: String,
    },
}

impl From<reqwest::Error> for ExportError {
    /// Without the URL, which may carry the collector's credentials (`http://user:token@...`).
    fn from(error: reqwest::Error) -> Self {
        Self::Send(error.without_url())
    }
}

/// reqwest puts the useful part ("connection refused") in the source chain.
fn with_causes(error: &reqwest::Error) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(error) = cause {
        text.push_str(": ");
        text.push_str(&error.to_string());
        cause = error.source();
    }
    text
}

/// Lets a repeated warning through at most once per [`WARNING_INTERVAL`], with how many times
/// its cause occurred since the last one.
#[derive(Debug, Default)]
struct Throttle {
    last_warned: Option<Instant>,
    unreported: u64,
}

impl Throttle {
    fn occurred(&mut self, times: u64) -> Option<u64> {
        self.unreported += times;
        let due = self
            .last_warned
            .is_none_or(|at| at.elapsed() >= WARNING_INTERVAL);
        due.then(|| {
            self.last_warned = Some(Instant::now());
            std::mem::take(&mut self.unreported)
        })
    }
}

pub(crate) struct Exporter {
    url: String,
    /// `url` without credentials, for the log.
    shown_url: String,
    client: reqwest::Client,
    resource: Vec<KeyValue>,
    batch_size: usize,
    finished: Receiver<Span>,
    /// Spans the layer could not queue, not yet counted in the metric.
    dropped: Arc<AtomicU64>,
    failures: Throttle,
    drops: Throttle,
    failing: bool,
}

impl std::fmt::Debug for Exporter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Exporter")
            .field("url", &self.shown_url)
            .finish_non_exhaustive()
    }
}

impl Exporter {
    pub(crate) fn new(
        url: String,
        client: reqwest::Client,
        resource: Vec<KeyValue>,
        batch_size: usize,
        finished: Receiver<Span>,
        dropped: Arc<AtomicU64>,
    ) -> Self {
        Self {
            shown_url: url_without_credentials(&url),
            url,
            client,
            resource,
            batch_size,
            finished,
            dropped,
            failures: Throttle::default(),
            drops: Throttle::default(),
            failing: false,
        }
    }

    /// The thread's body: exports until `stop` fires (or its sender is dropped), then sends what
    /// is queued and returns.
    pub(crate) fn run(mut self, runtime: tokio::runtime::Runtime, stop: oneshot::Receiver<()>) {
        ignore_spans_of_this_thread();
        runtime.block_on(async move {
            let mut batch = Vec::with_capacity(self.batch_size);
            self.export_until(stop, &mut batch).await;
            self.flush(&mut batch).await;
        });
    }

    async fn export_until(&mut self, mut stop: oneshot::Receiver<()>, batch: &mut Vec<Span>) {
        let mut ticks = tokio::time::interval(BATCH_INTERVAL);
        ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                // A full batch waits for the tick while the collector fails: one attempt a second
                // then, and the spans beyond a batch are dropped at the queue, unencoded.
                received = self.finished.recv_many(batch, self.batch_size - batch.len()),
                    if batch.len() < self.batch_size =>
                {
                    if received == 0 {
                        return;
                    }
                    if batch.len() == self.batch_size && !self.failing {
                        self.export(batch).await;
                    }
                }
                _ = ticks.tick() => {
                    self.report_drops();
                    if !batch.is_empty() {
                        self.export(batch).await;
                    }
                }
                _ = &mut stop => return,
            }
        }
    }

    /// Sends every span queued by now; spans finishing later are not waited for.
    async fn flush(&mut self, batch: &mut Vec<Span>) {
        self.finished.close();
        while self
            .finished
            .recv_many(batch, self.batch_size - batch.len())
            .await
            > 0
        {
            if batch.len() == self.batch_size {
                self.export(batch).await;
            }
        }
        if !batch.is_empty() {
            self.export(batch).await;
        }
        self.report_drops();
    }

    /// Sends the batch and empties it; a failed batch is counted and dropped, never retried, so
    /// a struggling collector gets no more load than a healthy one, and a failing one at most a
    /// request a second.
    async fn export(&mut self, batch: &mut Vec<Span>) {
        let spans = batch.len() as u64;
        let result = self.send(batch).await;
        batch.clear();
        match result {
            Ok(()) => {
                metrics::counter!(SPANS_EXPORTED).increment(spans);
                if std::mem::take(&mut self.failing) {
                    tracing::info!(url = %self.shown_url, "trace export works again");
                }
            }
            Err(error) => {
                self.failing = true;
                metrics::counter!(EXPORT_FAILURES).increment(1);
                metrics::counter!(SPANS_DROPPED, "reason" => "export_failed").increment(spans);
                if let Some(failures) = self.failures.occurred(1) {
                    tracing::warn!(
                        url = %self.shown_url,
                        %error,
                        failures,
                        "trace export failed; its spans are dropped (warned at most once a minute)"
                    );
                }
            }
        }
    }

    async fn send(&self, batch: &[Span]) -> Result<(), ExportError> {
        let body = wire::export_request(&self.resource, batch)?;
        let response = self
            .client
            .post(&self.url)
            .header(CONTENT_TYPE, "application/json")
            .body(body)
            .send()
            .await?;
        let status = response.status();
        // Read to the end either way, so the connection can be reused.
        let answer = response.bytes().await?;
        if status.is_success() {
            return Ok(());
        }
        let answer = String::from_utf8_lossy(&answer);
        Err(ExportError::Rejected {
            status,
            body: answer.chars().take(200).collect(),
        })
    }

    fn report_drops(&mut self) {
        let dropped = self.dropped.swap(0, Ordering::Relaxed);
        if dropped == 0 {
            return;
        }
        metrics::counter!(SPANS_DROPPED, "reason" => "queue_full").increment(dropped);
        if let Some(dropped) = self.drops.occurred(dropped) {
            tracing::warn!(
                dropped,
                "the trace export queue is full (telemetry.queue_capacity); spans are dropped"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_repeated_warning_is_let_through_once_per_interval_with_its_count() {
        let mut throttle = Throttle::default();
        assert_eq!(throttle.occurred(1), Some(1), "the first one is reported");
        assert_eq!(throttle.occurred(2), None);
        assert_eq!(throttle.occurred(3), None);
        throttle.last_warned = Some(Instant::now() - WARNING_INTERVAL);
        assert_eq!(throttle.occurred(1), Some(6), "with what was held back");
    }

    #[tokio::test]
    async fn the_collector_credentials_are_never_in_what_is_logged() {
        let url = "http://chat:s3cret-token@127.0.0.1:9/v1/traces";
        assert_eq!(url_without_credentials(url), "http://127.0.0.1:9/v1/traces");
        let refused = reqwest::Client::new().post(url).send().await.unwrap_err();
        let logged = ExportError::from(refused).to_string();
        assert!(!logged.contains("s3cret"), "{logged}");
        assert!(!logged.is_empty());
    }
}
