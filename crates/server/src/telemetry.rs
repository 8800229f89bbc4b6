//! Logs and metrics. Initialised once per process; in-process tests start several applications
//! and share them.

use std::sync::OnceLock;

use api_actix::MetricsRenderer;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tracing_subscriber::EnvFilter;

use crate::settings::{LogFormat, LogSettings};

/// Starts logging to stdout. Later calls (tests) keep the first subscriber.
pub fn init_logging(settings: &LogSettings) {
    let filter = EnvFilter::try_new(&settings.level).unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    let _ = match settings.format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .try_init(),
        LogFormat::Pretty => builder.compact().try_init(),
    };
}

static PROMETHEUS: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Latency buckets from a millisecond to a minute: fast routes and slow model replies alike.
const SECONDS_BUCKETS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0, 30.0, 60.0,
];

/// Installs the Prometheus recorder (once per process) and returns its renderer.
pub fn metrics_renderer() -> Option<MetricsRenderer> {
    let handle = PROMETHEUS.get_or_init(|| {
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".to_owned()), &SECONDS_BUCKETS)
            .and_then(|builder| builder.install_recorder());
        match recorder {
            Ok(handle) => Some(handle),
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
