//! Metrics through the `metrics` facade; the server installs whichever exporter it likes.

pub(crate) const HITS: &str = "assistant_cache_hits_total";
pub(crate) const MISSES: &str = "assistant_cache_misses_total";
pub(crate) const ERRORS: &str = "assistant_cache_errors_total";

/// Registers descriptions of this adapter's metrics with the installed recorder, and its
/// counters without labels at zero (an alert on their increase would miss the first one).
/// Optional: the metrics are emitted either way. Call once after installing the exporter.
pub fn describe_metrics() {
    use metrics::describe_counter;
    metrics::counter!(HITS).increment(0);
    metrics::counter!(MISSES).increment(0);
    describe_counter!(HITS, "Replies served from the reply cache");
    describe_counter!(
        MISSES,
        "Replies not found in the reply cache (including lookups that failed or timed out)"
    );
    describe_counter!(
        ERRORS,
        "Reply cache operations that failed or timed out, by operation (get, put)"
    );
}

pub(crate) fn hit() {
    metrics::counter!(HITS).increment(1);
}

pub(crate) fn miss() {
    metrics::counter!(MISSES).increment(1);
}

pub(crate) fn error(operation: &'static str) {
    metrics::counter!(ERRORS, "operation" => operation).increment(1);
}
