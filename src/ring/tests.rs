//! Tests of the idle policy and the burst rings.

use super::*;

/// A sleep of the idle policy: a park of at most 1 ms.
fn nap(_idle_since: std::time::Instant) {
    std::thread::park_timeout(Duration::from_millis(1));
}

/// Idle passes until the policy gets ready to park (it has the caller look once more,
/// here finding work, so it never sleeps), and how long that took.
fn passes_to_park(idle: &mut Idle, wake: &Wakeup) -> (u32, std::time::Duration) {
    let start = std::time::Instant::now();
    let mut passes = 0;
    loop {
        passes += 1;
        let mut looked = false;
        idle.after(
            false,
            wake,
            || {
                looked = true;
                true
            },
            nap,
        );
        if looked {
            return (passes, start.elapsed());
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "never got ready to park"
        );
    }
}

/// `n` idle passes that do not reach the look (fewer than the policy's passes).
fn idle_passes(idle: &mut Idle, wake: &Wakeup, n: u32) {
    assert!(n < SPIN_PASSES);
    for _ in 0..n {
        idle.after(false, wake, || true, nap);
    }
}

#[test]
fn idle_spins_its_passes_then_its_spin_time_and_work_starts_both_again() {
    let wake = Wakeup::new();
    // Without a spin time: the passes alone, counted again after a look that found
    // work and after a busy pass.
    let mut idle = Idle::default();
    assert_eq!(passes_to_park(&mut idle, &wake).0, SPIN_PASSES);
    assert_eq!(passes_to_park(&mut idle, &wake).0, SPIN_PASSES);
    idle_passes(&mut idle, &wake, SPIN_PASSES / 2);
    idle.after(true, &wake, || false, nap);
    assert_eq!(passes_to_park(&mut idle, &wake).0, SPIN_PASSES);
    // It never spins, so it never gives its core away.
    assert_eq!(idle.yields, 0);
    // With one: the passes, then polls until the spin time since the first idle pass is
    // over, timed again after a look that found work and after a busy pass.
    let spin = Duration::from_millis(30);
    let mut idle = Idle::new(spin);
    for _ in 0..2 {
        let (passes, took) = passes_to_park(&mut idle, &wake);
        assert!(
            passes >= SPIN_PASSES && took >= spin,
            "{passes} passes, {took:?}"
        );
    }
    idle_passes(&mut idle, &wake, 10);
    std::thread::sleep(spin * 2 / 3);
    idle.after(true, &wake, || false, nap);
    let (passes, took) = passes_to_park(&mut idle, &wake);
    assert!(
        passes >= SPIN_PASSES && took >= spin,
        "{passes} passes, {took:?}"
    );
    // One yield at the start of each idle period: four here (two ended by a look that
    // found work, one by the busy pass, and the last).
    assert_eq!(idle.yields, 4);
}

#[test]
fn bursts_cross_whole_in_order_and_a_full_ring_refuses() {
    let (mut p, mut c) = burst_spsc::<Vec<u32>>(4, 2);
    assert_eq!(p.free(), 2);
    let (mut a, mut b, mut d) = (vec![0, 1, 2], vec![3], vec![4, 5]);
    assert!(p.push(&mut a) && p.push(&mut b));
    assert!(a.is_empty() && b.is_empty());
    // Full: `d` stays as it was.
    assert!(!p.push(&mut d));
    assert_eq!(d, [4, 5]);
    assert_eq!(c.len(), 2);
    // An empty burst needs no room.
    assert!(p.push(&mut Vec::new()));
    let mut got = Vec::new();
    assert!(c.pop(&mut got));
    assert_eq!(got, [0, 1, 2]);
    got.clear();
    assert!(p.push(&mut d));
    assert!(c.pop(&mut got));
    assert_eq!(got, [3]);
    got.clear();
    assert!(c.pop(&mut got));
    assert_eq!(got, [4, 5]);
    got.clear();
    assert!(!c.pop(&mut got));
    assert!(c.is_empty());
}

#[test]
fn emptied_bursts_come_back_and_are_reused() {
    let (mut p, mut c) = burst_spsc::<Vec<u64>>(64, 8);
    let mut items = Vec::with_capacity(8);
    let mut got = Vec::new();
    let mut seen = std::collections::HashSet::new();
    let mut next = 0u64;
    for _ in 0..1000 {
        items.extend(next..next + 8);
        seen.insert(items.as_ptr() as usize);
        assert!(p.push(&mut items));
        assert!(c.pop(&mut got));
        assert_eq!(got, (next..next + 8).collect::<Vec<_>>());
        next += 8;
        got.clear();
    }
    // A handful of allocations went round, not one per burst.
    assert!(
        seen.len() <= 4,
        "{} allocations for 1000 bursts",
        seen.len()
    );
}
