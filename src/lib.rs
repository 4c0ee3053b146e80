//! # flextoe
//!
//! Build TCP offload engines out of composable data-path stages, after FlexTOE ("FlexTOE:
//! Flexible TCP Offload with Fine-Grained Parallelism", NSDI 2022).
//!
//! The TCP data path of established connections is cut into small stages that pass bursts of
//! 8-byte frame handles and compact descriptors; handshakes, teardown, timeouts and ARP live
//! on a control plane; applications use sockets over per-connection byte rings.
//!
//! ## Layers
//!
//! | layer | module | what it does |
//! |---|---|---|
//! | application | [`host`] | [`Stream`] (`Read`/`Write`, blocking or not), [`Listener`], readiness [`Context`]s |
//! | control plane | [`control`] | handshakes, ISNs (RFC 6528), FIN/TIME-WAIT, RST + challenge ACKs (RFC 5961), RTO (RFC 6298), zero-window probes, ARP, ICMP (echo, path MTU, unreachables) |
//! | stages | [`stages`] | [`preprocess`](stages::preprocess) -> [`protocol`](stages::protocol) -> [`place`](stages::place) / [`postprocess`](stages::postprocess) -> [`notify`](stages::notify); [`scheduler`](stages::scheduler) for TX |
//! | composition | [`pipeline`] | [`Pipeline::builder`](pipeline::Pipeline::builder): built-in stages, user stages at [hook points](pipeline::hooks), policies; mapped onto [`Engine`] (`poll(now)`, the inline runtime; [`Runtime`] runs it on a thread) or [`Threaded`](pipeline::Threaded) (workers laid out by a [`Topology`](pipeline::Topology)) |
//! | policies | [`control::congestion`], [`stages::scheduler`], [`pipeline::Placement`] | congestion control, flow scheduling, which replica owns a flow; replaceable, statically dispatched |
//! | backends | [`backends`] | the [`Port`](backends::Port) trait; [`mem`](backends::mem), an in-process link with impairments; with features, `af_xdp` (one socket per queue), `af_packet`, `tap` and `dpdk` (any DPDK driver, the arena as the mempool's buffers) for real interfaces |
//! | building blocks | [`wire`], [`buf`], [`flow`], [`sim`], [`time`], [`stats`] | parsing/emitting via `smoltcp::wire`, frame arena and byte rings, flow table and per-flow state, virtual clock and seeded impairments |
//!
//! The protocol stage is the only writer of TCP state: a pure function of (work item,
//! segment summary, state) returning [`Actions`](stages::Actions) flags that the downstream
//! stages carry out. Stages never read a clock: `now` is passed in, so the same stage objects
//! run in a test with a [`VirtualClock`](sim::VirtualClock), in the inline runtime, or on a
//! thread.
//!
//! ## A worked example
//!
//! Two engines joined by an in-memory link, one thread, nonblocking sockets, virtual time:
//!
//! ```
//! use std::io::{Read, Write};
//! use std::net::{Ipv4Addr, SocketAddrV4};
//! use std::time::Duration;
//! use flextoe::backends::mem::MemLink;
//! use flextoe::pipeline::{Engine, EngineConfig};
//! use flextoe::sim::{Impairments, VirtualClock};
//! use flextoe::time::Clock;
//! use flextoe::wire::MacAddr;
//!
//! let (mac_a, ip_a) = (MacAddr([2, 0, 0, 0, 0, 1]), Ipv4Addr::new(10, 0, 0, 1));
//! let (mac_b, ip_b) = (MacAddr([2, 0, 0, 0, 0, 2]), Ipv4Addr::new(10, 0, 0, 2));
//! let (port_a, port_b) = MemLink::pair(Impairments::none());
//! let mut a = Engine::new(EngineConfig::new(mac_a, ip_a), port_a).unwrap();
//! let mut b = Engine::new(EngineConfig::new(mac_b, ip_b), port_b).unwrap();
//!
//! let listener = b.host().listen(7, 16).unwrap();
//! let mut client = a.host().connect(SocketAddrV4::new(ip_b, 7)).unwrap();
//! client.set_nonblocking(true);
//! client.write_all(b"hello, offload").unwrap();
//!
//! let clock = VirtualClock::new();
//! let mut server = None;
//! let mut got = Vec::new();
//! for _ in 0..1000 {
//!     a.poll(clock.now());
//!     b.poll(clock.now());
//!     if server.is_none() {
//!         server = listener.try_accept().unwrap();
//!     }
//!     if let Some(s) = server.as_mut() {
//!         s.set_nonblocking(true);
//!         let mut buf = [0u8; 64];
//!         if let Ok(n) = s.read(&mut buf) {
//!             got.extend_from_slice(&buf[..n]);
//!         }
//!     }
//!     if got.len() == 14 {
//!         break;
//!     }
//!     clock.advance(Duration::from_micros(10));
//! }
//! assert_eq!(got, b"hello, offload");
//! ```
//!
//! ## Choosing a runtime
//!
//! [`Engine::poll`](pipeline::Engine::poll) runs every stage on the caller's thread. The
//! threaded runtime spreads them over worker threads;
//! [`Topology::auto`](pipeline::Topology::auto) sizes it to the cores the application leaves
//! free (at most [`AUTO_MAX_WORKERS`](pipeline::topology::AUTO_MAX_WORKERS) workers); with
//! one core left it runs the whole engine as one task on one worker
//! ([`Topology::inline_worker`](pipeline::Topology::inline_worker)), and with none it fuses
//! every task onto the application's thread, which then calls
//! [`Threaded::poll`](pipeline::Threaded::poll) (a no-op when workers run). Here a fused
//! threaded server and an inline client share a
//! zero-copy [`ArenaLink`](backends::arena_link::ArenaLink):
//!
//! ```
//! use std::io::{Read, Write};
//! use std::net::{Ipv4Addr, SocketAddrV4};
//! use flextoe::backends::arena_link::ArenaLink;
//! use flextoe::pipeline::{Engine, EngineConfig, Pipeline, Topology};
//! use flextoe::sim::VirtualClock;
//! use flextoe::time::Clock;
//! use flextoe::wire::MacAddr;
//!
//! let (mac_a, ip_a) = (MacAddr([2, 0, 0, 0, 0, 1]), Ipv4Addr::new(10, 0, 0, 1));
//! let (mac_b, ip_b) = (MacAddr([2, 0, 0, 0, 0, 2]), Ipv4Addr::new(10, 0, 0, 2));
//! let (port_a, port_b) = ArenaLink::pair(4096).unwrap();
//! let clock = VirtualClock::new();
//! // `Topology::auto(app_threads)` picks this layout on a machine with no core to spare.
//! let server = Pipeline::builder(EngineConfig::new(mac_a, ip_a), port_a)
//!     .threaded(Topology::fused(), clock.clone())
//!     .unwrap();
//! assert!(server.is_caller_driven());
//! let mut client = Engine::new(EngineConfig::new(mac_b, ip_b), port_b).unwrap();
//!
//! let listener = server.host().listen(7, 4).unwrap();
//! let mut c = client.host().connect(SocketAddrV4::new(ip_a, 7)).unwrap();
//! c.set_nonblocking(true);
//! c.write_all(b"ping").unwrap();
//! let (mut accepted, mut got) = (None, Vec::new());
//! for _ in 0..1000 {
//!     client.poll(clock.now());
//!     server.poll();
//!     if accepted.is_none() {
//!         accepted = listener.try_accept().unwrap();
//!     }
//!     if let Some(s) = accepted.as_mut() {
//!         s.set_nonblocking(true);
//!         // Read in place, without a buffer of our own.
//!         let _ = s.read_with(|b| {
//!             got.extend_from_slice(b);
//!             (b.len(), ())
//!         });
//!     }
//!     if got.len() == 4 {
//!         break;
//!     }
//! }
//! assert_eq!(got, b"ping");
//! ```
//!
//! ## Assemble your own engine
//!
//! The same two engines, but the server has a user stage of its own at the `rx_frame` hook
//! point (a firewall that drops, and counts, frames to port 23) and a fixed congestion
//! window instead of NewReno. [`PipelineBuilder::threaded`](pipeline::PipelineBuilder::threaded)
//! would run the same description on worker threads.
//!
//! ```
//! use std::io::{Read, Write};
//! use std::net::{Ipv4Addr, SocketAddrV4};
//! use flextoe::backends::mem::MemLink;
//! use flextoe::buf::Frame;
//! use flextoe::control::congestion::FixedWindow;
//! use flextoe::pipeline::hooks::{Hook, HookCx, RxFrame, Verdict, Verdicts};
//! use flextoe::pipeline::{Engine, EngineConfig, Pipeline};
//! use flextoe::sim::Impairments;
//! use flextoe::time::Instant;
//! use flextoe::wire::{self, MacAddr, Parsed};
//!
//! #[derive(Clone)]
//! struct Firewall {
//!     deny: u16,
//! }
//!
//! impl Hook<RxFrame> for Firewall {
//!     fn name(&self) -> &'static str {
//!         "firewall"
//!     }
//!     fn drop_reasons(&self) -> &'static [&'static str] {
//!         &["denied"]
//!     }
//!     fn process(&mut self, cx: &HookCx<'_>, frames: &mut [Frame], verdicts: &mut Verdicts) {
//!         for (i, f) in frames.iter().enumerate() {
//!             if let Ok(Parsed::Tcp(seg)) = wire::parse_frame(cx.arena.data(f)) {
//!                 if seg.tuple.local_port == self.deny {
//!                     verdicts.set(i, Verdict::Drop(0));
//!                 }
//!             }
//!         }
//!     }
//! }
//!
//! let (mac_a, ip_a) = (MacAddr([2, 0, 0, 0, 0, 1]), Ipv4Addr::new(10, 0, 0, 1));
//! let (mac_b, ip_b) = (MacAddr([2, 0, 0, 0, 0, 2]), Ipv4Addr::new(10, 0, 0, 2));
//! let (port_a, port_b) = MemLink::pair(Impairments::none());
//! let mut client = Engine::new(EngineConfig::new(mac_a, ip_a), port_a).unwrap();
//! let mut server = Pipeline::builder(EngineConfig::new(mac_b, ip_b), port_b)
//!     .on_rx_frame(Firewall { deny: 23 })
//!     .congestion(FixedWindow(32 * 1024))
//!     .build()
//!     .unwrap();
//!
//! let echo = server.host().listen(7, 4).unwrap();
//! let _telnet = server.host().listen(23, 4).unwrap();
//! let mut ok = client.host().connect(SocketAddrV4::new(ip_b, 7)).unwrap();
//! let _denied = client.host().connect(SocketAddrV4::new(ip_b, 23)).unwrap();
//! ok.set_nonblocking(true);
//! ok.write_all(b"allowed").unwrap();
//!
//! let mut got = Vec::new();
//! let mut conn = None;
//! for t in 0..2000u64 {
//!     let now = Instant::from_micros(t * 10);
//!     client.poll(now);
//!     server.poll(now);
//!     if conn.is_none() {
//!         conn = echo.try_accept().unwrap();
//!     }
//!     if let Some(c) = conn.as_mut() {
//!         c.set_nonblocking(true);
//!         let mut buf = [0u8; 64];
//!         if let Ok(n) = c.read(&mut buf) {
//!             got.extend_from_slice(&buf[..n]);
//!         }
//!     }
//! }
//! assert_eq!(got, b"allowed");
//! let stats = server.stats();
//! let fw = stats.hook("firewall").unwrap();
//! assert!(fw.drops("denied") >= 1, "the SYN to port 23 was dropped");
//! println!("{stats}"); // every stage's counters, the firewall's included
//! ```
#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod backends;
pub mod buf;
pub mod control;
pub mod flow;
pub mod host;
mod limit;
pub mod pipeline;
pub mod reorder;
pub mod ring;
pub mod sim;
pub mod stages;
pub mod stats;
pub mod time;
pub mod wire;

pub use host::{Context, Host, Listener, Stream};
pub use pipeline::{Engine, EngineConfig, Pipeline, Runtime};
