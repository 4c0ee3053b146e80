//! Links between stages.
//!
//! * [`spsc`] makes a single-producer / single-consumer burst ring (on `rtrb`): every
//!   stage-to-stage link of the threaded runtime is one, or one of the next kind. Bursts
//!   move with one index update per burst, not per item.
//! * [`burst_spsc`] makes an SPSC ring of whole bursts ([`Burst`]): the producer hands over
//!   the vectors it built a burst in, the consumer works on the items where they lie, and
//!   the emptied vectors go back for the next burst. For items too large to copy into a
//!   ring slot and out again: the protocol results (136 bytes) cross from the flow group
//!   to placement and on to postprocess this way (with one place replica that does not
//!   lend, without a copy).
//! * [`Mpmc`] is a bounded lock-free queue for the few links that really have several
//!   producers or consumers (on `crossbeam_queue::ArrayQueue`).
//!
//! All are bounded (a burst ring counts bursts, not items): a full ring refuses items and
//! gives them back, so the caller decides between backpressure and a counted drop.
//!
//! * [`Wakeup`] lets a consumer thread sleep when it has nothing to do: a producer whose
//!   ring has one ([`Producer::wake_on_push`]) wakes the consumer after each push, at the
//!   cost of one fence and one load while the consumer is awake.

use std::sync::atomic::{fence, AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::Thread;
use std::time::Duration;

use crossbeam_queue::ArrayQueue;

/// Parks a consumer thread until a producer has added work (or a timeout passes).
///
/// The consumer calls [`prepare`](Self::prepare), looks at its inputs once more, and then
/// [`park`](Self::park)s (or [`cancel`](Self::cancel)s when it found work). A producer calls
/// [`notify`](Self::notify) after it published work. Both sides fence, so either the
/// consumer's last look sees the work or the producer sees the consumer parked and unparks
/// it; an unpark that comes first makes the park return at once.
///
/// A consumer that sleeps somewhere other than in `park` (blocked in the kernel on a port's
/// descriptors) sets a [kick](Self::set_kick) that ends that sleep, and sleeps there through
/// [`park_in`](Self::park_in) and [`sleep_kicked`](Self::sleep_kicked): a wake while it is in
/// the latter runs the kick instead of the unpark.
#[derive(Debug, Default)]
pub struct Wakeup {
    parked: AtomicBool,
    /// The consumer sleeps where only the kick wakes it ([`sleep_kicked`](Self::sleep_kicked)).
    kicked_sleep: AtomicBool,
    sleeper: Mutex<Sleeper>,
    wakes: AtomicU64,
}

/// What a wake ends a sleep with: a kick for a sleep in the kernel.
pub type Kick = Arc<dyn Fn() + Send + Sync>;

/// Who sleeps on a [`Wakeup`], and how to wake them.
#[derive(Default)]
struct Sleeper {
    /// The thread that last prepared to park (a later runtime on the same engine replaces
    /// it).
    thread: Option<Thread>,
    kick: Option<Kick>,
}

impl std::fmt::Debug for Sleeper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sleeper")
            .field("thread", &self.thread)
            .field("kick", &self.kick.is_some())
            .finish()
    }
}

impl Sleeper {
    /// Run the kick where `kick` says and there is one; otherwise unpark the thread (an
    /// unpark it does not need would end its next nap at once).
    fn wake(&self, kick: bool) {
        match (kick, &self.kick) {
            (true, Some(k)) => k(),
            _ => self.unpark(),
        }
    }

    fn unpark(&self) {
        if let Some(t) = &self.thread {
            t.unpark();
        }
    }
}

impl Wakeup {
    /// A wakeup for the thread that will call [`prepare`](Self::prepare).
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Consumer: about to sleep. Look at the inputs once more after this.
    pub fn prepare(&self) {
        {
            let mut s = self.sleeper.lock().unwrap_or_else(|p| p.into_inner());
            let me = std::thread::current();
            if s.thread.as_ref().map(Thread::id) != Some(me.id()) {
                s.thread = Some(me);
            }
        }
        self.parked.store(true, Ordering::Release);
        fence(Ordering::SeqCst);
    }

    /// Consumer: found work after [`prepare`](Self::prepare); stay awake.
    pub fn cancel(&self) {
        self.parked.store(false, Ordering::Relaxed);
    }

    /// Consumer: sleep until notified or `timeout` passed (`None`: no timeout).
    pub fn park(&self, timeout: Option<Duration>) {
        self.park_in(|| match timeout {
            Some(t) => std::thread::park_timeout(t),
            None => std::thread::park(),
        });
    }

    /// Consumer: sleep in `sleep` (which returns when the [kick](Self::set_kick) runs, or
    /// earlier), unless a producer woke the consumer since [`prepare`](Self::prepare).
    pub fn park_in(&self, sleep: impl FnOnce()) {
        if self.parked.load(Ordering::Acquire) {
            sleep();
        }
        self.parked.store(false, Ordering::Relaxed);
    }

    /// Run `kick` instead of unparking the thread at a wake while the consumer is in
    /// [`sleep_kicked`](Self::sleep_kicked), and besides the unpark at every
    /// [`force`](Self::force); `None`: unpark alone.
    pub fn set_kick(&self, kick: Option<Kick>) {
        self.sleeper.lock().unwrap_or_else(|p| p.into_inner()).kick = kick;
    }

    /// Consumer, in [`park_in`](Self::park_in)'s sleep: run `sleep`, which only the
    /// [kick](Self::set_kick) ends early (a sleep in the kernel), unless a producer woke the
    /// consumer already. A wake from here until `sleep` returns runs the kick; one before
    /// makes this return at once.
    pub fn sleep_kicked(&self, sleep: impl FnOnce()) {
        self.kicked_sleep.store(true, Ordering::SeqCst);
        // Either this load sees a producer's wake, or that producer's look at
        // `kicked_sleep` (after its wake) sees the store above and kicks.
        if self.parked.load(Ordering::SeqCst) {
            sleep();
        }
        self.kicked_sleep.store(false, Ordering::Relaxed);
    }

    /// Whether the consumer is in [`sleep_kicked`](Self::sleep_kicked) (for tests that wake
    /// it there).
    #[cfg(test)]
    pub(crate) fn in_kicked_sleep(&self) -> bool {
        self.kicked_sleep.load(Ordering::SeqCst)
    }

    /// Producer: work was published; wake the consumer if it sleeps.
    #[inline]
    pub fn notify(&self) {
        fence(Ordering::SeqCst);
        if self.parked.load(Ordering::Acquire) && self.parked.swap(false, Ordering::SeqCst) {
            let kick = self.kicked_sleep.load(Ordering::SeqCst);
            let s = self.sleeper.lock().unwrap_or_else(|p| p.into_inner());
            if s.thread.is_some() {
                self.wakes.fetch_add(1, Ordering::Relaxed);
                s.wake(kick);
            }
        }
    }

    /// Wake the consumer whether or not it sleeps (shutdown, configuration changes).
    pub fn force(&self) {
        self.parked.store(false, Ordering::SeqCst);
        let s = self.sleeper.lock().unwrap_or_else(|p| p.into_inner());
        s.unpark();
        s.wake(true);
    }

    /// How many times a producer woke the consumer.
    pub fn wakes(&self) -> u64 {
        self.wakes.load(Ordering::Relaxed)
    }
}

/// Spin, then park: the idle policy of a thread that polls its work (a worker of the
/// threaded runtime, an inline engine's [`Runtime`](crate::pipeline::Runtime) thread). Told
/// after each pass whether it found work, it spins through at least [`SPIN_PASSES`] idle
/// passes, and on until its spin time since the first of them is over (with a spin time, it
/// yields its core once at the first, for a thread its work woke), then announces the
/// park on `wake`, has the caller look once more, and sleeps (the caller says how) until a
/// producer wakes the thread or the sleep's timeout passes.
#[derive(Debug, Default)]
pub(crate) struct Idle {
    passes: u32,
    /// How long to keep spinning after the last busy pass (zero: only the passes). A thread
    /// that polls a port spins a while: the next frame of a conversation usually comes
    /// soon, and waking a sleeping thread takes longer than finding the frame by polling.
    spin: Duration,
    /// When the spin time started (the first idle pass since work was found).
    idle_since: Option<std::time::Instant>,
    /// Times it gave its core away at the start of an idle period.
    yields: u64,
}

/// Idle passes a polling thread spins through before it parks.
pub(crate) const SPIN_PASSES: u32 = 256;

/// How long a thread that polls a port (an inline engine's
/// [`Runtime`](crate::pipeline::Runtime) thread, the threaded runtime's I/O worker, each
/// where it need not share a core) keeps polling after its last pass that found work
/// before it sleeps (real time; at least [`SPIN_PASSES`] passes too): the next frame of a
/// conversation usually arrives within this long, and a sleeping thread wakes late (on a
/// port without descriptors to sleep on, at the end of its nap; on one with them, after the
/// kernel's wakeup, tens of microseconds on a virtual machine). 100 us: on a 2-vCPU VM an
/// echo over veth takes 35 us and more, and with 50 us the echo's tail latency was higher
/// where polls are cheap (AF_XDP, AF_PACKET's ring; the README's Performance section).
pub(crate) const PORT_SPIN: Duration = Duration::from_micros(100);

impl Idle {
    /// An idle policy that keeps spinning for `spin` after the last busy pass.
    pub(crate) fn new(spin: Duration) -> Self {
        Idle {
            spin,
            ..Idle::default()
        }
    }

    /// After a pass: `busy` says whether it found work; `look_again` runs the work once more
    /// after the park is announced (and says whether that found work, or the thread is to
    /// stop): either it sees what a producer published before, or that producer sees the
    /// park and wakes the thread. The thread sleeps in `sleep`, which a wake of `wake` must
    /// end (a park does; a sleep in the kernel needs a [kick](Wakeup::set_kick)); it is told
    /// when the thread went idle (its first idle pass after work).
    #[inline]
    pub(crate) fn after(
        &mut self,
        busy: bool,
        wake: &Wakeup,
        look_again: impl FnOnce() -> bool,
        sleep: impl FnOnce(std::time::Instant),
    ) {
        if busy {
            self.passes = 0;
            return;
        }
        self.passes = self.passes.saturating_add(1);
        // The first idle pass since work was found starts the spin time (and the idle time).
        // A thread that spins gives its core away once here: a thread its work just woke
        // (an application to read what was delivered) may be waiting for this core, and the
        // spin would hold it off until its time slice or the spin time ran out.
        if self.passes == 1 {
            self.idle_since = Some(std::time::Instant::now());
            if !self.spin.is_zero() {
                self.yields += 1;
                std::thread::yield_now();
            }
        }
        if self.passes < SPIN_PASSES
            || self
                .idle_since
                .is_some_and(|since| since.elapsed() < self.spin)
        {
            std::hint::spin_loop();
            return;
        }
        wake.prepare();
        if look_again() {
            wake.cancel();
            self.passes = 0;
            return;
        }
        let since = *self.idle_since.get_or_insert_with(std::time::Instant::now);
        wake.park_in(|| sleep(since));
    }
}

/// Make an SPSC ring holding up to `capacity` items.
pub fn spsc<T: Send>(capacity: usize) -> (Producer<T>, Consumer<T>) {
    let (p, c) = rtrb::RingBuffer::new(capacity.max(1));
    (
        Producer {
            inner: p,
            wake: None,
        },
        Consumer { inner: c },
    )
}

/// The sending end of an SPSC ring.
pub struct Producer<T> {
    inner: rtrb::Producer<T>,
    wake: Option<Arc<Wakeup>>,
}

impl<T: Send> Producer<T> {
    /// Wake `w`'s consumer after every push that moved something (for a consumer on
    /// another thread that may sleep).
    pub fn wake_on_push(&mut self, w: Arc<Wakeup>) {
        self.wake = Some(w);
    }

    #[inline]
    fn notify(&self) {
        if let Some(w) = &self.wake {
            w.notify();
        }
    }

    /// Push one item; gives it back when the ring is full.
    #[inline]
    pub fn push(&mut self, item: T) -> Result<(), T> {
        self.inner
            .push(item)
            .map_err(|rtrb::PushError::Full(v)| v)?;
        self.notify();
        Ok(())
    }

    /// Move as many items as fit from the front of `items` into the ring (one index update);
    /// returns how many moved. The rest stay in `items`, in order.
    pub fn push_burst(&mut self, items: &mut Vec<T>) -> usize {
        let moved = self
            .write_up_to(items.len(), |chunk| {
                let n = chunk.len();
                chunk.fill_from_iter(items.drain(..n))
            })
            .unwrap_or(0);
        if moved > 0 {
            self.notify();
        }
        moved
    }

    /// Move up to `n` items from `items` into the ring (one index update), each written
    /// straight into its slot; returns how many moved. Takes no more from `items` than
    /// moved: with `n` at most [`free`](Self::free), exactly `n` (fewer if `items` ends).
    pub fn push_from(&mut self, items: impl Iterator<Item = T>, n: usize) -> usize {
        let moved = self
            .write_up_to(n, |chunk| chunk.fill_from_iter(items))
            .unwrap_or(0);
        if moved > 0 {
            self.notify();
        }
        moved
    }

    /// `f` on room for `n` items, or for as many as fit; `None` when the ring is full.
    /// Asks for all `n` first: the ring checks its cached copy of the consumer's index and
    /// only reads the shared one when that looks too small.
    #[inline]
    fn write_up_to<R>(
        &mut self,
        n: usize,
        f: impl FnOnce(rtrb::chunks::WriteChunkUninit<'_, T>) -> R,
    ) -> Option<R> {
        let k = match self.inner.write_chunk_uninit(n) {
            Ok(c) => return Some(f(c)),
            Err(rtrb::chunks::ChunkError::TooFewSlots(k)) => k,
        };
        if k == 0 {
            return None;
        }
        self.inner.write_chunk_uninit(k).ok().map(f)
    }

    /// Free slots.
    pub fn free(&self) -> usize {
        self.inner.slots()
    }

    /// Capacity.
    pub fn capacity(&self) -> usize {
        self.inner.buffer().capacity()
    }

    /// Items waiting in the ring.
    pub fn len(&self) -> usize {
        self.capacity() - self.free()
    }

    /// Whether the ring is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether the consumer is gone.
    pub fn is_abandoned(&self) -> bool {
        self.inner.is_abandoned()
    }
}

/// The receiving end of an SPSC ring.
pub struct Consumer<T> {
    inner: rtrb::Consumer<T>,
}

impl<T: Send> Consumer<T> {
    /// Take one item.
    #[inline]
    pub fn pop(&mut self) -> Option<T> {
        self.inner.pop().ok()
    }

    /// Look at the next item without taking it.
    #[inline]
    pub fn peek(&self) -> Option<&T> {
        self.inner.peek().ok()
    }

    /// Move up to `max` items to the end of `out` (one index update); returns how many.
    pub fn pop_burst(&mut self, out: &mut Vec<T>, max: usize) -> usize {
        self.read_up_to(max, |chunk| {
            let n = chunk.len();
            out.extend(chunk);
            n
        })
        .unwrap_or(0)
    }

    /// `f` on the next `max` items, or on as many as wait; `None` when none do.
    #[inline]
    fn read_up_to<R>(
        &mut self,
        max: usize,
        f: impl FnOnce(rtrb::chunks::ReadChunk<'_, T>) -> R,
    ) -> Option<R> {
        let k = match self.inner.read_chunk(max) {
            Ok(c) => return Some(f(c)),
            Err(rtrb::chunks::ChunkError::TooFewSlots(k)) => k,
        };
        if k == 0 {
            return None;
        }
        self.inner.read_chunk(k).ok().map(f)
    }

    /// Take up to `max` items (one index update), giving each to `f` as it leaves its
    /// slot; returns how many.
    pub fn pop_each(&mut self, max: usize, f: impl FnMut(T)) -> usize {
        self.read_up_to(max, |chunk| {
            let n = chunk.len();
            chunk.into_iter().for_each(f);
            n
        })
        .unwrap_or(0)
    }

    /// Items waiting.
    pub fn len(&self) -> usize {
        self.inner.slots()
    }

    /// Whether nothing is waiting.
    pub fn is_empty(&self) -> bool {
        self.inner.is_empty()
    }

    /// Capacity.
    pub fn capacity(&self) -> usize {
        self.inner.buffer().capacity()
    }

    /// Whether the producer is gone.
    pub fn is_abandoned(&self) -> bool {
        self.inner.is_abandoned()
    }
}

/// What a [`burst_spsc`] ring moves: a burst of items held whole, as a vector or a few
/// vectors kept in step. An empty burst (nothing in it, its allocations kept) goes back to
/// the producer to be filled again.
pub trait Burst: Send + Default {
    /// Whether the burst holds no item.
    fn is_empty(&self) -> bool;
}

impl<T: Send> Burst for Vec<T> {
    fn is_empty(&self) -> bool {
        Vec::is_empty(self)
    }
}

/// Make an SPSC ring of whole bursts that holds at least `capacity` items when its bursts
/// hold `burst` items each: `capacity / burst` bursts, rounded up, and at least two.
///
/// A burst crosses without a copy of its items: the producer hands over the burst it
/// filled and gets an empty one back in its place, the consumer takes a burst in place of
/// an empty one of its own, which goes back to the producer on a second ring (two bursts
/// larger). Steady traffic reuses the same few allocations. The ring bounds bursts, not
/// items: a producer that hands over bursts of one item fills it with as many items as it
/// has bursts.
///
/// ```
/// use flextoe::ring::burst_spsc;
///
/// let (mut p, mut c) = burst_spsc::<Vec<u32>>(64, 32);
/// let mut burst: Vec<u32> = (0..40).collect();
/// assert!(p.push(&mut burst));
/// // The producer holds an empty burst now, the 40 items are in the ring.
/// assert!(burst.is_empty());
/// let mut got = Vec::new();
/// assert!(c.pop(&mut got));
/// assert_eq!(got, (0..40).collect::<Vec<_>>());
/// assert!(!c.pop(&mut Vec::new()));
/// ```
pub fn burst_spsc<B: Burst>(capacity: usize, burst: usize) -> (BurstProducer<B>, BurstConsumer<B>) {
    let bursts = capacity.div_ceil(burst.max(1)).max(2);
    let (full_p, full_c) = spsc(bursts);
    // Room for every burst there can be: those in flight, the consumer's, the producer's.
    let (empty_p, empty_c) = spsc(bursts + 2);
    (
        BurstProducer {
            full: full_p,
            empty: empty_c,
        },
        BurstConsumer {
            full: full_c,
            empty: empty_p,
        },
    )
}

/// The sending end of a [`burst_spsc`] ring.
pub struct BurstProducer<B> {
    full: Producer<B>,
    empty: Consumer<B>,
}

impl<B: Burst> BurstProducer<B> {
    /// Wake `w`'s consumer after every push that moved something.
    pub fn wake_on_push(&mut self, w: Arc<Wakeup>) {
        self.full.wake_on_push(w);
    }

    /// Hand over `burst` whole and put an empty one (one that came back, else a new one)
    /// in its place; `false`, leaving `burst` as it was, when the ring is full. An empty
    /// `burst` stays where it is (`true`: nothing waits).
    pub fn push(&mut self, burst: &mut B) -> bool {
        if burst.is_empty() {
            return true;
        }
        if self.full.free() == 0 {
            return false;
        }
        let spare = self.empty.pop().unwrap_or_default();
        let b = std::mem::replace(burst, spare);
        if let Err(b) = self.full.push(b) {
            // Room was checked and only this end pushes; keep the burst whole regardless.
            *burst = b;
            return false;
        }
        true
    }

    /// Bursts the ring has room for.
    pub fn free(&self) -> usize {
        self.full.free()
    }

    /// Whether the consumer is gone.
    pub fn is_abandoned(&self) -> bool {
        self.full.is_abandoned()
    }
}

/// The receiving end of a [`burst_spsc`] ring.
pub struct BurstConsumer<B> {
    full: Consumer<B>,
    empty: Producer<B>,
}

impl<B: Burst> BurstConsumer<B> {
    /// Take the next burst into `into`, whose empty burst goes back to the producer;
    /// `false` when none waits. `into` must be empty (a burst with items left in it is
    /// not replaced: `false`, a bug of the caller that debug builds report).
    pub fn pop(&mut self, into: &mut B) -> bool {
        if !into.is_empty() {
            debug_assert!(false, "BurstConsumer::pop into a burst that is not empty");
            return false;
        }
        let Some(next) = self.full.pop() else {
            return false;
        };
        let done = std::mem::replace(into, next);
        // The return ring has room for every burst there is; were it full, the empty burst
        // would only be freed here.
        let _ = self.empty.push(done);
        true
    }

    /// Bursts waiting.
    pub fn len(&self) -> usize {
        self.full.len()
    }

    /// Whether no burst waits.
    pub fn is_empty(&self) -> bool {
        self.full.is_empty()
    }

    /// Capacity, in bursts.
    pub fn capacity(&self) -> usize {
        self.full.capacity()
    }

    /// Whether the producer is gone.
    pub fn is_abandoned(&self) -> bool {
        self.full.is_abandoned()
    }
}

/// A bounded multi-producer / multi-consumer queue.
pub struct Mpmc<T> {
    q: ArrayQueue<T>,
}

impl<T> Mpmc<T> {
    /// A queue of `capacity` items.
    pub fn new(capacity: usize) -> Self {
        Mpmc {
            q: ArrayQueue::new(capacity.max(1)),
        }
    }

    /// Push; gives the item back when full.
    pub fn push(&self, item: T) -> Result<(), T> {
        self.q.push(item)
    }

    /// Push items from the front of `items` until the queue is full; returns how many moved.
    /// The rest stay in `items`, in order.
    pub fn push_burst(&self, items: &mut Vec<T>) -> usize {
        let mut moved = 0;
        let mut it = std::mem::take(items).into_iter();
        for item in it.by_ref() {
            if let Err(back) = self.q.push(item) {
                items.push(back);
                break;
            }
            moved += 1;
        }
        items.extend(it);
        moved
    }

    /// Take one item.
    pub fn pop(&self) -> Option<T> {
        self.q.pop()
    }

    /// Take up to `max` items into `out`.
    pub fn pop_burst(&self, out: &mut Vec<T>, max: usize) -> usize {
        let mut n = 0;
        while n < max {
            match self.q.pop() {
                Some(v) => {
                    out.push(v);
                    n += 1;
                }
                None => break,
            }
        }
        n
    }

    /// Items waiting.
    pub fn len(&self) -> usize {
        self.q.len()
    }

    /// Whether nothing is waiting.
    pub fn is_empty(&self) -> bool {
        self.q.is_empty()
    }

    /// Capacity.
    pub fn capacity(&self) -> usize {
        self.q.capacity()
    }
}

#[cfg(test)]
mod tests;
