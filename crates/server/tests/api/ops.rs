//! Operations endpoints tests (being written).
