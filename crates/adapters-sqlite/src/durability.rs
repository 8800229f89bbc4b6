//! Making commits durable off the writer's thread.
//!
//! The writer commits with `synchronous=NORMAL`, so SQLite appends a batch to the WAL without
//! waiting for the disk. The committed batch comes to the syncer thread, where one `fdatasync` of
//! the WAL covers every batch committed since the previous one, and only then does the answering
//! thread give its requesters their outcomes: what is acknowledged survives power loss, exactly as
//! with `synchronous=FULL`, while the writer already runs the next batch and the syncer the next
//! sync.
//!
//! A commit is visible to readers as soon as it is made, before its sync. So a read notes the
//! last commit its snapshot can contain and waits until that commit is synced before it answers
//! ([`Durability::settled`]): nothing is shown that power loss could take back.
//!
//! A failed sync is final. Linux may drop the pages it could not write and report success to
//! the next sync, which would leave later, acknowledged frames behind a hole in the WAL, where
//! recovery never reaches them. So after one failure every write is refused until the server is
//! restarted (as PostgreSQL stops on a failed fsync).
//!
//! A sync also fails when the database file or its WAL is no longer the file at its path (deleted,
//! or another moved over it): SQLite writes on through the files it has open, and everything
//! written to them would be gone at the next start.

use std::fs::{File, Metadata};
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use domain::RepositoryError;
use tokio::sync::watch;

use crate::writer::Job;

/// Makes everything written to the WAL so far durable.
pub(crate) type SyncWal = Box<dyn FnMut() -> io::Result<()> + Send>;

/// The WAL file of the database at `database`, synced with `fdatasync`. SQLite keeps the file
/// (the same inode) for as long as a connection is open, and the writer's stays open. SQLite
/// names the WAL after the file a symlink leads to, so the path is resolved first: beside the link
/// there is no WAL, or a stale one whose sync would make nothing durable.
pub(crate) fn wal_sync(database: &Path) -> io::Result<SyncWal> {
    let database = database.canonicalize()?;
    let mut wal_path = database.as_os_str().to_owned();
    wal_path.push("-wal");
    let wal_path = PathBuf::from(wal_path);
    let wal = File::options().read(true).open(&wal_path)?;
    // The file's directory entry must be durable too, or a power loss could lose the whole WAL.
    let directory = match database.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    File::open(directory)?.sync_all()?;
    let open_files = [
        (
            database.clone(),
            FileIdentity::of(&std::fs::metadata(&database)?),
        ),
        (wal_path, FileIdentity::of(&wal.metadata()?)),
    ];
    Ok(Box::new(move || {
        wal.sync_data()?;
        still_in_place(&open_files)
    }))
}

/// A file as the file system knows it, whatever its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileIdentity {
    device: u64,
    inode: u64,
}

impl FileIdentity {
    fn of(metadata: &Metadata) -> Self {
        Self {
            device: metadata.dev(),
            inode: metadata.ino(),
        }
    }
}

/// Each path still names the file that was opened: what was synced is in the files the next
/// start reads.
fn still_in_place(open_files: &[(PathBuf, FileIdentity)]) -> io::Result<()> {
    for (path, opened) in open_files {
        let gone = |how: &str| {
            io::Error::other(format!(
                "{} was {how} while the server had it open",
                path.display()
            ))
        };
        match std::fs::metadata(path) {
            Ok(found) if FileIdentity::of(&found) == *opened => {}
            Ok(_) => return Err(gone("replaced by another file")),
            Err(error) if error.kind() == io::ErrorKind::NotFound => return Err(gone("deleted")),
            Err(error) => return Err(error),
        }
    }
    Ok(())
}

/// A batch the writer has finished: committed or rolled back, not yet answered.
pub(crate) struct FinishedBatch {
    /// The commit sequence number after this batch (see [`Durability::committing`]).
    pub(crate) sequence: u64,
    pub(crate) jobs: Vec<Box<dyn Job>>,
    pub(crate) commit: Result<(), RepositoryError>,
}

/// What the writer, the syncer and the readers share.
pub(crate) struct Durability {
    /// Bumped just before every commit, so a reader that sees a commit sees its number.
    committing: AtomicU64,
    /// The highest commit number known durable; readers wait on it.
    synced: watch::Sender<u64>,
    /// Set while the last batch failed with an outage; readiness reports it.
    failing: AtomicBool,
    /// When readiness may try a write of its own again.
    outages: Mutex<Outages>,
    /// Set for good once a sync failed.
    broken: AtomicBool,
    /// Set for good when the writer thread died of a panic: no write can be made any more.
    writer_died: AtomicBool,
}

impl Durability {
    pub(crate) fn new() -> Self {
        Self {
            committing: AtomicU64::new(0),
            synced: watch::Sender::new(0),
            failing: AtomicBool::new(false),
            outages: Mutex::new(Outages::default()),
            broken: AtomicBool::new(false),
            writer_died: AtomicBool::new(false),
        }
    }

    /// Numbers the commit about to be made; call it inside the transaction, right before it
    /// commits.
    pub(crate) fn next_commit(&self) {
        self.committing.fetch_add(1, Ordering::SeqCst);
    }

    /// The number of the last commit made or being made: a snapshot taken before this call
    /// contains no later commit.
    pub(crate) fn committing(&self) -> u64 {
        self.committing.load(Ordering::SeqCst)
    }

    /// Resolves once commit `sequence` and every one before it is durable.
    pub(crate) async fn settled(&self, sequence: u64) -> Result<(), RepositoryError> {
        if *self.synced.borrow() >= sequence {
            return Ok(());
        }
        let mut synced = self.synced.subscribe();
        synced
            .wait_for(|synced| *synced >= sequence)
            .await
            .map(|_| ())
            .map_err(|_| RepositoryError::Unavailable("the SQLite writer has stopped".to_owned()))
    }

    pub(crate) fn is_failing(&self) -> bool {
        self.failing.load(Ordering::Relaxed)
            || self.is_broken()
            || self.writer_died.load(Ordering::Relaxed)
    }

    /// The writer thread is unwinding from a panic (a bug in a write): readiness must report
    /// it, as every write is refused from now on.
    pub(crate) fn writer_died(&self) {
        self.writer_died.store(true, Ordering::Relaxed);
    }

    /// How long readiness should still report the outage without trying a write of its own;
    /// `None` once it may try one.
    pub(crate) fn quiet_left(&self) -> Option<Duration> {
        self.outages().quiet_left(Instant::now())
    }

    /// Records whether the last finished batch failed with an outage.
    fn record_outcome(&self, outage: bool) {
        let was_failing = self.failing.swap(outage, Ordering::Relaxed);
        if outage {
            self.outages().failed(!was_failing, Instant::now());
        } else if was_failing {
            self.outages().recovered(Instant::now());
        }
    }

    fn outages(&self) -> std::sync::MutexGuard<'_, Outages> {
        self.outages
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub(crate) fn is_broken(&self) -> bool {
        self.broken.load(Ordering::Relaxed)
    }

    pub(crate) fn refusal() -> RepositoryError {
        RepositoryError::Unavailable(
            "an earlier write could not be made durable (the WAL sync failed, or the database \
             file or its WAL was deleted or replaced); restart the server once the disk and the \
             database file are as they should be"
                .to_owned(),
        )
    }
}

/// The quiet time after a first outage, and after one that follows a recovery that held.
const SHORTEST_QUIET: Duration = Duration::from_secs(10);
/// The quiet time stops doubling here, so a replica whose storage came back rejoins within it.
const LONGEST_QUIET: Duration = Duration::from_secs(120);
/// An outage that starts this soon after the last recovery counts as the same trouble.
const RELAPSE_WINDOW: Duration = Duration::from_secs(300);

/// When readiness, which has seen writes fail for storage reasons, may try a write of its own.
///
/// Readiness keeps reporting the outage for a quiet time after the last failure, because its
/// one-page write can fit where real batches do not (a full disk with room left in the WAL):
/// let back by that write, a replica takes traffic and fails again. Each outage that starts
/// within [`RELAPSE_WINDOW`] of the last recovery doubles the quiet time, up to
/// [`LONGEST_QUIET`], so such a replica spends ever less of its time in rotation failing writes.
#[derive(Debug)]
struct Outages {
    last_failure: Option<Instant>,
    last_recovery: Option<Instant>,
    quiet: Duration,
}

impl Default for Outages {
    fn default() -> Self {
        Self {
            last_failure: None,
            last_recovery: None,
            quiet: SHORTEST_QUIET,
        }
    }
}

impl Outages {
    /// A batch failed with an outage at `now`; `starts` when the batch before it did not.
    fn failed(&mut self, starts: bool, now: Instant) {
        self.last_failure = Some(now);
        if !starts {
            return;
        }
        let relapse = self
            .last_recovery
            .is_some_and(|recovered| now.saturating_duration_since(recovered) < RELAPSE_WINDOW);
        self.quiet = if relapse {
            (self.quiet * 2).min(LONGEST_QUIET)
        } else {
            SHORTEST_QUIET
        };
        if relapse {
            tracing::warn!(
                quiet_secs = self.quiet.as_secs(),
                "SQLite writes fail again soon after they recovered; readiness reports the \
                 outage this long before trying a write of its own"
            );
        }
    }

    fn recovered(&mut self, now: Instant) {
        self.last_recovery = Some(now);
    }

    fn quiet_left(&self, now: Instant) -> Option<Duration> {
        let failed = self.last_failure?;
        self.quiet
            .checked_sub(now.saturating_duration_since(failed))
            .filter(|left| !left.is_zero())
    }
}

/// Syncs the WAL once, timed; false when the sync failed.
fn sync(sync_wal: &mut SyncWal) -> bool {
    let started = Instant::now();
    let synced = sync_wal();
    metrics::histogram!("storage_writer_sync_seconds").record(started.elapsed().as_secs_f64());
    if let Err(error) = &synced {
        tracing::error!(%error, "the WAL sync failed; refusing writes until restart");
    }
    synced.is_ok()
}

/// Batches made durable (or not) by one sync, on their way to their requesters.
pub(crate) struct SyncedBatches {
    /// The error for every committed job, when the sync failed.
    refusal: Option<RepositoryError>,
    batches: Vec<FinishedBatch>,
}

/// The syncer thread: takes every finished batch waiting, syncs the WAL once for all of them,
/// and passes them to the answering thread, so the next sync can start while they are answered.
/// Ends when the writer hangs up.
pub(crate) fn run_syncer(
    batches: Receiver<FinishedBatch>,
    mut sync_wal: SyncWal,
    durability: &Durability,
    synced: SyncSender<SyncedBatches>,
) {
    while let Ok(first) = batches.recv() {
        let mut ready = vec![first];
        ready.extend(batches.try_iter());
        let anything_committed = ready.iter().any(|batch| batch.commit.is_ok());
        let durable = !durability.is_broken() && (!anything_committed || sync(&mut sync_wal));
        if !durable {
            durability.broken.store(true, Ordering::Relaxed);
        }
        let last = ready.last().map_or(0, |batch| batch.sequence);
        let outage = ready
            .last()
            .is_some_and(|batch| matches!(batch.commit, Err(RepositoryError::Unavailable(_))));
        durability.record_outcome(outage);
        // Readers go on even when the sync failed: writes stop, and readiness tells.
        durability.synced.send_replace(last);
        let answer = SyncedBatches {
            refusal: (!durable).then(Durability::refusal),
            batches: ready,
        };
        // Fails only when the answering thread is gone, and with it every requester's answer.
        if synced.send(answer).is_err() {
            tracing::error!("the SQLite answering thread has stopped; the syncer stops too");
            return;
        }
    }
}

/// The answering thread: gives every requester of a synced batch its outcome, in order. Waking
/// a request's task costs a system call each, which would otherwise delay the next sync.
pub(crate) fn run_answerer(synced: Receiver<SyncedBatches>) {
    for SyncedBatches { refusal, batches } in synced {
        for batch in batches {
            let outcome = match (&refusal, &batch.commit) {
                (Some(refusal), Ok(())) => Err(refusal),
                (_, commit) => commit.as_ref().map(|_| ()),
            };
            for job in batch.jobs {
                job.finish(outcome);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: Duration = Duration::from_secs(1);

    /// An outage of one batch starting at `at`, recovered `recovered_after` later.
    fn outage_then_recovery(outages: &mut Outages, at: Instant, recovered_after: Duration) {
        outages.failed(true, at);
        outages.recovered(at + recovered_after);
    }

    #[test]
    fn readiness_waits_the_shortest_quiet_time_after_a_first_outage() {
        let start = Instant::now();
        let mut outages = Outages::default();
        assert_eq!(outages.quiet_left(start), None);
        outages.failed(true, start);
        assert_eq!(outages.quiet_left(start + 4 * SECOND), Some(6 * SECOND));
        assert_eq!(outages.quiet_left(start + SHORTEST_QUIET), None);
    }

    #[test]
    fn failures_within_one_outage_restart_the_quiet_time_without_lengthening_it() {
        let start = Instant::now();
        let mut outages = Outages::default();
        outages.failed(true, start);
        outages.failed(false, start + 8 * SECOND);
        assert_eq!(outages.quiet_left(start + 9 * SECOND), Some(9 * SECOND));
        assert_eq!(outages.quiet_left(start + 18 * SECOND), None);
    }

    #[test]
    fn outages_returning_soon_after_a_recovery_double_the_quiet_time_up_to_the_longest() {
        let mut at = Instant::now();
        let mut outages = Outages::default();
        let mut quiet_times = Vec::new();
        for _ in 0..6 {
            let quiet = outages.quiet;
            outage_then_recovery(&mut outages, at, quiet);
            quiet_times.push(outages.quiet.as_secs());
            at += outages.quiet + 5 * SECOND;
        }
        assert_eq!(quiet_times, [10, 20, 40, 80, 120, 120]);
        outages.failed(true, at);
        assert_eq!(outages.quiet_left(at + 100 * SECOND), Some(20 * SECOND));
    }

    #[test]
    fn only_the_first_failed_batch_of_an_outage_starts_it() {
        let durability = Durability::new();
        for outage in [true, true, false, true, true] {
            durability.record_outcome(outage);
        }
        assert!(durability.is_failing());
        assert_eq!(durability.outages().quiet, 2 * SHORTEST_QUIET);
        assert!(durability.quiet_left().is_some());
    }

    #[test]
    fn a_recovery_that_holds_starts_again_from_the_shortest_quiet_time() {
        let start = Instant::now();
        let mut outages = Outages::default();
        outage_then_recovery(&mut outages, start, 10 * SECOND);
        outage_then_recovery(&mut outages, start + 15 * SECOND, 20 * SECOND);
        assert_eq!(outages.quiet, 20 * SECOND);
        let recovered = start + 35 * SECOND;
        outages.failed(true, recovered + RELAPSE_WINDOW);
        assert_eq!(outages.quiet, SHORTEST_QUIET);
    }
}
