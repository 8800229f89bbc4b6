//! Settings that would fail only later (an allocation, a timer, a panicking worker, a silent log)
//! are refused when they are read, naming their key.

use crate::helpers::load_settings as load;

/// The message of the settings' refusal of `variables`.
fn refusal(variables: &[(&str, &str)]) -> String {
    load(variables)
        .expect_err(&format!("{variables:?} refused"))
        .to_string()
}

#[test]
fn values_past_their_ceiling_are_refused_naming_the_key() {
    for (key, value, named) in [
        ("CHAT__SERVER__WORKERS", "513", "server.workers"),
        (
            "CHAT__SERVER__KEEP_ALIVE_SECS",
            "9223372036854775807",
            "server.keep_alive_secs",
        ),
        (
            "CHAT__SERVER__SHUTDOWN_GRACE_SECS",
            "18446744073709551615",
            "server.shutdown_grace_secs",
        ),
        (
            "CHAT__STORAGE__POOL_SIZE",
            "4294967295",
            "storage.pool_size",
        ),
        (
            "CHAT__STORAGE__MAX_BATCH",
            "100000000000",
            "storage.max_batch",
        ),
        (
            "CHAT__STORAGE__WRITE_QUEUE_CAPACITY",
            "100000000000",
            "storage.write_queue_capacity",
        ),
        (
            "CHAT__STORAGE__STATEMENT_TIMEOUT_SECS",
            "2592000",
            "storage.statement_timeout_secs",
        ),
        (
            "CHAT__TELEMETRY__QUEUE_CAPACITY",
            "18446744073709551615",
            "telemetry.queue_capacity",
        ),
        (
            "CHAT__ASSISTANT__MAX_CONCURRENCY",
            "18446744073709551615",
            "assistant.max_concurrency",
        ),
        ("CHAT__CACHE__MAX_BYTES", "17179869185", "cache.max_bytes"),
        (
            "CHAT__CACHE__STREAM_LOG_MAX_BYTES",
            "17179869185",
            "cache.stream_log_max_bytes",
        ),
        (
            "CHAT__LIMITS__MAX_HEADER_BYTES",
            "200000",
            "limits.max_header_bytes",
        ),
    ] {
        let error = refusal(&[(key, value)]);
        // Past the setting's type, the value is refused as it is read; past a ceiling the type
        // holds, by the check of ceilings.
        assert!(
            error.contains(named) && (error.contains("at most") || error.contains("range")),
            "{key}={value}: {error}"
        );
    }
    let at_the_ceiling = load(&[("CHAT__SERVER__WORKERS", "512")]).unwrap();
    assert_eq!(at_the_ceiling.server.workers, 512);
}

#[test]
fn numbers_that_are_not_what_the_key_takes_are_refused_instead_of_rounded_or_guessed() {
    for (key, value, named) in [
        ("CHAT__SERVER__WORKERS", "1.5", "server.workers"),
        ("CHAT__SERVER__WORKERS", "true", "server.workers"),
        ("CHAT__SERVER__PORT", "yes", "server.port"),
        ("CHAT__SERVER__PORT", "-1", "server.port"),
        ("CHAT__STORAGE__MAX_BATCH", "on", "storage.max_batch"),
        ("CHAT__RATE_LIMIT__BURST", "0.5", "rate_limit.burst"),
        (
            "CHAT__RATE_LIMIT__PER_SECOND",
            "true",
            "rate_limit.per_second",
        ),
        (
            "CHAT__TELEMETRY__SAMPLE_RATIO",
            "yes",
            "telemetry.sample_ratio",
        ),
    ] {
        let error = refusal(&[(key, value)]);
        assert!(error.contains(named), "{key}={value}: {error}");
    }
    let written_as_numbers = load(&[
        ("CHAT__SERVER__WORKERS", "3"),
        ("CHAT__SERVER__PORT", "8081"),
        ("CHAT__RATE_LIMIT__PER_SECOND", "2.5"),
        ("CHAT__TELEMETRY__SAMPLE_RATIO", "1"),
    ])
    .unwrap();
    assert_eq!(written_as_numbers.server.workers, 3);
    assert_eq!(written_as_numbers.server.port, 8081);
    assert!((written_as_numbers.rate_limit.per_second - 2.5).abs() < f64::EPSILON);
    assert!((written_as_numbers.telemetry.sample_ratio - 1.0).abs() < f64::EPSILON);
}

#[test]
fn text_settings_from_the_environment_stay_as_written() {
    let settings = load(&[
        ("CHAT__STORAGE__URL", "007"),
        ("CHAT__ASSISTANT__MODEL", "1e3"),
        ("CHAT__CACHE__KEY_PREFIX", "0x10"),
        ("CHAT__SECURITY__HSTS", "true"),
        ("CHAT__SERVER__KEEP_ALIVE_SECS", "2.0"),
        ("CHAT__RATE_LIMIT__TRUSTED_PROXIES", "10.0.0.1, 10.0.0.0/8"),
        ("CHAT__CORS__ALLOWED_ORIGINS", ""),
    ])
    .unwrap();
    assert_eq!(settings.storage.url, "007");
    assert_eq!(settings.assistant.model, "1e3");
    assert_eq!(settings.cache.key_prefix, "0x10");
    assert!(settings.security.hsts);
    assert_eq!(settings.server.keep_alive_secs, 2);
    assert_eq!(
        settings.rate_limit.trusted_proxies,
        ["10.0.0.1", "10.0.0.0/8"]
    );
    assert!(settings.cors.allowed_origins.is_empty());
}

#[test]
fn a_rate_too_small_for_a_timer_is_refused() {
    for per_second in ["1e-300", "0.0001", "-1", "NaN"] {
        let error = refusal(&[("CHAT__RATE_LIMIT__PER_SECOND", per_second)]);
        assert!(
            error.contains("rate_limit.per_second"),
            "{per_second}: {error}"
        );
    }
    let off = load(&[("CHAT__RATE_LIMIT__PER_SECOND", "0")]).unwrap();
    assert!(off.rate_limit.limit().is_none());
    assert!(load(&[("CHAT__RATE_LIMIT__PER_SECOND", "0.001")]).is_ok());
}

#[test]
fn a_misspelt_log_level_is_refused_instead_of_silencing_the_log() {
    for level in ["warning", "verbose", "inf", "", "  ", "info,warning"] {
        let error = refusal(&[("CHAT__LOG__LEVEL", level)]);
        assert!(error.contains("log.level"), "{level:?}: {error}");
    }
    for level in [
        "info",
        "WARN",
        "off",
        "api_actix=debug,info",
        "server=trace,warn",
    ] {
        assert!(load(&[("CHAT__LOG__LEVEL", level)]).is_ok(), "{level:?}");
    }
}

#[test]
fn a_misspelt_choice_is_refused_naming_the_key_and_every_value_it_takes() {
    for (variable, value, key, allowed) in [
        (
            "CHAT__STORAGE__BACKEND",
            "postgresql",
            "storage.backend",
            &["sqlite", "postgres"][..],
        ),
        (
            "CHAT__ASSISTANT__KIND",
            "gpt",
            "assistant.kind",
            &["dummy", "openai"],
        ),
        (
            "CHAT__ASSISTANT__DUMMY__MODE",
            "random",
            "assistant.dummy.mode",
            &["canned", "deterministic"],
        ),
        (
            "CHAT__CACHE__KIND",
            "valkey",
            "cache.kind",
            &["none", "memory", "redis"],
        ),
        (
            "CHAT__LOG__FORMAT",
            "text",
            "log.format",
            &["pretty", "json"],
        ),
        (
            "CHAT__LOG__FORMAT",
            "JSON",
            "log.format",
            &["pretty", "json"],
        ),
        ("CHAT__LOG__FORMAT", "", "log.format", &["pretty", "json"]),
    ] {
        let error = refusal(&[(variable, value)]);
        assert!(error.contains(key), "{variable}={value:?}: {error}");
        assert!(
            error.contains(&format!("`{value}`")),
            "{variable}={value:?}: {error}"
        );
        for name in allowed {
            assert!(
                error.contains(&format!("`{name}`")),
                "{variable}={value:?}: {error}"
            );
        }
    }
    assert!(load(&[
        ("CHAT__LOG__FORMAT", "json"),
        ("CHAT__CACHE__KIND", "memory")
    ])
    .is_ok());
}

#[test]
fn urls_are_checked_when_read_and_a_redis_password_is_never_repeated() {
    let openai = ("CHAT__ASSISTANT__KIND", "openai");
    for base_url in [
        "http://127.0.0.1:99999/v1",
        "http://exa mple.com/v1",
        "http://",
        "ftp://host/v1",
    ] {
        let error = refusal(&[openai, ("CHAT__ASSISTANT__BASE_URL", base_url)]);
        assert!(error.contains("assistant.base_url"), "{base_url}: {error}");
    }
    assert!(load(&[
        openai,
        ("CHAT__ASSISTANT__BASE_URL", "http://127.0.0.1:11434/v1")
    ])
    .is_ok());

    let redis = ("CHAT__CACHE__KIND", "redis");
    for url in [
        "redis://:hunter2@127.0.0.1:6379/abc",
        "rediss://:hunter2@redis.example.com:6380/0",
        "http://:hunter2@127.0.0.1:6379",
        "redis://:hunter2@/0",
    ] {
        let error = refusal(&[redis, ("CHAT__CACHE__URL", url)]);
        assert!(error.contains("cache.url"), "{url}: {error}");
        assert!(!error.contains("hunter2"), "the password leaked: {error}");
    }
    for url in [
        "redis://127.0.0.1:6379",
        "redis://:pw@cache:6379/2",
        "redis://cache/",
    ] {
        assert!(load(&[redis, ("CHAT__CACHE__URL", url)]).is_ok(), "{url}");
    }
}

#[test]
fn an_api_key_a_header_cannot_carry_is_refused_without_repeating_it() {
    let openai = ("CHAT__ASSISTANT__KIND", "openai");
    let error = refusal(&[openai, ("CHAT__ASSISTANT__API_KEY", "sk-hunter2\n")]);
    assert!(
        error.contains("assistant.api_key") && !error.contains("hunter2"),
        "{error}"
    );
    assert!(load(&[openai, ("CHAT__ASSISTANT__API_KEY", "sk-hunter2")]).is_ok());
}

#[test]
fn no_secret_of_the_settings_is_in_their_debug_print() {
    let settings = load(&[
        ("CHAT__ASSISTANT__KIND", "openai"),
        (
            "CHAT__ASSISTANT__BASE_URL",
            "https://gateway:base-secret@llm.example/v1",
        ),
        ("CHAT__ASSISTANT__API_KEY", "sk-key-secret"),
        (
            "CHAT__TELEMETRY__OTLP_ENDPOINT",
            "http://collector:otlp-secret@127.0.0.1:4318",
        ),
        ("CHAT__STORAGE__BACKEND", "postgres"),
        (
            "CHAT__STORAGE__URL",
            "postgres://chat:store-secret@127.0.0.1:5432/chat",
        ),
        ("CHAT__CACHE__KIND", "redis"),
        ("CHAT__CACHE__URL", "redis://:cache-secret@127.0.0.1:6379/0"),
    ])
    .unwrap();
    let shown = format!("{settings:?}");
    assert!(!shown.contains("secret"), "{shown}");
    assert!(
        shown.contains("https://llm.example/v1") && shown.contains("http://127.0.0.1:4318/"),
        "the URLs are still shown, without their credentials: {shown}"
    );
    let scope = server::wiring::cache_scope(&settings.assistant);
    assert_eq!(
        scope.provider, "https://llm.example/v1",
        "the reply cache's key and its Debug print name the provider without credentials"
    );
}

#[test]
fn a_blank_api_key_is_no_key() {
    for blank in ["", "  "] {
        let settings = load(&[
            ("CHAT__ASSISTANT__KIND", "openai"),
            ("CHAT__ASSISTANT__API_KEY", blank),
        ])
        .unwrap();
        assert!(
            settings.assistant.configured_api_key().is_none(),
            "{blank:?}"
        );
    }
    let settings = load(&[("CHAT__ASSISTANT__API_KEY", "sk-1")]).unwrap();
    assert!(settings.assistant.configured_api_key().is_some());
}

#[test]
fn a_directory_where_a_config_file_should_be_is_named_so_not_skipped() {
    let directory = tempfile::tempdir().unwrap();
    std::fs::create_dir(directory.path().join("default.toml")).unwrap();
    let refused = server::settings::Settings::load_from(
        directory.path(),
        None,
        config::Environment::default().source(Some(Default::default())),
    )
    .expect_err("a directory named default.toml is refused");
    let refused = refused.to_string();
    assert!(refused.contains("default.toml"), "{refused}");
    // Not the `config` crate's "not found": it is there.
    assert!(refused.contains("is a directory"), "{refused}");
}

#[test]
fn a_sqlite_url_naming_no_file_to_keep_is_refused() {
    for url in [
        "sqlite://",
        "sqlite:// ",
        ":memory:",
        "sqlite://:memory:",
        "file:chat.db",
        "sqlite://file:chat.db",
        "file::memory:?cache=shared",
    ] {
        let refusal = refusal(&[("CHAT__STORAGE__URL", url)]);
        assert!(refusal.contains("storage.url"), "{url}: {refusal}");
    }
    for url in ["chat.db", "sqlite://chat.db", "data/memory.db", "./file.db"] {
        load(&[("CHAT__STORAGE__URL", url)]).expect(url);
    }
}

#[test]
fn a_database_password_libpq_would_misread_is_refused_without_repeating_it() {
    for (url, secret) in [
        ("postgres://chat:50%zebra@db/chat", "zebra"),
        ("postgres://chat:kiwi@lemon@db/chat", "lemon"),
        ("postgres://chat:kiwi/lemon@db/chat", "lemon"),
    ] {
        let refusal = refusal(&[
            ("CHAT__STORAGE__BACKEND", "postgres"),
            ("CHAT__STORAGE__URL", url),
        ]);
        assert!(refusal.contains("storage.url"), "{refusal}");
        assert!(!refusal.contains(secret), "{url}: {refusal}");
        assert!(!refusal.contains("kiwi"), "{url}: {refusal}");
    }
    load(&[
        ("CHAT__STORAGE__BACKEND", "postgres"),
        (
            "CHAT__STORAGE__URL",
            "postgres://chat:50%25off%40x@db:5432/chat?sslmode=require",
        ),
    ])
    .expect("a percent-encoded password is fine");
}

#[test]
fn a_memory_cache_needs_room_for_at_least_one_byte() {
    let error = refusal(&[
        ("CHAT__CACHE__KIND", "memory"),
        ("CHAT__CACHE__MAX_BYTES", "0"),
    ]);
    assert!(error.contains("cache.max_bytes"), "{error}");
}

#[test]
fn the_in_process_stream_log_needs_room_for_at_least_one_byte() {
    let error = refusal(&[("CHAT__CACHE__STREAM_LOG_MAX_BYTES", "0")]);
    assert!(
        error.contains("cache.stream_log_max_bytes") && error.contains("at least 1"),
        "{error}"
    );
    let in_redis = load(&[
        ("CHAT__CACHE__KIND", "redis"),
        ("CHAT__CACHE__STREAM_LOG_MAX_BYTES", "0"),
    ])
    .expect("Redis bounds its own memory");
    assert_eq!(in_redis.cache.stream_log_max_bytes, 0);
    assert_eq!(load(&[]).unwrap().cache.stream_log_max_bytes, 16 << 20);
}

#[test]
fn a_finished_reply_stays_resumable_for_at_least_a_second() {
    let error = refusal(&[("CHAT__CACHE__STREAM_LOG_TTL_SECS", "0")]);
    assert!(
        error.contains("cache.stream_log_ttl_secs") && error.contains("at least 1"),
        "{error}"
    );
    let shortest = load(&[("CHAT__CACHE__STREAM_LOG_TTL_SECS", "1")]).unwrap();
    assert_eq!(shortest.cache.stream_log_ttl_secs, 1);
}

#[test]
fn context_beyond_one_page_of_the_conversation_is_refused() {
    let error = refusal(&[("CHAT__ASSISTANT__CONTEXT_MESSAGES", "201")]);
    assert!(
        error.contains("assistant.context_messages") && error.contains("at most 200"),
        "{error}"
    );
    let a_whole_page = load(&[("CHAT__ASSISTANT__CONTEXT_MESSAGES", "200")]).unwrap();
    assert_eq!(a_whole_page.assistant.context_messages, 200);
}

#[test]
fn allowed_origins_must_be_written_as_a_browser_sends_them() {
    for (origin, why) in [
        ("http://a.example/path", "write \"http://a.example\""),
        ("http://user@a.example", "write \"http://a.example\""),
        ("HTTP://A.example", "write \"http://a.example\""),
        ("https://a.example:443", "write \"https://a.example\""),
        ("http://a.example?x", "write \"http://a.example\""),
        ("http://a.example:99999", "not an origin"),
        ("localhost:3000", "not an http:// or https:// origin"),
        ("ftp://a.example", "not an http:// or https:// origin"),
    ] {
        let error = refusal(&[("CHAT__CORS__ALLOWED_ORIGINS", origin)]);
        assert!(error.contains("cors.allowed_origins"), "{origin}: {error}");
        assert!(error.contains(why), "{origin}: {error}");
    }
    let settings = load(&[(
        "CHAT__CORS__ALLOWED_ORIGINS",
        "http://a.example, http://localhost:3000, https://[::1]:8443, *",
    )])
    .unwrap();
    assert_eq!(settings.cors.allowed_origins.len(), 4);
}

#[test]
fn allowed_hosts_default_to_no_other_name_only_on_a_loopback_address() {
    // IP addresses and localhost are always answered (they cannot be rebound); on a loopback
    // address no other name is.
    for loopback in [
        "127.0.0.1",
        "127.0.0.2",
        "::1",
        "::ffff:127.0.0.1",
        "localhost",
    ] {
        let settings = load(&[("CHAT__SERVER__HOST", loopback)]).unwrap();
        assert!(settings.allowed_hosts().is_empty(), "{loopback}");
    }
    let every_interface = load(&[("CHAT__SERVER__HOST", "0.0.0.0")]).unwrap();
    assert_eq!(every_interface.allowed_hosts(), ["*"]);
    let listed = load(&[
        ("CHAT__SERVER__HOST", "127.0.0.1"),
        (
            "CHAT__SECURITY__ALLOWED_HOSTS",
            "Chat.Example.com, [::1], 10.0.0.5",
        ),
    ])
    .unwrap();
    assert_eq!(
        listed.allowed_hosts(),
        ["chat.example.com", "[::1]", "10.0.0.5"]
    );
    for host in [
        "chat.example.com:8000",
        "http://chat.example.com",
        "a b",
        "user@host",
        "::1",
        "*.example.com",
        "bücher.example",
    ] {
        let error = refusal(&[("CHAT__SECURITY__ALLOWED_HOSTS", host)]);
        assert!(error.contains("security.allowed_hosts"), "{host}: {error}");
    }
    let unicode = refusal(&[("CHAT__SECURITY__ALLOWED_HOSTS", "bücher.example")]);
    assert!(unicode.contains("xn--bcher-kva.example"), "{unicode}");
}
