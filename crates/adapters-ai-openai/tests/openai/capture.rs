//! Captures what the adapter emits: metrics through a process-wide recorder (tests tell their
//! samples apart by a model name of their own) and logs through a per-test subscriber.

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};

use metrics::{
    Counter, CounterFn, Gauge, Histogram, HistogramFn, Key, KeyName, Metadata, Recorder,
    SharedString, Unit,
};

#[derive(Debug, Clone)]
pub struct Sample {
    pub name: String,
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

impl Sample {
    pub fn label(&self, name: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }
}

#[derive(Default)]
struct Samples(Mutex<Vec<Sample>>);

struct Handle {
    key: Key,
    samples: Arc<Samples>,
}

impl Handle {
    fn push(&self, value: f64) {
        let labels = self
            .key
            .labels()
            .map(|label| (label.key().to_owned(), label.value().to_owned()))
            .collect();
        self.samples.0.lock().unwrap().push(Sample {
            name: self.key.name().to_owned(),
            labels,
            value,
        });
    }
}

impl CounterFn for Handle {
    fn increment(&self, value: u64) {
        self.push(value as f64);
    }

    fn absolute(&self, value: u64) {
        self.push(value as f64);
    }
}

impl HistogramFn for Handle {
    fn record(&self, value: f64) {
        self.push(value);
    }
}

struct CaptureRecorder(Arc<Samples>);

impl Recorder for CaptureRecorder {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}

    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        Counter::from_arc(Arc::new(Handle {
            key: key.clone(),
            samples: Arc::clone(&self.0),
        }))
    }

    fn register_gauge(&self, _: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::noop()
    }

    fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
        Histogram::from_arc(Arc::new(Handle {
            key: key.clone(),
            samples: Arc::clone(&self.0),
        }))
    }
}

static SAMPLES: OnceLock<Arc<Samples>> = OnceLock::new();

/// Installs the recorder on first use.
pub fn install_metrics() {
    SAMPLES.get_or_init(|| {
        let samples = Arc::new(Samples::default());
        metrics::set_global_recorder(CaptureRecorder(Arc::clone(&samples)))
            .expect("no other recorder in this test binary");
        samples
    });
}

/// Every sample recorded so far for `model`.
pub fn samples_for(model: &str) -> Vec<Sample> {
    let samples = SAMPLES.get().expect("install_metrics first");
    let all = samples.0.lock().unwrap();
    all.iter()
        .filter(|sample| sample.label("model") == Some(model))
        .cloned()
        .collect()
}

/// A log sink for `tracing_subscriber::fmt().with_writer(..)`.
#[derive(Clone, Default)]
pub struct LogBuffer(Arc<Mutex<Vec<u8>>>);

impl LogBuffer {
    pub fn contents(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

impl Write for LogBuffer {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogBuffer {
    type Writer = LogBuffer;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}
