//! An eBPF/XDP program as a stage at [`RxFrame`] or [`TxFrame`] (feature `ebpf`): each frame
//! runs through the program ([`XdpProgram`], loaded by
//! [`backends::ebpf`](crate::backends::ebpf)), and its action becomes the hook verdict:
//!
//! | XDP action | verdict |
//! |---|---|
//! | `XDP_PASS` | `Pass` (with the frame as the program left it: `adjust_head`/`_tail` move its start and end) |
//! | `XDP_DROP` | `Drop`, counted as `drop` |
//! | `XDP_ABORTED`, an unknown action, a program stopped by the interpreter | `Drop`, counted as `aborted` |
//! | `XDP_TX` | `Tx` |
//! | `XDP_REDIRECT` | `Redirect(n)`: the `n`th redirect ring, `n` the `bpf_redirect` ifindex or the `bpf_redirect_map` key |
//!
//! ```no_run
//! use flextoe::backends::ebpf::{Exec, XdpObject};
//! use flextoe::stages::ext::xdp::XdpStage;
//!
//! let obj = XdpObject::parse(&std::fs::read("port_filter.o").unwrap()).unwrap();
//! let prog = obj.program("port_filter", Exec::Interpreter).unwrap();
//! let stage = XdpStage::new(prog.clone()).unwrap(); // PipelineBuilder::on_rx_frame(stage)
//! prog.maps().update("blocked", &23u32.to_le_bytes(), &1u32.to_le_bytes()).unwrap();
//! # drop(stage);
//! ```

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::backends::ebpf::{action, LoadError, XdpProgram, XdpVm};
use crate::buf::Frame;
use crate::pipeline::hooks::{Hook, HookCx, RxFrame, TxFrame, Verdict, Verdicts};

/// Counters of an [`XdpStage`]'s copies.
#[derive(Debug, Default)]
pub struct XdpCounters {
    runs: AtomicU64,
    faults: AtomicU64,
}

impl XdpCounters {
    /// Frames the program ran on.
    pub fn runs(&self) -> u64 {
        self.runs.load(Ordering::Relaxed)
    }

    /// Runs the interpreter stopped (out-of-bounds access, bad jump, division by zero).
    pub fn faults(&self) -> u64 {
        self.faults.load(Ordering::Relaxed)
    }
}

/// A stage running an XDP program. Drop reasons: `aborted`, `drop`.
pub struct XdpStage {
    prog: XdpProgram,
    vm: XdpVm,
    counters: Arc<XdpCounters>,
    verdicts: Vec<(u32, usize, usize, Option<u32>)>,
}

impl XdpStage {
    /// A stage running `prog` (each copy of the stage gets its own VM; the maps are shared).
    pub fn new(prog: XdpProgram) -> Result<XdpStage, LoadError> {
        let vm = prog.vm()?;
        Ok(XdpStage {
            prog,
            vm,
            counters: Arc::default(),
            verdicts: Vec::new(),
        })
    }

    /// The stage's counters.
    pub fn counters(&self) -> Arc<XdpCounters> {
        self.counters.clone()
    }

    fn run(&mut self, cx: &HookCx<'_>, frames: &mut [Frame], verdicts: &mut Verdicts) {
        let now_ns = cx.now.micros() * 1000;
        let out = &mut self.verdicts;
        out.clear();
        let mut faults = 0;
        self.vm.burst(now_ns, |one| {
            for f in frames.iter_mut() {
                let start = f.headroom();
                let end = start + f.len();
                let buf = cx.arena.whole_buf_mut(f);
                match one(buf, start..end, 0) {
                    Ok(o) => out.push((o.action, o.data.start, o.data.end, o.redirect)),
                    Err(_) => {
                        faults += 1;
                        out.push((action::ABORTED, start, end, None));
                    }
                }
            }
        });
        for (i, (f, &(act, s, e, redirect))) in frames.iter_mut().zip(out.iter()).enumerate() {
            if s != f.headroom() || e != f.headroom() + f.len() {
                if f.set_headroom(s) {
                    f.set_len(e - s);
                } else {
                    verdicts.set(i, Verdict::Drop(0));
                    continue;
                }
            }
            match act {
                action::PASS => {}
                action::DROP => verdicts.set(i, Verdict::Drop(1)),
                action::TX => verdicts.set(i, Verdict::Tx),
                action::REDIRECT => match redirect.and_then(|r| u8::try_from(r).ok()) {
                    Some(r) => verdicts.set(i, Verdict::Redirect(r)),
                    None => verdicts.set(i, Verdict::Drop(0)),
                },
                _ => verdicts.set(i, Verdict::Drop(0)),
            }
        }
        self.counters
            .runs
            .fetch_add(frames.len() as u64, Ordering::Relaxed);
        if faults > 0 {
            self.counters.faults.fetch_add(faults, Ordering::Relaxed);
        }
    }
}

impl Clone for XdpStage {
    /// A copy for another runtime instance: its own VM over the same program and maps.
    fn clone(&self) -> Self {
        XdpStage {
            prog: self.prog.clone(),
            vm: self
                .prog
                .vm()
                .expect("the program was verified when loaded"),
            counters: self.counters.clone(),
            verdicts: Vec::new(),
        }
    }
}

impl Hook<RxFrame> for XdpStage {
    fn name(&self) -> &'static str {
        "xdp-rx"
    }
    fn drop_reasons(&self) -> &'static [&'static str] {
        &["aborted", "drop"]
    }
    fn process(&mut self, cx: &HookCx<'_>, frames: &mut [Frame], verdicts: &mut Verdicts) {
        self.run(cx, frames, verdicts);
    }
}

impl Hook<TxFrame> for XdpStage {
    fn name(&self) -> &'static str {
        "xdp-tx"
    }
    fn drop_reasons(&self) -> &'static [&'static str] {
        &["aborted", "drop"]
    }
    fn process(&mut self, cx: &HookCx<'_>, frames: &mut [Frame], verdicts: &mut Verdicts) {
        self.run(cx, frames, verdicts);
    }
}
