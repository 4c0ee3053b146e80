//! The CPUs this process may run on, whatever the calling thread's own pinning.
//!
//! A thread's affinity mask is inherited by the threads it spawns, and the usual ways of
//! asking for the machine's cores (`sched_getaffinity`, `available_parallelism`,
//! `core_affinity::get_core_ids`) answer for the calling thread. An application that pins
//! its own thread to one core before it starts a runtime would then see one core, and
//! confine every worker to it. This module takes the union of the masks of all the
//! process's threads instead (`taskset` and cpusets restrict every one of them, so they
//! still hold), and bounds the count by the cgroup's CPU quota, as `available_parallelism`
//! does.

use std::sync::OnceLock;

/// The CPUs (kernel numbers, ascending) this process's threads may run on, read once and
/// then cached: the union of every thread's affinity mask. Core indices in a
/// [`Topology`](super::Topology) count into this list. Never empty: where nothing can be
/// read, the calling thread's own CPUs (or CPU 0).
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

/// How many cores the process may keep busy: [`usable_cores`], bounded by a cgroup CPU
/// quota (`cpu.max`, or v1's `cpu.cfs_quota_us`) where one is set. What
/// [`Topology::auto`](super::Topology::auto) sizes itself to.
pub fn core_budget() -> usize {
    static BUDGET: OnceLock<usize> = OnceLock::new();
    *BUDGET.get_or_init(|| {
        let n = usable_cores().len();
        cgroup_quota().map_or(n, |q| n.min(q.max(1)))
    })
}

/// The union of the affinity masks of the process's threads (`/proc/self/task/*/status`).
pub(crate) fn probe() -> Vec<usize> {
    let mut all: Vec<usize> = std::fs::read_dir("/proc/self/task")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| std::fs::read_to_string(e.path().join("status")).ok())
        .filter_map(|status| allowed_list(&status))
        .flatten()
        .collect();
    all.sort_unstable();
    all.dedup();
    if all.is_empty() {
        all = core_affinity::get_core_ids()
            .unwrap_or_default()
            .into_iter()
            .map(|c| c.id)
            .collect();
        all.sort_unstable();
        all.dedup();
    }
    if all.is_empty() {
        all.push(0);
    }
    all
}

/// The `Cpus_allowed_list` of a task's `status` file.
fn allowed_list(status: &str) -> Option<Vec<usize>> {
    let line = status
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))?;
    parse_cpu_list(line)
}

/// The CPU quota of the process's cgroup (or of its closest ancestor that sets one), in
/// whole CPUs rounded up; `None` without one.
fn cgroup_quota() -> Option<usize> {
    let cgroups = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    for line in cgroups.lines() {
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        let (root, v2) = if controllers.is_empty() {
            ("/sys/fs/cgroup".to_string(), true)
        } else if controllers.split(',').any(|c| c == "cpu") {
            ("/sys/fs/cgroup/cpu".to_string(), false)
        } else {
            continue;
        };
        let mut dir = std::path::PathBuf::from(format!("{root}{path}"));
        loop {
            let quota = if v2 {
                std::fs::read_to_string(dir.join("cpu.max"))
                    .ok()
                    .and_then(|t| quota_v2(&t))
            } else {
                let q = std::fs::read_to_string(dir.join("cpu.cfs_quota_us")).ok();
                let p = std::fs::read_to_string(dir.join("cpu.cfs_period_us")).ok();
                q.zip(p).and_then(|(q, p)| quota_v1(&q, &p))
            };
            if quota.is_some() {
                return quota;
            }
            if dir.as_os_str().len() <= root.len() || !dir.pop() {
                break;
            }
        }
    }
    None
}

/// `cpu.max` ("max 100000", "150000 100000") as whole CPUs, rounded up.
fn quota_v2(text: &str) -> Option<usize> {
    let mut f = text.split_whitespace();
    let (q, p) = (f.next()?, f.next()?);
    let (q, p): (u64, u64) = (q.parse().ok()?, p.parse().ok()?);
    (p > 0).then(|| q.div_ceil(p) as usize)
}

/// v1's `cpu.cfs_quota_us` (-1 for none) and `cpu.cfs_period_us`, as whole CPUs.
fn quota_v1(quota: &str, period: &str) -> Option<usize> {
    let q: i64 = quota.trim().parse().ok()?;
    let p: u64 = period.trim().parse().ok()?;
    (q > 0 && p > 0).then(|| (q as u64).div_ceil(p) as usize)
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
    fn quotas_and_masks_parse_as_the_kernel_writes_them() {
        assert_eq!(quota_v2("max 100000\n"), None);
        assert_eq!(quota_v2("150000 100000\n"), Some(2));
        assert_eq!(quota_v2("100000 100000"), Some(1));
        assert_eq!(quota_v1("-1\n", "100000\n"), None);
        assert_eq!(quota_v1("250000\n", "100000\n"), Some(3));
        let status = "Name:\tx\nCpus_allowed:\t3\nCpus_allowed_list:\t0-1\nMems_allowed:\t1\n";
        assert_eq!(allowed_list(status), Some(vec![0, 1]));
        assert!(core_budget() >= 1 && core_budget() <= usable_cores().len());
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
