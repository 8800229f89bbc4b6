//! The values code under test records to its histograms, for tests that must see what happened
//! inside a component (how many writes shared a batch, say) and not only what it returned.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use metrics::{
    Counter, Gauge, Histogram, HistogramFn, Key, KeyName, Metadata, Recorder, SharedString, Unit,
};

/// Every value recorded to any histogram during one test, by metric name.
#[derive(Debug, Default)]
struct RecordedHistograms(Mutex<HashMap<String, Vec<f64>>>);

/// The histograms of one test's components. Tests of one process take turns (a test binary's
/// threads share one global recorder, the only one components on threads of their own report
/// to): the next one starts recording when this one is dropped.
#[derive(Debug)]
pub struct Recording {
    _turn: tokio::sync::MutexGuard<'static, ()>,
}

impl Recording {
    /// The largest value recorded to `name` since this recording started, if any was.
    pub fn largest(&self, name: &str) -> Option<f64> {
        let values = recorded().0.lock().expect("recorded histograms");
        values.get(name)?.iter().copied().reduce(f64::max)
    }
}

/// Starts recording, once the tests of this process recording before have finished.
///
/// # Panics
/// If another global recorder was installed in this process.
pub async fn record() -> Recording {
    static TURN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    let turn = TURN.lock().await;
    recorded().0.lock().expect("recorded histograms").clear();
    Recording { _turn: turn }
}

fn recorded() -> &'static RecordedHistograms {
    static RECORDED: OnceLock<&'static RecordedHistograms> = OnceLock::new();
    RECORDED.get_or_init(|| {
        let recorded: &'static RecordedHistograms = Box::leak(Box::default());
        metrics::set_global_recorder(HistogramRecorder(recorded))
            .expect("no other metrics recorder in this test binary");
        recorded
    })
}

struct HistogramRecorder(&'static RecordedHistograms);

struct NamedHistogram {
    name: String,
    recorded: &'static RecordedHistograms,
}

impl HistogramFn for NamedHistogram {
    fn record(&self, value: f64) {
        let mut values = self.recorded.0.lock().expect("recorded histograms");
        values.entry(self.name.clone()).or_default().push(value);
    }
}

impl Recorder for HistogramRecorder {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}

    fn register_counter(&self, _: &Key, _: &Metadata<'_>) -> Counter {
        Counter::noop()
    }

    fn register_gauge(&self, _: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::noop()
    }

    fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
        Histogram::from_arc(Arc::new(NamedHistogram {
            name: key.name().to_owned(),
            recorded: self.0,
        }))
    }
}
