//! Layered configuration: the embedded `config/default.toml`, then `default.toml` and
//! `<CHAT_ENV>.toml` from `CHAT_CONFIG_DIR` (default `./config`) when present, then environment
//! variables `CHAT__SECTION__KEY`. A bad value stops the start with a message naming the key.

use std::path::{Path, PathBuf};
use std::time::Duration;

use config::{Config, Environment, File, FileFormat};
use domain::PageLimit;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use crate::choice::one_of;
use crate::strict_numbers::{integer, number};
use crate::text_list::comma_separated;

const BUILT_IN_DEFAULTS: &str = include_str!("../../../config/default.toml");

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    pub server: ServerSettings,
    pub storage: StorageSettings,
    pub assistant: AssistantSettings,
    pub cache: CacheSettings,
    pub log: LogSettings,
    pub telemetry: TelemetrySettings,
    pub cors: CorsSettings,
    pub limits: LimitSettings,
    pub web: WebSettings,
    pub security: SecuritySettings,
    pub rate_limit: RateLimitSettings,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSettings {
    pub host: String,
    #[serde(deserialize_with = "integer")]
    pub port: u16,
    #[serde(deserialize_with = "integer")]
    pub workers: usize,
    #[serde(deserialize_with = "integer")]
    pub keep_alive_secs: u64,
    #[serde(deserialize_with = "integer")]
    pub client_request_timeout_secs: u64,
    #[serde(deserialize_with = "integer")]
    pub shutdown_grace_secs: u64,
    #[serde(deserialize_with = "integer")]
    pub max_connections_per_worker: usize,
    /// Seconds of silence in an event stream after which a comment is sent; 0 for never.
    #[serde(deserialize_with = "integer")]
    pub stream_keep_alive_secs: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StorageBackend {
    Sqlite,
    Postgres,
}

#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageSettings {
    #[serde(deserialize_with = "one_of")]
    pub backend: StorageBackend,
    /// May hold a password (PostgreSQL), so `Debug` never prints it.
    pub url: String,
    #[serde(deserialize_with = "integer")]
    pub pool_size: u32,
    #[serde(deserialize_with = "integer")]
    pub connect_timeout_secs: u64,
    /// PostgreSQL: longest a statement may run; 0 for no limit.
    #[serde(deserialize_with = "integer")]
    pub statement_timeout_secs: u64,
    #[serde(deserialize_with = "integer")]
    pub write_queue_capacity: usize,
    #[serde(deserialize_with = "integer")]
    pub max_batch: usize,
}

impl std::fmt::Debug for StorageSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StorageSettings")
            .field("backend", &self.backend)
            .field("url", &"[redacted]")
            .field("pool_size", &self.pool_size)
            .field("connect_timeout_secs", &self.connect_timeout_secs)
            .field("statement_timeout_secs", &self.statement_timeout_secs)
            .field("write_queue_capacity", &self.write_queue_capacity)
            .field("max_batch", &self.max_batch)
            .finish()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AssistantKind {
    Dummy,
    Openai,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DummyModeSetting {
    Canned,
    Deterministic,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DummySettings {
    #[serde(deserialize_with = "one_of")]
    pub mode: DummyModeSetting,
    #[serde(deserialize_with = "integer")]
    pub word_delay_ms: u64,
}

#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AssistantSettings {
    #[serde(deserialize_with = "one_of")]
    pub kind: AssistantKind,
    /// May hold credentials (`https://user:token@...`), so `Debug` shows it without them.
    pub base_url: String,
    pub model: String,
    #[serde(default)]
    pub api_key: Option<SecretString>,
    pub system_prompt: String,
    #[serde(deserialize_with = "integer")]
    pub timeout_secs: u64,
    #[serde(deserialize_with = "integer")]
    pub max_retries: u32,
    #[serde(deserialize_with = "integer")]
    pub context_messages: usize,
    #[serde(deserialize_with = "integer")]
    pub max_concurrency: usize,
    #[serde(deserialize_with = "integer")]
    pub max_queue: usize,
    pub dummy: DummySettings,
}

impl std::fmt::Debug for AssistantSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AssistantSettings")
            .field("kind", &self.kind)
            .field("base_url", &url_without_credentials(&self.base_url))
            .field("model", &self.model)
            .field("api_key", &self.api_key)
            .field("system_prompt", &self.system_prompt)
            .field("timeout_secs", &self.timeout_secs)
            .field("max_retries", &self.max_retries)
            .field("context_messages", &self.context_messages)
            .field("max_concurrency", &self.max_concurrency)
            .field("max_queue", &self.max_queue)
            .field("dummy", &self.dummy)
            .finish()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CacheKind {
    None,
    Memory,
    Redis,
}

#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheSettings {
    #[serde(deserialize_with = "one_of")]
    pub kind: CacheKind,
    /// May hold a password, so `Debug` never prints it.
    pub url: String,
    pub key_prefix: String,
    #[serde(deserialize_with = "integer")]
    pub ttl_secs: u64,
    #[serde(deserialize_with = "integer")]
    pub max_entries: usize,
    #[serde(deserialize_with = "integer")]
    pub max_bytes: usize,
    #[serde(deserialize_with = "integer")]
    pub stream_log_ttl_secs: u64,
    #[serde(deserialize_with = "integer")]
    pub stream_log_max_bytes: usize,
}

impl std::fmt::Debug for CacheSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CacheSettings")
            .field("kind", &self.kind)
            .field("url", &"[redacted]")
            .field("key_prefix", &self.key_prefix)
            .field("ttl_secs", &self.ttl_secs)
            .field("max_entries", &self.max_entries)
            .field("max_bytes", &self.max_bytes)
            .field("stream_log_ttl_secs", &self.stream_log_ttl_secs)
            .field("stream_log_max_bytes", &self.stream_log_max_bytes)
            .finish()
    }
}

impl CacheSettings {
    /// `redis://[:password@]host[:port][/db]`. The URL may hold a password, so no message repeats it.
    fn validate_redis_url(&self) -> Result<(), SettingsError> {
        const EXAMPLE: &str = "redis://:password@host:6379/0";
        let url = parse_url("cache.url", &self.url, EXAMPLE)?;
        if url.scheme() == "rediss" {
            return Err(invalid(
                "cache.url",
                "rediss:// (TLS) is not supported by this build; use redis://, through a TLS tunnel where the network needs one",
            ));
        }
        let database = url.path().trim_start_matches('/');
        if url.scheme() != "redis"
            || url.host().is_none()
            || !(database.is_empty() || database.parse::<u32>().is_ok())
            || url.query().is_some()
            || url.fragment().is_some()
        {
            return Err(invalid(
                "cache.url",
                format!("must be a URL such as {EXAMPLE:?} (the path, if any, a database number)"),
            ));
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Pretty,
    Json,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSettings {
    pub level: String,
    #[serde(deserialize_with = "one_of")]
    pub format: LogFormat,
}

#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TelemetrySettings {
    /// The OTLP/HTTP collector's base URL, or the full `.../v1/traces` URL; empty for no export.
    /// May hold credentials, so `Debug` shows it without them.
    pub otlp_endpoint: String,
    pub service_name: String,
    /// Share of new traces exported, from 0 to 1.
    #[serde(deserialize_with = "number")]
    pub sample_ratio: f64,
    #[serde(deserialize_with = "integer")]
    pub export_timeout_secs: u64,
    #[serde(deserialize_with = "integer")]
    pub batch_size: usize,
    #[serde(deserialize_with = "integer")]
    pub queue_capacity: usize,
}

impl std::fmt::Debug for TelemetrySettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TelemetrySettings")
            .field(
                "otlp_endpoint",
                &url_without_credentials(&self.otlp_endpoint),
            )
            .field("service_name", &self.service_name)
            .field("sample_ratio", &self.sample_ratio)
            .field("export_timeout_secs", &self.export_timeout_secs)
            .field("batch_size", &self.batch_size)
            .field("queue_capacity", &self.queue_capacity)
            .finish()
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CorsSettings {
    #[serde(deserialize_with = "comma_separated")]
    pub allowed_origins: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitSettings {
    #[serde(deserialize_with = "integer")]
    pub max_message_chars: usize,
    #[serde(deserialize_with = "integer")]
    pub max_body_bytes: usize,
    /// Event streams one client address may have open at once; 0 for no limit.
    #[serde(deserialize_with = "integer")]
    pub max_streams_per_client: usize,
    #[serde(deserialize_with = "integer")]
    pub max_header_bytes: usize,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitSettings {
    /// Requests per second per client address; 0 turns rate limiting off.
    #[serde(deserialize_with = "number")]
    pub per_second: f64,
    /// Requests a client may make at once after being idle.
    #[serde(deserialize_with = "integer")]
    pub burst: u32,
    /// Addresses or CIDR blocks of reverse proxies whose `X-Forwarded-For` is believed.
    #[serde(deserialize_with = "comma_separated")]
    pub trusted_proxies: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebSettings {
    pub dist_dir: PathBuf,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecuritySettings {
    pub hsts: bool,
    pub metrics_through_proxies: bool,
    /// Host names requests may carry in `Host`; `*` for any. Empty: the loopback names when the
    /// server listens on a loopback address, any host otherwise (see [`Settings::allowed_hosts`]).
    #[serde(deserialize_with = "comma_separated")]
    pub allowed_hosts: Vec<String>,
}

/// A configuration problem, naming the key at fault.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct SettingsError(String);

fn invalid(key: &str, why: impl std::fmt::Display) -> SettingsError {
    SettingsError(format!("invalid value for `{key}`: {why}"))
}

/// Refuses `value` above `max`. The ceilings sit far above any sensible setting; what they stop is
/// a typo of a few digits too many, which would otherwise surface later as an allocation of
/// gigabytes, a timer that overflows, or a worker thread that panics.
fn at_most(key: &str, value: impl TryInto<u64>, max: u64) -> Result<(), SettingsError> {
    if value.try_into().map_or(true, |value| value > max) {
        return Err(invalid(key, format!("must be at most {max}")));
    }
    Ok(())
}

const LOG_LEVELS: [&str; 6] = ["trace", "debug", "info", "warn", "error", "off"];

/// A `tracing` filter whose every directive is a level or `target=level`. A bare word that is not
/// a level is valid filter syntax (every event of the target with that name) but is nearly always a
/// misspelt level such as `warning`, which would silence the log.
fn check_log_level(level: &str) -> Result<(), SettingsError> {
    let refuse = |why: String| Err(invalid("log.level", why));
    if level.trim().is_empty() {
        return refuse("must not be empty; use a level such as \"info\"".to_owned());
    }
    if tracing_subscriber::EnvFilter::try_new(level).is_err() {
        return refuse(format!(
            "{level:?} is not a level or filter such as \"info\""
        ));
    }
    for directive in level.split(',').map(str::trim) {
        let is_level = LOG_LEVELS.contains(&directive.to_ascii_lowercase().as_str());
        if !is_level && !directive.contains('=') {
            return refuse(format!(
                "{directive:?} is not a level ({}) nor a `target=level` directive",
                LOG_LEVELS.join(", ")
            ));
        }
    }
    Ok(())
}

/// `url` as it may be shown in a log or a `Debug` print: without the user name and password it
/// may carry. Text that is not a URL is not shown at all, as it may be a mistyped one.
pub(crate) fn url_without_credentials(url: &str) -> String {
    if url.is_empty() {
        return String::new();
    }
    match reqwest::Url::parse(url) {
        Ok(mut parsed) => {
            let _ = parsed.set_username("");
            let _ = parsed.set_password(None);
            parsed.to_string()
        }
        Err(_) => "[not a URL]".to_owned(),
    }
}

/// Parses a URL setting. The message never repeats the value, which may hold a password.
fn parse_url(key: &str, value: &str, example: &str) -> Result<reqwest::Url, SettingsError> {
    reqwest::Url::parse(value).map_err(|error| {
        invalid(
            key,
            format!("is not a URL ({error}); expected one such as {example:?}"),
        )
    })
}

/// `*`, or an origin exactly as a browser sends it in `Origin` (`scheme://host[:port]`, the host in
/// lower case, no default port): an entry written otherwise (a path, a user, a port out of range,
/// `HTTP://`, `:443` on https) would never match, and its site's writes would be refused.
fn check_origin(origin: &str) -> Result<(), SettingsError> {
    const KEY: &str = "cors.allowed_origins";
    if origin == "*" {
        return Ok(());
    }
    let url = reqwest::Url::parse(origin).map_err(|error| {
        invalid(
            KEY,
            format!("{origin:?} is not an origin like \"https://chat.example.com\": {error}"),
        )
    })?;
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
        return Err(invalid(
            KEY,
            format!("{origin:?} is not an http:// or https:// origin"),
        ));
    }
    let as_sent = url.origin().ascii_serialization();
    if as_sent != origin {
        return Err(invalid(
            KEY,
            format!(
                "{origin:?} is not an origin as a browser sends it (scheme://host[:port], \
                 nothing more); write {as_sent:?}"
            ),
        ));
    }
    Ok(())
}

/// `*`, or a host name or IP address as a `Host` header carries it, without a port (an IPv6
/// address in brackets). A name is matched whole: `*.example.com` would never match.
fn check_host_name(host: &str) -> Result<(), SettingsError> {
    const KEY: &str = "security.allowed_hosts";
    if host == "*" {
        return Ok(());
    }
    let parsed = (!host.is_empty() && !host.contains('*'))
        .then(|| reqwest::Url::parse(&format!("http://{host}/")).ok())
        .flatten()
        .filter(|url| url.port().is_none() && url.username().is_empty() && url.path() == "/");
    let Some(as_sent) = parsed.as_ref().and_then(|url| url.host_str()) else {
        return Err(invalid(
            KEY,
            format!(
                "{host:?} is not a host name like \"chat.example.com\" (no scheme, no port, \
                 no wildcard: `*` alone allows any host)"
            ),
        ));
    };
    if as_sent != host.to_ascii_lowercase() {
        return Err(invalid(
            KEY,
            format!("{host:?} is not written as a Host header carries it; write {as_sent:?}"),
        ));
    }
    Ok(())
}

/// An `http://` or `https://` URL with a host, as parsed by the HTTP client that will use it.
fn check_http_url(key: &str, value: &str, example: &str) -> Result<reqwest::Url, SettingsError> {
    let url = parse_url(key, value, example)?;
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
        return Err(invalid(
            key,
            format!("must be an http:// or https:// URL with a host, such as {example:?}"),
        ));
    }
    Ok(url)
}

/// A variable such as `CHAT_SERVER__PORT`: a setting's `__` path after a one-underscore prefix,
/// which the environment source would skip without a word. (`CHAT_ENV`, `CHAT_CONFIG_DIR` and the
/// scripts' `CHAT_SERVER_BIN` have no `__`.)
fn misspelt_setting_variable(mut names: impl Iterator<Item = String>) -> Option<String> {
    names.find(|name| {
        name.starts_with("CHAT_") && !name.starts_with("CHAT__") && name.contains("__")
    })
}

/// Two setting variables of which one is a section of the other, such as
/// `CHAT__LIMITS__MAX_MESSAGE_CHARS` and a misspelt `CHAT__LIMITS__MAX_MESSAGE_CHARS__TYPO`: the
/// environment source reads them in no fixed order, so one start refused the pair and the next
/// one silently dropped the misspelt variable. Two names for one setting (`CHAT__SERVER__PORT`
/// and `chat__server__port`) clash the same way. Returns the pair, in upper case.
fn clashing_setting_variables(names: impl Iterator<Item = String>) -> Option<(String, String)> {
    // The source matches names whatever their case.
    let settings: Vec<String> = names
        .map(|name| name.to_ascii_uppercase())
        .filter(|name| name.starts_with("CHAT__"))
        .collect();
    settings.iter().enumerate().find_map(|(index, value)| {
        let section = format!("{value}__");
        settings
            .iter()
            .enumerate()
            .find(|&(other, name)| name.starts_with(&section) || (other != index && name == value))
            .map(|(_, nested)| (value.clone(), nested.clone()))
    })
}

/// A layer of configuration read from `path` when the file is there. Only a missing file is
/// skipped: one that is there but cannot be read (no permission, a directory) is an error, or the
/// server would start on other settings than its operator wrote without a word.
fn config_file(path: PathBuf) -> Result<File<config::FileSourceFile, FileFormat>, SettingsError> {
    let missing = matches!(path.try_exists(), Ok(false));
    // The `config` crate would call a directory of that name "not found", which it is not.
    if !missing && path.is_dir() {
        return Err(SettingsError(format!(
            "configuration error: {} is a directory, not a configuration file",
            path.display()
        )));
    }
    Ok(File::from(path).required(!missing))
}

impl Settings {
    /// Reads the layers from the process environment.
    pub fn load() -> Result<Self, SettingsError> {
        let names = || std::env::vars_os().filter_map(|(name, _)| name.into_string().ok());
        if let Some(name) = misspelt_setting_variable(names()) {
            return Err(SettingsError(format!(
                "configuration error: `{name}` looks like a setting, but settings start with \
                 `CHAT__` (two underscores), e.g. `CHAT__SERVER__PORT`"
            )));
        }
        if let Some((value, nested)) = clashing_setting_variables(names()) {
            let why = if value == nested {
                format!("`{value}` is set twice, in different cases")
            } else {
                format!(
                    "`{nested}` names a setting under `{value}`, which is set too and holds a \
                     value, not settings"
                )
            };
            return Err(SettingsError(format!(
                "configuration error: {why}; remove the one not meant"
            )));
        }
        let directory = match std::env::var("CHAT_CONFIG_DIR") {
            // Named on purpose: a mistyped directory must not start the server on the defaults.
            Ok(named) if !Path::new(&named).is_dir() => {
                return Err(SettingsError(format!(
                    "configuration error: CHAT_CONFIG_DIR `{named}` is not a directory"
                )));
            }
            Ok(named) => named,
            Err(_) => "config".to_owned(),
        };
        let environment = std::env::var("CHAT_ENV")
            .ok()
            .filter(|name| !name.is_empty());
        Self::load_from(
            Path::new(&directory),
            environment.as_deref(),
            Environment::default(),
        )
    }

    /// Reads the layers from `directory`, the named environment file and `variables`.
    pub fn load_from(
        directory: &Path,
        environment: Option<&str>,
        variables: Environment,
    ) -> Result<Self, SettingsError> {
        let mut builder = Config::builder()
            .add_source(File::from_str(BUILT_IN_DEFAULTS, FileFormat::Toml))
            .add_source(config_file(directory.join("default.toml"))?);
        if let Some(name) = environment {
            builder = builder.add_source(config_file(directory.join(format!("{name}.toml")))?);
        }
        let settings: Settings = builder
            .add_source(
                variables
                    .prefix("CHAT")
                    .prefix_separator("__")
                    .separator("__")
                    // Left as text: numeric, boolean and list keys convert it themselves, and
                    // text keys (a file name `007`, an API key of digits) must not become numbers.
                    .try_parsing(false),
            )
            .build()
            .and_then(Config::try_deserialize)
            .map_err(|error| SettingsError(format!("configuration error: {error}")))?;
        settings.validate()?;
        Ok(settings)
    }

    fn validate(&self) -> Result<(), SettingsError> {
        if self.server.host.trim().is_empty() {
            return Err(invalid("server.host", "must not be empty"));
        }
        if self.server.max_connections_per_worker == 0 {
            return Err(invalid(
                "server.max_connections_per_worker",
                "must be at least 1",
            ));
        }
        if self.server.client_request_timeout_secs == 0 {
            return Err(invalid(
                "server.client_request_timeout_secs",
                "must be at least 1",
            ));
        }
        self.storage.validate()?;
        if self.limits.max_message_chars == 0 {
            return Err(invalid("limits.max_message_chars", "must be at least 1"));
        }
        if self.limits.max_header_bytes < 1024 {
            return Err(invalid("limits.max_header_bytes", "must be at least 1024"));
        }
        if self.limits.max_body_bytes < 64 {
            return Err(invalid("limits.max_body_bytes", "must be at least 64"));
        }
        check_log_level(&self.log.level)?;
        for origin in &self.cors.allowed_origins {
            check_origin(origin)?;
        }
        for host in &self.security.allowed_hosts {
            check_host_name(host)?;
        }
        if self.cache.kind == CacheKind::Redis {
            self.cache.validate_redis_url()?;
        }
        if self.cache.kind == CacheKind::Memory && self.cache.max_entries == 0 {
            return Err(invalid("cache.max_entries", "must be at least 1"));
        }
        if self.cache.kind == CacheKind::Memory && self.cache.max_bytes == 0 {
            return Err(invalid("cache.max_bytes", "must be at least 1"));
        }
        if self.cache.stream_log_ttl_secs == 0 {
            // The log of a reply that just finished would go before its own followers read `done`.
            return Err(invalid("cache.stream_log_ttl_secs", "must be at least 1"));
        }
        if self.cache.kind != CacheKind::Redis && self.cache.stream_log_max_bytes == 0 {
            return Err(invalid("cache.stream_log_max_bytes", "must be at least 1"));
        }
        self.rate_limit.validate()?;
        self.telemetry.validate()?;
        self.assistant.validate()?;
        self.check_ceilings()
    }

    fn check_ceilings(&self) -> Result<(), SettingsError> {
        let (server, storage, assistant) = (&self.server, &self.storage, &self.assistant);
        // actix-server's own limit; it panics above it.
        at_most("server.workers", server.workers, 512)?;
        at_most("server.keep_alive_secs", server.keep_alive_secs, 86_400)?;
        at_most(
            "server.client_request_timeout_secs",
            server.client_request_timeout_secs,
            3_600,
        )?;
        at_most(
            "server.shutdown_grace_secs",
            server.shutdown_grace_secs,
            3_600,
        )?;
        at_most(
            "server.max_connections_per_worker",
            server.max_connections_per_worker,
            1_000_000,
        )?;
        at_most(
            "server.stream_keep_alive_secs",
            server.stream_keep_alive_secs,
            3_600,
        )?;
        at_most("storage.pool_size", storage.pool_size, 1_024)?;
        at_most(
            "storage.connect_timeout_secs",
            storage.connect_timeout_secs,
            3_600,
        )?;
        at_most(
            "storage.statement_timeout_secs",
            storage.statement_timeout_secs,
            86_400,
        )?;
        at_most(
            "storage.write_queue_capacity",
            storage.write_queue_capacity,
            100_000,
        )?;
        at_most("storage.max_batch", storage.max_batch, 100_000)?;
        at_most("assistant.timeout_secs", assistant.timeout_secs, 3_600)?;
        at_most("assistant.max_retries", assistant.max_retries, 100)?;
        at_most(
            "assistant.max_concurrency",
            assistant.max_concurrency,
            10_000,
        )?;
        at_most("assistant.max_queue", assistant.max_queue, 1_000_000)?;
        at_most(
            "assistant.dummy.word_delay_ms",
            assistant.dummy.word_delay_ms,
            60_000,
        )?;
        at_most("cache.ttl_secs", self.cache.ttl_secs, 31_536_000)?;
        at_most("cache.max_entries", self.cache.max_entries, 1_000_000)?;
        at_most("cache.max_bytes", self.cache.max_bytes, 17_179_869_184)?;
        at_most(
            "cache.stream_log_ttl_secs",
            self.cache.stream_log_ttl_secs,
            86_400,
        )?;
        at_most(
            "cache.stream_log_max_bytes",
            self.cache.stream_log_max_bytes,
            17_179_869_184,
        )?;
        at_most(
            "telemetry.export_timeout_secs",
            self.telemetry.export_timeout_secs,
            300,
        )?;
        at_most("telemetry.batch_size", self.telemetry.batch_size, 100_000)?;
        at_most(
            "telemetry.queue_capacity",
            self.telemetry.queue_capacity,
            1_000_000,
        )?;
        let limits = &self.limits;
        at_most(
            "limits.max_message_chars",
            limits.max_message_chars,
            1_000_000,
        )?;
        at_most("limits.max_body_bytes", limits.max_body_bytes, 64 << 20)?;
        at_most(
            "limits.max_streams_per_client",
            limits.max_streams_per_client,
            100_000,
        )?;
        // actix-http refuses a head over 128 KiB whatever this says.
        at_most(
            "limits.max_header_bytes",
            limits.max_header_bytes,
            128 << 10,
        )?;
        at_most("rate_limit.burst", self.rate_limit.burst, 1_000_000)
    }

    /// The host names a request may carry in `Host` besides IP addresses and `localhost` (which
    /// cannot be rebound): `security.allowed_hosts`, or when that is empty, none if the server
    /// listens on a loopback address, and any otherwise. A server on a loopback address is the
    /// one a page of another site can reach by pointing its own name at 127.0.0.1 (DNS
    /// rebinding): the browser then takes the API for that page's own origin, so its `Host` is
    /// what tells the two apart.
    pub fn allowed_hosts(&self) -> Vec<String> {
        if !self.security.allowed_hosts.is_empty() {
            return self
                .security
                .allowed_hosts
                .iter()
                // Compared without the root's dot, as the requests' hosts are.
                .map(|host| host.strip_suffix('.').unwrap_or(host).to_ascii_lowercase())
                .collect();
        }
        let loopback = self.server.host.eq_ignore_ascii_case("localhost")
            || self
                .server
                .host
                .parse::<std::net::IpAddr>()
                .is_ok_and(|address| address.to_canonical().is_loopback());
        if loopback {
            Vec::new()
        } else {
            vec!["*".to_owned()]
        }
    }

    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_secs(self.server.shutdown_grace_secs)
    }
}

/// Whether the user and password of `url` (`scheme://user:password@host/...`) are written as
/// libpq reads them. When they are not, libpq's error repeats what it took for the host, port or
/// escape, which is then part of the password, in the log and the refusal.
fn credentials_well_formed(url: &str) -> bool {
    let Some((_, rest)) = url.split_once("://") else {
        return true;
    };
    let Some((credentials, _)) = rest.rsplit_once('@') else {
        return true;
    };
    let bytes = credentials.as_bytes();
    bytes.iter().enumerate().all(|(at, byte)| match byte {
        b'/' | b'@' | b'?' | b'#' => false,
        b'%' => bytes
            .get(at + 1..at + 3)
            .is_some_and(|hex| hex.iter().all(u8::is_ascii_hexdigit)),
        byte => !byte.is_ascii_whitespace(),
    })
}

impl StorageSettings {
    fn validate(&self) -> Result<(), SettingsError> {
        let is_postgres_url =
            self.url.starts_with("postgres://") || self.url.starts_with("postgresql://");
        match self.backend {
            StorageBackend::Sqlite
                if self.url.contains("://") && !self.url.starts_with("sqlite://") =>
            {
                Err(invalid(
                    "storage.url",
                    "the sqlite backend takes a file path such as \"chat.db\", not this URL",
                ))
            }
            StorageBackend::Sqlite if self.sqlite_file().trim().is_empty() => Err(invalid(
                "storage.url",
                "names no file: give a path such as \"chat.db\"",
            )),
            // SQLite reads these as an in-memory database or a URI, not as a file to keep: the
            // first keeps nothing, and the write-ahead log's sync needs a real file for both.
            StorageBackend::Sqlite
                if self.sqlite_file().starts_with("file:")
                    || self.sqlite_file().starts_with(":memory:") =>
            {
                Err(invalid(
                    "storage.url",
                    "the sqlite backend takes a plain file path such as \"chat.db\", not an \
                     in-memory database or a \"file:\" URI",
                ))
            }
            StorageBackend::Postgres if !is_postgres_url => Err(invalid(
                "storage.url",
                "the postgres backend takes a URL such as \"postgres://user@host:5432/db\"",
            )),
            StorageBackend::Postgres if !credentials_well_formed(&self.url) => Err(invalid(
                "storage.url",
                "its user or password holds a character that must be percent-encoded (`@` is \
                 `%40`, `/` is `%2F`, `%` is `%25`) or a `%` not followed by two hex digits",
            )),
            _ if self.url.trim().is_empty() => Err(invalid("storage.url", "must not be empty")),
            _ if self.pool_size == 0 => Err(invalid("storage.pool_size", "must be at least 1")),
            _ if self.write_queue_capacity == 0 => Err(invalid(
                "storage.write_queue_capacity",
                "must be at least 1",
            )),
            _ if self.max_batch == 0 => Err(invalid("storage.max_batch", "must be at least 1")),
            _ if self.connect_timeout_secs == 0 => Err(invalid(
                "storage.connect_timeout_secs",
                "must be at least 1",
            )),
            _ => Ok(()),
        }
    }

    /// The SQLite file; accepts a bare path or the `sqlite://` spelling some tools use.
    pub fn sqlite_path(&self) -> PathBuf {
        PathBuf::from(self.sqlite_file())
    }

    fn sqlite_file(&self) -> &str {
        self.url.strip_prefix("sqlite://").unwrap_or(&self.url)
    }
}

impl RateLimitSettings {
    fn validate(&self) -> Result<(), SettingsError> {
        // Below a thousandth the wait for the next token no longer fits a timer.
        if !(self.per_second == 0.0 || (0.001..=1_000_000.0).contains(&self.per_second)) {
            return Err(invalid(
                "rate_limit.per_second",
                "must be 0 (off) or a number of requests per second from 0.001 to 1000000",
            ));
        }
        if self.per_second > 0.0 && self.burst == 0 {
            return Err(invalid("rate_limit.burst", "must be at least 1"));
        }
        self.trusted_proxy_networks().map(|_| ())
    }

    /// The limit, or `None` when rate limiting is off.
    pub fn limit(&self) -> Option<api_actix::RateLimit> {
        (self.per_second > 0.0).then_some(api_actix::RateLimit {
            per_second: self.per_second,
            burst: self.burst,
        })
    }

    pub fn trusted_proxy_networks(&self) -> Result<Vec<api_actix::IpNetwork>, SettingsError> {
        self.trusted_proxies
            .iter()
            .map(|entry| {
                entry
                    .parse::<api_actix::IpNetwork>()
                    .map_err(|error| invalid("rate_limit.trusted_proxies", error))
            })
            .collect()
    }
}

/// Where OTLP/HTTP collectors take traces, below their base URL.
const OTLP_TRACES_PATH: &str = "/v1/traces";

impl TelemetrySettings {
    fn validate(&self) -> Result<(), SettingsError> {
        if !self.otlp_endpoint.is_empty() {
            const EXAMPLE: &str = "http://otel-collector:4318";
            let url = check_http_url("telemetry.otlp_endpoint", &self.otlp_endpoint, EXAMPLE)?;
            if url.query().is_some() || url.fragment().is_some() {
                return Err(invalid(
                    "telemetry.otlp_endpoint",
                    format!("must be a base URL without query or fragment, such as {EXAMPLE:?}"),
                ));
            }
        }
        if self.service_name.trim().is_empty() {
            return Err(invalid("telemetry.service_name", "must not be empty"));
        }
        if !(0.0..=1.0).contains(&self.sample_ratio) {
            return Err(invalid(
                "telemetry.sample_ratio",
                "must be between 0.0 and 1.0",
            ));
        }
        if self.export_timeout_secs == 0 {
            return Err(invalid(
                "telemetry.export_timeout_secs",
                "must be at least 1",
            ));
        }
        if self.batch_size == 0 {
            return Err(invalid("telemetry.batch_size", "must be at least 1"));
        }
        if self.queue_capacity < self.batch_size {
            return Err(invalid(
                "telemetry.queue_capacity",
                "must be at least telemetry.batch_size",
            ));
        }
        Ok(())
    }

    /// Where to POST spans, or `None` when export is off.
    pub fn traces_url(&self) -> Option<String> {
        if self.otlp_endpoint.is_empty() {
            return None;
        }
        let base = self.otlp_endpoint.trim_end_matches('/');
        Some(if base.ends_with(OTLP_TRACES_PATH) {
            base.to_owned()
        } else {
            format!("{base}{OTLP_TRACES_PATH}")
        })
    }

    pub fn export_timeout(&self) -> Duration {
        Duration::from_secs(self.export_timeout_secs)
    }
}

impl AssistantSettings {
    /// The API key to send, if any: a blank value (what compose passes for an unset variable) is
    /// no key, not an empty `Authorization: Bearer` header.
    pub fn configured_api_key(&self) -> Option<SecretString> {
        self.api_key
            .clone()
            .filter(|key| !key.expose_secret().trim().is_empty())
    }

    fn validate(&self) -> Result<(), SettingsError> {
        if self.kind == AssistantKind::Openai {
            check_http_url(
                "assistant.base_url",
                &self.base_url,
                "https://api.openai.com/v1",
            )?;
            if self.model.trim().is_empty() {
                return Err(invalid("assistant.model", "must not be empty"));
            }
            // Sent in a header, where a control character (a pasted newline) is not allowed.
            let header_safe = |key: &SecretString| {
                !key.expose_secret()
                    .chars()
                    .any(|character| character.is_control())
            };
            if !self.api_key.as_ref().is_none_or(header_safe) {
                return Err(invalid(
                    "assistant.api_key",
                    "contains a control character (a newline?), which an HTTP header cannot carry",
                ));
            }
            if self.max_concurrency == 0 {
                return Err(invalid("assistant.max_concurrency", "must be at least 1"));
            }
            if self.timeout_secs == 0 {
                return Err(invalid("assistant.timeout_secs", "must be at least 1"));
            }
        }
        // The history is read as one page of the conversation.
        at_most(
            "assistant.context_messages",
            self.context_messages,
            u64::from(PageLimit::MAX),
        )
    }
}
