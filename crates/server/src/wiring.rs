//! The one place that turns configuration into adapters. A new adapter crate is wired here and
//! nowhere else.

use std::sync::Arc;
use std::time::Duration;

use adapters_ai_dummy::{DummyAssistant, DummyMode};
use adapters_cache::{CacheScope, CachedAssistant, MemoryReplyCache, RedisReplyCache, ReplyCache};
use adapters_generation_log::{MemoryGenerationLog, RedisGenerationLog};
use anyhow::Context;
use domain::{Assistant, ChatRepository, GenerationLog};

use crate::settings::{
    url_without_credentials, AssistantKind, AssistantSettings, CacheKind, CacheSettings,
    DummyModeSetting, StorageBackend, StorageSettings,
};

/// Opens the storage the settings name, applying its migrations.
pub async fn build_repository(
    settings: &StorageSettings,
) -> anyhow::Result<Arc<dyn ChatRepository>> {
    match settings.backend {
        StorageBackend::Sqlite => build_sqlite(settings).await,
        StorageBackend::Postgres => build_postgres(settings).await,
    }
}

#[cfg(feature = "postgres")]
async fn build_postgres(settings: &StorageSettings) -> anyhow::Result<Arc<dyn ChatRepository>> {
    use adapters_postgres::{PostgresChatRepository, PostgresSettings};

    let postgres = PostgresSettings {
        url: settings.url.clone(),
        pool_size: settings.pool_size,
        connect_timeout: Duration::from_secs(settings.connect_timeout_secs),
        statement_timeout: Some(settings.statement_timeout_secs)
            .filter(|secs| *secs > 0)
            .map(Duration::from_secs),
        write_queue_capacity: settings.write_queue_capacity,
        max_batch: settings.max_batch,
    };
    let repository = PostgresChatRepository::connect(postgres)
        .await
        .context("cannot connect to PostgreSQL (storage.url)")?;
    Ok(Arc::new(repository))
}

#[cfg(not(feature = "postgres"))]
async fn build_postgres(_: &StorageSettings) -> anyhow::Result<Arc<dyn ChatRepository>> {
    anyhow::bail!(
        "storage.backend = \"postgres\", but this chat-server was built without PostgreSQL support"
    )
}

#[cfg(feature = "sqlite")]
async fn build_sqlite(settings: &StorageSettings) -> anyhow::Result<Arc<dyn ChatRepository>> {
    use adapters_sqlite::{SqliteChatRepository, SqliteSettings};

    let path = settings.sqlite_path();
    let sqlite = SqliteSettings {
        path: path.clone(),
        read_pool_size: settings.pool_size,
        busy_timeout: Duration::from_secs(settings.connect_timeout_secs.max(5)),
        write_queue_capacity: settings.write_queue_capacity,
        max_batch: settings.max_batch,
    };
    let repository = tokio::task::spawn_blocking(move || SqliteChatRepository::open(&sqlite))
        .await?
        .with_context(|| format!("cannot open the SQLite database at {}", path.display()))?;
    Ok(Arc::new(repository))
}

#[cfg(not(feature = "sqlite"))]
async fn build_sqlite(_: &StorageSettings) -> anyhow::Result<Arc<dyn ChatRepository>> {
    anyhow::bail!(
        "storage.backend = \"sqlite\", but this chat-server was built without SQLite support"
    )
}

/// Builds the assistant the settings name, behind the reply cache when one is configured.
pub fn build_assistant(
    settings: &AssistantSettings,
    cache: &CacheSettings,
) -> anyhow::Result<Arc<dyn Assistant>> {
    let assistant = build_provider(settings)?;
    let store: Arc<dyn ReplyCache> = match cache.kind {
        CacheKind::None => return Ok(assistant),
        CacheKind::Memory => Arc::new(MemoryReplyCache::new(cache.max_entries, cache.max_bytes)),
        // Lazy: the cache is an optimisation, so Redis being down must not stop the start.
        CacheKind::Redis => Arc::new(
            RedisReplyCache::lazy(&cache.url, format!("{}:reply", cache.key_prefix))
                .context("invalid cache.url")?,
        ),
    };
    adapters_cache::describe_metrics();
    Ok(Arc::new(CachedAssistant::new(
        assistant,
        store,
        cache_scope(settings),
        Duration::from_secs(cache.ttl_secs),
    )))
}

/// What decides a reply besides the conversation, for the reply cache's key. A provider is its
/// URL without credentials: they are not part of what answers, and `Debug` prints the scope.
pub fn cache_scope(settings: &AssistantSettings) -> CacheScope {
    match settings.kind {
        AssistantKind::Dummy => CacheScope {
            provider: format!("dummy:{:?}", settings.dummy.mode),
            model: "dummy".to_owned(),
            system_prompt: String::new(),
        },
        AssistantKind::Openai => CacheScope {
            provider: url_without_credentials(settings.base_url.trim())
                .trim_end_matches('/')
                .to_owned(),
            model: settings.model.clone(),
            system_prompt: settings.system_prompt.clone(),
        },
    }
}

/// Where streamed replies are logged for resuming: Redis Streams when Redis is configured, so any
/// replica can resume any reply; this process's memory otherwise.
pub async fn build_generation_log(cache: &CacheSettings) -> anyhow::Result<Arc<dyn GenerationLog>> {
    let ttl = Duration::from_secs(cache.stream_log_ttl_secs);
    Ok(match cache.kind {
        CacheKind::Redis => Arc::new(
            RedisGenerationLog::connect(&cache.url, format!("{}:stream", cache.key_prefix), ttl)
                .await
                .context("cannot connect to Redis (cache.url)")?,
        ),
        CacheKind::None | CacheKind::Memory => {
            Arc::new(MemoryGenerationLog::new(ttl, cache.stream_log_max_bytes))
        }
    })
}

fn build_provider(settings: &AssistantSettings) -> anyhow::Result<Arc<dyn Assistant>> {
    match settings.kind {
        AssistantKind::Dummy => {
            let mode = match settings.dummy.mode {
                DummyModeSetting::Canned => DummyMode::Canned,
                DummyModeSetting::Deterministic => DummyMode::Deterministic,
            };
            Ok(Arc::new(DummyAssistant::new(
                mode,
                Duration::from_millis(settings.dummy.word_delay_ms),
            )))
        }
        AssistantKind::Openai => build_openai(settings),
    }
}

#[cfg(feature = "openai")]
fn build_openai(settings: &AssistantSettings) -> anyhow::Result<Arc<dyn Assistant>> {
    use adapters_ai_openai::{OpenAiAssistant, OpenAiSettings};

    let mut openai = OpenAiSettings::new(&settings.base_url, &settings.model);
    openai.api_key = settings.configured_api_key();
    openai.system_prompt =
        Some(settings.system_prompt.clone()).filter(|prompt| !prompt.trim().is_empty());
    openai.timeout = Duration::from_secs(settings.timeout_secs);
    openai.max_retries = settings.max_retries;
    openai.context_messages = settings.context_messages;
    openai.max_concurrency = settings.max_concurrency;
    openai.max_queue = settings.max_queue;
    let assistant = OpenAiAssistant::new(openai)?;
    adapters_ai_openai::describe_metrics();
    Ok(Arc::new(assistant))
}

#[cfg(not(feature = "openai"))]
fn build_openai(_: &AssistantSettings) -> anyhow::Result<Arc<dyn Assistant>> {
    anyhow::bail!(
        "assistant.kind = \"openai\", but this chat-server was built without the OpenAI adapter"
    )
}
