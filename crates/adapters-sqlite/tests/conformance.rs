//! The shared ChatRepository contracts, each on a fresh database file of its own.

use std::sync::Arc;

use adapters_sqlite::{SqliteChatRepository, SqliteSettings};

testkit::chat_repository_conformance!(async {
    let directory = tempfile::tempdir().expect("a temporary directory");
    let repository =
        SqliteChatRepository::open(&SqliteSettings::new(directory.path().join("chat.db")))
            .expect("open a fresh database");
    (Arc::new(repository), directory)
});
