use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use async_trait::async_trait;

use crate::store::{CacheError, ReplyCache};

/// An in-process [`ReplyCache`] for a single replica: at most `max_entries` replies holding at
/// most `max_bytes` (as [`MemoryReplyCache::entry_bytes`] counts them), the least recently used one
/// evicted first, each gone once its ttl has passed. Operations take a short lock and do no I/O.
#[derive(Debug)]
pub struct MemoryReplyCache {
    max_entries: usize,
    max_bytes: usize,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    entries: HashMap<String, Entry>,
    /// Last use -> key; the first entry is the least recently used.
    order: BTreeMap<u64, String>,
    clock: u64,
    /// Bytes held, as [`MemoryReplyCache::entry_bytes`] counts them.
    bytes: usize,
}

#[derive(Debug)]
struct Entry {
    reply: String,
    expires_at: Instant,
    last_used: u64,
}

impl State {
    fn tick(&mut self) -> u64 {
        self.clock += 1;
        self.clock
    }

    fn remove(&mut self, key: &str) {
        if let Some(entry) = self.entries.remove(key) {
            self.order.remove(&entry.last_used);
            self.bytes -= MemoryReplyCache::entry_bytes(key, &entry.reply);
        }
    }

    fn evict_least_recently_used(&mut self) -> bool {
        match self.order.pop_first() {
            Some((_, oldest)) => {
                if let Some(entry) = self.entries.remove(&oldest) {
                    self.bytes -= MemoryReplyCache::entry_bytes(&oldest, &entry.reply);
                }
                true
            }
            None => false,
        }
    }
}

impl MemoryReplyCache {
    /// What an entry holds besides its key and reply text: the map's slot, the recency index's
    /// node and the allocator's rounding, so that many short replies cannot take several times
    /// `max_bytes`.
    pub const ENTRY_OVERHEAD_BYTES: usize = 160;

    /// What an entry counts against `max_bytes`: its key twice (the map and the recency index each
    /// hold one), its reply and [`Self::ENTRY_OVERHEAD_BYTES`].
    pub fn entry_bytes(key: &str, reply: &str) -> usize {
        2 * key.len() + reply.len() + Self::ENTRY_OVERHEAD_BYTES
    }

    /// A cache holding at most `max_entries` replies of at most `max_bytes` in all (keys and
    /// bookkeeping included); a reply larger than that alone is not kept. 0 of either stores nothing.
    pub fn new(max_entries: usize, max_bytes: usize) -> Self {
        Self {
            max_entries,
            max_bytes,
            state: Mutex::new(State::default()),
        }
    }

    /// Bytes held now, as [`Self::entry_bytes`] counts them, expired ones not yet dropped included.
    pub fn bytes(&self) -> usize {
        self.lock().bytes
    }

    /// How many replies are held now, expired ones not yet dropped included.
    pub fn len(&self) -> usize {
        self.lock().entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // The state is consistent after every statement that can panic, so a poisoned lock is usable.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[async_trait]
impl ReplyCache for MemoryReplyCache {
    async fn get(&self, key: &str) -> Result<Option<String>, CacheError> {
        let now = Instant::now();
        let mut state = self.lock();
        let stamp = state.tick();
        let State { entries, order, .. } = &mut *state;
        let Some(entry) = entries.get_mut(key) else {
            return Ok(None);
        };
        if entry.expires_at <= now {
            state.remove(key);
            return Ok(None);
        }
        order.remove(&entry.last_used);
        entry.last_used = stamp;
        order.insert(stamp, key.to_owned());
        Ok(Some(entry.reply.clone()))
    }

    async fn put(&self, key: &str, reply: &str, ttl: Duration) -> Result<(), CacheError> {
        let size = Self::entry_bytes(key, reply);
        if self.max_entries == 0 || size > self.max_bytes {
            return Ok(());
        }
        let now = Instant::now();
        // A ttl too large to represent lasts as long as the process.
        let expires_at = now
            .checked_add(ttl)
            .unwrap_or_else(|| now + Duration::from_secs(100 * 365 * 24 * 3600));
        let mut state = self.lock();
        state.remove(key);
        // Make room by evicting the least recently used; an expired entry nobody reads drifts there.
        while state.entries.len() >= self.max_entries || state.bytes + size > self.max_bytes {
            if !state.evict_least_recently_used() {
                break;
            }
        }
        state.bytes += size;
        let stamp = state.tick();
        state.order.insert(stamp, key.to_owned());
        state.entries.insert(
            key.to_owned(),
            Entry {
                reply: reply.to_owned(),
                expires_at,
                last_used: stamp,
            },
        );
        Ok(())
    }
}
