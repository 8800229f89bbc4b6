//! OpenTelemetry trace export over OTLP/HTTP with JSON bodies, written here rather than taken
//! from the opentelemetry crates, which would bring a second HTTP client and protobuf code for
//! the little this needs. A [`layer::OtlpLayer`] records spans; a thread of its own batches and
//! sends them; [`TraceExport`] stops that thread.

mod exporter;
mod layer;
mod wire;

use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::sync::oneshot;

pub(crate) use exporter::describe_metrics;
pub(crate) use layer::OtlpLayer;

use crate::settings::TelemetrySettings;
use exporter::Exporter;
use layer::Sampler;

/// The running exporter. Dropping it stops export too, without waiting.
#[derive(Debug)]
pub struct TraceExport {
    stop: oneshot::Sender<()>,
    thread: JoinHandle<()>,
    flush_timeout: Duration,
}

impl TraceExport {
    /// Sends the spans queued by now and stops, waiting at most `telemetry.export_timeout_secs`.
    /// Call it when serving has stopped, so the last requests' spans are among them.
    pub fn shutdown(self) {
        // An exporter that has already ended has nothing left to send.
        let _ = self.stop.send(());
        let deadline = Instant::now() + self.flush_timeout;
        while !self.thread.is_finished() {
            if Instant::now() >= deadline {
                tracing::warn!(
                    "spans still queued for export are lost: the collector did not take them within telemetry.export_timeout_secs"
                );
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        // A panic there has been reported by the panic hook already.
        let _ = self.thread.join();
    }
}

/// Starts the exporter thread for `url` and returns the layer that feeds it.
pub(crate) fn start(
    url: String,
    settings: &TelemetrySettings,
) -> anyhow::Result<(OtlpLayer, TraceExport)> {
    let client = reqwest::Client::builder()
        .timeout(settings.export_timeout())
        .build()
        .context("cannot build the HTTP client for trace export")?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        // The HTTP client resolves names on blocking threads: their spans are not exported either.
        .on_thread_start(layer::ignore_spans_of_this_thread)
        .build()
        .context("cannot start the runtime for trace export")?;
    let (sender, receiver) = tokio::sync::mpsc::channel(settings.queue_capacity);
    let dropped = Arc::new(AtomicU64::new(0));
    let exporter = Exporter::new(
        url,
        client,
        wire::resource(&settings.service_name),
        settings.batch_size,
        receiver,
        Arc::clone(&dropped),
    );
    let (stop, stopped) = oneshot::channel();
    let thread = std::thread::Builder::new()
        .name("otlp-exporter".to_owned())
        .spawn(move || exporter.run(runtime, stopped))
        .context("cannot start the trace export thread")?;
    let layer = OtlpLayer::new(sender, Sampler::with_ratio(settings.sample_ratio), dropped);
    Ok((
        layer,
        TraceExport {
            stop,
            thread,
            flush_timeout: settings.export_timeout(),
        },
    ))
}
