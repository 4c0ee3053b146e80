//! Packet capture inside the pipeline: stages at [`RxFrame`] and [`TxFrame`] that write the
//! frames a [`Filter`] selects to a pcap or pcapng file (pcapng marks each frame inbound or
//! outbound). Both stages of a [`Capture`] share one file; each burst takes its lock once.
//! The file format is written by the `pcap-file` crate; tcpdump, tshark and Wireshark read
//! both.
//!
//! A write error stops the capture (counted); the traffic goes on. The writing happens on
//! the data path, under one lock the stages share: capture to fast storage, with a filter
//! that selects what is needed. Through a buffered writer, an error may show only at a
//! later write or at [`Capture::flush`], and `written` counts what was handed to it.
//!
//! ```
//! use flextoe::stages::ext::capture::{Capture, CaptureFormat};
//!
//! let path = std::env::temp_dir().join("flextoe-doc-capture.pcapng");
//! let cap = Capture::create(&path, CaptureFormat::PcapNg, "tcp and (syn or fin)").unwrap();
//! // Pipeline::builder(cfg, port).on_rx_frame(cap.rx_stage()).on_tx_frame(cap.tx_stage())...
//! cap.flush().unwrap();
//! assert_eq!(cap.written(), 0);
//! # std::fs::remove_file(path).unwrap();
//! ```

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pcap_file::pcap::{PcapHeader, PcapPacket, PcapWriter};
use pcap_file::pcapng::blocks::enhanced_packet::{EnhancedPacketBlock, EnhancedPacketOption};
use pcap_file::pcapng::blocks::interface_description::InterfaceDescriptionBlock;
use pcap_file::pcapng::PcapNgWriter;
use pcap_file::{DataLink, TsResolution};

use super::filter::Filter;
use super::headers::FrameInfo;
use super::rules::ParseError;
use crate::buf::Frame;
use crate::pipeline::hooks::{Hook, HookCx, RxFrame, TxFrame, Verdicts};

/// The file format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CaptureFormat {
    /// libpcap's classic format (microsecond timestamps).
    Pcap,
    /// pcapng, with each frame's direction.
    PcapNg,
}

/// Why a capture could not start.
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    /// The filter did not parse.
    #[error(transparent)]
    Filter(#[from] ParseError),
    /// The file could not be created or its header written.
    #[error("capture file: {0}")]
    Io(#[from] io::Error),
}

/// The file, shared between the format writer and [`Capture::flush`].
#[derive(Clone)]
struct Sink(Arc<Mutex<Box<dyn Write + Send>>>);

impl Write for Sink {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).write(b)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).flush()
    }
}

enum Writer {
    Pcap(PcapWriter<Sink>),
    PcapNg(PcapNgWriter<Sink>),
}

struct Shared {
    filter: Filter,
    writer: Mutex<Option<Writer>>,
    sink: Sink,
    seen: AtomicU64,
    written: AtomicU64,
    errors: AtomicU64,
}

/// A capture: its filter, its file and its counters. Clones share them.
#[derive(Clone)]
pub struct Capture {
    shared: Arc<Shared>,
}

fn io_err(e: pcap_file::PcapError) -> io::Error {
    io::Error::other(e.to_string())
}

impl Capture {
    /// Capture to a new file at `path` what `filter` selects.
    pub fn create(
        path: impl AsRef<Path>,
        format: CaptureFormat,
        filter: &str,
    ) -> Result<Capture, CaptureError> {
        let filter: Filter = filter.parse()?;
        let file = BufWriter::new(File::create(path)?);
        Ok(Self::new(file, format, filter)?)
    }

    /// Capture to any writer.
    pub fn new(
        out: impl Write + Send + 'static,
        format: CaptureFormat,
        filter: Filter,
    ) -> io::Result<Capture> {
        let sink = Sink(Arc::new(Mutex::new(Box::new(out))));
        let file = sink.clone();
        let writer = match format {
            CaptureFormat::Pcap => {
                let header = PcapHeader {
                    datalink: DataLink::ETHERNET,
                    ts_resolution: TsResolution::MicroSecond,
                    snaplen: 65535,
                    ..PcapHeader::default()
                };
                Writer::Pcap(PcapWriter::with_header(sink, header).map_err(io_err)?)
            }
            CaptureFormat::PcapNg => {
                let mut w = PcapNgWriter::new(sink).map_err(io_err)?;
                w.write_pcapng_block(InterfaceDescriptionBlock {
                    linktype: DataLink::ETHERNET,
                    snaplen: 65535,
                    options: Vec::new(),
                })
                .map_err(io_err)?;
                Writer::PcapNg(w)
            }
        };
        Ok(Capture {
            shared: Arc::new(Shared {
                filter,
                writer: Mutex::new(Some(writer)),
                sink: file,
                seen: AtomicU64::new(0),
                written: AtomicU64::new(0),
                errors: AtomicU64::new(0),
            }),
        })
    }

    /// The stage for received frames ([`RxFrame`]).
    pub fn rx_stage(&self) -> CaptureStage {
        CaptureStage {
            shared: self.shared.clone(),
            inbound: true,
            picked: Vec::new(),
        }
    }

    /// The stage for sent frames ([`TxFrame`]).
    pub fn tx_stage(&self) -> CaptureStage {
        CaptureStage {
            shared: self.shared.clone(),
            inbound: false,
            picked: Vec::new(),
        }
    }

    /// Push what is buffered to the file.
    pub fn flush(&self) -> io::Result<()> {
        // Hold the writer so that no burst is half written.
        let _w = self.shared.writer.lock().unwrap_or_else(|p| p.into_inner());
        self.shared.sink.clone().flush()
    }

    /// Frames the stages looked at.
    pub fn seen(&self) -> u64 {
        self.shared.seen.load(Ordering::Relaxed)
    }

    /// Frames written.
    pub fn written(&self) -> u64 {
        self.shared.written.load(Ordering::Relaxed)
    }

    /// Write errors (the first one stops the capture).
    pub fn errors(&self) -> u64 {
        self.shared.errors.load(Ordering::Relaxed)
    }
}

/// One side of a [`Capture`]; passes every frame.
#[derive(Clone)]
pub struct CaptureStage {
    shared: Arc<Shared>,
    inbound: bool,
    picked: Vec<usize>,
}

impl CaptureStage {
    fn run(&mut self, cx: &HookCx<'_>, frames: &[Frame]) {
        self.picked.clear();
        for (i, f) in frames.iter().enumerate() {
            if FrameInfo::peek(cx.arena.data(f)).is_some_and(|h| self.shared.filter.matches(&h)) {
                self.picked.push(i);
            }
        }
        self.shared
            .seen
            .fetch_add(frames.len() as u64, Ordering::Relaxed);
        if self.picked.is_empty() {
            return;
        }
        let ts = Duration::from_micros(cx.now.micros());
        let mut guard = self.shared.writer.lock().unwrap_or_else(|p| p.into_inner());
        let Some(w) = guard.as_mut() else {
            return;
        };
        let mut written = 0;
        let mut failed = false;
        for &i in &self.picked {
            let data = cx.arena.data(&frames[i]);
            let r = match w {
                Writer::Pcap(p) => p
                    .write_packet(&PcapPacket::new(ts, data.len() as u32, data))
                    .map(|_| ()),
                Writer::PcapNg(p) => p
                    .write_pcapng_block(EnhancedPacketBlock {
                        interface_id: 0,
                        timestamp: ts,
                        original_len: data.len() as u32,
                        data: std::borrow::Cow::Borrowed(data),
                        // epb_flags: bits 0-1 are the direction (1 inbound, 2 outbound).
                        options: vec![EnhancedPacketOption::Flags(if self.inbound {
                            1
                        } else {
                            2
                        })],
                    })
                    .map(|_| ()),
            };
            if r.is_err() {
                failed = true;
                break;
            }
            written += 1;
        }
        if failed {
            *guard = None;
            self.shared.errors.fetch_add(1, Ordering::Relaxed);
        }
        self.shared.written.fetch_add(written, Ordering::Relaxed);
    }
}

impl Hook<RxFrame> for CaptureStage {
    fn name(&self) -> &'static str {
        "capture-rx"
    }

    fn process(&mut self, cx: &HookCx<'_>, frames: &mut [Frame], _v: &mut Verdicts) {
        self.run(cx, frames);
    }
}

impl Hook<TxFrame> for CaptureStage {
    fn name(&self) -> &'static str {
        "capture-tx"
    }

    fn process(&mut self, cx: &HookCx<'_>, frames: &mut [Frame], _v: &mut Verdicts) {
        self.run(cx, frames);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::buf::FrameArena;
    use crate::time::Instant;

    #[derive(Clone, Default)]
    struct Shared2(Arc<Mutex<Vec<u8>>>);
    impl Write for Shared2 {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn writes_only_selected_frames_in_both_formats() {
        let arena = FrameArena::new(8).unwrap();
        let mut tcp = vec![0u8; 54];
        tcp[12..14].copy_from_slice(&[0x08, 0x00]);
        tcp[14] = 0x45;
        tcp[23] = 6;
        tcp[36..38].copy_from_slice(&80u16.to_be_bytes());
        let mut arp = vec![0u8; 42];
        arp[12..14].copy_from_slice(&[0x08, 0x06]);
        let mut frames = [
            arena.alloc_copy(&tcp).unwrap(),
            arena.alloc_copy(&arp).unwrap(),
            arena.alloc_copy(&tcp).unwrap(),
        ];
        for format in [CaptureFormat::Pcap, CaptureFormat::PcapNg] {
            let buf = Shared2::default();
            let cap = Capture::new(buf.clone(), format, "dst port 80".parse().unwrap()).unwrap();
            let cx = HookCx {
                now: Instant::from_micros(5),
                arena: &arena,
                instance: 0,
            };
            let mut v = Verdicts::default();
            v.start(3);
            Hook::<RxFrame>::process(&mut cap.rx_stage(), &cx, &mut frames, &mut v);
            Hook::<TxFrame>::process(&mut cap.tx_stage(), &cx, &mut frames, &mut v);
            cap.flush().unwrap();
            assert_eq!((cap.seen(), cap.written(), cap.errors()), (6, 4, 0));
            let bytes = buf.0.lock().unwrap().clone();
            let n = match format {
                CaptureFormat::Pcap => {
                    let mut r = pcap_file::pcap::PcapReader::new(&bytes[..]).unwrap();
                    let mut n = 0;
                    while let Some(p) = r.next_packet() {
                        assert_eq!(p.unwrap().data.len(), 54);
                        n += 1;
                    }
                    n
                }
                CaptureFormat::PcapNg => {
                    let mut r = pcap_file::pcapng::PcapNgReader::new(&bytes[..]).unwrap();
                    let mut n = 0;
                    while let Some(b) = r.next_block() {
                        if let pcap_file::pcapng::Block::EnhancedPacket(p) = b.unwrap() {
                            assert_eq!(p.data.len(), 54);
                            n += 1;
                        }
                    }
                    n
                }
            };
            assert_eq!(n, 4);
        }
    }
}
