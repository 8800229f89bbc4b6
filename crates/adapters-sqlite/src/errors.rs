use diesel::result::{DatabaseErrorKind, Error as DieselError};
use domain::RepositoryError;

/// Translates diesel's errors at the adapter's edge.
pub(crate) fn from_diesel(error: DieselError) -> RepositoryError {
    match error {
        DieselError::NotFound => RepositoryError::NotFound,
        DieselError::DatabaseError(DatabaseErrorKind::UniqueViolation, _) => {
            RepositoryError::Conflict
        }
        DieselError::DatabaseError(_, info) if is_outage(info.message()) => {
            RepositoryError::Unavailable(info.message().to_owned())
        }
        DieselError::BrokenTransactionManager => {
            RepositoryError::Unavailable("the SQLite connection is in a broken state".to_owned())
        }
        other => RepositoryError::Unknown(anyhow::Error::new(other)),
    }
}

/// SQLite reports conditions that pass (a locked or read-only file, a full disk, an I/O error) only
/// as message text; those are outages, not bugs, and retrying later may succeed.
fn is_outage(message: &str) -> bool {
    const OUTAGES: [&str; 7] = [
        "locked",
        "busy",
        "readonly",
        "read-only",
        "disk i/o",
        "unable to open",
        "full",
    ];
    let message = message.to_ascii_lowercase();
    OUTAGES.iter().any(|outage| message.contains(outage))
}

pub(crate) fn unavailable(error: impl std::fmt::Display) -> RepositoryError {
    RepositoryError::Unavailable(error.to_string())
}
