//! The `[telemetry]` settings. Trace export itself runs against the binary (tests/binary/otlp.rs):
//! in-process tests share one subscriber.

use crate::helpers::load_settings as load;

#[test]
fn export_is_off_by_default() {
    let settings = load(&[]).unwrap();
    assert_eq!(settings.telemetry.traces_url(), None);
}

#[test]
fn the_traces_path_is_appended_to_a_base_url_only() {
    for (endpoint, url) in [
        (
            "http://otel-collector:4318",
            "http://otel-collector:4318/v1/traces",
        ),
        (
            "http://otel-collector:4318/",
            "http://otel-collector:4318/v1/traces",
        ),
        (
            "https://otlp.example.com/v1/traces",
            "https://otlp.example.com/v1/traces",
        ),
        (
            "https://example.com/otlp",
            "https://example.com/otlp/v1/traces",
        ),
    ] {
        let settings = load(&[("CHAT__TELEMETRY__OTLP_ENDPOINT", endpoint)]).expect(endpoint);
        assert_eq!(
            settings.telemetry.traces_url().as_deref(),
            Some(url),
            "{endpoint}"
        );
    }
}

#[test]
fn bad_telemetry_settings_name_the_key() {
    for (key, value, named) in [
        (
            "CHAT__TELEMETRY__OTLP_ENDPOINT",
            "otel-collector:4318",
            "telemetry.otlp_endpoint",
        ),
        (
            "CHAT__TELEMETRY__OTLP_ENDPOINT",
            "grpc://otel-collector:4317",
            "telemetry.otlp_endpoint",
        ),
        (
            "CHAT__TELEMETRY__OTLP_ENDPOINT",
            "http://",
            "telemetry.otlp_endpoint",
        ),
        (
            "CHAT__TELEMETRY__OTLP_ENDPOINT",
            "http://collector:4318?x=1",
            "telemetry.otlp_endpoint",
        ),
        (
            "CHAT__TELEMETRY__SAMPLE_RATIO",
            "1.5",
            "telemetry.sample_ratio",
        ),
        (
            "CHAT__TELEMETRY__SAMPLE_RATIO",
            "-0.1",
            "telemetry.sample_ratio",
        ),
        (
            "CHAT__TELEMETRY__SAMPLE_RATIO",
            "NaN",
            "telemetry.sample_ratio",
        ),
        (
            "CHAT__TELEMETRY__SERVICE_NAME",
            " ",
            "telemetry.service_name",
        ),
        (
            "CHAT__TELEMETRY__EXPORT_TIMEOUT_SECS",
            "0",
            "telemetry.export_timeout_secs",
        ),
        ("CHAT__TELEMETRY__BATCH_SIZE", "0", "telemetry.batch_size"),
        (
            "CHAT__TELEMETRY__QUEUE_CAPACITY",
            "0",
            "telemetry.queue_capacity",
        ),
        (
            "CHAT__TELEMETRY__QUEUE_CAPACITY",
            "100",
            "telemetry.queue_capacity",
        ),
        (
            "CHAT__TELEMETRY__OTLP_ENDPOINT_URL",
            "http://collector:4318",
            "otlp_endpoint_url",
        ),
    ] {
        let error = load(&[(key, value)]).expect_err(key).to_string();
        assert!(error.contains(named), "{key}={value}: {error}");
    }
}
