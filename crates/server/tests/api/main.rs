//! In-process tests of every route and error, against the real wiring on a fresh database.

mod helpers;
mod limits;
mod ops;
mod seed;
mod v1;
