//! The CPUs this process may run on, whatever the calling thread's own pinning.
//!
//! A thread's affinity mask is inherited by the threads it spawns, and the usual ways of
//! asking for the machine's cores (`sched_getaffinity`, `available_parallelism`,
//! `core_affinity::get_core_ids`) answer for the calling thread. An application that pins
//! its own thread to one core before it starts a runtime would then see one core, and
//! confine every worker to it. This module asks once, from a thread of its own that tries
//! each online CPU in turn: what the process may use (its cgroup's cpuset, its original
//! mask's bounds as the kernel enforces them), not what the caller happens to be pinned to.

use std::sync::OnceLock;

/// The CPUs (kernel numbers, ascending) this process may pin a thread to, probed once and
/// then cached. Core indices in a [`Topology`](super::Topology) count into this list.
/// Never empty: where nothing can be probed, the calling thread's own CPUs (or CPU 0).
///
/// ```
/// let cores = flextoe::pipeline::topology::usable_cores();
/// assert!(!cores.is_empty());
/// assert!(cores.windows(2).all(|w| w[0] < w[1]));
/// ```
pub fn usable_cores() -> &'static [usize] {
    static CORES: OnceLock<Vec<usize>> = OnceLock::new();
    CORES.get_or_init(probe)
}

/// Probe the usable CPUs from a fresh thread that pins itself to each online CPU in turn
/// (a thread spawned by a pinned caller may still move to any CPU the process is allowed).
pub(crate) fn probe() -> Vec<usize> {
    let mine = || {
        let mut v: Vec<usize> = core_affinity::get_core_ids()
            .unwrap_or_default()
            .into_iter()
            .map(|c| c.id)
            .collect();
        v.sort_unstable();
        v.dedup();
        if v.is_empty() {
            v.push(0);
        }
        v
    };
    let Some(online) = online_cpus() else {
        return mine();
    };
    let found = std::thread::Builder::new()
        .name("flextoe-cores".into())
        .spawn(move || {
            online
                .into_iter()
                .filter(|&id| core_affinity::set_for_current(core_affinity::CoreId { id }))
                .collect::<Vec<usize>>()
        })
        .ok()
        .and_then(|h| h.join().ok())
        .unwrap_or_default();
    if found.is_empty() {
        mine()
    } else {
        found
    }
}

/// The machine's online CPUs, from `/sys/devices/system/cpu/online` (`0-3,8,10-11`).
fn online_cpus() -> Option<Vec<usize>> {
    let text = std::fs::read_to_string("/sys/devices/system/cpu/online").ok()?;
    parse_cpu_list(&text)
}

/// Parse a kernel CPU list (`0-3,8,10-11`); `None` when malformed or absurdly large.
fn parse_cpu_list(text: &str) -> Option<Vec<usize>> {
    const MAX_CPUS: usize = 1 << 16;
    let mut out = Vec::new();
    for part in text.trim().split(',').filter(|p| !p.is_empty()) {
        let (a, b) = match part.split_once('-') {
            Some((a, b)) => (a.trim().parse().ok()?, b.trim().parse().ok()?),
            None => {
                let a: usize = part.trim().parse().ok()?;
                (a, a)
            }
        };
        if a > b || b >= MAX_CPUS {
            return None;
        }
        out.extend(a..=b);
    }
    out.sort_unstable();
    out.dedup();
    (!out.is_empty()).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_lists_parse_as_the_kernel_writes_them() {
        assert_eq!(
            parse_cpu_list("0-3,8,10-11\n"),
            Some(vec![0, 1, 2, 3, 8, 10, 11])
        );
        assert_eq!(parse_cpu_list("0\n"), Some(vec![0]));
        assert_eq!(parse_cpu_list(""), None);
        assert_eq!(parse_cpu_list("3-1"), None);
        assert_eq!(parse_cpu_list("x"), None);
        assert_eq!(parse_cpu_list("0-99999999"), None);
    }

    #[test]
    fn a_pinned_caller_still_sees_every_usable_core() {
        let all = probe();
        assert!(!all.is_empty());
        // From a thread pinned to one core: the same list, not that one core.
        let first = all[0];
        let seen = std::thread::spawn(move || {
            assert!(core_affinity::set_for_current(core_affinity::CoreId {
                id: first
            }));
            let mine = core_affinity::get_core_ids().unwrap_or_default();
            assert_eq!(mine.len(), 1, "the thread is pinned to one core");
            probe()
        })
        .join()
        .unwrap();
        assert_eq!(seen, all);
    }
}
