//! In-process tests of every route and error, against the real wiring on a fresh database.

mod helpers;
mod limits;
mod openai;
mod ops;
mod resume;
mod seed;
mod settings;
mod telemetry;
mod v1;
