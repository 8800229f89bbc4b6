//! Trace export over OTLP/HTTP JSON from the built binary, to a fake collector: the request span
//! continues a caller's W3C trace context, child spans share its trace, a collector that is down
//! costs nothing but counted failures, and SIGTERM sends what is still queued.

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use testkit::fake_openai::{FakeProvider, Reply};
use testkit::process::ServerProcess;

use super::outage::Logged;
use super::{deterministic, start};

const CALLER_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN: &str = "00f067aa0ba902b7";

/// A collector that accepts everything and keeps the bodies.
async fn collector() -> FakeProvider {
    FakeProvider::start(|_, _| Reply::json(200, "{}".to_owned())).await
}

/// The collector's base URL, as an operator would write it: the exporter appends `/v1/traces`.
fn base_url(collector: &FakeProvider) -> String {
    collector
        .base_url
        .strip_suffix("/v1")
        .expect("the fake's base URL ends in /v1")
        .to_owned()
}

/// Every span of every export request so far.
fn exported_spans(collector: &FakeProvider) -> Vec<Value> {
    collector
        .requests()
        .iter()
        .flat_map(|request| {
            request.body["resourceSpans"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .flat_map(|resource| {
            resource["scopeSpans"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .flat_map(|scope| scope["spans"].as_array().cloned().unwrap_or_default())
        .collect()
}

/// Waits up to 15 s for spans that satisfy `done`, and returns all spans.
async fn wait_for_spans(collector: &FakeProvider, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let spans = exported_spans(collector);
        if done(&spans) {
            return spans;
        }
        assert!(Instant::now() < deadline, "spans never arrived: {spans:#?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn attribute<'a>(span: &'a Value, key: &str) -> Option<&'a Value> {
    span["attributes"]
        .as_array()?
        .iter()
        .find(|attribute| attribute["key"] == key)
        .map(|attribute| &attribute["value"])
}

fn is_request_to(span: &Value, route: &str) -> bool {
    span["name"] == "http_request"
        && attribute(span, "route") == Some(&json!({"stringValue": route}))
}

fn nanos(span: &Value, key: &str) -> u128 {
    span[key]
        .as_str()
        .and_then(|value| value.parse().ok())
        .unwrap_or_else(|| panic!("{key} is a decimal string: {span}"))
}

/// The spans of `trace_id` below `root`, at any depth.
fn descendants<'a>(spans: &'a [Value], root: &Value) -> Vec<&'a Value> {
    let mut found: Vec<&Value> = Vec::new();
    let mut parents = vec![root["spanId"].clone()];
    while let Some(parent) = parents.pop() {
        for span in spans.iter().filter(|span| span["parentSpanId"] == parent) {
            found.push(span);
            parents.push(span["spanId"].clone());
        }
    }
    found
}

fn post_message(
    server: &ServerProcess,
    text: &str,
    traceparent: Option<&str>,
) -> reqwest::RequestBuilder {
    let request = reqwest::Client::new()
        .post(server.url("/chat/message"))
        .json(&json!({ "message": text }));
    match traceparent {
        Some(value) => request.header("traceparent", value),
        None => request,
    }
}

#[tokio::test]
async fn request_spans_continue_the_callers_trace_and_children_share_it() {
    let collector = collector().await;
    let model = FakeProvider::start(|_, _| Reply::completion("Traced.")).await;
    let directory = tempfile::tempdir().unwrap();
    let server = start(
        directory.path(),
        &[
            ("CHAT__TELEMETRY__OTLP_ENDPOINT", base_url(&collector)),
            (
                "CHAT__TELEMETRY__SERVICE_NAME",
                "chat-under-test".to_owned(),
            ),
            // The OpenAI adapter has spans of its own: the call and each provider attempt.
            ("CHAT__ASSISTANT__KIND", "openai".to_owned()),
            ("CHAT__ASSISTANT__BASE_URL", model.base_url.clone()),
            ("CHAT__ASSISTANT__MAX_RETRIES", "0".to_owned()),
        ],
    );
    let traceparent = format!("00-{CALLER_TRACE}-{CALLER_SPAN}-01");
    for caller in [Some(traceparent.as_str()), None] {
        let response = post_message(&server, "trace me", caller)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(
            response.json::<Value>().await.unwrap()["response"],
            "Traced."
        );
    }

    let spans = wait_for_spans(&collector, |spans| {
        spans
            .iter()
            .filter(|span| is_request_to(span, "/chat/message"))
            .count()
            == 2
    })
    .await;
    let request = collector.requests()[0].clone();
    assert_eq!(request.path, "/v1/traces");
    assert_eq!(request.header("content-type"), Some("application/json"));
    let resource = &request.body["resourceSpans"][0]["resource"];
    assert!(
        resource["attributes"]
            .as_array()
            .unwrap()
            .contains(&json!({"key": "service.name", "value": {"stringValue": "chat-under-test"}})),
        "{resource}"
    );

    let requests: Vec<&Value> = spans
        .iter()
        .filter(|span| is_request_to(span, "/chat/message"))
        .collect();
    let continued = requests
        .iter()
        .find(|span| span["traceId"] == CALLER_TRACE)
        .unwrap_or_else(|| panic!("a request span in the caller's trace: {requests:#?}"));
    assert_eq!(continued["parentSpanId"], CALLER_SPAN);
    let fresh = requests
        .iter()
        .find(|span| span["traceId"] != CALLER_TRACE)
        .unwrap();
    assert!(
        fresh["parentSpanId"]
            .as_str()
            .unwrap_or_default()
            .is_empty(),
        "no caller, no parent: {fresh}"
    );
    let trace_id = fresh["traceId"].as_str().unwrap();
    assert!(
        trace_id.len() == 32
            && trace_id
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
            && trace_id != "0".repeat(32),
        "a random trace id: {trace_id}"
    );

    for request in [continued, fresh] {
        assert_eq!(request["kind"], 2, "a server span: {request}");
        assert_eq!(
            attribute(request, "method"),
            Some(&json!({"stringValue": "POST"}))
        );
        assert_eq!(
            attribute(request, "status"),
            Some(&json!({"intValue": "200"}))
        );
        assert!(attribute(request, "request_id").is_some(), "{request}");
        assert_eq!(request["status"]["code"], 0, "a 200 is not an error");
        let span_id = request["spanId"].as_str().unwrap();
        assert!(
            span_id.len() == 16 && span_id != "0".repeat(16),
            "{span_id}"
        );
        assert!(nanos(request, "endTimeUnixNano") >= nanos(request, "startTimeUnixNano"));

        let children = descendants(&spans, request);
        let names: Vec<&str> = children
            .iter()
            .filter_map(|span| span["name"].as_str())
            .collect();
        assert!(
            names.contains(&"assistant.reply") && names.contains(&"provider_call"),
            "the assistant's spans are below the request's: {names:?}"
        );
        for child in children {
            assert_eq!(child["traceId"], request["traceId"], "{child}");
            assert_eq!(child["kind"], 1, "{child}");
            assert!(nanos(child, "startTimeUnixNano") >= nanos(request, "startTimeUnixNano"));
            assert!(nanos(child, "endTimeUnixNano") <= nanos(request, "endTimeUnixNano"));
        }
    }
    let per_request = descendants(&spans, fresh).len() + 1;
    eprintln!("spans exported per POST /chat/message with the openai assistant: {per_request}");
}

/// Sum of the samples of `metric` whose labels contain `label`.
fn sample(metrics: &str, metric: &str, label: &str) -> f64 {
    metrics
        .lines()
        .filter(|line| line.starts_with(metric) && line.contains(label))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test]
async fn an_unreachable_collector_costs_counted_failures_and_nothing_else() {
    let closed_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let directory = tempfile::tempdir().unwrap();
    let mut variables = deterministic();
    variables.extend([
        (
            "CHAT__TELEMETRY__OTLP_ENDPOINT",
            format!("http://127.0.0.1:{closed_port}"),
        ),
        // Every span a full batch: were each one sent, a refused connection would be retried
        // at once, for every request.
        ("CHAT__TELEMETRY__BATCH_SIZE", "1".to_owned()),
        ("CHAT__TELEMETRY__QUEUE_CAPACITY", "1".to_owned()),
    ]);
    let server = Logged::start(directory.path(), &variables);
    let client = reqwest::Client::new();
    let began = Instant::now();
    let deadline = began + Duration::from_secs(15);
    let metrics = loop {
        for _ in 0..10 {
            let started = Instant::now();
            let response = client
                .post(server.url("/chat/message"))
                .json(&json!({"message": "still served"}))
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 200);
            assert!(response.json::<Value>().await.unwrap()["response"]
                .as_str()
                .unwrap()
                .ends_with("You said: still served"));
            assert!(
                started.elapsed() < Duration::from_secs(1),
                "{:?}",
                started.elapsed()
            );
        }
        let metrics = client
            .get(server.url("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        // Several failed exports, a second apart, to see that they are not each logged.
        if sample(&metrics, "otlp_export_failures_total", "") >= 3.0 {
            break metrics;
        }
        assert!(
            Instant::now() < deadline,
            "no export failure counted:\n{metrics}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let failures = sample(&metrics, "otlp_export_failures_total", "");
    let seconds = began.elapsed().as_secs_f64();
    assert!(
        failures <= seconds + 2.0,
        "{failures} attempts in {seconds:.1} s: a failing collector is tried once a second"
    );
    assert!(
        sample(
            &metrics,
            "otlp_spans_dropped_total",
            "reason=\"export_failed\""
        ) >= 3.0,
        "{metrics}"
    );
    assert!(
        sample(
            &metrics,
            "otlp_spans_dropped_total",
            "reason=\"queue_full\""
        ) >= 1.0,
        "the spans of the requests between attempts: {metrics}"
    );
    assert_eq!(
        sample(&metrics, "otlp_spans_exported_total", ""),
        0.0,
        "{metrics}"
    );
    let logs = server.stop();
    let warnings = logs
        .lines()
        .filter(|line| line.contains("trace export failed"))
        .collect::<Vec<_>>();
    assert_eq!(
        warnings.len(),
        1,
        "warned once, not per failure: {warnings:#?}"
    );
    assert!(
        warnings[0].contains("\"level\":\"WARN\""),
        "{}",
        warnings[0]
    );
    assert!(
        warnings[0].contains(&closed_port.to_string()),
        "{}",
        warnings[0]
    );
}

#[tokio::test]
async fn sigterm_sends_the_spans_still_queued() {
    let collector = collector().await;
    let directory = tempfile::tempdir().unwrap();
    let mut variables = deterministic();
    // The full URL works too: nothing is appended.
    variables.push((
        "CHAT__TELEMETRY__OTLP_ENDPOINT",
        format!("{}/traces", collector.base_url),
    ));
    let mut server = start(directory.path(), &variables);
    let traceparent = format!("00-{CALLER_TRACE}-{CALLER_SPAN}-01");
    let response = post_message(&server, "last words", Some(&traceparent))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    // At once: a batch waits up to a second, so the span is still queued.
    server.terminate();
    let status = tokio::task::spawn_blocking(move || server.wait(Duration::from_secs(20)))
        .await
        .unwrap();
    assert!(status.success(), "exit status {status}");
    let exported = exported_spans(&collector);
    assert!(
        exported
            .iter()
            .any(|span| is_request_to(span, "/chat/message") && span["traceId"] == CALLER_TRACE),
        "the last request's span was sent before exit: {exported:#?}"
    );
    assert!(
        collector
            .requests()
            .iter()
            .all(|request| request.path == "/v1/traces"),
        "{:?}",
        collector
            .requests()
            .iter()
            .map(|request| &request.path)
            .collect::<Vec<_>>()
    );
}
