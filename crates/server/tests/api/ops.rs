//! Operations endpoints and cross-cutting headers: health, readiness, OpenAPI, docs, metrics,
//! request ids, security headers and CORS.

use serde_json::{json, Value};

use crate::helpers::{SseReader, TestApp};

const ROUTES: [(&str, &[&str]); 8] = [
    ("/chat/history", &["get"]),
    ("/chat/message", &["post"]),
    ("/api/v1/conversations", &["get", "post"]),
    ("/api/v1/conversations/{id}", &["get", "patch", "delete"]),
    ("/api/v1/conversations/{id}/messages", &["get", "post"]),
    ("/healthz", &["get"]),
    ("/readyz", &["get"]),
    ("/metrics", &["get"]),
];

#[tokio::test]
async fn healthz_is_ok() {
    let app = TestApp::spawn().await;
    let response = app.get("/healthz").await;
    assert_eq!(response.status(), 200);
    assert!(response.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/json"));
    assert_eq!(
        response.json::<Value>().await.unwrap(),
        json!({"status": "ok"})
    );
}

#[tokio::test]
async fn readyz_is_200_when_storage_is_reachable() {
    let app = TestApp::spawn().await;
    let response = app.get("/readyz").await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.json::<Value>().await.unwrap(),
        json!({"status": "ready"})
    );
}

#[tokio::test]
async fn the_openapi_document_is_3_1_and_lists_every_route() {
    let app = TestApp::spawn().await;
    let response = app.get("/openapi.json").await;
    assert_eq!(response.status(), 200);
    assert!(response.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/json"));
    let document: Value = response.json().await.unwrap();
    let version = document["openapi"].as_str().expect("an openapi version");
    assert!(version.starts_with("3.1"), "{version}");
    assert!(document["info"]["title"].is_string());
    let paths = document["paths"].as_object().expect("paths");
    for (path, methods) in ROUTES {
        let item = paths
            .get(path)
            .unwrap_or_else(|| panic!("{path} is missing from {:?}", paths.keys()));
        for method in methods {
            assert!(
                item.get(*method).is_some(),
                "{method} {path} is not documented"
            );
        }
    }
    // The refusals before the routes are on every operation, in its route's error shape; the
    // rate limit only where it applies.
    for (path, methods) in ROUTES {
        for method in methods {
            let responses = &paths[path][method]["responses"];
            let shape = if path.starts_with("/chat/") {
                "#/components/schemas/SeedErrorResponse"
            } else {
                "#/components/schemas/ErrorResponse"
            };
            for status in ["421", "431"] {
                assert_eq!(
                    responses[status]["content"]["application/json"]["schema"]["$ref"], shape,
                    "{method} {path} {status}"
                );
            }
            let limited = path.starts_with("/chat/") || path.starts_with("/api/");
            let rate_limited = responses["429"]["description"]
                .as_str()
                .is_some_and(|description| description.contains("rate_limited"));
            assert_eq!(rate_limited, limited, "{method} {path} 429");
        }
    }
    // Where a route answers 429 of its own (too many streams), the rate limit's is added to it.
    let resume = &paths["/api/v1/conversations/{id}/stream"]["get"]["responses"]["429"];
    let description = resume["description"].as_str().unwrap();
    assert!(
        description.contains("too_many_streams") && description.contains("rate_limited"),
        "{description}"
    );
    // The streamed reply and the error shape are documented too.
    let send = &paths["/api/v1/conversations/{id}/messages"]["post"]["responses"];
    for status in ["200", "201", "400", "404", "413", "415"] {
        assert!(send.get(status).is_some(), "send message lacks {status}");
    }
    let schemas = document["components"]["schemas"]
        .as_object()
        .expect("schemas");
    assert!(
        schemas.contains_key("ErrorResponse"),
        "{:?}",
        schemas.keys()
    );
}

#[tokio::test]
async fn docs_redirect_to_a_locally_served_swagger_ui() {
    let app = TestApp::spawn().await;
    let no_redirects = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let response = no_redirects.get(app.url("/docs")).send().await.unwrap();
    assert_eq!(response.status(), 308);
    let location = response.headers()["location"].to_str().unwrap();
    assert!(
        location == "/docs/" || location.ends_with("/docs/"),
        "{location}"
    );

    // A write is not redirected to a page that refuses it: it is refused here.
    let response = no_redirects.post(app.url("/docs")).send().await.unwrap();
    assert_eq!(response.status(), 405);
    assert_eq!(response.headers()["allow"], "GET, HEAD");

    let response = app.get("/docs/").await;
    assert_eq!(response.status(), 200);
    assert!(response.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    let html = response.text().await.unwrap();
    assert!(html.to_lowercase().contains("swagger"), "{html}");

    let scripts: Vec<String> = html
        .split("<script src=\"")
        .skip(1)
        .filter_map(|rest| rest.split('"').next())
        .map(str::to_owned)
        .collect();
    assert!(!scripts.is_empty(), "no script in {html}");
    for script in &scripts {
        assert!(
            !script.starts_with("http"),
            "assets must be local: {script}"
        );
        let path = match script.strip_prefix("./") {
            Some(relative) => format!("/docs/{relative}"),
            None if script.starts_with('/') => script.clone(),
            None => format!("/docs/{script}"),
        };
        let asset = app.get(&path).await;
        assert_eq!(asset.status(), 200, "{path}");
        assert!(!asset.bytes().await.unwrap().is_empty(), "{path}");
    }
    // The UI's initializer points at the local document.
    let initializer = app.get("/docs/swagger-initializer.js").await;
    assert_eq!(initializer.status(), 200);
    assert!(initializer.text().await.unwrap().contains("/openapi.json"));
}

/// Sum of `http_requests_total` samples carrying every one of `labels`.
fn requests_total(metrics: &str, labels: &[&str]) -> f64 {
    metrics
        .lines()
        .filter(|line| line.starts_with("http_requests_total{"))
        .filter(|line| labels.iter().all(|label| line.contains(label)))
        .map(|line| {
            line.rsplit(' ')
                .next()
                .and_then(|value| value.parse::<f64>().ok())
                .unwrap_or_else(|| panic!("a sample value in {line}"))
        })
        .sum()
}

#[tokio::test]
async fn metrics_count_requests_by_route() {
    let app = TestApp::spawn().await;
    let response = app
        .post_json("/chat/message", &json!({"message": "count me"}))
        .await;
    assert_eq!(response.status(), 200);
    // A raw path with an id must not become a label: the route pattern is used.
    let conversation = app.create_conversation(None).await;
    let id = conversation["id"].as_str().unwrap();
    assert_eq!(
        app.get(&format!("/api/v1/conversations/{id}"))
            .await
            .status(),
        200
    );

    let response = app.get("/metrics").await;
    assert_eq!(response.status(), 200);
    assert!(response.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
    let before = response.text().await.unwrap();
    assert!(before.contains("http_requests_total"), "{before}");
    let labels = [
        "route=\"/chat/message\"",
        "method=\"POST\"",
        "status=\"200\"",
    ];
    let first = requests_total(&before, &labels);
    assert!(first >= 1.0, "{before}");
    assert!(
        requests_total(&before, &["route=\"/api/v1/conversations/{id}\""]) >= 1.0,
        "{before}"
    );
    assert!(!before.contains(id), "a raw id became a label");
    assert!(before.contains("http_request_duration_seconds"), "{before}");

    for text in ["one more", "and another"] {
        assert_eq!(
            app.post_json("/chat/message", &json!({"message": text}))
                .await
                .status(),
            200
        );
    }
    let after = app.get("/metrics").await.text().await.unwrap();
    let second = requests_total(&after, &labels);
    assert!(
        second >= first + 2.0,
        "the counter moved from {first} to {second}"
    );
}

/// The sample of a metric without labels, as `/metrics` shows it.
fn sample(metrics: &str, name: &str) -> Option<f64> {
    metrics.lines().find_map(|line| {
        let value = line.strip_prefix(name)?.strip_prefix(' ')?;
        value.parse().ok()
    })
}

#[tokio::test]
async fn refusal_counters_are_published_before_the_first_refusal() {
    let app = TestApp::spawn().await;
    let metrics = app.get("/metrics").await.text().await.unwrap();
    for counter in [
        "http_rate_limited_total",
        "http_streams_rejected_total",
        "storage_writer_rejected_total",
        "storage_reads_rejected_total",
        "storage_writer_isolated_batches_total",
    ] {
        assert!(sample(&metrics, counter).is_some(), "{counter}: {metrics}");
    }
}

#[tokio::test]
async fn batch_sizes_are_a_histogram_with_buckets() {
    let app = TestApp::spawn().await;
    let response = app
        .post_json("/chat/message", &json!({"message": "one batch"}))
        .await;
    assert_eq!(response.status(), 200);
    let metrics = app.get("/metrics").await.text().await.unwrap();
    assert!(
        metrics.contains("# TYPE storage_writer_batch_size histogram"),
        "{metrics}"
    );
    assert!(
        metrics.contains("storage_writer_batch_size_bucket{le=\"1\"}"),
        "{metrics}"
    );
    assert!(sample(&metrics, "storage_writer_batch_size_count").unwrap() >= 1.0);
}

#[tokio::test]
async fn metrics_are_not_answered_through_a_proxy_unless_configured() {
    let forwarded = |app: &TestApp, header: &'static str, value: &'static str| {
        app.client
            .get(app.url("/metrics"))
            .header(header, value)
            .send()
    };
    let app = TestApp::spawn().await;
    assert_eq!(
        app.get("/metrics").await.status(),
        200,
        "a scraper's own request"
    );
    for (header, value) in [
        ("x-forwarded-for", "203.0.113.7"),
        ("forwarded", "for=203.0.113.7"),
        ("x-real-ip", "203.0.113.7"),
    ] {
        let response = forwarded(&app, header, value).await.unwrap();
        assert_eq!(response.status(), 404, "{header}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["code"], "not_found", "{header}: {body}");
    }

    let app = TestApp::builder()
        .with("CHAT__SECURITY__METRICS_THROUGH_PROXIES", "true")
        .spawn()
        .await;
    let response = forwarded(&app, "x-forwarded-for", "203.0.113.7")
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn invented_methods_share_one_metrics_label() {
    let app = TestApp::spawn().await;
    for invented in ["FOOBAR1", "FOOBAR2", "XYZ"] {
        let method = reqwest::Method::from_bytes(invented.as_bytes()).unwrap();
        let response = app
            .client
            .request(method, app.url("/chat/message"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 405, "{invented}");
    }

    let metrics = app.get("/metrics").await.text().await.unwrap();
    for invented in ["FOOBAR1", "FOOBAR2", "XYZ"] {
        assert!(!metrics.contains(invented), "{invented} became a label");
    }
    let labels = [
        "route=\"/chat/message\"",
        "method=\"other\"",
        "status=\"405\"",
    ];
    assert_eq!(requests_total(&metrics, &labels), 3.0, "{metrics}");
}

fn assert_common_headers(response: &reqwest::Response, what: &str) -> String {
    let headers = response.headers();
    let id = headers
        .get("x-request-id")
        .unwrap_or_else(|| panic!("{what} has no x-request-id"))
        .to_str()
        .unwrap()
        .to_owned();
    assert!(!id.is_empty(), "{what}");
    assert_eq!(
        headers
            .get("x-content-type-options")
            .map(|v| v.to_str().unwrap()),
        Some("nosniff"),
        "{what}"
    );
    assert!(
        headers.get("access-control-allow-credentials").is_none(),
        "{what} allows credentials"
    );
    id
}

#[tokio::test]
async fn every_response_has_a_request_id_and_security_headers() {
    let app = TestApp::spawn().await;
    let conversation = app.create_conversation(None).await;
    let id = conversation["id"].as_str().unwrap().to_owned();
    let mut ids = std::collections::HashSet::new();
    let responses = vec![
        ("healthz", app.get("/healthz").await),
        ("readyz", app.get("/readyz").await),
        ("metrics", app.get("/metrics").await),
        ("openapi", app.get("/openapi.json").await),
        ("docs", app.get("/docs/").await),
        ("history", app.get("/chat/history").await),
        (
            "seed send",
            app.post_json("/chat/message", &json!({"message": "hi"}))
                .await,
        ),
        (
            "seed 400",
            app.post_json("/chat/message", &json!({"message": " "}))
                .await,
        ),
        ("seed 405", app.get("/chat/message").await),
        ("404", app.get("/no/such/thing").await),
        ("list", app.get("/api/v1/conversations").await),
        (
            "create",
            app.post_json("/api/v1/conversations", &json!({})).await,
        ),
        (
            "messages",
            app.get(&format!("/api/v1/conversations/{id}/messages"))
                .await,
        ),
        (
            "bad limit",
            app.get(&format!("/api/v1/conversations/{id}/messages?limit=0"))
                .await,
        ),
        (
            "unknown conversation",
            app.get("/api/v1/conversations/0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b")
                .await,
        ),
        (
            "405",
            app.client
                .put(app.url("/api/v1/conversations"))
                .send()
                .await
                .unwrap(),
        ),
        (
            "415",
            app.post_raw("/chat/message", Some("text/plain"), b"hi".to_vec())
                .await,
        ),
        ("delete", app.delete_conversation(&id).await),
    ];
    for (what, response) in &responses {
        let request_id = assert_common_headers(response, what);
        assert!(
            ids.insert(request_id),
            "request ids are unique per request ({what})"
        );
    }

    // The streamed reply too.
    let conversation = app.create_conversation(None).await;
    let stream = app
        .client
        .post(app.url(&format!(
            "/api/v1/conversations/{}/messages",
            conversation["id"].as_str().unwrap()
        )))
        .header("accept", "text/event-stream")
        .json(&json!({"content": "stream"}))
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), 200);
    assert_common_headers(&stream, "stream");
    let mut reader = SseReader::new(stream);
    while reader.next_event().await.is_some() {}
}

#[tokio::test]
async fn a_valid_caller_request_id_is_echoed_and_an_invalid_one_replaced() {
    let app = TestApp::spawn().await;
    for supplied in [
        "abc-123",
        "trace_01.span:02",
        "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b",
    ] {
        let response = app
            .client
            .get(app.url("/healthz"))
            .header("x-request-id", supplied)
            .send()
            .await
            .unwrap();
        assert_eq!(response.headers()["x-request-id"], supplied);
    }
    // Echoed on errors as well.
    let response = app
        .client
        .post(app.url("/chat/message"))
        .header("x-request-id", "failing-request-7")
        .json(&json!({"message": ""}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    assert_eq!(response.headers()["x-request-id"], "failing-request-7");

    for hostile in ["has space", "<script>", &"x".repeat(65), "semi;colon"] {
        let response = app
            .client
            .get(app.url("/healthz"))
            .header("x-request-id", hostile)
            .send()
            .await
            .unwrap();
        let echoed = response.headers()["x-request-id"].to_str().unwrap();
        assert_ne!(echoed, hostile);
        assert!(!echoed.is_empty());
    }
}

fn preflight(app: &TestApp, path: &str, origin: &str) -> reqwest::RequestBuilder {
    app.client
        .request(reqwest::Method::OPTIONS, app.url(path))
        .header("origin", origin)
        .header("access-control-request-method", "POST")
        .header("access-control-request-headers", "content-type")
}

#[tokio::test]
async fn cors_allows_the_dev_origin_and_nobody_else() {
    let app = TestApp::spawn().await;
    let allowed = preflight(&app, "/chat/message", "http://localhost:3000")
        .send()
        .await
        .unwrap();
    assert!(allowed.status().is_success(), "{}", allowed.status());
    assert_eq!(
        allowed.headers()["access-control-allow-origin"],
        "http://localhost:3000"
    );
    let methods = allowed.headers()["access-control-allow-methods"]
        .to_str()
        .unwrap()
        .to_uppercase();
    assert!(methods.contains("POST"), "{methods}");
    let headers = allowed.headers()["access-control-allow-headers"]
        .to_str()
        .unwrap()
        .to_lowercase();
    assert!(headers.contains("content-type"), "{headers}");
    assert!(allowed
        .headers()
        .get("access-control-allow-credentials")
        .is_none());
    assert!(allowed.headers().get("x-request-id").is_some());

    // The same for the product API.
    let allowed = preflight(&app, "/api/v1/conversations", "http://localhost:3000")
        .send()
        .await
        .unwrap();
    assert!(allowed.status().is_success(), "{}", allowed.status());
    assert_eq!(
        allowed.headers()["access-control-allow-origin"],
        "http://localhost:3000"
    );

    let refused = preflight(&app, "/chat/message", "http://evil.example")
        .send()
        .await
        .unwrap();
    assert!(
        refused
            .headers()
            .get("access-control-allow-origin")
            .is_none(),
        "{:?}",
        refused.headers()
    );
    assert!(refused
        .headers()
        .get("access-control-allow-credentials")
        .is_none());

    // Actual requests: the allowed origin is named, the other one is not.
    let response = app
        .client
        .get(app.url("/chat/history"))
        .header("origin", "http://localhost:3000")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["access-control-allow-origin"],
        "http://localhost:3000"
    );
    assert!(response
        .headers()
        .get("access-control-allow-credentials")
        .is_none());
    let exposed = response.headers()["access-control-expose-headers"]
        .to_str()
        .unwrap()
        .to_lowercase();
    for header in [
        "x-request-id",
        "retry-after",
        "location",
        "allow",
        "accept-encoding",
    ] {
        assert!(exposed.contains(header), "{header}: {exposed}");
    }
    let response = app
        .client
        .get(app.url("/chat/history"))
        .header("origin", "http://evil.example")
        .send()
        .await
        .unwrap();
    assert!(response
        .headers()
        .get("access-control-allow-origin")
        .is_none());
    assert!(response
        .headers()
        .get("access-control-allow-credentials")
        .is_none());
    let response = app
        .client
        .post(app.url("/chat/message"))
        .header("origin", "http://evil.example")
        .json(&json!({"message": "cross-site"}))
        .send()
        .await
        .unwrap();
    assert!(response
        .headers()
        .get("access-control-allow-origin")
        .is_none());
    assert!(response
        .headers()
        .get("access-control-allow-credentials")
        .is_none());
}

#[tokio::test]
async fn cors_follows_the_configured_origins() {
    let app = TestApp::builder()
        .with("CHAT__CORS__ALLOWED_ORIGINS", "https://chat.example.com")
        .spawn()
        .await;
    let allowed = preflight(&app, "/chat/message", "https://chat.example.com")
        .send()
        .await
        .unwrap();
    assert!(allowed.status().is_success(), "{}", allowed.status());
    assert_eq!(
        allowed.headers()["access-control-allow-origin"],
        "https://chat.example.com"
    );
    let dev = preflight(&app, "/chat/message", "http://localhost:3000")
        .send()
        .await
        .unwrap();
    assert!(dev.headers().get("access-control-allow-origin").is_none());
}

/// DNS rebinding: a page of another site points its own name at 127.0.0.1, so to the browser the
/// API is that page's own origin (`Sec-Fetch-Site: same-origin`, no CORS). Only the `Host` it
/// names tells it apart: a server on a loopback address answers IP addresses (a probe's, a
/// scraper's) and localhost, which cannot be rebound, and no other name unless listed.
#[tokio::test]
async fn a_server_on_a_loopback_address_refuses_hosts_other_than_its_own_names() {
    let app = TestApp::spawn().await;
    let port = port_of(&app);
    let rebound = format!("attacker.example:{port}");
    let write = app
        .client
        .post(app.url("/api/v1/conversations"))
        .header("host", &rebound)
        .header("origin", format!("http://{rebound}"))
        .header("sec-fetch-site", "same-origin")
        .json(&json!({"title": "Rebound"}))
        .send()
        .await
        .unwrap();
    assert_eq!(write.status(), 421);
    let body: Value = write.json().await.unwrap();
    assert_eq!(body["code"], "unknown_host");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("attacker.example"),
        "the refused host is named: {body}"
    );
    assert_eq!(get_naming(&app, "/chat/history", &rebound).await, 421);
    for own in [
        format!("localhost:{port}"),
        format!("LOCALHOST:{port}"),
        format!("127.0.0.1:{port}"),
        format!("[::1]:{port}"),
        format!("10.1.2.3:{port}"),
        format!("chat.localhost:{port}"),
        // Fully qualified, with the root's dot: the same names.
        format!("localhost.:{port}"),
        "chat.localhost.".to_owned(),
        "127.0.0.1".to_owned(),
    ] {
        assert_eq!(
            get_naming(&app, "/api/v1/conversations", &own).await,
            200,
            "{own}"
        );
    }
    let listed = app.get("/api/v1/conversations").await;
    let listed: Value = listed.json().await.unwrap();
    assert!(
        listed["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["title"] != "Rebound"),
        "nothing was created: {listed}"
    );

    let named = TestApp::builder()
        .with(
            "CHAT__SECURITY__ALLOWED_HOSTS",
            "chat.example,fqdn.example.",
        )
        .spawn()
        .await;
    let port = port_of(&named);
    for (host, status) in [
        (format!("fqdn.example:{port}"), 200),
        (format!("fqdn.example.:{port}"), 200),
        (format!("chat.example:{port}"), 200),
        (format!("chat.example.:{port}"), 200),
        (format!("127.0.0.1:{port}"), 200),
        (format!("other.example:{port}"), 421),
        (format!("other.example.:{port}"), 421),
        (format!(".:{port}"), 421),
    ] {
        let answered = get_naming(&named, "/api/v1/conversations", &host).await;
        assert_eq!(answered, status, "{host}");
    }
}

fn port_of(app: &TestApp) -> String {
    let url = app.url("/");
    url.trim_end_matches('/')
        .rsplit(':')
        .next()
        .unwrap()
        .to_owned()
}

/// The status of a GET of `path` whose `Host` names `host`.
async fn get_naming(app: &TestApp, path: &str, host: &str) -> u16 {
    let response = app.client.get(app.url(path)).header("host", host).send();
    response.await.unwrap().status().as_u16()
}

/// What a browser sends with a write that another site's page made: a form or a beacon needs no
/// preflight, so CORS alone would let it through to be stored.
fn cross_site(request: reqwest::RequestBuilder, origin: &str) -> reqwest::RequestBuilder {
    request
        .header("origin", origin)
        .header("sec-fetch-site", "cross-site")
}

#[tokio::test]
async fn writes_from_another_sites_page_are_refused_unless_its_origin_is_allowed() {
    let app = TestApp::spawn().await;
    let evil = "http://evil.example";

    let seed = cross_site(app.client.post(app.url("/chat/message")), evil)
        .body(r#"{"message":"posted by a stranger"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(seed.status(), 403);
    let body: Value = seed.json().await.unwrap();
    assert_eq!(body["status"], "error");
    assert!(body.get("code").is_none(), "the seed shape: {body}");
    assert!(app.history().await.is_empty(), "nothing was stored");

    let create = cross_site(app.client.post(app.url("/api/v1/conversations")), evil)
        .send()
        .await
        .unwrap();
    assert_eq!(create.status(), 403);
    let body: Value = create.json().await.unwrap();
    assert_eq!(body["code"], "cross_site_request");
    let conversation = app.create_conversation(Some("Kept")).await;
    let id = conversation["id"].as_str().unwrap();
    let path = format!("/api/v1/conversations/{id}");
    for request in [
        app.client
            .patch(app.url(&path))
            .json(&json!({"title": "Taken"})),
        app.client.delete(app.url(&path)),
    ] {
        assert_eq!(
            cross_site(request, evil).send().await.unwrap().status(),
            403
        );
    }
    assert_eq!(
        app.get(&path).await.json::<Value>().await.unwrap()["title"],
        "Kept"
    );

    // Reads are CORS's business (the answer is hidden); writes from an allowed origin, from this
    // site's own pages and from clients that are not browsers go through.
    let sibling = app
        .client
        .post(app.url("/api/v1/conversations"))
        .header("origin", "http://other.localhost:8000")
        .header("sec-fetch-site", "same-site");
    assert_eq!(
        sibling.send().await.unwrap().status(),
        403,
        "a sibling subdomain"
    );
    let read = cross_site(app.client.get(app.url("/chat/history")), evil);
    assert_eq!(read.send().await.unwrap().status(), 200);
    let allowed = cross_site(
        app.client.post(app.url("/chat/message")),
        "http://localhost:3000",
    )
    .json(&json!({"message": "from the dev client"}));
    assert_eq!(allowed.send().await.unwrap().status(), 200);
    let own = app
        .client
        .post(app.url("/chat/message"))
        .header("sec-fetch-site", "same-origin")
        .json(&json!({"message": "from this site"}));
    assert_eq!(own.send().await.unwrap().status(), 200);
    assert_eq!(app.history().await.len(), 2);

    // A browser that sends no Sec-Fetch-Site still names the page's origin: another host's is
    // refused, this host's and an allowed one's go through.
    let old_browser = |origin: &str| {
        app.client
            .post(app.url("/api/v1/conversations"))
            .header("origin", origin)
            .send()
    };
    let stranger = old_browser(evil).await.unwrap();
    assert_eq!(stranger.status(), 403);
    assert_eq!(
        stranger.json::<Value>().await.unwrap()["code"],
        "cross_site_request"
    );
    assert_eq!(old_browser("null").await.unwrap().status(), 403);
    assert_eq!(old_browser(&app.url("")).await.unwrap().status(), 201);
    // Behind a proxy that passes the host name without the port the browser used.
    let proxied = app
        .client
        .post(app.url("/api/v1/conversations"))
        .header("host", "127.0.0.1")
        .header("origin", "http://127.0.0.1:8080")
        .send()
        .await
        .unwrap();
    assert_eq!(proxied.status(), 201);

    // An absolute-form target names the host, as for `unknown_host`: a Host that agrees with the
    // Origin does not make another site's page this one.
    {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let authority = app.address.trim_start_matches("http://");
        let mut connection = tokio::net::TcpStream::connect(authority).await.unwrap();
        let request = format!(
            "POST http://{authority}/api/v1/conversations HTTP/1.1\r\nHost: evil.example\r\n\
             Origin: http://evil.example\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        );
        connection.write_all(request.as_bytes()).await.unwrap();
        let mut answer = Vec::new();
        connection.read_to_end(&mut answer).await.unwrap();
        let answer = String::from_utf8_lossy(&answer);
        assert!(answer.starts_with("HTTP/1.1 403"), "{answer}");
    }
    assert_eq!(
        old_browser("http://localhost:3000").await.unwrap().status(),
        201
    );
}

#[tokio::test]
async fn the_web_client_is_served_beside_the_api_without_hiding_its_errors() {
    let dist = tempfile::tempdir().unwrap();
    std::fs::create_dir(dist.path().join("assets")).unwrap();
    std::fs::write(
        dist.path().join("index.html"),
        "<!doctype html><title>chat</title>",
    )
    .unwrap();
    std::fs::write(dist.path().join("assets/app-1a2b.js"), "console.log(1)").unwrap();
    let app = TestApp::builder()
        .with("CHAT__WEB__DIST_DIR", dist.path().display())
        .spawn()
        .await;

    for page in ["/", "/conversations/whatever"] {
        let response = app.get(page).await;
        assert_eq!(response.status(), 200, "{page}");
        assert_eq!(response.headers()["cache-control"], "no-cache", "{page}");
        assert!(response
            .text()
            .await
            .unwrap()
            .contains("<title>chat</title>"));
    }
    let bundle = app.get("/assets/app-1a2b.js").await;
    assert_eq!(bundle.status(), 200);
    assert!(bundle.headers()["cache-control"]
        .to_str()
        .unwrap()
        .contains("immutable"));
    // A missing bundle file or an unknown API path, also percent-encoded, is the JSON 404,
    // never the client's page.
    for missing in ["/assets/gone-9z.js", "/api/v1/nope", "/%61pi/v1/nope"] {
        let response = app.get(missing).await;
        assert_eq!(response.status(), 404, "{missing}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["code"], "not_found", "{missing}");
    }
}

#[tokio::test]
async fn head_answers_as_get_without_a_body_and_the_connection_stays_usable() {
    let app = TestApp::spawn().await;
    // One connection for every request: a body sent after a HEAD would corrupt the next answer.
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(1)
        .build()
        .unwrap();
    for path in [
        "/healthz",
        "/readyz",
        "/api/v1/conversations",
        "/chat/history",
    ] {
        let head = client.head(app.url(path)).send().await.unwrap();
        assert_eq!(head.status(), 200, "{path}");
        assert!(head.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/json"));
        // The client reads no body after a HEAD whatever the server sends: the GET that follows
        // on the same connection is what shows none was sent.
        let get = client.get(app.url(path)).send().await.unwrap();
        assert_eq!(get.status(), 200, "{path}");
        let _: Value = get.json().await.unwrap();
    }
    let refused = client.head(app.url("/chat/message")).send().await.unwrap();
    assert_eq!(refused.status(), 405);
    assert_eq!(refused.headers()["allow"], "POST");
    let refused = client
        .put(app.url("/api/v1/conversations"))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 405);
    assert_eq!(refused.headers()["allow"], "POST, GET, HEAD");
}
