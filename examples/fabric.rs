//! Congestion control in a simulated data-center fabric: scenarios of senders through one
//! 10 Gbit/s port that marks ECN at K, for each algorithm the crate ships, under one virtual
//! clock (every run replays bit for bit).
//!
//! - `join-leave`: four flows join 5 ms apart and leave again;
//! - `incast`: sixteen senders start at once towards one receiver;
//! - `mixed-rtt`: four flows whose round trips are 20, 40, 60 and 100 us.
//!
//! It prints a summary row per scenario and algorithm (utilisation and the queue's
//! percentiles after a warm-up; Jain's index over the flows active throughout, for
//! `join-leave` while all four are) and writes one PNG per scenario
//! (throughput per flow, the bottleneck's queue and each flow's RTT over time, one row of
//! plots per algorithm) to `--out` (default `docs/`).
//!
//! ```text
//! cargo run --release --example fabric                  # all scenarios, plots in docs/
//! cargo run --release --example fabric -- --quick --out /tmp/fabric
//! ```
//!
//! The plots need a TrueType font: DejaVu Sans from Debian's `fonts-dejavu-core` is found
//! by itself; `--font PATH` names another.

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Parser;
use flextoe::control::congestion::Algorithm;
use flextoe::control::rates::{ControlRates, DctcpRate};
use flextoe::sim::fabric::{Fabric, FabricReport, FlowSpec, Scheme};
use plotters::prelude::*;

#[derive(Parser)]
struct Args {
    /// Where the PNGs go.
    #[arg(long, default_value = "docs")]
    out: PathBuf,
    /// Shorter runs (a quarter of the time), for a smoke test.
    #[arg(long)]
    quick: bool,
    /// A TrueType font for the plots' text.
    #[arg(long)]
    font: Option<PathBuf>,
    /// Only this scenario.
    #[arg(long)]
    scenario: Option<String>,
}

const RATE: u64 = 10_000_000_000;
const K: usize = 65 * 1514;

fn schemes() -> Vec<Scheme> {
    vec![
        Scheme::Window(Algorithm::NewReno),
        Scheme::Window(Algorithm::Cubic),
        Scheme::Window(Algorithm::Dctcp),
        Scheme::Rates(ControlRates::new(
            Duration::from_micros(50),
            DctcpRate::default(),
        )),
        Scheme::Window(Algorithm::Timely),
    ]
}

struct Scenario {
    name: &'static str,
    about: &'static str,
    build: fn(&Scheme, f64) -> Fabric,
    /// Where fairness is measured (ms, before scaling), if not over the whole measurement.
    fair: Option<(f64, f64)>,
}

fn ms(x: f64) -> Duration {
    Duration::from_secs_f64(x / 1000.0)
}

fn scenarios() -> Vec<Scenario> {
    vec![
        Scenario {
            name: "join-leave",
            about: "four flows join 5 ms apart, then leave",
            build: |s, t| {
                let mut f = Fabric::data_center(RATE, K);
                f.flows = (0..4)
                    .map(|i| {
                        let stop = if i == 0 {
                            None
                        } else {
                            Some(ms(t * (45.0 - 5.0 * i as f64)))
                        };
                        FlowSpec::new(s.clone()).between(ms(t * 5.0 * i as f64), stop)
                    })
                    .collect();
                f.duration = ms(t * 50.0);
                f.warmup = ms(t * 20.0);
                f.step = Duration::from_micros(200);
                // A small send buffer: a flow that stops has little left to deliver.
                f.buffer = 512 * 1024;
                f
            },
            fair: Some((17.0, 30.0)),
        },
        Scenario {
            name: "incast",
            about: "sixteen senders start at once",
            build: |s, t| {
                let mut f = Fabric::data_center(RATE, K);
                f.flows = vec![FlowSpec::new(s.clone()); 16];
                f.duration = ms(t * 20.0);
                f.warmup = ms(t * 5.0);
                f
            },
            fair: None,
        },
        Scenario {
            name: "mixed-rtt",
            about: "four flows with round trips of 20, 40, 60 and 100 us",
            build: |s, t| {
                let mut f = Fabric::data_center(RATE, K);
                f.flows = [0u64, 10, 20, 40]
                    .iter()
                    .map(|us| {
                        FlowSpec::new(s.clone()).with_extra_latency(Duration::from_micros(*us))
                    })
                    .collect();
                f.duration = ms(t * 20.0);
                f.warmup = ms(t * 5.0);
                f
            },
            fair: None,
        },
    ]
}

fn load_font(path: Option<&Path>) -> Result<(), String> {
    let candidates: Vec<PathBuf> = match path {
        Some(p) => vec![p.to_path_buf()],
        None => [
            "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
            "/usr/share/fonts/dejavu/DejaVuSans.ttf",
            "/usr/share/fonts/TTF/DejaVuSans.ttf",
            "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
        ]
        .iter()
        .map(PathBuf::from)
        .collect(),
    };
    for p in &candidates {
        if let Ok(bytes) = std::fs::read(p) {
            let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
            return plotters::style::register_font("sans-serif", FontStyle::Normal, bytes)
                .map_err(|_| format!("{} is not a TrueType font", p.display()));
        }
    }
    Err(format!(
        "no TrueType font found (tried {}); install fonts-dejavu-core or pass --font",
        candidates
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    ))
}

type Plot<'a> = DrawingArea<BitMapBackend<'a>, plotters::coord::Shift>;

/// One panel: a line per series over time (milliseconds).
fn panel(
    area: &Plot<'_>,
    title: &str,
    y_desc: &str,
    t_max: f64,
    series: &[(String, Vec<(f64, f64)>)],
    marks: &[(f64, &str)],
) -> Result<(), Box<dyn std::error::Error>> {
    let y_max = series
        .iter()
        .flat_map(|(_, v)| v.iter().map(|p| p.1))
        .chain(marks.iter().map(|m| m.0))
        .fold(0.0f64, f64::max)
        .max(1e-9)
        * 1.1;
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 15))
        .margin(6)
        .x_label_area_size(28)
        .y_label_area_size(52)
        .build_cartesian_2d(0.0..t_max, 0.0..y_max)?;
    chart
        .configure_mesh()
        .x_desc("ms")
        .y_desc(y_desc)
        .label_style(("sans-serif", 11))
        .axis_desc_style(("sans-serif", 12))
        .light_line_style(WHITE.mix(0.0))
        .draw()?;
    for (i, (name, pts)) in series.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        chart
            .draw_series(LineSeries::new(pts.iter().copied(), color.stroke_width(1)))?
            .label(name.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 14, y)], color));
    }
    for (y, name) in marks {
        let y = *y;
        chart
            .draw_series(LineSeries::new(
                [(0.0, y), (t_max, y)],
                BLACK.mix(0.5).stroke_width(1),
            ))?
            .label(name.to_string())
            .legend(move |(x, yy)| PathElement::new(vec![(x, yy), (x + 14, yy)], BLACK.mix(0.5)));
    }
    if series.len() + marks.len() <= 6 {
        chart
            .configure_series_labels()
            .label_font(("sans-serif", 10))
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK.mix(0.3))
            .position(SeriesLabelPosition::UpperRight)
            .draw()?;
    }
    Ok(())
}

fn plot(
    path: &Path,
    scenario: &Scenario,
    runs: &[(String, FabricReport)],
) -> Result<(), Box<dyn std::error::Error>> {
    let row_h = 260u32;
    let root = BitMapBackend::new(path, (1500, 50 + row_h * runs.len() as u32)).into_drawing_area();
    root.fill(&WHITE)?;
    let (head, body) = root.split_vertically(50);
    head.draw_text(
        &format!(
            "{}: {} (10 Gbit/s, K = {} KB, queue 4K, base RTT 20 us)",
            scenario.name,
            scenario.about,
            K / 1000
        ),
        &("sans-serif", 20).into_text_style(&head),
        (12, 14),
    )?;
    let cells = body.split_evenly((runs.len(), 3));
    for (row, (name, r)) in runs.iter().enumerate() {
        let t_max = r.times.last().copied().unwrap_or(1.0) * 1000.0;
        let at = |i: usize| r.times[i] * 1000.0;
        let thr: Vec<(String, Vec<(f64, f64)>)> = r
            .flows
            .iter()
            .enumerate()
            .map(|(j, f)| {
                (
                    format!("flow {j}"),
                    f.throughput_bps
                        .iter()
                        .enumerate()
                        .map(|(i, v)| (at(i), v / 1e9))
                        .collect(),
                )
            })
            .collect();
        let queue = vec![(
            "queue".to_string(),
            r.queue_bytes
                .iter()
                .enumerate()
                .map(|(i, q)| (at(i), *q as f64 / 1000.0))
                .collect(),
        )];
        let rtt: Vec<(String, Vec<(f64, f64)>)> = r
            .flows
            .iter()
            .enumerate()
            .map(|(j, f)| {
                (
                    format!("flow {j}"),
                    f.rtt_us
                        .iter()
                        .enumerate()
                        .filter(|(_, v)| **v > 0.0)
                        .map(|(i, v)| (at(i), *v))
                        .collect(),
                )
            })
            .collect();
        let k_kb = K as f64 / 1000.0;
        panel(
            &cells[row * 3],
            &format!("{name}: throughput per flow"),
            "Gbit/s",
            t_max,
            &thr,
            &[],
        )?;
        panel(
            &cells[row * 3 + 1],
            &format!("{name}: bottleneck queue"),
            "KB",
            t_max,
            &queue,
            &[(k_kb, "K")],
        )?;
        panel(
            &cells[row * 3 + 2],
            &format!("{name}: smoothed RTT"),
            "us",
            t_max,
            &rtt,
            &[],
        )?;
    }
    root.present()?;
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    load_font(args.font.as_deref())?;
    std::fs::create_dir_all(&args.out)?;
    let t = if args.quick { 0.25 } else { 1.0 };
    println!(
        "{:<11} {:<11} {:>6} {:>6} {:>9} {:>9} {:>7} {:>6} {:>8} {:>8}",
        "scenario",
        "algorithm",
        "util",
        "Jain",
        "q50 (K)",
        "q99 (K)",
        "drops",
        "rtx",
        "RTT us",
        "seconds"
    );
    for sc in scenarios() {
        if args.scenario.as_deref().is_some_and(|s| s != sc.name) {
            continue;
        }
        let mut runs = Vec::new();
        for scheme in schemes() {
            let fabric = (sc.build)(&scheme, t);
            let start = std::time::Instant::now();
            let r = fabric.run();
            let secs = start.elapsed().as_secs_f64();
            let jain = match sc.fair {
                Some((a, b)) => FabricReport::jain_index(&r.goodputs(ms(t * a), ms(t * b))),
                None => r.jain,
            };
            println!(
                "{:<11} {:<11} {:>6.3} {:>6.3} {:>9.2} {:>9.2} {:>7} {:>6} {:>8.1} {:>8.2}",
                sc.name,
                scheme.name(),
                r.utilisation,
                jain,
                r.queue_p50 as f64 / K as f64,
                r.queue_p99 as f64 / K as f64,
                r.overflowed,
                r.retransmissions,
                r.mean_rtt_us(r.measured.0, r.measured.1),
                secs,
            );
            runs.push((scheme.name(), r));
        }
        let path = args.out.join(format!("fabric-{}.png", sc.name));
        plot(&path, &sc, &runs)?;
        println!("  wrote {}", path.display());
    }
    Ok(())
}
