//! Logs, traces and metrics. Initialised once per process; in-process tests start several
//! applications and share them.

mod otlp;

use std::sync::OnceLock;
use std::time::Duration;

use api_actix::MetricsRenderer;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

pub use otlp::TraceExport;

use crate::settings::{LogFormat, LogSettings, TelemetrySettings};

/// Starts logging to stdout and, when `telemetry.otlp_endpoint` is set, trace export of the spans
/// that pass the log filter. Later calls (tests) keep the first subscriber and export nothing.
pub fn init_tracing(
    log: &LogSettings,
    telemetry: &TelemetrySettings,
) -> anyhow::Result<Option<TraceExport>> {
    let filter = EnvFilter::try_new(&log.level).unwrap_or_else(|_| EnvFilter::new("info"));
    let output = match log.format {
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .boxed(),
        LogFormat::Pretty => tracing_subscriber::fmt::layer().compact().boxed(),
    };
    let (traces, export) = match telemetry.traces_url() {
        Some(url) => {
            let (layer, export) = otlp::start(url, telemetry)?;
            (Some(layer), Some(export))
        }
        None => (None, None),
    };
    let installed = tracing_subscriber::registry()
        .with(filter)
        .with(output)
        .with(traces)
        .try_init()
        .is_ok();
    Ok(export.filter(|_| installed))
}

static PROMETHEUS: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Latency buckets from a millisecond to a minute: fast routes and slow model replies alike.
const SECONDS_BUCKETS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0, 30.0, 60.0,
];

/// Writes per batch: one (a quiet server) up to four times the default `storage.max_batch`.
const BATCH_SIZE_BUCKETS: [f64; 11] = [
    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0,
];

/// Characters a second of a streamed reply: a slow local model up to a fast hosted one.
const CHARS_PER_SECOND_BUCKETS: [f64; 10] = [
    10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0,
];

/// How often recorded histogram samples are folded into their buckets.
const METRICS_UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

/// The recorder keeps every histogram sample until a scrape or an upkeep folds it into the
/// buckets; with no Prometheus scraping, that is about 24 bytes per request, forever (measured:
/// resident memory grew by 11 MiB per 400,000 POSTs). A thread runs the upkeep so memory stays
/// flat whether or not anything scrapes.
fn keep_histograms_drained(handle: PrometheusHandle) {
    let spawned = std::thread::Builder::new()
        .name("metrics-upkeep".to_owned())
        .spawn(move || loop {
            std::thread::sleep(METRICS_UPKEEP_INTERVAL);
            handle.run_upkeep();
        });
    if let Err(error) = spawned {
        tracing::warn!(%error, "cannot start the metrics upkeep thread; only scrapes drain histograms");
    }
}

/// Installs the Prometheus recorder (once per process) and returns its renderer.
pub fn metrics_renderer() -> Option<MetricsRenderer> {
    let handle = PROMETHEUS.get_or_init(|| {
        // Every histogram gets buckets, so that replicas' figures add up in Prometheus (a
        // summary's quantiles cannot be combined).
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".to_owned()), &SECONDS_BUCKETS)
            .and_then(|builder| {
                builder.set_buckets_for_metric(
                    Matcher::Suffix("_batch_size".to_owned()),
                    &BATCH_SIZE_BUCKETS,
                )
            })
            .and_then(|builder| {
                builder.set_buckets_for_metric(
                    Matcher::Suffix("_chars_per_second".to_owned()),
                    &CHARS_PER_SECOND_BUCKETS,
                )
            })
            .and_then(|builder| builder.install_recorder());
        match recorder {
            Ok(handle) => {
                otlp::describe_metrics();
                keep_histograms_drained(handle.clone());
                Some(handle)
            }
            Err(error) => {
                tracing::warn!(%error, "metrics are disabled");
                None
            }
        }
    });
    handle.clone().map(|handle| {
        let renderer: MetricsRenderer = std::sync::Arc::new(move || handle.render());
        renderer
    })
}
