//! The shared ChatRepository contracts, each on a fresh database of its own.

use std::sync::Arc;

use adapters_postgres::{PostgresChatRepository, PostgresSettings};
use testkit::postgres::TestDatabase;

testkit::chat_repository_conformance!(async {
    let database = TestDatabase::create().await?;
    let mut settings = PostgresSettings::new(database.url());
    settings.pool_size = 8;
    let repository = PostgresChatRepository::connect(settings)
        .await
        .expect("connect to a fresh test database");
    Some((Arc::new(repository), database))
});
