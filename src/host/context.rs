//! How the engine tells the application of progress: a [`Waiter`] parks threads until
//! the engine reports it, and a [`Context`] queues readiness [`Event`]s for the streams
//! registered with it.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender};

/// Parks a thread until the engine reports progress. Waking costs nothing when nobody waits.
#[derive(Default)]
pub struct Waiter {
    waiting: AtomicUsize,
    epoch: Mutex<u64>,
    cv: Condvar,
}

impl Waiter {
    /// Wake every waiting thread.
    pub fn wake(&self) {
        // The state change that prompted this call (a ring position, a flag) may still sit in
        // the store buffer; without a full fence the load below could see no waiter while the
        // waiter sees the old state, and the wake-up would be lost (store-load reordering).
        std::sync::atomic::fence(Ordering::SeqCst);
        if self.waiting.load(Ordering::SeqCst) > 0 {
            let mut e = self.epoch.lock().unwrap_or_else(|p| p.into_inner());
            *e += 1;
            self.cv.notify_all();
        }
    }

    /// Wait until `ready()` holds or `timeout` passes; returns `ready()`.
    pub fn wait_until(&self, timeout: Option<Duration>, mut ready: impl FnMut() -> bool) -> bool {
        let deadline = timeout.map(|t| std::time::Instant::now() + t);
        loop {
            if ready() {
                return true;
            }
            let mut guard = self.epoch.lock().unwrap_or_else(|p| p.into_inner());
            self.waiting.fetch_add(1, Ordering::SeqCst);
            // Pairs with the fence in `wake`: the registration above is ordered before the
            // state loads in `ready` (an RCpc load could otherwise pass the add).
            std::sync::atomic::fence(Ordering::SeqCst);
            if ready() {
                self.waiting.fetch_sub(1, Ordering::SeqCst);
                return true;
            }
            // Bounded sleeps keep a missed wake-up from hanging anybody.
            let mut slice = Duration::from_millis(20);
            if let Some(d) = deadline {
                let now = std::time::Instant::now();
                if now >= d {
                    self.waiting.fetch_sub(1, Ordering::SeqCst);
                    return ready();
                }
                slice = slice.min(d - now);
            }
            let start = *guard;
            while *guard == start {
                let (g, res) = self
                    .cv
                    .wait_timeout(guard, slice)
                    .unwrap_or_else(|p| p.into_inner());
                guard = g;
                if res.timed_out() {
                    break;
                }
            }
            self.waiting.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

/// Readiness events posted to a [`Context`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Event {
    /// The token the stream was registered with.
    pub token: u64,
    /// What happened.
    pub kind: EventKind,
}

/// Kinds of [`Event`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// New data, or the peer's FIN.
    Readable,
    /// TX ring space was freed.
    Writable,
    /// The connection is established.
    Connected,
    /// The connection ended (closed, reset, refused, timed out).
    Closed,
}

struct ContextShared {
    tx: Sender<Event>,
    rx: Receiver<Event>,
    overflows: AtomicU64,
    waiter: Waiter,
    notify: Option<Notify>,
}

/// A callback run (on the engine's thread) after every event posted to a [`Context`]: it
/// lets a waiter that sleeps elsewhere (in `poll(2)` on an eventfd, say) hear of readiness.
/// It must be cheap and must not block.
pub type Notify = Arc<dyn Fn() + Send + Sync>;

/// An application context: a queue of readiness [`Event`]s for the streams registered with
/// it (FlexTOE's per-thread context queue).
#[derive(Clone)]
pub struct Context {
    shared: Arc<ContextShared>,
}

impl Context {
    /// A context whose queue holds `capacity` events. When it overflows, events are dropped
    /// and counted; readiness itself is never lost, since it is read from the rings.
    pub fn new(capacity: usize) -> Self {
        Self::build(capacity, None)
    }

    /// [`new`](Self::new), with a callback run after every posted event (see [`Notify`]).
    ///
    /// ```
    /// use std::sync::atomic::{AtomicU64, Ordering};
    /// use std::sync::Arc;
    /// let posted = Arc::new(AtomicU64::new(0));
    /// let seen = posted.clone();
    /// let ctx = flextoe::host::Context::with_notify(64, Arc::new(move || {
    ///     seen.fetch_add(1, Ordering::Relaxed);
    /// }));
    /// # drop(ctx);
    /// ```
    pub fn with_notify(capacity: usize, notify: Notify) -> Self {
        Self::build(capacity, Some(notify))
    }

    fn build(capacity: usize, notify: Option<Notify>) -> Self {
        let (tx, rx) = crossbeam_channel::bounded(capacity.max(1));
        Context {
            shared: Arc::new(ContextShared {
                tx,
                rx,
                overflows: AtomicU64::new(0),
                waiter: Waiter::default(),
                notify,
            }),
        }
    }

    /// Move pending events into `out`; returns how many.
    pub fn poll(&self, out: &mut Vec<Event>) -> usize {
        let mut n = 0;
        while let Ok(e) = self.shared.rx.try_recv() {
            out.push(e);
            n += 1;
        }
        n
    }

    /// Wait until an event is pending or `timeout` passes.
    pub fn wait(&self, timeout: Option<Duration>) -> bool {
        self.shared
            .waiter
            .wait_until(timeout, || !self.shared.rx.is_empty())
    }

    /// Events dropped because the queue was full.
    pub fn overflows(&self) -> u64 {
        self.shared.overflows.load(Ordering::Relaxed)
    }

    pub(crate) fn post(&self, e: Event) {
        if self.shared.tx.try_send(e).is_err() {
            self.shared.overflows.fetch_add(1, Ordering::Relaxed);
        }
        self.shared.waiter.wake();
        if let Some(n) = &self.shared.notify {
            n();
        }
    }
}
