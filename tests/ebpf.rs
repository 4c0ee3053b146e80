//! XDP programs from `examples/xdp/` (built with `clang -O2 -target bpf`) in the userspace
//! VM (feature `ebpf`):
//! - each program does what its source says (port filter with maps written by the
//!   application, VLAN strip with `bpf_xdp_adjust_head`, per-type counters and `XDP_TX`);
//! - differential test against the kernel (root): the same objects loaded with
//!   `BPF_PROG_LOAD` and run with `BPF_PROG_TEST_RUN` give the same action and the same
//!   output bytes on 10,000 generated and mutated frames each, and the same map contents;
//! - the JIT gives what the interpreter gives;
//! - a program that reads out of bounds is refused by the kernel and stopped by the
//!   interpreter (its frame aborted), and mangled object files are refused, never a crash;
//! - as a stage in an engine: the port filter keeps a connection from opening while the
//!   application has its port in the map, and lets it open once removed.

#![cfg(feature = "ebpf")]

mod common;

use std::net::SocketAddrV4;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use common::*;
use flextoe::backends::ebpf::kernel::KernelProgram;
use flextoe::backends::ebpf::{action, Exec, LoadError, XdpObject, XdpProgram};
use flextoe::backends::mem::MemLink;
use flextoe::host::ConnStatus;
use flextoe::pipeline::{Engine, Pipeline};
use flextoe::sim::{Impairments, Rng};
use flextoe::stages::ext::xdp::XdpStage;
use flextoe::time::Instant;
use proptest::prelude::*;
use proptest::test_runner::{RngAlgorithm, TestCaseError, TestRng, TestRunner};

/// Build `name.c` from `dir` with clang; `None` (skipping) where clang is missing, except
/// in CI.
fn build(dir: &str, name: &str) -> Option<Vec<u8>> {
    let src = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join(dir)
        .join(format!("{name}.c"));
    let out = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("{name}.o"));
    let st = Command::new("clang")
        .args(["-O2", "-g", "-target", "bpf", "-c"])
        .arg(&src)
        .arg("-o")
        .arg(&out)
        .status();
    match st {
        Ok(s) if s.success() => Some(std::fs::read(&out).unwrap()),
        other => {
            let why = format!("clang could not build {name}.c: {other:?}");
            if std::env::var("CI").is_ok_and(|v| v == "true") {
                panic!("{why}");
            }
            eprintln!("skipping: {why}");
            None
        }
    }
}

fn shipped(name: &str) -> Option<XdpObject> {
    Some(XdpObject::parse(&build("examples/xdp", name)?).expect("the object loads"))
}

/// Run `prog` on `frame` with 64 bytes of headroom: the action and the frame it left.
fn run(prog: &XdpProgram, frame: &[u8]) -> Result<(u32, Vec<u8>), String> {
    let mut vm = prog.vm().unwrap();
    let mut buf = vec![0u8; 2048];
    buf[64..64 + frame.len()].copy_from_slice(frame);
    vm.burst(0, |one| {
        let o = one(&mut buf, 64..64 + frame.len(), 0)?;
        Ok((o.action, buf[o.data.clone()].to_vec()))
    })
}

fn eth(ethertype: u16, dst0: u8) -> Vec<u8> {
    let mut f = vec![dst0, 2, 3, 4, 5, 6, 0xa, 0xb, 0xc, 0xd, 0xe, 0xf];
    f.extend_from_slice(&ethertype.to_be_bytes());
    f
}

fn ipv4(proto: u8, dport: u16, payload: usize) -> Vec<u8> {
    let mut f = eth(0x0800, 2);
    let l4 = if proto == 6 { 20 } else { 8 };
    let total = (20 + l4 + payload) as u16;
    f.extend_from_slice(&[
        0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, proto, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2,
    ]);
    f[16..18].copy_from_slice(&total.to_be_bytes());
    let mut t = vec![0u8; l4];
    t[0..2].copy_from_slice(&4000u16.to_be_bytes());
    t[2..4].copy_from_slice(&dport.to_be_bytes());
    if proto == 6 {
        t[12] = 0x50;
        t[13] = 0x02;
    }
    f.extend_from_slice(&t);
    f.extend(std::iter::repeat_n(0x5a, payload));
    f
}

#[test]
fn port_filter_drops_what_the_map_lists() {
    let Some(obj) = shipped("port_filter") else {
        return;
    };
    assert_eq!(obj.spec().maps.len(), 2);
    let prog = obj.program("port_filter", Exec::Interpreter).unwrap();
    let tcp23 = ipv4(6, 23, 10);
    assert_eq!(
        run(&prog, &tcp23).unwrap().0,
        action::PASS,
        "nothing blocked yet"
    );
    prog.maps()
        .update("blocked", &23u32.to_le_bytes(), &1u32.to_le_bytes())
        .unwrap();
    assert_eq!(run(&prog, &tcp23).unwrap().0, action::DROP);
    assert_eq!(
        run(&prog, &ipv4(17, 23, 4)).unwrap().0,
        action::DROP,
        "UDP too"
    );
    assert_eq!(run(&prog, &ipv4(6, 80, 10)).unwrap().0, action::PASS);
    assert_eq!(run(&prog, &eth(0x0806, 0xff)).unwrap().0, action::PASS);
    assert_eq!(
        run(&prog, &tcp23[..20]).unwrap().0,
        action::ABORTED,
        "truncated IPv4"
    );
    assert_eq!(prog.maps().read_u64("drops", 0), Some(2));
    prog.maps().delete("blocked", &23u32.to_le_bytes()).unwrap();
    assert_eq!(run(&prog, &tcp23).unwrap().0, action::PASS);
}

#[test]
fn vlan_strip_moves_the_frame_start() {
    let Some(obj) = shipped("vlan_strip") else {
        return;
    };
    let prog = obj.program("vlan_strip", Exec::Interpreter).unwrap();
    let plain = ipv4(6, 80, 20);
    let mut tagged = plain[..12].to_vec();
    tagged.extend_from_slice(&[0x81, 0x00, 0x00, 42]);
    tagged.extend_from_slice(&plain[12..]);
    let (a, out) = run(&prog, &tagged).unwrap();
    assert_eq!((a, out), (action::PASS, plain.clone()));
    assert_eq!(run(&prog, &plain).unwrap(), (action::PASS, plain));
}

#[test]
fn counter_counts_and_reflects() {
    let Some(obj) = shipped("counter") else {
        return;
    };
    let prog = obj.program("counter", Exec::Interpreter).unwrap();
    let bcast = eth(0x0806, 0xff);
    let (a, out) = run(&prog, &bcast).unwrap();
    assert_eq!(a, action::TX);
    assert_eq!(&out[..6], &bcast[6..12], "MAC addresses swapped");
    run(&prog, &ipv4(6, 80, 0)).unwrap();
    run(&prog, &ipv4(17, 53, 0)).unwrap();
    let v = prog.maps().lookup("by_type", &0u32.to_le_bytes()).unwrap();
    assert_eq!(
        u64::from_le_bytes(v[..8].try_into().unwrap()),
        2,
        "two IPv4 frames"
    );
    assert_eq!(prog.maps().read_u64("by_type", 1), Some(1), "one ARP frame");
    assert_eq!(
        run(&prog, &bcast[..10]).unwrap().0,
        action::DROP,
        "short frame"
    );
}

/// Frames of every kind the programs look at, then mutated (bytes changed, cut short).
fn frames(seed: u64, n: usize) -> Vec<Vec<u8>> {
    let mut rng = Rng::new(seed);
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let mut f = match rng.below(6) {
            0 => ipv4(
                6,
                [23, 53, 80, 443][rng.below(4) as usize],
                rng.below(300) as usize,
            ),
            1 => ipv4(
                17,
                [23, 53, 80][rng.below(3) as usize],
                rng.below(100) as usize,
            ),
            2 => eth(0x0806, if rng.chance(0.5) { 0xff } else { 2 }),
            3 => {
                let p = ipv4(6, 23, rng.below(64) as usize);
                let mut t = p[..12].to_vec();
                t.extend_from_slice(&[0x81, 0x00, 0x00, rng.below(4095) as u8]);
                t.extend_from_slice(&p[12..]);
                t
            }
            4 => ipv4(rng.below(256) as u8, rng.below(65536) as u16, 8),
            _ => (0..rng.below(200)).map(|_| rng.next_u64() as u8).collect(),
        };
        while f.len() < 14 {
            f.push(0);
        }
        for _ in 0..rng.below(4) {
            let i = rng.below(f.len() as u64) as usize;
            f[i] = rng.next_u64() as u8;
        }
        if rng.chance(0.2) {
            let keep = 14 + rng.below((f.len() - 13) as u64) as usize;
            f.truncate(keep);
        }
        out.push(f);
    }
    out
}

/// Generated frames (TCP, UDP, ARP, VLAN-tagged, other protocols, random bytes), then
/// mutated: bytes overwritten, the end cut off.
fn frame_strategy() -> impl Strategy<Value = Vec<u8>> {
    let base = prop_oneof![
        (prop::sample::select(vec![23u16, 53, 80, 443]), 0..300usize)
            .prop_map(|(p, n)| ipv4(6, p, n)),
        (prop::sample::select(vec![23u16, 53, 80]), 0..100usize).prop_map(|(p, n)| ipv4(17, p, n)),
        any::<bool>().prop_map(|b| eth(0x0806, if b { 0xff } else { 2 })),
        (0..4095u16, 0..64usize).prop_map(|(vid, n)| {
            let p = ipv4(6, 23, n);
            let mut t = p[..12].to_vec();
            t.extend_from_slice(&[0x81, 0x00]);
            t.extend_from_slice(&vid.to_be_bytes());
            t.extend_from_slice(&p[12..]);
            t
        }),
        (any::<u8>(), any::<u16>()).prop_map(|(proto, port)| ipv4(proto, port, 8)),
        prop::collection::vec(any::<u8>(), 14..200),
    ];
    (
        base,
        prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..4),
        prop::option::weighted(0.2, any::<prop::sample::Index>()),
    )
        .prop_map(|(mut f, flips, cut)| {
            while f.len() < 14 {
                f.push(0);
            }
            for (i, b) in flips {
                let k = i.index(f.len());
                f[k] = b;
            }
            if let Some(c) = cut {
                let keep = 14 + c.index(f.len() - 13);
                f.truncate(keep);
            }
            f
        })
}

fn differential(name: &str, setup: impl Fn(&dyn Fn(&str, &[u8], &[u8])), maps: &[(&str, u32)]) {
    let Some(obj) = shipped(name) else { return };
    if !common::lab::available(&[]) {
        return;
    }
    let kernel = match KernelProgram::load(obj.spec(), name) {
        Ok(k) => k,
        Err(e) => panic!("the kernel refused {name}: {e}"),
    };
    let prog = obj.program(name, Exec::Interpreter).unwrap();
    setup(&|m, k, v| {
        prog.maps().update(m, k, v).unwrap();
        kernel.update(m, k, v).unwrap();
    });
    let by_action = std::cell::RefCell::new([0u32; 5]);
    let mut runner = TestRunner::new_with_rng(
        ProptestConfig {
            cases: 10_000,
            failure_persistence: None,
            ..ProptestConfig::default()
        },
        TestRng::deterministic_rng(RngAlgorithm::ChaCha),
    );
    let result = runner.run(&frame_strategy(), |f| {
        let (ka, kout) = kernel.test_run(&f).unwrap();
        let (ua, uout) = run(&prog, &f).map_err(TestCaseError::fail)?;
        prop_assert_eq!(ua, ka, "action");
        prop_assert_eq!(uout, kout, "output bytes");
        by_action.borrow_mut()[(ka as usize).min(4)] += 1;
        Ok(())
    });
    if let Err(e) = result {
        panic!("{name}: the userspace VM and the kernel disagree: {e}");
    }
    for (m, keys) in maps {
        for k in 0..*keys {
            let key = k.to_le_bytes();
            assert_eq!(
                prog.maps().lookup(m, &key),
                kernel.lookup(m, &key),
                "{name}: map {m} key {k}"
            );
        }
    }
    let n: u32 = by_action.borrow().iter().sum();
    assert!(n >= 10_000);
    eprintln!(
        "{name}: {n} generated frames agree with the kernel; actions (aborted, drop, pass, tx, redirect) {:?}",
        by_action.borrow()
    );
}

#[test]
fn port_filter_agrees_with_the_kernel() {
    differential(
        "port_filter",
        |set| {
            for p in [23u32, 53] {
                set("blocked", &p.to_le_bytes(), &1u32.to_le_bytes());
            }
        },
        &[("drops", 1)],
    );
}

#[test]
fn vlan_strip_agrees_with_the_kernel() {
    differential("vlan_strip", |_| {}, &[]);
}

#[test]
fn counter_agrees_with_the_kernel() {
    differential("counter", |_| {}, &[("by_type", 3)]);
}

#[test]
fn out_of_bounds_reads_are_stopped_not_a_crash() {
    let Some(bytes) = build("tests/xdp", "oob") else {
        return;
    };
    let obj = XdpObject::parse(&bytes).unwrap();
    let prog = obj.program("oob", Exec::Interpreter).unwrap();
    let e = run(&prog, &ipv4(6, 80, 0)).unwrap_err();
    assert!(e.contains("out of bounds"), "{e}");
    if common::lab::available(&[]) {
        assert!(matches!(
            KernelProgram::load(obj.spec(), "oob"),
            Err(LoadError::Verifier(_))
        ));
    }
    // As a stage: the frame is aborted and the fault counted.
    let stage = XdpStage::new(prog).unwrap();
    let counters = stage.counters();
    let (pa, _pb) = MemLink::pair(Impairments::none());
    let mut e = Pipeline::builder(engine_config(MAC_A, IP_A), pa)
        .on_rx_frame(stage)
        .build()
        .unwrap();
    _pb.send_bytes(Instant::ZERO, &ipv4(6, 80, 0));
    e.poll(Instant::ZERO);
    assert_eq!((counters.runs(), counters.faults()), (1, 1));
    assert_eq!(e.stats().hooks[0].drops("aborted"), 1);
}

/// An access that starts past a map value's end (in the slack after the map's storage) is
/// stopped, not a write past the allocation: the interpreter checks where an access starts,
/// and the map's registered range used to take in its 8 bytes of slack.
#[test]
fn a_write_past_a_map_value_is_stopped_not_a_heap_overwrite() {
    let Some(bytes) = build("tests/xdp", "map_oob") else {
        return;
    };
    let obj = XdpObject::parse(&bytes).unwrap();
    let prog = obj.program("map_oob", Exec::Interpreter).unwrap();
    let e = run(&prog, &ipv4(6, 80, 0)).unwrap_err();
    assert!(e.contains("out of bounds"), "{e}");
}

/// Room a program adds at the tail holds zeroes, as in the kernel, not what an earlier
/// frame left in the buffer.
#[test]
fn a_grown_tail_is_zeroed_not_an_earlier_frames_bytes() {
    let Some(bytes) = build("tests/xdp", "grow_tail") else {
        return;
    };
    let obj = XdpObject::parse(&bytes).unwrap();
    let frame = ipv4(6, 80, 10);
    for exec in [Exec::Interpreter, Exec::Jit] {
        let Ok(prog) = obj.program("grow_tail", exec) else {
            continue;
        };
        let mut vm = prog.vm().unwrap();
        // The buffer as an earlier, longer frame left it.
        let mut buf = vec![0xa5u8; 2048];
        buf[64..64 + frame.len()].copy_from_slice(&frame);
        let (action, out) = vm
            .burst(0, |one| {
                let o = one(&mut buf, 64..64 + frame.len(), 0)?;
                Ok::<_, String>((o.action, buf[o.data.clone()].to_vec()))
            })
            .unwrap();
        assert_eq!(action, 2, "XDP_PASS ({exec:?})");
        assert_eq!(out.len(), frame.len() + 16, "{exec:?}");
        assert_eq!(&out[..frame.len()], &frame[..], "{exec:?}");
        assert_eq!(&out[frame.len()..], &[0u8; 16], "{exec:?}");
    }
}

#[test]
fn loops_are_refused_at_load_never_a_stalled_data_path() {
    let Some(bytes) = build("tests/xdp", "spin") else {
        return;
    };
    let obj = XdpObject::parse(&bytes).unwrap();
    for exec in [Exec::Interpreter, Exec::Jit] {
        match obj.program("spin", exec) {
            Err(LoadError::Verifier(why)) => assert!(why.contains("goes back"), "{why}"),
            Err(e) => panic!("refused for another reason: {e}"),
            Ok(_) => panic!("a program that loops for ever was loaded ({exec:?})"),
        }
    }
    // The same object is in the loader's fuzz corpus (`fuzz/corpus/ebpf_loader/spin.o`),
    // so the corpus replay checks the rule where clang is missing.
    let kept = std::fs::read(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/ebpf_loader/spin.o"),
    )
    .unwrap();
    let kept = XdpObject::parse(&kept).unwrap();
    assert!(matches!(
        kept.program("spin", Exec::Interpreter),
        Err(LoadError::Verifier(_))
    ));
}

#[test]
fn the_loaders_own_helper_numbers_are_refused() {
    let Some(bytes) = build("tests/xdp", "forged_helper") else {
        return;
    };
    let obj = XdpObject::parse(&bytes).unwrap();
    assert!(matches!(
        obj.program("forged", Exec::Interpreter),
        Err(LoadError::Unsupported(_))
    ));
}

#[test]
fn mangled_objects_are_refused_never_a_crash() {
    let Some(good) = build("examples/xdp", "port_filter") else {
        return;
    };
    assert!(XdpObject::parse(&[]).is_err());
    assert!(XdpObject::parse(b"\x7fELF").is_err());
    for n in (0..good.len()).step_by(97) {
        let _ = XdpObject::parse(&good[..n]);
    }
    let mut rng = Rng::new(9);
    let mut loaded = 0;
    for _ in 0..3000 {
        let mut b = good.clone();
        for _ in 0..1 + rng.below(8) {
            let i = rng.below(b.len() as u64) as usize;
            b[i] = rng.next_u64() as u8;
        }
        if let Ok(obj) = XdpObject::parse(&b) {
            for p in &obj.spec().programs {
                if let Ok(prog) = obj.program(&p.name, Exec::Interpreter) {
                    loaded += 1;
                    let _ = run(&prog, &ipv4(6, 23, 10));
                }
            }
        }
    }
    eprintln!("{loaded} of 3000 mangled objects still loaded (and ran without harm)");
}

/// The port filter as the engine's `rx_frame` stage: while port 7001 is in the map, SYNs to
/// it are dropped and the connection does not open; removed, it opens.
#[test]
fn the_port_filter_as_a_stage_guards_a_port() {
    let Some(obj) = shipped("port_filter") else {
        return;
    };
    let prog = obj.program("port_filter", Exec::Interpreter).unwrap();
    prog.maps()
        .update("blocked", &7001u32.to_le_bytes(), &1u32.to_le_bytes())
        .unwrap();
    let (pa, pb) = MemLink::pair(Impairments::none());
    let mut srv = Pipeline::builder(engine_config(MAC_A, IP_A), pa)
        .on_rx_frame(XdpStage::new(prog.clone()).unwrap())
        .build()
        .unwrap();
    let mut cli = Engine::new(engine_config(MAC_B, IP_B), pb).unwrap();
    let _l1 = srv.host().listen(7001, 4).unwrap();
    let _l2 = srv.host().listen(7002, 4).unwrap();
    let blocked = cli.host().connect(SocketAddrV4::new(IP_A, 7001)).unwrap();
    let open = cli.host().connect(SocketAddrV4::new(IP_A, 7002)).unwrap();
    let mut now = Instant::ZERO;
    let mut step = |until: Duration| {
        let end = now + until;
        while now < end {
            srv.poll(now);
            cli.poll(now);
            now += Duration::from_micros(200);
        }
    };
    step(Duration::from_millis(500));
    assert_eq!(open.status(), ConnStatus::Established);
    assert_eq!(blocked.status(), ConnStatus::Connecting);
    assert!(prog.maps().read_u64("drops", 0).unwrap() >= 1);
    prog.maps()
        .delete("blocked", &7001u32.to_le_bytes())
        .unwrap();
    step(Duration::from_secs(4));
    assert_eq!(
        blocked.status(),
        ConnStatus::Established,
        "opens once unblocked"
    );
}

#[test]
#[cfg(target_arch = "x86_64")]
fn jit_agrees_with_the_interpreter() {
    for name in ["port_filter", "vlan_strip", "counter"] {
        let Some(obj) = shipped(name) else { return };
        let i = obj.program(name, Exec::Interpreter).unwrap();
        let j = obj.program(name, Exec::Jit).unwrap();
        for p in [&i, &j] {
            if name == "port_filter" {
                p.maps()
                    .update("blocked", &23u32.to_le_bytes(), &1u32.to_le_bytes())
                    .unwrap();
            }
        }
        for f in frames(7, 2000) {
            assert_eq!(run(&i, &f), run(&j, &f), "{name}: {f:02x?}");
        }
        for m in i.maps().specs() {
            for k in i.maps().keys(&m.name) {
                assert_eq!(i.maps().lookup(&m.name, &k), j.maps().lookup(&m.name, &k));
            }
        }
    }
}
