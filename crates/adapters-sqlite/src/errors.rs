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

/// SQLite reports the state of its file (locked, read-only, full, failing I/O, damaged) and of the
/// process (out of memory) only as message text. Those are outages, not bugs: the replica is not
/// ready, and retrying may succeed once the file or the process is well again.
fn is_outage(message: &str) -> bool {
    const OUTAGES: [&str; 10] = [
        "locked",
        "busy",
        "readonly",
        "read-only",
        "disk i/o",
        "unable to open",
        "full",
        // "database disk image is malformed", "file is not a database": restore from a backup.
        "malformed",
        "not a database",
        "out of memory",
    ];
    let message = message.to_ascii_lowercase();
    OUTAGES.iter().any(|outage| message.contains(outage))
}

pub(crate) fn unavailable(error: impl std::fmt::Display) -> RepositoryError {
    RepositoryError::Unavailable(error.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_damaged_file_or_a_process_out_of_memory_is_an_outage_not_an_internal_error() {
        for message in [
            "database disk image is malformed",
            "file is not a database",
            "out of memory",
        ] {
            let error = DieselError::DatabaseError(
                DatabaseErrorKind::Unknown,
                Box::new(message.to_owned()),
            );
            assert!(
                matches!(from_diesel(error), RepositoryError::Unavailable(_)),
                "{message}"
            );
        }
    }
}
