use std::time::{SystemTime, UNIX_EPOCH};

/// A point in time in UTC with microsecond precision, stored as microseconds since the Unix epoch so
/// that every storage backend keeps it exactly and orders it as an integer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(i64);

impl Timestamp {
    pub fn now() -> Self {
        let micros = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|elapsed| elapsed.as_micros())
            .unwrap_or_default();
        Self(i64::try_from(micros).unwrap_or(i64::MAX))
    }

    pub fn from_unix_micros(micros: i64) -> Self {
        Self(micros)
    }

    pub fn unix_micros(&self) -> i64 {
        self.0
    }
}
