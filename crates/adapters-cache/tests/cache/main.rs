//! Integration tests of the reply cache: one binary, a module per concern. The Redis tests use the
//! server at `CHAT_TEST_REDIS_URL` (default `redis://127.0.0.1:6379`) under a prefix of their own.

mod conformance;
mod decorator;
mod key;
mod memory;
mod outage;
mod recovery;
mod redis_store;
mod support;
