//! The `tracing` layer that turns spans into OTLP spans: ids, wall-clock times, fields as
//! attributes. Finished spans go to the exporter's bounded queue without waiting: the request path
//! never blocks on telemetry, and spans that do not fit are dropped and counted.

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use api_actix::TraceParent;
use rand::Rng;
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::mpsc::Sender;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::Subscriber;
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::Layer;

use super::wire::{AnyValue, KeyValue, Span, SpanKind, Status};

/// The field through which a span receives its caller's W3C trace context. A span that declares
/// it is where a request from outside enters this process.
const TRACEPARENT_FIELD: &str = "traceparent";

/// A numeric field of this name at 500 or above (an HTTP status) marks the span as failed.
const STATUS_FIELD: &str = "status";

thread_local! {
    /// Set on the exporter's threads: spans made while exporting (by the HTTP client, at debug
    /// levels) would otherwise be exported in turn, for ever.
    static EXPORTING: Cell<bool> = const { Cell::new(false) };
}

/// Makes the layer ignore spans created on the calling thread.
pub(crate) fn ignore_spans_of_this_thread() {
    EXPORTING.with(|exporting| exporting.set(true));
}

/// Which new traces are exported: the same decision for a trace id everywhere, as
/// OpenTelemetry's `TraceIdRatioBased` sampler makes it.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Sampler {
    Always,
    Never,
    /// Traces whose low 64 id bits are below this.
    Below(u64),
}

impl Sampler {
    pub(crate) fn with_ratio(ratio: f64) -> Self {
        if ratio >= 1.0 {
            Sampler::Always
        } else if ratio > 0.0 {
            // 2^64 × ratio, below u64::MAX for any ratio under 1.
            Sampler::Below((ratio * 18_446_744_073_709_551_616.0) as u64)
        } else {
            Sampler::Never
        }
    }

    fn samples(self, trace_id: u128) -> bool {
        match self {
            Sampler::Always => true,
            Sampler::Never => false,
            Sampler::Below(threshold) => (trace_id as u64) < threshold,
        }
    }
}

#[derive(Debug)]
pub(crate) struct OtlpLayer {
    finished: Sender<Span>,
    sampler: Sampler,
    /// Spans that found the queue full; the exporter reports them.
    dropped: Arc<AtomicU64>,
}

impl OtlpLayer {
    pub(crate) fn new(finished: Sender<Span>, sampler: Sampler, dropped: Arc<AtomicU64>) -> Self {
        Self {
            finished,
            sampler,
            dropped,
        }
    }
}

/// What the layer keeps in a span's extensions while it is open.
#[derive(Debug)]
enum SpanState {
    Recording(Recording),
    /// Its trace is not exported; its children inherit that.
    NotSampled,
}

#[derive(Debug)]
struct Recording {
    trace_id: u128,
    span_id: u64,
    parent_span_id: Option<u64>,
    kind: SpanKind,
    start_time_unix_nano: u64,
    attributes: Vec<KeyValue>,
}

impl<S> Layer<S> for OtlpLayer
where
    S: Subscriber + for<'lookup> LookupSpan<'lookup>,
{
    fn on_new_span(&self, attributes: &Attributes<'_>, id: &Id, context: Context<'_, S>) {
        if EXPORTING.with(Cell::get) {
            return;
        }
        let Some(span) = context.span(id) else {
            return;
        };
        let parent = span
            .parent()
            .map(|parent| match parent.extensions().get::<SpanState>() {
                Some(SpanState::Recording(recording)) => {
                    Some((recording.trace_id, recording.span_id))
                }
                _ => None,
            });
        let mut fields = Fields::default();
        let state = match parent {
            Some(None) => SpanState::NotSampled,
            Some(Some((trace_id, parent_span_id))) => {
                attributes.record(&mut fields);
                SpanState::Recording(Recording::start(
                    trace_id,
                    Some(parent_span_id),
                    attributes,
                    fields.attributes,
                ))
            }
            None => {
                attributes.record(&mut fields);
                let (trace_id, parent_span_id, sampled) = match fields.traceparent {
                    Some(caller) => (caller.trace_id, Some(caller.parent_id), caller.sampled),
                    None => {
                        let trace_id = nonzero(|| rand::rng().random::<u128>());
                        (trace_id, None, self.sampler.samples(trace_id))
                    }
                };
                if sampled {
                    SpanState::Recording(Recording::start(
                        trace_id,
                        parent_span_id,
                        attributes,
                        fields.attributes,
                    ))
                } else {
                    SpanState::NotSampled
                }
            }
        };
        span.extensions_mut().insert(state);
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, context: Context<'_, S>) {
        let Some(span) = context.span(id) else {
            return;
        };
        let mut extensions = span.extensions_mut();
        if let Some(SpanState::Recording(recording)) = extensions.get_mut() {
            let mut fields = Fields {
                attributes: std::mem::take(&mut recording.attributes),
                traceparent: None,
            };
            values.record(&mut fields);
            recording.attributes = fields.attributes;
        }
    }

    fn on_close(&self, id: Id, context: Context<'_, S>) {
        let Some(span) = context.span(&id) else {
            return;
        };
        let state = span.extensions_mut().remove::<SpanState>();
        let Some(SpanState::Recording(recording)) = state else {
            return;
        };
        match self.finished.try_send(recording.finish(span.name())) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
            // The exporter has shut down with the process; nothing exports any more.
            Err(TrySendError::Closed(_)) => {}
        }
    }
}

impl Recording {
    fn start(
        trace_id: u128,
        parent_span_id: Option<u64>,
        attributes: &Attributes<'_>,
        fields: Vec<KeyValue>,
    ) -> Self {
        let kind = if attributes
            .metadata()
            .fields()
            .field(TRACEPARENT_FIELD)
            .is_some()
        {
            SpanKind::Server
        } else {
            SpanKind::Internal
        };
        Self {
            trace_id,
            span_id: nonzero(|| rand::rng().random::<u64>()),
            parent_span_id,
            kind,
            start_time_unix_nano: now_unix_nano(),
            attributes: fields,
        }
    }

    fn finish(self, name: &'static str) -> Span {
        let failed = self.attributes.iter().any(|attribute| {
            attribute.key == STATUS_FIELD
                && matches!(attribute.value, AnyValue::Int(code) if code >= 500)
        });
        Span {
            trace_id: self.trace_id,
            span_id: self.span_id,
            parent_span_id: self.parent_span_id,
            name,
            kind: self.kind,
            start_time_unix_nano: self.start_time_unix_nano,
            end_time_unix_nano: now_unix_nano().max(self.start_time_unix_nano),
            attributes: self.attributes,
            status: if failed { Status::Error } else { Status::Unset },
        }
    }
}

/// All-zero ids are invalid in W3C and OTLP alike.
fn nonzero<T: Default + PartialEq>(mut random: impl FnMut() -> T) -> T {
    loop {
        let id = random();
        if id != T::default() {
            return id;
        }
    }
}

/// Wall-clock time, as tracing back ends want it; a clock before 1970 reads as 0.
fn now_unix_nano() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| {
            u64::try_from(since.as_nanos()).unwrap_or(u64::MAX)
        })
}

/// Collects span fields as attributes; the trace context field is read, not kept.
#[derive(Default)]
struct Fields {
    attributes: Vec<KeyValue>,
    traceparent: Option<TraceParent>,
}

impl Fields {
    fn put(&mut self, field: &Field, value: AnyValue) {
        let key = field.name();
        if key == TRACEPARENT_FIELD {
            if let AnyValue::String(header) = &value {
                self.traceparent = TraceParent::parse(header);
            }
            return;
        }
        match self.attributes.iter_mut().find(|kept| kept.key == key) {
            Some(kept) => kept.value = value,
            None => self.attributes.push(KeyValue { key, value }),
        }
    }
}

impl Visit for Fields {
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.put(field, AnyValue::Double(value));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put(field, AnyValue::Int(value));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        let value = i64::try_from(value)
            .map_or_else(|_| AnyValue::String(value.to_string()), AnyValue::Int);
        self.put(field, value);
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.put(field, AnyValue::Bool(value));
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field, AnyValue::String(value.to_owned()));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.put(field, AnyValue::String(format!("{value:?}")));
    }
}

#[cfg(test)]
mod tests {
    use tokio::sync::mpsc::{self, Receiver};
    use tracing_subscriber::layer::SubscriberExt;

    use super::*;

    const CALLER: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    /// Runs `work` with only this layer installed (on this thread) and returns what it exported.
    fn exported(ratio: f64, capacity: usize, work: impl FnOnce()) -> (Vec<Span>, u64) {
        let (sender, mut receiver): (_, Receiver<Span>) = mpsc::channel(capacity);
        let dropped = Arc::new(AtomicU64::new(0));
        let layer = OtlpLayer::new(sender, Sampler::with_ratio(ratio), Arc::clone(&dropped));
        tracing::subscriber::with_default(tracing_subscriber::registry().with(layer), work);
        let mut spans = Vec::new();
        while let Ok(span) = receiver.try_recv() {
            spans.push(span);
        }
        (spans, dropped.load(Ordering::Relaxed))
    }

    fn request(traceparent: Option<&str>) {
        let span = tracing::info_span!(
            "http_request",
            route = "/chat/message",
            status = tracing::field::Empty,
            traceparent,
        );
        span.in_scope(|| {
            tracing::info_span!("storage", rows = 2u64).in_scope(|| {});
        });
        span.record("status", 503u16);
    }

    fn attribute<'a>(span: &'a Span, key: &str) -> Option<&'a AnyValue> {
        span.attributes
            .iter()
            .find(|attribute| attribute.key == key)
            .map(|attribute| &attribute.value)
    }

    #[test]
    fn a_request_span_and_its_child_share_a_new_trace() {
        let (spans, _) = exported(1.0, 16, || request(None));
        let [child, request] = spans.as_slice() else {
            panic!("two spans, the child closing first: {spans:?}");
        };
        assert_eq!(request.name, "http_request");
        assert_eq!(request.kind, SpanKind::Server);
        assert_eq!(request.parent_span_id, None);
        assert_ne!(request.trace_id, 0);
        assert_eq!(
            attribute(request, "route"),
            Some(&AnyValue::String("/chat/message".to_owned()))
        );
        assert_eq!(attribute(request, "status"), Some(&AnyValue::Int(503)));
        assert_eq!(attribute(request, "traceparent"), None);
        assert_eq!(request.status, Status::Error);
        assert!(request.end_time_unix_nano >= request.start_time_unix_nano);

        assert_eq!(child.name, "storage");
        assert_eq!(child.kind, SpanKind::Internal);
        assert_eq!(child.trace_id, request.trace_id);
        assert_eq!(child.parent_span_id, Some(request.span_id));
        assert_ne!(child.span_id, request.span_id);
        assert_eq!(attribute(child, "rows"), Some(&AnyValue::Int(2)));
        assert_eq!(child.status, Status::Unset);
    }

    #[test]
    fn a_request_with_traceparent_continues_the_callers_trace() {
        let (spans, _) = exported(1.0, 16, || request(Some(CALLER)));
        assert_eq!(spans.len(), 2);
        for span in &spans {
            assert_eq!(span.trace_id, 0x4bf92f3577b34da6a3ce929d0e0e4736);
        }
        assert_eq!(spans[1].parent_span_id, Some(0x00f067aa0ba902b7));
    }

    #[test]
    fn ratio_zero_exports_nothing_unless_the_caller_sampled() {
        let (spans, _) = exported(0.0, 16, || {
            for _ in 0..50 {
                request(None);
            }
        });
        assert!(spans.is_empty(), "{spans:?}");
        let (spans, _) = exported(0.0, 16, || request(Some(CALLER)));
        assert_eq!(spans.len(), 2, "the caller's sampled flag wins");
        let (spans, _) = exported(1.0, 16, || request(Some(&CALLER.replace("-01", "-00"))));
        assert!(
            spans.is_empty(),
            "the caller's not-sampled flag wins: {spans:?}"
        );
    }

    #[test]
    fn a_ratio_samples_about_that_share_of_traces() {
        let (spans, _) = exported(0.25, 4096, || {
            for _ in 0..2000 {
                tracing::info_span!("root").in_scope(|| {});
            }
        });
        assert!((350..650).contains(&spans.len()), "{}", spans.len());
    }

    #[test]
    fn spans_that_do_not_fit_the_queue_are_dropped_and_counted() {
        let (spans, dropped) = exported(1.0, 3, || {
            for _ in 0..5 {
                tracing::info_span!("root").in_scope(|| {});
            }
        });
        assert_eq!((spans.len(), dropped), (3, 2));
    }
}
