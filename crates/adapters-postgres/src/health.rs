//! The readiness check of a pool whose database may hang: at most one check runs at a time, and a
//! pool with every connection at work is told apart from a database that stopped answering.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::anyhow;
use domain::RepositoryError;
use tokio::sync::watch;

/// When the database last answered an operation: a pool with every connection at work is busy
/// while answers keep coming, and hung once none came for a while.
#[derive(Debug)]
pub(crate) struct Answers {
    since: Instant,
    last_millis: AtomicU64,
}

impl Answers {
    /// Counts the database as having answered just now.
    pub(crate) fn new() -> Self {
        Self {
            since: Instant::now(),
            last_millis: AtomicU64::new(0),
        }
    }

    pub(crate) fn note(&self) {
        self.last_millis
            .fetch_max(millis(self.since.elapsed()), Ordering::Relaxed);
    }

    /// Whether the database answered anything within the last `window`.
    pub(crate) fn within(&self, window: Duration) -> bool {
        let last = Duration::from_millis(self.last_millis.load(Ordering::Relaxed));
        self.since.elapsed().saturating_sub(last) <= window
    }
}

fn millis(elapsed: Duration) -> u64 {
    u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX)
}

/// A check's outcome as every waiter gets it (`None` until it is known).
type Outcome = Option<Result<(), String>>;

/// The check in flight, if any, shared by every caller that asks meanwhile. A check of a hung
/// database waits on its blocking thread for as long as the database hangs; readiness probes,
/// every few seconds, would otherwise each leave one more thread and connection waiting. A check
/// in flight for longer than `patience` is not joined but followed by a new one, which may find a
/// connection that works (after a fail-over): one more thread per `patience` at most.
#[derive(Debug)]
pub(crate) struct SingleCheck {
    in_flight: Mutex<Option<(Instant, watch::Receiver<Outcome>)>>,
    patience: Duration,
}

impl SingleCheck {
    pub(crate) fn new(patience: Duration) -> Self {
        Self {
            in_flight: Mutex::new(None),
            patience,
        }
    }

    /// The outcome of the check in flight, or of `check` run now on a blocking thread when none
    /// is. Its failures are `Unavailable`.
    pub(crate) async fn run(
        &self,
        check: impl FnOnce() -> Result<(), RepositoryError> + Send + 'static,
    ) -> Result<(), RepositoryError> {
        let mut outcome = {
            let mut in_flight = self
                .in_flight
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            match in_flight.as_ref() {
                Some((started, outcome))
                    if outcome.borrow().is_none()
                        && outcome.has_changed().is_ok()
                        && started.elapsed() < self.patience =>
                {
                    outcome.clone()
                }
                _ => {
                    let (report, outcome) = watch::channel(None);
                    tokio::task::spawn_blocking(move || {
                        report.send_replace(Some(check().map_err(|error| match error {
                            // Its own words: `Unavailable` is said again when it is handed on.
                            RepositoryError::Unavailable(reason) => reason,
                            other => other.to_string(),
                        })));
                    });
                    *in_flight = Some((Instant::now(), outcome.clone()));
                    outcome
                }
            }
        };
        let known = outcome
            .wait_for(Option::is_some)
            .await
            .map(|known| known.clone());
        match known {
            Ok(Some(Ok(()))) => Ok(()),
            Ok(Some(Err(error))) => Err(RepositoryError::Unavailable(error)),
            // Its thread ended without an answer: the check panicked.
            Ok(None) | Err(_) => Err(RepositoryError::Unknown(anyhow!(
                "the health check failed unexpectedly"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::sync::Arc;

    /// A check that answers once `release` is sent, counting how often it ran.
    fn held_check(
        checks: &Arc<AtomicUsize>,
    ) -> (
        std::sync::mpsc::Sender<()>,
        impl FnOnce() -> Result<(), RepositoryError> + Send + 'static,
    ) {
        let (release, released) = std::sync::mpsc::channel::<()>();
        let counted = Arc::clone(checks);
        (release, move || {
            counted.fetch_add(1, Ordering::SeqCst);
            let _ = released.recv();
            Err(RepositoryError::Unavailable("hung up".to_owned()))
        })
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn callers_during_a_check_share_it_and_the_next_one_runs_again() {
        let checks = Arc::new(AtomicUsize::new(0));
        let single = SingleCheck::new(Duration::from_secs(60));
        let (release, check) = held_check(&checks);
        // Each polled once: the first starts the check, the others join it.
        let mut first = Box::pin(single.run(check));
        assert!(futures::poll!(first.as_mut()).is_pending());
        let mut joined: Vec<_> = (0..5)
            .map(|_| Box::pin(single.run(|| panic!("a second check ran while one was in flight"))))
            .collect();
        for caller in &mut joined {
            assert!(futures::poll!(caller.as_mut()).is_pending());
        }
        release.send(()).unwrap();
        let mut outcomes = vec![first.await];
        for caller in joined {
            outcomes.push(caller.await);
        }
        for outcome in outcomes {
            assert!(
                matches!(&outcome, Err(RepositoryError::Unavailable(error)) if error == "hung up"),
                "{outcome:?}"
            );
        }
        assert_eq!(checks.load(Ordering::SeqCst), 1);

        single
            .run(|| Ok(()))
            .await
            .expect("a new check runs once the last one answered");
        let panicked = single.run(|| panic!("the check broke")).await;
        assert!(
            matches!(panicked, Err(RepositoryError::Unknown(_))),
            "{panicked:?}"
        );
        single
            .run(|| Ok(()))
            .await
            .expect("a panicked check is not waited on again");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_check_in_flight_past_its_patience_is_followed_by_a_new_one() {
        let checks = Arc::new(AtomicUsize::new(0));
        let single = SingleCheck::new(Duration::from_millis(50));
        let (release, hung) = held_check(&checks);
        let mut first = Box::pin(single.run(hung));
        assert!(futures::poll!(first.as_mut()).is_pending());
        tokio::time::sleep(Duration::from_millis(60)).await;
        single
            .run(|| Ok(()))
            .await
            .expect("a new check, not the hung one");
        release.send(()).unwrap();
        assert!(first.await.is_err());
    }

    #[test]
    fn answers_are_recent_until_the_window_passes() {
        let answers = Answers::new();
        assert!(answers.within(Duration::from_secs(1)));
        std::thread::sleep(Duration::from_millis(300));
        assert!(!answers.within(Duration::from_millis(100)));
        answers.note();
        // A window the thread cannot outlast between two lines, even on a loaded machine.
        assert!(answers.within(Duration::from_millis(250)));
    }
}
