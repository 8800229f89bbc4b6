//! Metrics through the `metrics` facade; the server installs whichever exporter it likes.

use std::time::Instant;

use domain::AssistantError;

pub(crate) const REQUEST_DURATION: &str = "assistant_request_duration_seconds";
pub(crate) const TIME_TO_FIRST_TOKEN: &str = "assistant_time_to_first_token_seconds";
pub(crate) const STREAM_CHARS_PER_SECOND: &str = "assistant_stream_chars_per_second";
pub(crate) const RETRIES: &str = "assistant_retries_total";

/// Registers descriptions and units of this adapter's metrics with the installed recorder.
/// Optional: the metrics are emitted either way. Call once after installing the exporter.
pub fn describe_metrics() {
    use metrics::{describe_counter, describe_histogram, Unit};
    describe_histogram!(
        REQUEST_DURATION,
        Unit::Seconds,
        "Duration of assistant calls, from admission to the end of the reply, by model and outcome"
    );
    describe_histogram!(
        TIME_TO_FIRST_TOKEN,
        Unit::Seconds,
        "Time from a streamed call's start to its first piece of text, by model"
    );
    describe_histogram!(
        STREAM_CHARS_PER_SECOND,
        "Characters per second of streamed replies after their first piece, by model"
    );
    describe_counter!(
        RETRIES,
        "Provider calls retried, by model and reason (rate_limited, request_timeout, server_error, timeout, connection)"
    );
}

pub(crate) fn retried(model: &str, reason: &'static str) {
    metrics::counter!(RETRIES, "model" => model.to_owned(), "reason" => reason).increment(1);
}

/// How an assistant call ended: the `outcome` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    Success,
    ProviderError,
    Timeout,
    Overloaded,
    Error,
    /// The caller went away before the end (dropped the future or the stream).
    Cancelled,
}

impl Outcome {
    pub(crate) fn of<T>(result: &Result<T, AssistantError>) -> Self {
        match result {
            Ok(_) => Outcome::Success,
            Err(error) => Outcome::of_error(error),
        }
    }

    pub(crate) fn of_error(error: &AssistantError) -> Self {
        match error {
            AssistantError::Provider(_) => Outcome::ProviderError,
            AssistantError::Timeout => Outcome::Timeout,
            AssistantError::Overloaded => Outcome::Overloaded,
            AssistantError::Unknown(_) => Outcome::Error,
        }
    }

    fn label(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::ProviderError => "provider_error",
            Outcome::Timeout => "timeout",
            Outcome::Overloaded => "overloaded",
            Outcome::Error => "error",
            Outcome::Cancelled => "cancelled",
        }
    }
}

/// Measures one call; records `cancelled` if dropped before [`CallRecorder::finish`].
pub(crate) struct CallRecorder {
    model: String,
    started: Instant,
    first_piece: Option<Instant>,
    chars: usize,
    finished: bool,
}

impl CallRecorder {
    pub(crate) fn start(model: &str) -> Self {
        Self {
            model: model.to_owned(),
            started: Instant::now(),
            first_piece: None,
            chars: 0,
            finished: false,
        }
    }

    pub(crate) fn first_piece(&mut self) {
        let now = Instant::now();
        self.first_piece = Some(now);
        metrics::histogram!(TIME_TO_FIRST_TOKEN, "model" => self.model.clone())
            .record(now.duration_since(self.started).as_secs_f64());
    }

    pub(crate) fn add_chars(&mut self, chars: usize) {
        self.chars += chars;
    }

    pub(crate) fn chars(&self) -> usize {
        self.chars
    }

    pub(crate) fn finish(&mut self, outcome: Outcome) {
        if self.finished {
            return;
        }
        self.finished = true;
        metrics::histogram!(
            REQUEST_DURATION,
            "model" => self.model.clone(),
            "outcome" => outcome.label()
        )
        .record(self.started.elapsed().as_secs_f64());
        if let (Outcome::Success, Some(first)) = (outcome, self.first_piece) {
            let seconds = first.elapsed().as_secs_f64();
            if seconds > 0.0 {
                metrics::histogram!(STREAM_CHARS_PER_SECOND, "model" => self.model.clone())
                    .record(self.chars as f64 / seconds);
            }
        }
    }
}

impl Drop for CallRecorder {
    fn drop(&mut self) {
        self.finish(Outcome::Cancelled);
    }
}
