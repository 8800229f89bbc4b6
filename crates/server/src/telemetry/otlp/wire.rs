//! The OTLP/HTTP JSON body: an `ExportTraceServiceRequest` in the protobuf JSON mapping, except
//! that trace and span ids are lowercase hex rather than base64, as OTLP specifies.
//! <https://opentelemetry.io/docs/specs/otlp/#json-protobuf-encoding>

use std::fmt::Display;

use serde::ser::SerializeStruct;
use serde::{Serialize, Serializer};

/// A finished span, ready to send.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Span {
    #[serde(serialize_with = "trace_id_hex")]
    pub trace_id: u128,
    #[serde(serialize_with = "span_id_hex")]
    pub span_id: u64,
    #[serde(
        serialize_with = "parent_span_id_hex",
        skip_serializing_if = "Option::is_none"
    )]
    pub parent_span_id: Option<u64>,
    pub name: &'static str,
    pub kind: SpanKind,
    #[serde(serialize_with = "decimal")]
    pub start_time_unix_nano: u64,
    #[serde(serialize_with = "decimal")]
    pub end_time_unix_nano: u64,
    pub attributes: Vec<KeyValue>,
    pub status: Status,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SpanKind {
    Internal,
    /// The span of a request this process serves.
    Server,
}

impl Serialize for SpanKind {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_u8(match self {
            SpanKind::Internal => 1,
            SpanKind::Server => 2,
        })
    }
}

/// We never claim `Ok` (code 1): OpenTelemetry reserves it for a deliberate override.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Status {
    Unset,
    Error,
}

impl Serialize for Status {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut status = serializer.serialize_struct("Status", 1)?;
        status.serialize_field(
            "code",
            &match self {
                Status::Unset => 0u8,
                Status::Error => 2,
            },
        )?;
        status.end()
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct KeyValue {
    pub key: &'static str,
    pub value: AnyValue,
}

/// Serialized as `{"stringValue": ...}` and so on, the mapping of the protobuf `oneof`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) enum AnyValue {
    #[serde(rename = "stringValue")]
    String(String),
    /// An int64, which the protobuf JSON mapping writes as a decimal string.
    #[serde(rename = "intValue", serialize_with = "decimal")]
    Int(i64),
    #[serde(rename = "doubleValue", serialize_with = "double")]
    Double(f64),
    #[serde(rename = "boolValue")]
    Bool(bool),
}

/// The scope is this program: every span comes from its own instrumentation.
#[derive(Debug, Serialize)]
struct InstrumentationScope {
    name: &'static str,
    version: &'static str,
}

const SCOPE: InstrumentationScope = InstrumentationScope {
    name: "chat-server",
    version: env!("CARGO_PKG_VERSION"),
};

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct ExportTraceServiceRequest<'a> {
    resource_spans: [ResourceSpans<'a>; 1],
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct ResourceSpans<'a> {
    resource: Resource<'a>,
    scope_spans: [ScopeSpans<'a>; 1],
}

#[derive(Debug, Serialize)]
struct Resource<'a> {
    attributes: &'a [KeyValue],
}

#[derive(Debug, Serialize)]
struct ScopeSpans<'a> {
    scope: InstrumentationScope,
    spans: &'a [Span],
}

/// The attributes that describe this process to tracing back ends.
pub(crate) fn resource(service_name: &str) -> Vec<KeyValue> {
    vec![
        KeyValue {
            key: "service.name",
            value: AnyValue::String(service_name.to_owned()),
        },
        KeyValue {
            key: "service.version",
            value: AnyValue::String(env!("CARGO_PKG_VERSION").to_owned()),
        },
    ]
}

/// The body of one export request.
pub(crate) fn export_request(resource: &[KeyValue], spans: &[Span]) -> serde_json::Result<Vec<u8>> {
    serde_json::to_vec(&ExportTraceServiceRequest {
        resource_spans: [ResourceSpans {
            resource: Resource {
                attributes: resource,
            },
            scope_spans: [ScopeSpans {
                scope: SCOPE,
                spans,
            }],
        }],
    })
}

fn trace_id_hex<S: Serializer>(id: &u128, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.collect_str(&format_args!("{id:032x}"))
}

fn span_id_hex<S: Serializer>(id: &u64, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.collect_str(&format_args!("{id:016x}"))
}

fn parent_span_id_hex<S: Serializer>(id: &Option<u64>, serializer: S) -> Result<S::Ok, S::Error> {
    match id {
        Some(id) => span_id_hex(id, serializer),
        None => serializer.serialize_none(),
    }
}

fn decimal<T: Display, S: Serializer>(value: &T, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.collect_str(value)
}

/// JSON has no NaN or infinities; the protobuf JSON mapping spells them as strings.
fn double<S: Serializer>(value: &f64, serializer: S) -> Result<S::Ok, S::Error> {
    match value {
        value if value.is_finite() => serializer.serialize_f64(*value),
        value if value.is_nan() => serializer.serialize_str("NaN"),
        value if value.is_sign_positive() => serializer.serialize_str("Infinity"),
        _ => serializer.serialize_str("-Infinity"),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{json, Value};

    use super::*;

    #[test]
    fn one_span_is_encoded_as_otlp_json() {
        let span = Span {
            trace_id: 0x4bf92f3577b34da6a3ce929d0e0e4736,
            span_id: 0x0000_00ab_cdef_0001,
            parent_span_id: Some(0x00f067aa0ba902b7),
            name: "http_request",
            kind: SpanKind::Server,
            start_time_unix_nano: 1_700_000_000_000_000_001,
            end_time_unix_nano: 1_700_000_000_250_000_000,
            attributes: vec![
                KeyValue {
                    key: "route",
                    value: AnyValue::String("/chat/message".to_owned()),
                },
                KeyValue {
                    key: "status",
                    value: AnyValue::Int(503),
                },
                KeyValue {
                    key: "ratio",
                    value: AnyValue::Double(0.5),
                },
                KeyValue {
                    key: "ratio_unknown",
                    value: AnyValue::Double(f64::NAN),
                },
                KeyValue {
                    key: "cached",
                    value: AnyValue::Bool(false),
                },
            ],
            status: Status::Error,
        };
        let root = Span {
            parent_span_id: None,
            kind: SpanKind::Internal,
            attributes: Vec::new(),
            status: Status::Unset,
            ..span.clone()
        };
        let body: Value =
            serde_json::from_slice(&export_request(&resource("chat"), &[span, root]).unwrap())
                .unwrap();
        assert_eq!(
            body,
            json!({"resourceSpans": [{
                "resource": {"attributes": [
                    {"key": "service.name", "value": {"stringValue": "chat"}},
                    {"key": "service.version", "value": {"stringValue": env!("CARGO_PKG_VERSION")}},
                ]},
                "scopeSpans": [{
                    "scope": {"name": "chat-server", "version": env!("CARGO_PKG_VERSION")},
                    "spans": [
                        {
                            "traceId": "4bf92f3577b34da6a3ce929d0e0e4736",
                            "spanId": "000000abcdef0001",
                            "parentSpanId": "00f067aa0ba902b7",
                            "name": "http_request",
                            "kind": 2,
                            "startTimeUnixNano": "1700000000000000001",
                            "endTimeUnixNano": "1700000000250000000",
                            "attributes": [
                                {"key": "route", "value": {"stringValue": "/chat/message"}},
                                {"key": "status", "value": {"intValue": "503"}},
                                {"key": "ratio", "value": {"doubleValue": 0.5}},
                                {"key": "ratio_unknown", "value": {"doubleValue": "NaN"}},
                                {"key": "cached", "value": {"boolValue": false}},
                            ],
                            "status": {"code": 2},
                        },
                        {
                            "traceId": "4bf92f3577b34da6a3ce929d0e0e4736",
                            "spanId": "000000abcdef0001",
                            "name": "http_request",
                            "kind": 1,
                            "startTimeUnixNano": "1700000000000000001",
                            "endTimeUnixNano": "1700000000250000000",
                            "attributes": [],
                            "status": {"code": 0},
                        },
                    ],
                }],
            }]})
        );
    }
}
