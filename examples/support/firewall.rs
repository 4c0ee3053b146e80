//! A port firewall as a user stage at the `rx_frame` hook point: TCP frames to a denied
//! local port are dropped and counted as "denied-port".

use flextoe::buf::Frame;
use flextoe::pipeline::hooks::{Hook, HookCx, RxFrame, Verdict, Verdicts};
use flextoe::wire::{self, Parsed};

/// Drops TCP frames to the denied local ports.
#[derive(Clone, Debug, Default)]
pub struct Firewall {
    /// Local ports nobody may reach.
    pub deny: Vec<u16>,
}

impl Hook<RxFrame> for Firewall {
    fn name(&self) -> &'static str {
        "firewall"
    }

    fn drop_reasons(&self) -> &'static [&'static str] {
        &["denied-port"]
    }

    fn process(&mut self, cx: &HookCx<'_>, frames: &mut [Frame], verdicts: &mut Verdicts) {
        for (i, f) in frames.iter().enumerate() {
            if let Ok(Parsed::Tcp(seg)) = wire::parse_frame(cx.arena.data(f)) {
                if self.deny.contains(&seg.tuple.local_port) {
                    verdicts.set(i, Verdict::Drop(0));
                }
            }
        }
    }
}
