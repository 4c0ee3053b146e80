//! Extensions: FlexTOE's data-center features as stages an integrator adds at the hook
//! points ([`pipeline::hooks`](crate::pipeline::hooks)), each with its own counters and
//! drop reasons:
//!
//! | module | point | what |
//! |---|---|---|
//! | [`trace`] | `results` | per-flow TCP events into a lock-free ring; JSON lines or pcapng |
//! | [`capture`] (+ [`filter`]) | `rx_frame`, `tx_frame` | frames a filter selects into pcap or pcapng |
//! | [`vlan`] | `rx_frame`, `tx_frame` | 802.1Q strip on receive, push on transmit, O(1) |
//! | [`classify`] | `rx_frame` + control plane | rules (ports, DSCP, VLAN) give each connection a class for the scheduler |
//! | [`firewall`] | `rx_frame` | ordered allow/deny rules, per-rule counters, connection tracking, live updates |
//! | [`splice`] | `rx_frame` + control plane | joins two connections inside the engine: segments of one rewritten and sent on the other |
//! | `xdp` (feature `ebpf`) | `rx_frame`, `tx_frame` | an unmodified clang-built XDP program, in rbpf |
//!
//! They are written against the same public API as any integrator's stage: nothing here
//! reaches into the engine.
//!
//! ```
//! use flextoe::backends::mem::MemLink;
//! use flextoe::pipeline::{EngineConfig, Pipeline};
//! use flextoe::sim::Impairments;
//! use flextoe::stages::ext::classify::{Classification, ClassRule};
//! use flextoe::stages::ext::firewall::{Action, Firewall, Rule};
//! use flextoe::stages::ext::trace::Tracer;
//! use flextoe::stages::ext::vlan::{VlanPush, VlanStrip};
//! use flextoe::stages::pacer::{ClassPolicy, Pacer};
//! use flextoe::wire::MacAddr;
//!
//! let (port, _peer) = MemLink::pair(Impairments::none());
//! let mut cfg = EngineConfig::new(MacAddr([2, 0, 0, 0, 0, 1]), "10.0.0.1".parse().unwrap());
//! let classes = Classification::new(vec![ClassRule::to_class(0).local_port(11211)], 1);
//! cfg.control.classifier = Some(classes.classifier());
//! let firewall = Firewall::new(Action::Allow);
//! firewall.set_rules(vec![Rule::deny().dst_port(23)]);
//! let (tracer, events) = Tracer::new(4096);
//! let engine = Pipeline::builder(cfg, port)
//!     .on_rx_frame(classes.stage()) // sees the VLAN tag and DSCP of each SYN
//!     .on_rx_frame(VlanStrip::only(42))
//!     .on_rx_frame(firewall.stage())
//!     .on_results(tracer)
//!     .on_tx_frame(VlanPush::new(42))
//!     .scheduler(Pacer::new(4).with_classes(ClassPolicy::Weighted(vec![3, 1])))
//!     .build()
//!     .unwrap();
//! assert_eq!(engine.stats().hooks.len(), 5);
//! # drop(events);
//! ```

pub mod capture;
pub mod classify;
pub mod filter;
pub mod firewall;
pub mod headers;
pub mod rules;
pub mod splice;
pub mod trace;
pub mod vlan;
#[cfg(feature = "ebpf")]
pub mod xdp;
