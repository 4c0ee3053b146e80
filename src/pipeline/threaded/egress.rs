//! The `tx_frame` user stages on a task of their own, between the egress reorder and the
//! port ([`TaskRef::TxHooks`](crate::pipeline::TaskRef::TxHooks)): the I/O task hands them
//! every frame it would send, in wire order, and sends what they pass.

use super::*;

pub(super) struct TxHookTask {
    pub(super) arena: Arc<FrameArena>,
    pub(super) input: Consumer<Frame>,
    pub(super) output: Outbox<Frame>,
    pub(super) hooks: Chain<TxFrame>,
    pub(super) rings: Vec<RedirectRing>,
    pub(super) batch: Vec<Frame>,
    pub(super) meta: Meta,
}

impl Task for TxHookTask {
    fn run(&mut self, now: Instant) -> bool {
        self.meta.polls += 1;
        if !self.output.flush() {
            self.meta.busy += 1;
            return true;
        }
        if self.input.pop_burst(&mut self.batch, BURST) == 0 {
            return false;
        }
        self.meta.busy += 1;
        let cx = HookCx {
            now,
            arena: &self.arena,
            instance: 0,
        };
        self.hooks
            .run_out(&cx, &mut self.batch, &mut Vec::<()>::new(), &self.rings);
        self.output.pending.append(&mut self.batch);
        self.output.flush();
        true
    }

    fn report(&mut self) {
        self.meta.publish(
            Vec::new(),
            vec![("input", self.input.len(), self.input.capacity())],
            Vec::new(),
            self.hooks.reports(),
        );
    }
}

/// The I/O task's side of the `tx_frame` stages' task: frames go out to it and come back.
pub(super) struct ToTxHooks {
    pub(super) out: Outbox<Frame>,
    pub(super) back: Consumer<Frame>,
}

impl ToTxHooks {
    /// Whether the task has taken what it was given (more may be handed over).
    pub(super) fn has_room(&self) -> bool {
        self.out.pending.len() < 4 * BURST
    }

    /// Hand `tx` to the task, and put what it passed into `tx` in its place; whether anything
    /// moved.
    pub(super) fn exchange(&mut self, tx: &mut Vec<Frame>) -> bool {
        let mut moved = !tx.is_empty();
        self.out.pending.append(tx);
        self.out.flush();
        while let Some(f) = self.back.pop() {
            tx.push(f);
            moved = true;
        }
        moved
    }
}
