use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use domain::{ConversationId, GenerationId};
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
    running: Arc<Mutex<HashMap<GenerationId, Running>>>,
}

/// A streamed reply running here, which its user may stop.
#[derive(Debug)]
struct Running {
    conversation_id: ConversationId,
    /// `true` once a stop is asked for; dropped when the reply has ended.
    stop: watch::Sender<bool>,
}

/// A streamed reply's place among those running here, from its start until it has ended (its
/// exchange stored, or its failure known).
#[derive(Debug)]
pub(crate) struct RunningReply {
    running: Arc<Mutex<HashMap<GenerationId, Running>>>,
    generation_id: GenerationId,
    stop: watch::Receiver<bool>,
}

impl RunningReply {
    /// Resolves when the reply's user asked for it to stop.
    pub(crate) fn stop_signal(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut stop = self.stop.clone();
        async move {
            if stop.wait_for(|stop| *stop).await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }
}

impl Drop for RunningReply {
    fn drop(&mut self) {
        self.running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.generation_id);
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
            running: Arc::default(),
        }
    }

    /// Takes note of a streamed reply starting here, so that [`Self::stop`] can reach it.
    pub(crate) fn running_reply(
        &self,
        conversation_id: ConversationId,
        generation_id: GenerationId,
    ) -> RunningReply {
        let (stop, stop_signal) = watch::channel(false);
        self.running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(
                generation_id,
                Running {
                    conversation_id,
                    stop,
                },
            );
        RunningReply {
            running: Arc::clone(&self.running),
            generation_id,
            stop: stop_signal,
        }
    }

    /// Asks the conversation's reply `generation_id` to stop, if it runs here, and returns what
    /// resolves once it has ended: its text so far stored (or, with none, nothing).
    pub(crate) fn stop(
        &self,
        conversation_id: ConversationId,
        generation_id: GenerationId,
    ) -> Option<impl Future<Output = ()> + Send + 'static> {
        let running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        let reply = running
            .get(&generation_id)
            .filter(|reply| reply.conversation_id == conversation_id)?;
        reply.stop.send_replace(true);
        let mut ended = reply.stop.subscribe();
        Some(async move { while ended.changed().await.is_ok() {} })
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
