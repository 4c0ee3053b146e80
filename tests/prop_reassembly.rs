//! Property test: a byte stream cut into segments that arrive in any order, duplicated and
//! overlapping, then retransmitted in order, reaches the application exactly once and in
//! order.

mod common;

use common::script::*;
use flextoe::wire::flags::*;
use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn any_arrival_order_reassembles(
        data in proptest::collection::vec(any::<u8>(), 1..6000),
        cuts in proptest::collection::vec((any::<usize>(), 1usize..700), 1..40),
    ) {
        let mut t = Script::new(config());
        t.accept_established();
        let base = t.peer_seq;
        let a = t.engine_seq;
        // Arbitrary (start, len) pieces: overlaps, duplicates and gaps.
        for (start, len) in &cuts {
            let s = start % data.len();
            let e = (s + len).min(data.len());
            t.send(PSH | ACK, base.wrapping_add(s as u32), Some(a), &data[s..e]);
        }
        let mut got = t.app_read();
        // The sender then retransmits everything in order (as go-back-N does).
        for chunk_start in (0..data.len()).step_by(1000) {
            let e = (chunk_start + 1000).min(data.len());
            t.send(PSH | ACK, base.wrapping_add(chunk_start as u32), Some(a), &data[chunk_start..e]);
            got.extend(t.app_read());
        }
        got.extend(t.app_read());
        prop_assert_eq!(got, data);
    }
}
