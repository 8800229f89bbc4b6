//! The one place that turns configuration into adapters. A new adapter crate is wired here and
//! nowhere else.

use std::sync::Arc;
use std::time::Duration;

use adapters_ai_dummy::{DummyAssistant, DummyMode};
use anyhow::{bail, Context};
use domain::{Assistant, ChatRepository};

use crate::settings::{
    AssistantKind, AssistantSettings, DummyModeSetting, StorageBackend, StorageSettings,
};

/// Opens the storage the settings name, applying its migrations.
pub async fn build_repository(
    settings: &StorageSettings,
) -> anyhow::Result<Arc<dyn ChatRepository>> {
    match settings.backend {
        StorageBackend::Sqlite => build_sqlite(settings).await,
        StorageBackend::Postgres => bail!(
            "storage.backend = \"postgres\", but this chat-server was built without PostgreSQL support"
        ),
    }
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
    bail!("storage.backend = \"sqlite\", but this chat-server was built without SQLite support")
}

/// Builds the assistant the settings name.
pub fn build_assistant(settings: &AssistantSettings) -> anyhow::Result<Arc<dyn Assistant>> {
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
    openai.api_key = settings.api_key.clone();
    openai.system_prompt = Some(settings.system_prompt.clone()).filter(|prompt| !prompt.trim().is_empty());
    openai.timeout = Duration::from_secs(settings.timeout_secs);
    openai.max_retries = settings.max_retries;
    openai.context_messages = settings.context_messages;
    openai.max_concurrency = settings.max_concurrency;
    openai.max_queue = settings.max_queue;
    Ok(Arc::new(OpenAiAssistant::new(openai)?))
}

#[cfg(not(feature = "openai"))]
fn build_openai(_: &AssistantSettings) -> anyhow::Result<Arc<dyn Assistant>> {
    bail!("assistant.kind = \"openai\", but this chat-server was built without the OpenAI adapter")
}
