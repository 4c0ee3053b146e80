//! Closed connections outlive their descriptors until their data and FIN are out, and the
//! process waits for them (a bounded time) when it exits.
//!
//! A kernel socket's connection survives `close` and the end of the process: the kernel
//! sends what is queued, then the FIN. In-process, the engine is a thread of the program and
//! ends with it, so a program that writes its last bytes, closes and exits at once (as `nc`
//! does) would leave its peer waiting forever. Closed streams are therefore kept (shut down
//! both ways) until they are closed or drained, and an exit handler closes what is still
//! open and waits for them up to `FLEXTOE_LINGER_MS` (default 2000 ms). In service mode the
//! service finishes them; the exit handler only closes what is open.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use flextoe::host::{ConnStatus, Stream};

/// Streams closed by the application and not yet finished, with when they were closed.
static CLOSING: Mutex<Vec<(Stream, Instant)>> = Mutex::new(Vec::new());
/// A stream was aborted (closed with unread data, or with `SO_LINGER` at zero: a RST) since
/// the last exit check.
static ABORTED: AtomicBool = AtomicBool::new(false);

/// How long a closed connection is kept at most when its peer never finishes (as Linux's
/// `tcp_fin_timeout`).
const KEEP: Duration = Duration::from_secs(60);

fn finished(s: &Stream) -> bool {
    !matches!(s.status(), ConnStatus::Connecting | ConnStatus::Established)
}

/// The application closed `s`'s last descriptor with `SO_LINGER` on and a zero timeout:
/// a RST, and what is queued is discarded.
pub fn abort(s: Stream) {
    ABORTED.store(true, Ordering::Relaxed);
    s.abort();
}

/// The application closed `s`'s last descriptor.
pub fn close(mut s: Stream) {
    if s.readable_bytes() > 0 {
        // Unread data: a RST, as Linux sends (dropping the stream aborts it).
        ABORTED.store(true, Ordering::Relaxed);
        drop(s);
        return;
    }
    let _ = s.shutdown(std::net::Shutdown::Both);
    let now = Instant::now();
    let mut list = CLOSING.lock().unwrap_or_else(|p| p.into_inner());
    list.retain(|(s, at)| !finished(s) && now.duration_since(*at) < KEEP);
    list.push((s, now));
}

/// At exit: wait until every closed connection has its data acknowledged and its FIN
/// answered, or the linger time has passed.
pub extern "C" fn at_exit() {
    if crate::engine::started().is_none() {
        return;
    }
    // What the program left open closes as the kernel would close it at exit: a FIN after
    // the queued data (a RST with unread data).
    drop(crate::sock::take_all());
    let linger = std::env::var("FLEXTOE_LINGER_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .map(Duration::from_millis)
        .unwrap_or(Duration::from_secs(2))
        .min(Duration::from_secs(24 * 3600));
    let deadline = Instant::now() + linger;
    let list = std::mem::take(&mut *CLOSING.lock().unwrap_or_else(|p| p.into_inner()));
    for (s, _) in &list {
        let left = deadline.saturating_duration_since(Instant::now());
        if s.wait_drained(Some(left)) {
            let left = deadline.saturating_duration_since(Instant::now());
            // The FIN's answer: the peer's FIN too if it comes soon.
            s.wait_closed(Some(left.min(Duration::from_millis(200))));
        }
    }
    if ABORTED.load(Ordering::Relaxed) {
        // Let the engine send the RSTs it was asked for.
        std::thread::sleep(
            Duration::from_millis(20).min(deadline.saturating_duration_since(Instant::now())),
        );
    }
}
