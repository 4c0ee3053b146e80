//! Loss recovery bookkeeping of one connection's sending side: the SACK scoreboard
//! (RFC 2018, RFC 6675) and the choice of what a recovery retransmits next.
//!
//! The protocol stage owns a [`Scoreboard`] per flow and decides *when* to recover (three
//! duplicate ACKs, more than two segments SACKed above `snd_una`, or any SACK that answers
//! a tail-loss probe). This module answers the questions a recovery asks: which bytes the
//! peer holds, which range to retransmit next, and how much is still in the network (the
//! RFC 6675 "pipe"). Every block comes from the network and is checked against what was
//! actually sent before it is believed.

use crate::wire::seq;

/// Blocks the scoreboard keeps. When the peer reports more disjoint ranges, the highest is
/// forgotten (its bytes are retransmitted again at worst, never lost).
pub const SCOREBOARD_BLOCKS: usize = 16;

/// The ranges above `snd_una` the peer has SACKed: sorted, disjoint and not touching.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Scoreboard {
    blocks: [(u32, u32); SCOREBOARD_BLOCKS],
    len: u8,
}

impl Scoreboard {
    /// The blocks, lowest first.
    pub fn blocks(&self) -> &[(u32, u32)] {
        &self.blocks[..self.len as usize]
    }

    /// Whether nothing is SACKed.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Forget everything (the peer may have reneged).
    pub fn clear(&mut self) {
        self.len = 0;
    }

    /// Record the block `[left, right)`. A block that is empty, reaches below `una` or past
    /// `max` (what was sent) is not believed: returns `false`. Returns `true` when the block
    /// was valid, whether or not it was news. The blocks kept are first cut at `una` (the
    /// ACK carrying the block may have moved it into or past them).
    pub fn add(&mut self, left: u32, right: u32, una: u32, max: u32) -> bool {
        // Offsets from `una`, one chain of comparisons: three pairwise sequence comparisons
        // each hold alone for a block that starts past `max` and ends 2^31 further on.
        let (l, r, m) = (
            left.wrapping_sub(una),
            right.wrapping_sub(una),
            max.wrapping_sub(una),
        );
        if l >= r || r > m {
            return false;
        }
        // Blocks reaching below `una` would sort last (the order counts from `una`) and
        // fold into the highest one, losing what they held above `una`.
        self.advance(una);
        let mut all = [(0u32, 0u32); SCOREBOARD_BLOCKS + 1];
        let n = self.len as usize;
        all[..n].copy_from_slice(&self.blocks[..n]);
        all[n] = (left, right);
        let all = &mut all[..n + 1];
        all.sort_unstable_by_key(|b| b.0.wrapping_sub(una));
        let mut out = 0usize;
        for &b in all.iter() {
            if out > 0 && seq::le(b.0, self.blocks[out - 1].1) {
                let last = &mut self.blocks[out - 1];
                if seq::gt(b.1, last.1) {
                    last.1 = b.1;
                }
            } else if out < SCOREBOARD_BLOCKS {
                self.blocks[out] = b;
                out += 1;
            }
        }
        self.len = out as u8;
        true
    }

    /// `snd_una` moved to `una`: drop what it covers.
    pub fn advance(&mut self, una: u32) {
        let n = self.len as usize;
        let mut out = 0usize;
        for i in 0..n {
            let (l, r) = self.blocks[i];
            if seq::le(r, una) {
                continue;
            }
            self.blocks[out] = (if seq::lt(l, una) { una } else { l }, r);
            out += 1;
        }
        self.len = out as u8;
    }

    /// Bytes SACKed.
    pub fn sacked_bytes(&self) -> u32 {
        self.blocks().iter().map(|(l, r)| r.wrapping_sub(*l)).sum()
    }

    /// Right edge of the highest block.
    pub fn high(&self) -> Option<u32> {
        self.blocks().last().map(|b| b.1)
    }

    /// When `s` lies inside a block, that block's right edge.
    pub fn skip(&self, s: u32) -> Option<u32> {
        self.blocks()
            .iter()
            .find(|(l, r)| seq::ge(s, *l) && seq::lt(s, *r))
            .map(|b| b.1)
    }

    /// Left edge of the first block that starts after `s`.
    pub fn next_start(&self, s: u32) -> Option<u32> {
        self.blocks().iter().map(|b| b.0).find(|l| seq::gt(*l, s))
    }

    /// The first range at or after `from`, below the highest SACKed byte, that the peer does
    /// not hold: `[start, end)`.
    pub fn next_hole(&self, from: u32) -> Option<(u32, u32)> {
        self.next_hole_below(from, self.high()?)
    }

    /// The first range at or after `from`, below `high`, that the peer does not hold.
    pub fn next_hole_below(&self, from: u32, high: u32) -> Option<(u32, u32)> {
        let start = self.skip(from).unwrap_or(from);
        if !seq::lt(start, high) {
            return None;
        }
        let end = match self.next_start(start) {
            Some(s) if seq::lt(s, high) => s,
            _ => high,
        };
        Some((start, end))
    }

    /// Bytes the peer does not hold in `[from, highest SACKed byte)`.
    pub fn hole_bytes(&self, from: u32) -> u32 {
        match self.high() {
            Some(h) => self.hole_bytes_below(from, h),
            None => 0,
        }
    }

    /// Bytes the peer does not hold in `[from, high)`.
    pub fn hole_bytes_below(&self, from: u32, high: u32) -> u32 {
        let mut total = 0u32;
        let mut at = from;
        while let Some((s, e)) = self.next_hole_below(at, high) {
            total = total.wrapping_add(e.wrapping_sub(s));
            at = e;
        }
        total
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An ACK that moves `una` into a kept block, carrying a new block above: the kept
    /// block is cut at `una`, not folded into another or lost.
    #[test]
    fn a_block_the_ack_reaches_into_is_cut_not_lost() {
        let mut sb = Scoreboard::default();
        assert!(sb.add(100, 200, 50, 1000));
        assert!(sb.add(300, 400, 50, 1000));
        assert!(sb.add(500, 600, 150, 1000));
        assert_eq!(sb.blocks(), &[(150, 200), (300, 400), (500, 600)]);
        assert_eq!(sb.sacked_bytes(), 250);
    }

    #[test]
    fn blocks_merge_sort_and_advance() {
        let mut sb = Scoreboard::default();
        assert!(sb.add(300, 400, 100, 1000));
        assert!(sb.add(150, 200, 100, 1000));
        assert!(sb.add(200, 250, 100, 1000));
        assert_eq!(sb.blocks(), &[(150, 250), (300, 400)]);
        assert_eq!(sb.sacked_bytes(), 200);
        assert_eq!(sb.next_hole(100), Some((100, 150)));
        assert_eq!(sb.next_hole(150), Some((250, 300)));
        assert_eq!(sb.next_hole(300), None);
        assert_eq!(sb.hole_bytes(100), 100);
        sb.advance(320);
        assert_eq!(sb.blocks(), &[(320, 400)]);
        sb.advance(400);
        assert!(sb.is_empty());
    }

    #[test]
    fn hostile_blocks_are_not_believed() {
        let mut sb = Scoreboard::default();
        assert!(!sb.add(50, 150, 100, 1000), "below snd_una");
        assert!(!sb.add(900, 1100, 100, 1000), "past what was sent");
        assert!(!sb.add(500, 500, 100, 1000), "empty");
        assert!(!sb.add(600, 500, 100, 1000), "reversed");
        assert!(!sb.add(0x8000_0000, 0x8000_0100, 100, 1000), "far away");
        // Past what was sent and 2^31 long: each bound alone looks inside the window.
        assert!(
            !sb.add(1001, 1001 + 0x8000_0000, 100, 1000),
            "past max, 2^31 long"
        );
        assert!(
            !sb.add(1001, 1001 + 0x7fff_ffff, 1000, 1000),
            "nothing in flight"
        );
        assert!(!sb.add(2000, 3000, 100, 1000), "wholly past max");
        assert!(sb.is_empty());
    }

    #[test]
    fn wraps_around_zero() {
        let una = u32::MAX - 100;
        let mut sb = Scoreboard::default();
        assert!(sb.add(10, 50, una, 1000));
        assert!(sb.add(u32::MAX - 20, 5, una, 1000));
        assert_eq!(sb.blocks(), &[(u32::MAX - 20, 5), (10, 50)]);
        assert_eq!(sb.next_hole(una), Some((una, u32::MAX - 20)));
        assert_eq!(sb.hole_bytes(una), 80 + 5);
    }

    #[test]
    fn overflow_forgets_the_highest() {
        let mut sb = Scoreboard::default();
        for i in 0..SCOREBOARD_BLOCKS as u32 + 4 {
            assert!(sb.add(1000 + 100 * i, 1050 + 100 * i, 0, 100_000));
        }
        assert_eq!(sb.blocks().len(), SCOREBOARD_BLOCKS);
        assert_eq!(sb.blocks()[0], (1000, 1050));
        assert_eq!(sb.high(), Some(1050 + 100 * (SCOREBOARD_BLOCKS as u32 - 1)));
    }
}
