//! Building the threaded runtime: the task graph a topology names, its rings and control
//! channels, and the workers that run it (or the inline mapping when the topology is one
//! fused task).

use super::*;

impl Threaded {
    pub(crate) fn assemble<P, K, C, S>(
        mut cfg: EngineConfig,
        port: P,
        topology: Topology,
        clock: K,
        mut pol: Policies<C, S>,
    ) -> Result<Self, EngineError>
    where
        P: Port + 'static,
        K: Clock + Clone + 'static,
        C: CongestionControl,
        S: FlowScheduler,
    {
        topology
            .validate()
            .map_err(|_| EngineError::Config("invalid topology"))?;
        if topology.maps_inline() {
            return Self::inline_mapping(cfg, port, &topology, clock, pol);
        }
        cfg.control.flow_groups = topology.flow_groups as u16;
        let Parts {
            arena,
            host,
            control,
        } = Parts::new(&cfg, port.mtu(), port.arena(), &mut pol.hooks)?;
        let (np, ng, nd, nq) = (
            topology.preprocess,
            topology.flow_groups,
            topology.place,
            topology.postprocess,
        );
        let rs = topology.ring_size;
        // A flow's delayed-ACK timer is kept by postprocess; with several replicas its bursts
        // alternate between them, so they acknowledge per burst instead.
        let post_policy = match cfg.ack_policy {
            crate::stages::protocol::AckPolicy::Delayed(_) if topology.postprocess > 1 => {
                crate::stages::protocol::AckPolicy::PerBurst
            }
            p => p,
        };
        // Each flow group's protocol stage keeps its own budget of challenge ACKs.
        let challenge_ack_limit = cfg.control.challenge_ack_limit;
        let csum_offload = port.capabilities().tx_checksum_offload;
        let port_queues = port.capabilities().queues.max(1) as usize;
        let port_fds = crate::pipeline::sleep::fds_of(&port);
        let mut reports = Vec::new();
        let worker_of = |t: TaskRef| {
            topology
                .workers
                .iter()
                .position(|w| w.tasks.contains(&t))
                .unwrap_or(0)
        };

        // One wakeup per worker: a producer on another worker wakes the consumer's.
        // The I/O task's worker sleeps on the engine's own wakeup, which the application's
        // doorbells and requests ring.
        let io_worker = worker_of(TaskRef::Io);
        let wakes: Vec<Arc<Wakeup>> = (0..topology.workers.len())
            .map(|i| {
                if i == io_worker {
                    host.engine_wake()
                } else {
                    Wakeup::new()
                }
            })
            .collect();
        let wire = |from: TaskRef, to: TaskRef| {
            let (a, b) = (worker_of(from), worker_of(to));
            (a != b).then(|| wakes[b].clone())
        };

        // Rings: io -> pre; pre -> group (every pair); pre -> io (punts); io -> group (work);
        // group -> place (every pair); place -> post (every pair); place -> io (events);
        // post -> io (every pair, per group).
        // The replicas' input comes from the I/O task, or from the `rx_frame` task.
        let pre_source = if topology.rx_hooks {
            TaskRef::RxHooks
        } else {
            TaskRef::Io
        };
        let (to_pre, pre_in): (Vec<_>, Vec<_>) = (0..np)
            .map(|i| {
                let (mut p, c) = spsc::<PreIn>(rs);
                if let Some(w) = wire(pre_source, TaskRef::Preprocess(i)) {
                    p.wake_on_push(w);
                }
                (p, c)
            })
            .unzip();
        let mut pre_to_group: Vec<Vec<Producer<Ingress<RxWork>>>> =
            (0..np).map(|_| Vec::new()).collect();
        let mut group_from_pre: Vec<Vec<Consumer<Ingress<RxWork>>>> =
            (0..ng).map(|_| Vec::new()).collect();
        for (pi, outs) in pre_to_group.iter_mut().enumerate() {
            for (g, ins) in group_from_pre.iter_mut().enumerate() {
                let (mut p, c) = spsc(rs);
                if let Some(w) = wire(TaskRef::Preprocess(pi), TaskRef::Group(g)) {
                    p.wake_on_push(w);
                }
                outs.push(p);
                ins.push(c);
            }
        }
        // Punts and reflected frames to the I/O task: one ring each per preprocess replica,
        // per group and for the `rx_frame` stages' own task.
        let source = |i: usize| {
            if i < np {
                TaskRef::Preprocess(i)
            } else if i < np + ng {
                TaskRef::Group(i - np)
            } else {
                TaskRef::RxHooks
            }
        };
        let (mut punt_p, punt_c): (Vec<_>, Vec<_>) = (0..np + ng + 1)
            .map(|i| {
                let (mut p, c) = spsc::<(u64, Punt)>(rs);
                if let Some(w) = wire(source(i), TaskRef::Io) {
                    p.wake_on_push(w);
                }
                (p, c)
            })
            .unzip();
        let (mut raw_p, raw_c): (Vec<_>, Vec<_>) = (0..np + ng + 1)
            .map(|i| {
                let (mut p, c) = spsc::<Frame>(rs);
                if let Some(w) = wire(source(i), TaskRef::Io) {
                    p.wake_on_push(w);
                }
                (p, c)
            })
            .unzip();
        let (hook_punts, hook_raw) = (punt_p.pop(), raw_p.pop());
        let group_punts = punt_p.split_off(np);
        let group_raw = raw_p.split_off(np);
        let (work_p, work_c): (Vec<_>, Vec<_>) = (0..ng)
            .map(|g| {
                let (mut p, c) = spsc::<ProtoWork>(rs);
                if let Some(w) = wire(TaskRef::Io, TaskRef::Group(g)) {
                    p.wake_on_push(w);
                }
                (p, c)
            })
            .unzip();
        // The two links that carry protocol results hand them over a burst at a time.
        let mut group_to_place: Vec<Vec<BurstProducer<ResultBurst>>> =
            (0..ng).map(|_| Vec::new()).collect();
        let mut place_from_group: Vec<Vec<BurstConsumer<ResultBurst>>> =
            (0..nd).map(|_| Vec::new()).collect();
        for (g, outs) in group_to_place.iter_mut().enumerate() {
            for (d, ins) in place_from_group.iter_mut().enumerate() {
                let (mut p, c) = burst_spsc(rs, BURST);
                if let Some(w) = wire(TaskRef::Group(g), TaskRef::Place(d)) {
                    p.wake_on_push(w);
                }
                outs.push(p);
                ins.push(c);
            }
        }
        let mut place_to_post: Vec<Vec<BurstProducer<ResultBurst>>> =
            (0..nd).map(|_| Vec::new()).collect();
        let mut post_from_place: Vec<Vec<BurstConsumer<ResultBurst>>> =
            (0..nq).map(|_| Vec::new()).collect();
        for (d, outs) in place_to_post.iter_mut().enumerate() {
            for (q, ins) in post_from_place.iter_mut().enumerate() {
                let (mut p, c) = burst_spsc(rs, BURST);
                if let Some(w) = wire(TaskRef::Place(d), TaskRef::Postprocess(q)) {
                    p.wake_on_push(w);
                }
                outs.push(p);
                ins.push(c);
            }
        }
        let (ev_p, ev_c): (Vec<_>, Vec<_>) = (0..nd)
            .map(|d| {
                let (mut p, c) = spsc::<ControlEvent>(rs);
                if let Some(w) = wire(TaskRef::Place(d), TaskRef::Io) {
                    p.wake_on_push(w);
                }
                (p, c)
            })
            .unzip();
        // post -> io: one ring per (post replica, place replica, group).
        let mut post_to_io: Vec<Vec<Vec<Producer<Sequenced<Frame>>>>> = (0..nq)
            .map(|_| (0..nd).map(|_| Vec::new()).collect())
            .collect();
        let mut io_from_post: Vec<Vec<Consumer<Sequenced<Frame>>>> =
            (0..ng).map(|_| Vec::new()).collect();
        for (q, per_post) in post_to_io.iter_mut().enumerate() {
            for outs in per_post.iter_mut() {
                for ins in io_from_post.iter_mut() {
                    let (mut p, c) = spsc(rs);
                    if let Some(w) = wire(TaskRef::Postprocess(q), TaskRef::Io) {
                        p.wake_on_push(w);
                    }
                    outs.push(p);
                    ins.push(c);
                }
            }
        }
        let (pre_ctl_tx, pre_ctl_rx): (Vec<_>, Vec<_>) =
            (0..np).map(|_| crossbeam_channel::unbounded()).unzip();
        let (group_ctl_tx, group_ctl_rx): (Vec<_>, Vec<_>) =
            (0..ng).map(|_| crossbeam_channel::unbounded()).unzip();
        let (place_ctl_tx, place_ctl_rx): (Vec<_>, Vec<_>) =
            (0..nd).map(|_| crossbeam_channel::unbounded()).unzip();
        let (post_ctl_tx, post_ctl_rx): (Vec<_>, Vec<_>) =
            (0..nq).map(|_| crossbeam_channel::unbounded()).unzip();

        // With an `rx_frame` task, the I/O task deals to it and it deals to the replicas.
        let rx_hooks_task = topology.rx_hooks;
        let (io_ingress, rx_hook_task) = if rx_hooks_task {
            let (mut p, c) = spsc::<PreIn>(rs);
            if let Some(w) = wire(TaskRef::Io, TaskRef::RxHooks) {
                p.wake_on_push(w);
            }
            let me = TaskRef::RxHooks;
            let task = ingress::RxHookTask {
                arena: arena.clone(),
                input: c,
                dealer: ingress::Dealer::new(to_pre),
                hooks: pol.hooks.rx_frame.clone(),
                rings: pol.hooks.rings.clone(),
                to_io: ToIo {
                    tx: Outbox::new(hook_raw.expect("ring made above")),
                    punts: Outbox::new(hook_punts.expect("ring made above")),
                },
                diverted: Diverted::default(),
                batch: Vec::with_capacity(BURST),
                frames: Vec::with_capacity(BURST),
                seqs: Vec::with_capacity(BURST),
                meta: Meta::new(me, worker_of(me), &mut reports),
            };
            (ingress::Dealer::new(vec![p]), Some(task))
        } else {
            (ingress::Dealer::new(to_pre), None)
        };
        // The replicas run the `rx_frame` stages unless they have a task of their own.
        let pre_hooks = if rx_hooks_task {
            Chain::default()
        } else {
            pol.hooks.rx_frame.clone()
        };
        // With a `tx_frame` task, every frame the I/O task sends goes through it, and the
        // postprocess replicas and the I/O task run no `tx_frame` stages themselves.
        let (tx_task, tx_hook_task, local_tx_hooks) = if topology.tx_hooks {
            let (mut to_p, to_c) = spsc::<Frame>(rs);
            let (mut back_p, back_c) = spsc::<Frame>(rs);
            if let Some(w) = wire(TaskRef::Io, TaskRef::TxHooks) {
                to_p.wake_on_push(w);
            }
            if let Some(w) = wire(TaskRef::TxHooks, TaskRef::Io) {
                back_p.wake_on_push(w);
            }
            let me = TaskRef::TxHooks;
            let task = egress::TxHookTask {
                arena: arena.clone(),
                input: to_c,
                output: Outbox::new(back_p),
                hooks: pol.hooks.tx_frame.clone(),
                rings: pol.hooks.rings.clone(),
                batch: Vec::with_capacity(BURST),
                meta: Meta::new(me, worker_of(me), &mut reports),
            };
            let io_side = egress::ToTxHooks {
                out: Outbox::new(to_p),
                back: back_c,
            };
            (Some(io_side), Some(task), Chain::default())
        } else {
            (None, None, pol.hooks.tx_frame.clone())
        };

        // Tasks.
        let mut tasks: Vec<(TaskRef, Box<dyn Task>)> = Vec::new();
        if let Some(t) = tx_hook_task {
            tasks.push((TaskRef::TxHooks, Box::new(t)));
        }
        if let Some(t) = rx_hook_task {
            tasks.push((TaskRef::RxHooks, Box::new(t)));
        }
        let summary = Arc::new(Mutex::new(IoSummary::default()));
        tasks.push((
            TaskRef::Io,
            Box::new(IoTask {
                queues: port_queues,
                reinject: Preprocess::new(arena.clone(), cfg.mac, cfg.ip),
                arena: arena.clone(),
                port,
                control,
                host: host.clone(),
                cout: ControlOutput::default(),
                groups: ng,
                group_of: Vec::new(),
                next_seq: 0,
                ingress: io_ingress,
                pre_ctl: pre_ctl_tx,
                group_ctl: group_ctl_tx,
                place_ctl: place_ctl_tx,
                post_ctl: post_ctl_tx,
                punts: punt_c,
                events: ev_c,
                to_group: work_p,
                backlog: Backlog::new(ng, BACKLOG_RINGS * rs),
                from_post: io_from_post,
                egress: (0..ng)
                    .map(|_| Reorder::new(topology.reorder_window, topology.overflow))
                    .collect(),
                rx: Vec::with_capacity(BURST),
                tx: Vec::with_capacity(4 * BURST),
                batch: Vec::with_capacity(BURST),
                rx_frames: 0,
                rx_by_queue: Vec::new(),
                tx_frames: 0,
                placement: pol.placement.clone(),
                place_of: Vec::new(),
                raw_tx: raw_c,
                staged: Vec::new(),
                tx_hooks: local_tx_hooks.clone(),
                tx_task,
                rings: pol.hooks.rings.clone(),
                instance: nq,
                meta: Meta::new(TaskRef::Io, worker_of(TaskRef::Io), &mut reports),
                summary: summary.clone(),
                reports: 0,
                wakes: wakes.clone(),
            }),
        ));
        for (r, (((input, to_group), (punts, ctl)), raw)) in pre_in
            .into_iter()
            .zip(pre_to_group)
            .zip(punt_p.into_iter().zip(pre_ctl_rx))
            .zip(raw_p)
            .enumerate()
        {
            let me = TaskRef::Preprocess(r);
            tasks.push((
                me,
                Box::new(PreTask {
                    ingress: path::Ingress {
                        arena: arena.clone(),
                        pre: Preprocess::new(arena.clone(), cfg.mac, cfg.ip),
                        hooks: pre_hooks.clone(),
                        rings: pol.hooks.rings.clone(),
                        instance: r,
                    },
                    groups_of: Vec::new(),
                    ctl,
                    input,
                    to_group,
                    pending: (0..ng).map(|_| Vec::new()).collect(),
                    to_io: ToIo {
                        tx: Outbox::new(raw),
                        punts: Outbox::new(punts),
                    },
                    dropped: crate::stats::DropCounters::default(),
                    batch: Vec::with_capacity(BURST),
                    frames: Vec::with_capacity(BURST),
                    seqs: Vec::with_capacity(BURST),
                    diverted: Diverted::default(),
                    runs: pre::Runs::default(),
                    meta: Meta::new(me, worker_of(me), &mut reports),
                }),
            ));
        }
        for (g, (((((from_pre, from_io), ctl), to_place), punts), raw)) in group_from_pre
            .into_iter()
            .zip(work_c)
            .zip(group_ctl_rx)
            .zip(group_to_place)
            .zip(group_punts)
            .zip(group_raw)
            .enumerate()
        {
            let me = TaskRef::Group(g);
            tasks.push((
                me,
                Box::new(GroupTask {
                    transport: path::Transport::new(
                        arena.clone(),
                        Protocol::with_congestion(pol.cc.clone(), arena.clone())
                            .with_ack_policy(post_policy)
                            .with_challenge_ack_limit(challenge_ack_limit),
                        pol.sched.clone(),
                        (pol.hooks.rx_segment.clone(), pol.hooks.results.clone()),
                        pol.hooks.rings.clone(),
                        g,
                    ),
                    place_of: Vec::new(),
                    segs: Vec::with_capacity(BURST),
                    diverted: Diverted::default(),
                    to_io: ToIo {
                        tx: Outbox::new(raw),
                        punts: Outbox::new(punts),
                    },
                    views: Vec::new(),
                    ctl,
                    merge: Merge::new(np),
                    from_pre,
                    from_io,
                    held: VecDeque::new(),
                    pending_out: (0..nd).map(|_| ResultBurst::default()).collect(),
                    to_place,
                    egress_seq: 0,
                    work: Vec::with_capacity(BURST),
                    results: Vec::with_capacity(BURST),
                    meta: Meta::new(me, worker_of(me), &mut reports),
                }),
            ));
        }
        // Replicated placement: a ring of copy jobs from each place replica to each other one,
        // and one back.
        let mut lending: Vec<Option<place::Lending>> = (0..nd).map(|_| None).collect();
        if topology.replicated_placement && nd > 1 {
            let mut to: Vec<Vec<Producer<CopyJob>>> = (0..nd).map(|_| Vec::new()).collect();
            let mut back: Vec<Vec<Consumer<CopyJob>>> = (0..nd).map(|_| Vec::new()).collect();
            let mut from: Vec<Vec<Consumer<CopyJob>>> = (0..nd).map(|_| Vec::new()).collect();
            let mut done: Vec<Vec<Producer<CopyJob>>> = (0..nd).map(|_| Vec::new()).collect();
            for d in 0..nd {
                for e in (0..nd).filter(|&e| e != d) {
                    let (mut p, c) = spsc::<CopyJob>(rs);
                    if let Some(w) = wire(TaskRef::Place(d), TaskRef::Place(e)) {
                        p.wake_on_push(w);
                    }
                    to[d].push(p);
                    from[e].push(c);
                    let (mut p, c) = spsc::<CopyJob>(rs);
                    if let Some(w) = wire(TaskRef::Place(e), TaskRef::Place(d)) {
                        p.wake_on_push(w);
                    }
                    done[e].push(p);
                    back[d].push(c);
                }
            }
            for (d, (((to, back), from), done)) in
                to.into_iter().zip(back).zip(from).zip(done).enumerate()
            {
                lending[d] = Some(place::Lending::new(to, back, from, done));
            }
        }
        for (d, ((((from_group, to_post), events), ctl), lending)) in place_from_group
            .into_iter()
            .zip(place_to_post)
            .zip(ev_p)
            .zip(place_ctl_rx)
            .zip(lending)
            .enumerate()
        {
            let me = TaskRef::Place(d);
            tasks.push((
                me,
                Box::new(PlaceTask {
                    delivery: path::Delivery::new(arena.clone(), d, !csum_offload),
                    ctl,
                    from_group,
                    to_post,
                    next_post: 0,
                    pending: VecDeque::new(),
                    spare: Vec::new(),
                    events,
                    pending_events: Vec::new(),
                    input: ResultBurst::default(),
                    lending,
                    flushed: true,
                    meta: Meta::new(me, worker_of(me), &mut reports),
                }),
            ));
        }
        for (q, ((from_place, to_io), ctl)) in post_from_place
            .into_iter()
            .zip(post_to_io)
            .zip(post_ctl_rx)
            .enumerate()
        {
            let me = TaskRef::Postprocess(q);
            tasks.push((
                me,
                Box::new(PostTask {
                    egress: path::Egress::new(
                        arena.clone(),
                        Postprocess::new(arena.clone(), post_policy),
                        local_tx_hooks.clone(),
                        pol.hooks.rings.clone(),
                        q,
                        csum_offload,
                    ),
                    ctl,
                    pending: (0..nd)
                        .map(|_| (0..ng).map(|_| Vec::new()).collect())
                        .collect(),
                    from_place,
                    to_io,
                    input: ResultBurst::default(),
                    meta: Meta::new(me, worker_of(me), &mut reports),
                }),
            ));
        }

        // Threads.
        let stop = Arc::new(AtomicBool::new(false));
        let mut per_worker: Vec<Vec<Box<dyn Task>>> =
            topology.workers.iter().map(|_| Vec::new()).collect();
        let mut refs_of: Vec<Vec<TaskRef>> = topology.workers.iter().map(|_| Vec::new()).collect();
        for (t, task) in tasks {
            per_worker[worker_of(t)].push(task);
            refs_of[worker_of(t)].push(t);
        }
        let cpu_of: Vec<WorkerCpu> = refs_of.into_iter().map(WorkerCpu::new).collect();
        let mut workers = Vec::new();
        if topology.caller_driven {
            // The application's thread runs everything (`Threaded::poll`).
            let tasks: Vec<Box<dyn Task>> = per_worker.into_iter().flatten().collect();
            let refs: Vec<TaskRef> = cpu_of
                .iter()
                .flat_map(|w| w.tasks.iter().map(|t| t.task))
                .collect();
            return Ok(Threaded {
                arena,
                host: Host { shared: host },
                stop,
                wakes,
                workers,
                driven: Some(Driven::new(tasks, refs, clock.clone())),
                cpu: Vec::new(),
                reports,
                summary,
            });
        }
        for (i, (spec, tasks)) in topology.workers.iter().zip(per_worker).enumerate() {
            // The port has no interrupt and the timers no thread of their own: the I/O
            // task's worker sleeps briefly; the others sleep until a producer wakes them.
            let (nap, spin) = if i == io_worker {
                (IO_NAP, PORT_SPIN)
            } else {
                (IDLE_NAP, Duration::ZERO)
            };
            let handle = worker::spawn(
                tasks,
                &cpu_of[i],
                worker::WorkerParams {
                    index: i,
                    core: spec.core,
                    stop: stop.clone(),
                    clock: clock.clone(),
                    wake: wakes[i].clone(),
                    nap,
                    spin,
                    port_fds: if i == io_worker {
                        port_fds.clone()
                    } else {
                        Default::default()
                    },
                    workers: topology.workers.len(),
                },
            )?;
            workers.push(handle);
        }
        Ok(Threaded {
            arena,
            host: Host { shared: host },
            stop,
            wakes,
            workers,
            driven: None,
            cpu: cpu_of,
            reports,
            summary,
        })
    }

    /// The inline mapping ([`fused`]): the whole engine as one task, on the caller's thread
    /// ([`Topology::caller_driven`]) or on the one worker ([`Topology::inline_worker`]).
    fn inline_mapping<P, K, C, S>(
        cfg: EngineConfig,
        port: P,
        topology: &Topology,
        clock: K,
        pol: Policies<C, S>,
    ) -> Result<Self, EngineError>
    where
        P: Port + 'static,
        K: Clock + Clone + 'static,
        C: CongestionControl,
        S: FlowScheduler,
    {
        let engine = crate::pipeline::Engine::assemble(cfg, port, pol.cc, pol.sched, pol.hooks)?;
        let (arena, host) = (engine.arena().clone(), engine.host());
        let port_fds = crate::pipeline::sleep::fds_of(engine.port());
        let mut reports = Vec::new();
        let summary: Shared<IoSummary> = Arc::new(Mutex::new(IoSummary::default()));
        let mut task = fused::Fused::new(engine, &mut reports, summary.clone());
        task.report();
        let stop = Arc::new(AtomicBool::new(false));
        if topology.caller_driven {
            return Ok(Threaded {
                arena,
                host,
                stop,
                wakes: Vec::new(),
                workers: Vec::new(),
                driven: Some(Driven::new(vec![Box::new(task)], Vec::new(), clock)),
                cpu: Vec::new(),
                reports,
                summary,
            });
        }
        // One worker: the engine's own wakeup, which the application's doorbells and
        // requests ring, is the worker's.
        let wake = host.shared.engine_wake();
        let cpu = WorkerCpu::new([TaskRef::Io]);
        let worker = worker::spawn(
            vec![Box::new(task)],
            &cpu,
            worker::WorkerParams {
                index: 0,
                core: topology.workers.first().and_then(|w| w.core),
                stop: stop.clone(),
                clock,
                wake: wake.clone(),
                nap: IO_NAP,
                spin: PORT_SPIN,
                port_fds,
                workers: 1,
            },
        )?;
        Ok(Threaded {
            arena,
            host,
            stop,
            wakes: vec![wake],
            workers: vec![worker],
            driven: None,
            cpu: vec![cpu],
            reports,
            summary,
        })
    }
}
