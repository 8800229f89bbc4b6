use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use domain::{ConversationId, GenerationId, Interruption};
use tokio::runtime::Handle;
use tokio::sync::{watch, Notify};
use tracing::Instrument;

/// Replies that run to completion whether or not their client is still listening. They run on a
/// runtime that outlives the HTTP workers, and shutdown waits for them, so a reply that has started
/// is finished and stored even when the client leaves or the server is asked to stop. A stop that
/// cannot wait any longer cuts them short ([`Generations::cut_short`]): each stores what it has.
#[derive(Clone, Debug)]
pub struct Generations {
    runtime: Handle,
    in_flight: Arc<InFlight>,
    cut: Arc<watch::Sender<bool>>,
    replies: Arc<Mutex<Replies>>,
}

/// How long a stop is remembered: a reply whose client chose its generation id may start after
/// its stop (the stop overtook the message, or the message was sent again).
const STOP_MEMORY: Duration = Duration::from_secs(60);
/// At most this many stops are remembered at once (about 100 bytes each); beyond it the oldest is
/// forgotten.
const STOPS_REMEMBERED: usize = 65_536;

#[derive(Debug, Default)]
struct Replies {
    running: HashMap<GenerationId, Running>,
    recent_stops: RecentStops,
}

/// The stops asked for in the last [`STOP_MEMORY`], by conversation and generation: a stop under
/// another conversation's id takes no other stop's place.
#[derive(Debug, Default)]
struct RecentStops {
    when: HashMap<(ConversationId, GenerationId), Instant>,
    /// In the order asked, which is the order they expire in.
    asked: VecDeque<((ConversationId, GenerationId), Instant)>,
}

impl RecentStops {
    fn remember(&mut self, conversation_id: ConversationId, generation_id: GenerationId) {
        let now = Instant::now();
        while let Some(&(stop, at)) = self.asked.front() {
            if now.duration_since(at) < STOP_MEMORY && self.asked.len() < STOPS_REMEMBERED {
                break;
            }
            self.asked.pop_front();
            // A later stop of the same reply has a place of its own in the order.
            if self.when.get(&stop) == Some(&at) {
                self.when.remove(&stop);
            }
        }
        let stop = (conversation_id, generation_id);
        self.when.insert(stop, now);
        self.asked.push_back((stop, now));
    }

    fn stopped(&self, conversation_id: ConversationId, generation_id: GenerationId) -> bool {
        self.when
            .get(&(conversation_id, generation_id))
            .is_some_and(|asked| asked.elapsed() < STOP_MEMORY)
    }
}

fn lock(replies: &Mutex<Replies>) -> std::sync::MutexGuard<'_, Replies> {
    replies.lock().unwrap_or_else(|p| p.into_inner())
}

/// A streamed reply running here, which its user may stop.
#[derive(Debug)]
struct Running {
    conversation_id: ConversationId,
    /// What stops it, once something does: its user, or its conversation deleted. Dropped when
    /// the reply has ended.
    stop: watch::Sender<Option<Interruption>>,
}

/// A streamed reply's place among those running here, from its start until it has ended (its
/// exchange stored, or its failure known).
#[derive(Debug)]
pub(crate) struct RunningReply {
    replies: Arc<Mutex<Replies>>,
    conversation_id: ConversationId,
    generation_id: GenerationId,
    stop: watch::Receiver<Option<Interruption>>,
}

impl RunningReply {
    pub(crate) fn conversation_id(&self) -> ConversationId {
        self.conversation_id
    }

    pub(crate) fn generation_id(&self) -> GenerationId {
        self.generation_id
    }

    /// Whether the reply is to stop already (also before its message came).
    pub(crate) fn stop_asked(&self) -> bool {
        self.stop.borrow().is_some()
    }

    /// Resolves when the reply is to stop: its user asked, or its conversation was deleted.
    pub(crate) fn stop_signal(&self) -> impl Future<Output = Interruption> + Send + 'static {
        let mut stop = self.stop.clone();
        async move {
            if let Ok(Some(interruption)) = stop.wait_for(Option::is_some).await.map(|stop| *stop) {
                return interruption;
            }
            // The reply has ended: nothing will stop it any more.
            std::future::pending().await
        }
    }
}

impl Drop for RunningReply {
    fn drop(&mut self) {
        lock(&self.replies).running.remove(&self.generation_id);
    }
}

#[derive(Debug, Default)]
struct InFlight {
    count: AtomicUsize,
    idle: Notify,
}

struct InFlightGuard(Arc<InFlight>);

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        if self.0.count.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.idle.notify_waiters();
        }
        metrics::gauge!("chat_generations_in_flight").decrement(1.0);
    }
}

impl Generations {
    pub fn new(runtime: Handle) -> Self {
        Self {
            runtime,
            in_flight: Arc::default(),
            cut: Arc::new(watch::Sender::new(false)),
            replies: Arc::default(),
        }
    }

    /// Takes note of a streamed reply starting here, so that [`Self::stop`] can reach it from
    /// before its assistant is asked; `None` when a reply with this id runs here already. A stop
    /// asked for its conversation's reply of this id in the last minute stops it at once.
    pub(crate) fn running_reply(
        &self,
        conversation_id: ConversationId,
        generation_id: GenerationId,
    ) -> Option<RunningReply> {
        let mut replies = lock(&self.replies);
        if replies.running.contains_key(&generation_id) {
            return None;
        }
        let stopped_already = replies.recent_stops.stopped(conversation_id, generation_id);
        let (stop, stop_signal) = watch::channel(stopped_already.then_some(Interruption::Stopped));
        replies.running.insert(
            generation_id,
            Running {
                conversation_id,
                stop,
            },
        );
        Some(RunningReply {
            replies: Arc::clone(&self.replies),
            conversation_id,
            generation_id,
            stop: stop_signal,
        })
    }

    /// Asks the conversation's reply `generation_id` to stop, and returns, if it runs here, what
    /// resolves once it has ended: its text so far stored (or, with none, nothing). The stop is
    /// remembered for a minute either way: a reply of the conversation that starts with this id
    /// meanwhile (its client chose it, and its message had not arrived, or came again) is stopped
    /// before its assistant is asked.
    pub(crate) fn stop(
        &self,
        conversation_id: ConversationId,
        generation_id: GenerationId,
    ) -> Option<impl Future<Output = ()> + Send + 'static> {
        let mut replies = lock(&self.replies);
        replies
            .recent_stops
            .remember(conversation_id, generation_id);
        let reply = replies
            .running
            .get(&generation_id)
            .filter(|reply| reply.conversation_id == conversation_id)?;
        // Its conversation deleted already, the reply ends as that says.
        reply.stop.send_if_modified(|stop| {
            let asked_first = stop.is_none();
            stop.get_or_insert(Interruption::Stopped);
            asked_first
        });
        let mut ended = reply.stop.subscribe();
        Some(async move { while ended.changed().await.is_ok() {} })
    }

    /// Stops the replies of a deleted conversation that run here, also those waiting for their
    /// model: nothing of them is stored, and the model is asked no more.
    pub(crate) fn stop_conversation(&self, conversation_id: ConversationId) {
        let replies = lock(&self.replies);
        for reply in replies.running.values() {
            if reply.conversation_id == conversation_id {
                reply
                    .stop
                    .send_replace(Some(Interruption::ConversationDeleted));
            }
        }
    }

    /// Resolves when the running replies are to be cut short.
    pub(crate) fn cut_signal(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut cut = self.cut.subscribe();
        async move {
            if cut.wait_for(|cut| *cut).await.is_err() {
                // Nobody can cut any more: the reply runs to its end.
                std::future::pending::<()>().await;
            }
        }
    }

    /// The running replies have been cut short: the server is about to stop.
    pub(crate) fn is_cut(&self) -> bool {
        *self.cut.borrow()
    }

    /// Ends every running reply where it got to, and every reply started later at once; each
    /// stores what it has and ends its stream with `done` (or, with no text yet, an error).
    pub fn cut_short(&self) {
        let in_flight = self.in_flight();
        if in_flight > 0 {
            tracing::warn!(in_flight, "cutting replies in progress short");
        }
        self.cut.send_replace(true);
    }

    pub(crate) fn spawn<F>(&self, generation: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.in_flight.count.fetch_add(1, Ordering::AcqRel);
        metrics::gauge!("chat_generations_in_flight").increment(1.0);
        let guard = InFlightGuard(Arc::clone(&self.in_flight));
        // The request's span (and so its request id) follows the reply into the background.
        let span = tracing::Span::current();
        self.runtime.spawn(
            async move {
                let _guard = guard;
                generation.await;
            }
            .instrument(span),
        );
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.count.load(Ordering::Acquire)
    }

    /// Waits until no generation runs, or `grace` has passed; true when they all finished.
    pub async fn wait_idle(&self, grace: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + grace;
        loop {
            let idle = self.in_flight.idle.notified();
            if self.in_flight() == 0 {
                return true;
            }
            if tokio::time::timeout_at(deadline, idle).await.is_err() {
                return self.in_flight() == 0;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use futures::FutureExt;

    use super::*;

    fn is_stopped(reply: &RunningReply) -> bool {
        reply.stop_signal().now_or_never().is_some()
    }

    #[tokio::test]
    async fn a_stop_stops_its_conversations_reply_of_that_id_from_before_it_starts_to_a_minute_after(
    ) {
        let generations = Generations::new(Handle::current());
        let (conversation, other) = (ConversationId::generate(), ConversationId::generate());
        let (early, elsewhere, unasked) = (
            GenerationId::generate(),
            GenerationId::generate(),
            GenerationId::generate(),
        );
        assert!(
            generations.stop(conversation, early).is_none(),
            "not running"
        );
        assert!(generations.stop(other, elsewhere).is_none());

        let stopped = generations.running_reply(conversation, early).unwrap();
        assert!(is_stopped(&stopped));
        assert!(!is_stopped(
            &generations.running_reply(conversation, elsewhere).unwrap()
        ));
        assert!(!is_stopped(
            &generations.running_reply(conversation, unasked).unwrap()
        ));
        // One reply per id; sent again once it ended, it is stopped again.
        assert!(generations.running_reply(conversation, early).is_none());
        drop(stopped);
        assert!(is_stopped(
            &generations.running_reply(conversation, early).unwrap()
        ));

        // Asked once the reply has started, it stops it then and there.
        let started = generations.running_reply(conversation, unasked).unwrap();
        let ended = generations.stop(conversation, unasked).unwrap();
        assert!(is_stopped(&started));
        drop(started);
        ended.await;
    }

    #[tokio::test]
    async fn deleting_a_conversation_stops_its_replies_here_and_no_other() {
        let generations = Generations::new(Handle::current());
        let (deleted, kept) = (ConversationId::generate(), ConversationId::generate());
        let waiting = generations
            .running_reply(deleted, GenerationId::generate())
            .unwrap();
        let stopped_id = GenerationId::generate();
        let stopped_first = generations.running_reply(deleted, stopped_id).unwrap();
        let other = generations
            .running_reply(kept, GenerationId::generate())
            .unwrap();
        let _ended = generations.stop(deleted, stopped_id).unwrap();

        generations.stop_conversation(deleted);
        let deleted_stop = Some(Interruption::ConversationDeleted);
        assert_eq!(waiting.stop_signal().now_or_never(), deleted_stop);
        assert_eq!(stopped_first.stop_signal().now_or_never(), deleted_stop);
        assert!(!is_stopped(&other));
        // A stop asked afterwards does not hide that the conversation is gone.
        assert!(generations.stop(deleted, stopped_id).is_some());
        assert_eq!(stopped_first.stop_signal().now_or_never(), deleted_stop);
    }

    #[test]
    fn the_oldest_stops_are_forgotten_beyond_the_limit() {
        let mut stops = RecentStops::default();
        let conversation = ConversationId::generate();
        let first = GenerationId::generate();
        stops.remember(conversation, first);
        // Stopped again later: that later stop is the one the limit counts from.
        let again = GenerationId::generate();
        stops.remember(conversation, again);
        stops.remember(conversation, again);
        for _ in 2..STOPS_REMEMBERED {
            stops.remember(conversation, GenerationId::generate());
        }
        assert!(!stops.stopped(conversation, first), "the oldest went");
        assert!(stops.stopped(conversation, again));
        assert_eq!(stops.asked.len(), STOPS_REMEMBERED);
        assert_eq!(stops.when.len(), STOPS_REMEMBERED - 1);
    }
}
