//! Conformance suites that every adapter of a domain port must pass, and helpers for tests.
//!
//! An adapter crate runs the whole [`ChatRepository`](domain::ChatRepository) suite with one test
//! file holding one macro call:
//!
//! ```ignore
//! testkit::chat_repository_conformance!(async { Arc::new(MyRepository::open_fresh().await) });
//! ```
//!
//! The expression is evaluated once per test and must yield a fresh, empty repository: an
//! `Arc<R>` (`R` a repository type or `dyn ChatRepository`), an `(Arc<R>, guard)` pair whose guard
//! lives as long as the test (a temporary database, say), or an `Option` of either, where `None`
//! skips the test. Each contract becomes its own `#[tokio::test]`, so a failure names the contract.
//! The test bodies are ordinary `pub async fn`s in [`repository`] and [`assistant`].

pub mod assistant;
pub mod fake_openai;
pub mod generation_log;
pub mod histograms;
#[cfg(feature = "postgres")]
pub mod postgres;
pub mod process;
pub mod repository;

use std::sync::Arc;

#[doc(hidden)]
pub mod __private {
    pub use tokio;
}

/// Whatever must outlive a test's subject (a temporary database, say); dropped after it.
pub type Guard = Box<dyn Send>;

/// The machine lacks `need` (a database, a server binary, a privilege), so the calling test
/// cannot run. Outside CI the test is skipped, said on stderr past the test harness's capture.
/// In CI (`CI=true`) a skip would pass unseen, so the test fails instead, unless the CI names
/// `need` in `CHAT_TEST_MAY_SKIP` (comma-separated) because it cannot provide it.
///
/// # Panics
/// In CI, when `need` is not in `CHAT_TEST_MAY_SKIP`.
pub fn cannot_run_without(need: &str, why: impl std::fmt::Display) {
    let in_ci = std::env::var("CI").is_ok_and(|value| value == "true");
    let may_skip = std::env::var("CHAT_TEST_MAY_SKIP")
        .is_ok_and(|names| names.split(',').any(|name| name.trim() == need));
    if in_ci && !may_skip {
        panic!("{need} is required in CI (or name it in CHAT_TEST_MAY_SKIP): {why}");
    }
    use std::io::Write as _;
    let _ = writeln!(
        std::io::stderr(),
        "\n**********\nSKIPPED (no {need}): {why}\n**********\n"
    );
}

/// The Redis the tests that need one use: `CHAT_TEST_REDIS_URL`, by default the local one.
pub fn redis_url() -> String {
    std::env::var("CHAT_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

/// What a conformance macro's expression may yield: a repository for one test, with whatever must
/// stay alive while it runs.
pub trait TestSubject {
    type Subject: ?Sized + Send + Sync + 'static;

    /// The subject and its guard, or `None` when the test must be skipped.
    fn into_subject(self) -> Option<(Arc<Self::Subject>, Guard)>;
}

impl<R: ?Sized + Send + Sync + 'static> TestSubject for Arc<R> {
    type Subject = R;

    fn into_subject(self) -> Option<(Arc<R>, Guard)> {
        Some((self, Box::new(()) as Guard))
    }
}

impl<R: ?Sized + Send + Sync + 'static, G: Send + 'static> TestSubject for (Arc<R>, G) {
    type Subject = R;

    fn into_subject(self) -> Option<(Arc<R>, Guard)> {
        Some((self.0, Box::new(self.1) as Guard))
    }
}

impl<T: TestSubject> TestSubject for Option<T> {
    type Subject = T::Subject;

    fn into_subject(self) -> Option<(Arc<T::Subject>, Guard)> {
        self.and_then(TestSubject::into_subject)
    }
}

/// Runs one contract check against the subject the expression yields; used by the macros.
#[doc(hidden)]
pub async fn __run<T, F, Fut>(subject: T, check: F)
where
    T: TestSubject,
    F: FnOnce(Arc<T::Subject>) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let Some((subject, guard)) = subject.into_subject() else {
        return;
    };
    check(subject).await;
    // The subject (pools, connections) goes before its guard (the database it lives in).
    drop(guard);
}

#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_tests {
    ($make:expr; $module:ident; $($name:ident),* $(,)?) => {
        $(
            #[$crate::__private::tokio::test(
                flavor = "multi_thread",
                worker_threads = 4,
                crate = "testkit::__private::tokio"
            )]
            async fn $name() {
                $crate::__run($make.await, |subject| $crate::$module::$name(subject)).await;
            }
        )*
    };
}

/// One `#[tokio::test]` per [`ChatRepository`](domain::ChatRepository) contract; see the crate docs
/// for what the expression may yield.
#[macro_export]
macro_rules! chat_repository_conformance {
    ($make:expr $(,)?) => {
        $crate::__conformance_tests!(
            $make;
            repository;
            create_then_get_returns_the_conversation,
            create_with_an_existing_id_conflicts,
            a_deleted_conversations_id_is_not_used_again,
            get_missing_conversation_is_not_found,
            rename_missing_conversation_is_not_found,
            delete_missing_conversation_is_not_found,
            list_messages_of_missing_conversation_is_not_found,
            append_to_missing_conversation_is_not_found_and_stores_nothing,
            rename_changes_title_and_updated_at,
            rename_never_moves_updated_at_back,
            delete_cascades_to_messages_and_nothing_else,
            list_conversations_orders_by_updated_at_then_id_descending,
            list_conversations_pages_cover_every_conversation_once,
            list_conversations_of_empty_repository_is_empty,
            append_moves_updated_at_and_list_order,
            append_never_moves_updated_at_backwards,
            append_stores_exchange_at_next_positions,
            append_waiting_for_room_stores_as_append_does,
            append_with_duplicate_message_id_conflicts_and_stores_nothing,
            list_messages_of_empty_conversation_is_empty,
            list_messages_latest_window,
            list_messages_before_window,
            list_messages_after_window,
            list_messages_pages_cover_every_message_once,
            text_round_trips_exactly,
            timestamps_round_trip_exactly,
            concurrent_appends_are_gap_free_and_paired,
            concurrent_gets_each_answer_their_own_conversation,
            health_check_succeeds,
        );
    };
}

/// One `#[tokio::test]` per [`Assistant`](domain::Assistant) contract; the expression yields an
/// `Arc<A>` (or the other shapes [`TestSubject`] accepts).
#[macro_export]
macro_rules! assistant_conformance {
    ($make:expr $(,)?) => {
        $crate::__conformance_tests!(
            $make;
            assistant;
            reply_is_not_empty,
            reply_stream_pieces_make_a_non_empty_reply,
            context_messages_is_stable,
            replies_concurrently,
        );
    };
}
