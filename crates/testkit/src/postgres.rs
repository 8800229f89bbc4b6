//! A throwaway PostgreSQL database per test.
//!
//! The server to use comes from `CHAT_TEST_POSTGRES_URL` (default
//! `postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable`); it must allow creating databases.
//! The default has no TLS: on loopback it protects nothing, and OpenSSL 3 cleans up at a process's
//! exit under any thread still using it, such as a pool's thread closing a connection. When it is
//! unreachable the tests that need it are skipped with a loud line on stderr, except in CI
//! (`CI=true`), where a missing database is a failure.

use diesel::pg::PgConnection;
use diesel::{Connection, RunQueryDsl};

const URL_VARIABLE: &str = "CHAT_TEST_POSTGRES_URL";
const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable";

/// A database created for one test and dropped (even with open connections) when this is dropped.
#[derive(Debug)]
pub struct TestDatabase {
    admin_url: String,
    name: String,
    url: String,
}

impl TestDatabase {
    /// Creates a uniquely named, empty database. `None` means PostgreSQL is unreachable and the test
    /// should return early (outside CI; in CI this panics instead).
    pub async fn create() -> Option<TestDatabase> {
        Self::create_with("").await
    }

    /// As [`TestDatabase::create`], encoded in `encoding` (e.g. `LATIN1`) instead of the server's
    /// default, to check what an adapter does with a database that cannot hold every character.
    pub async fn create_encoded(encoding: &str) -> Option<TestDatabase> {
        Self::create_with(&format!(
            " ENCODING '{encoding}' TEMPLATE template0 LC_COLLATE 'C' LC_CTYPE 'C'"
        ))
        .await
    }

    async fn create_with(options: &str) -> Option<TestDatabase> {
        let admin_url = std::env::var(URL_VARIABLE).unwrap_or_else(|_| DEFAULT_URL.to_owned());
        let name = format!(
            "chat_test_{}_{}",
            std::process::id(),
            uuid::Uuid::now_v7().simple()
        );
        let url = with_database(&admin_url, &name);
        let (admin, statement) = (
            admin_url.clone(),
            format!("CREATE DATABASE \"{name}\"{options}"),
        );
        let created = tokio::task::spawn_blocking(move || execute(&admin, &statement))
            .await
            .expect("the blocking task creating a test database panicked");
        match created {
            Ok(()) => Some(TestDatabase {
                admin_url,
                name,
                url,
            }),
            Err(AdminError::Unreachable(reason)) => {
                crate::cannot_run_without(
                    "postgres",
                    format_args!(
                        "not reachable at {} (set {URL_VARIABLE}): {reason}",
                        redact(&admin_url)
                    ),
                );
                None
            }
            Err(AdminError::Failed(reason)) => {
                panic!("cannot create test database {name}: {reason}")
            }
        }
    }

    /// Connection URL of the test database.
    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// An outage of this database alone: new connections are refused and open ones are ended,
    /// until [`TestDatabase::go_online`].
    pub async fn go_offline(&self) {
        self.admin(&format!(
            "ALTER DATABASE \"{}\" ALLOW_CONNECTIONS false",
            self.name
        ))
        .await;
        self.admin(&format!(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{}'",
            self.name
        ))
        .await;
    }

    /// Ends the outage that [`TestDatabase::go_offline`] started.
    pub async fn go_online(&self) {
        self.admin(&format!(
            "ALTER DATABASE \"{}\" ALLOW_CONNECTIONS true",
            self.name
        ))
        .await;
    }

    /// Locks `table` of this database against every read and write, from a transaction of its
    /// own, until the returned guard is dropped: a database that hangs behind live connections.
    pub async fn lock_table(&self, table: &str) -> TableLock {
        let (url, statement) = (
            self.url.clone(),
            format!("LOCK TABLE \"{table}\" IN ACCESS EXCLUSIVE MODE"),
        );
        let (locked, taken) = std::sync::mpsc::channel();
        let (release, released) = std::sync::mpsc::channel::<()>();
        std::thread::spawn(move || {
            let mut connection = PgConnection::establish(&url).expect("a connection to lock with");
            diesel::sql_query("BEGIN")
                .execute(&mut connection)
                .expect("BEGIN");
            diesel::sql_query(statement)
                .execute(&mut connection)
                .expect("the lock");
            let _ = locked.send(());
            // Dropping the guard disconnects the channel; the connection then closes, rolling
            // the transaction back and releasing the lock.
            let _ = released.recv();
        });
        tokio::task::spawn_blocking(move || taken.recv())
            .await
            .expect("the blocking wait for the lock panicked")
            .expect("the locking thread failed");
        TableLock { _release: release }
    }

    async fn admin(&self, statement: &str) {
        let (admin, statement) = (self.admin_url.clone(), statement.to_owned());
        let done = tokio::task::spawn_blocking(move || execute(&admin, &statement))
            .await
            .expect("the blocking admin task panicked");
        if let Err(error) = done {
            panic!("admin statement on {} failed: {error:?}", self.name);
        }
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let admin = self.admin_url.clone();
        let statement = format!("DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)", self.name);
        // A plain thread: Drop may run on an async worker, which must not block on diesel itself.
        let dropped = std::thread::spawn(move || execute(&admin, &statement)).join();
        match dropped {
            Ok(Ok(())) => {}
            Ok(Err(error)) => eprintln!("could not drop test database {}: {error:?}", self.name),
            Err(_) => eprintln!("dropping test database {} panicked", self.name),
        }
    }
}

/// A table lock held by [`TestDatabase::lock_table`] until this is dropped.
#[derive(Debug)]
pub struct TableLock {
    _release: std::sync::mpsc::Sender<()>,
}

#[derive(Debug)]
enum AdminError {
    Unreachable(String),
    Failed(String),
}

fn execute(admin_url: &str, statement: &str) -> Result<(), AdminError> {
    let mut connection = PgConnection::establish(admin_url)
        .map_err(|error| AdminError::Unreachable(error.to_string()))?;
    diesel::sql_query(statement)
        .execute(&mut connection)
        .map(|_| ())
        .map_err(|error| AdminError::Failed(error.to_string()))
}

/// The URL with its database (the path) replaced by `name`, keeping any query string.
fn with_database(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let authority_start = base.find("://").map_or(0, |index| index + 3);
    let base = match base[authority_start..].find('/') {
        Some(slash) => &base[..authority_start + slash],
        None => base,
    };
    match query {
        Some(query) => format!("{base}/{name}?{query}"),
        None => format!("{base}/{name}"),
    }
}

/// The URL without its password, for messages.
fn redact(url: &str) -> String {
    let authority_start = url.find("://").map_or(0, |index| index + 3);
    let rest = &url[authority_start..];
    let host_start = rest.find('@');
    match (host_start, rest[..host_start.unwrap_or(0)].find(':')) {
        (Some(at), Some(colon)) => format!(
            "{}{}:***{}",
            &url[..authority_start],
            &rest[..colon],
            &rest[at..]
        ),
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_name_replaces_the_path() {
        assert_eq!(
            with_database("postgres://u@h:5432/postgres", "t"),
            "postgres://u@h:5432/t"
        );
        assert_eq!(
            with_database("postgres://u@h:5432", "t"),
            "postgres://u@h:5432/t"
        );
        assert_eq!(
            with_database("postgresql://u:p@h/db?sslmode=disable", "t"),
            "postgresql://u:p@h/t?sslmode=disable"
        );
    }

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redact("postgres://user:secret@host/db"),
            "postgres://user:***@host/db"
        );
        assert_eq!(redact("postgres://user@host/db"), "postgres://user@host/db");
        assert_eq!(redact("postgres://host:5432/db"), "postgres://host:5432/db");
    }
}
