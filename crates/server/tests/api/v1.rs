//! Product API tests (being written).
