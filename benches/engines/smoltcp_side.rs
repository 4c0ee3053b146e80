//! The smoltcp side of the comparison: two `Interface`s with one `tcp::Socket` each, joined
//! by a zero-copy device pair.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::Rc;

use smoltcp::iface::{Config, Interface, SocketHandle, SocketSet};
use smoltcp::phy::{self, Device, DeviceCapabilities, Medium};
use smoltcp::socket::tcp;
use smoltcp::wire::{HardwareAddress, IpAddress, IpCidr};

use super::*;

/// A frame on the smoltcp link: a pooled buffer and the length of the frame in it.
struct Packet {
    buf: Vec<u8>,
    len: usize,
}

type Queue = Rc<RefCell<VecDeque<Packet>>>;
type Pool = Rc<RefCell<Vec<Vec<u8>>>>;

/// One end of a zero-copy link between two smoltcp interfaces: a transmit token fills a
/// buffer from the shared pool and puts it on the peer's queue; a receive token lends the
/// buffer to smoltcp and gives it back to the pool.
struct LinkDev {
    rx: Queue,
    tx: Queue,
    pool: Pool,
    /// Frames sent.
    sent: Cell<u64>,
}

/// Two connected ends.
fn smol_pair() -> (LinkDev, LinkDev) {
    let (ab, ba) = (Queue::default(), Queue::default());
    let pool = Pool::default();
    (
        LinkDev {
            rx: ba.clone(),
            tx: ab.clone(),
            pool: pool.clone(),
            sent: Cell::new(0),
        },
        LinkDev {
            rx: ab,
            tx: ba,
            pool,
            sent: Cell::new(0),
        },
    )
}

struct LinkRx<'a> {
    packet: Packet,
    pool: &'a RefCell<Vec<Vec<u8>>>,
}

struct LinkTx<'a> {
    tx: &'a RefCell<VecDeque<Packet>>,
    pool: &'a RefCell<Vec<Vec<u8>>>,
    sent: &'a Cell<u64>,
}

impl phy::RxToken for LinkRx<'_> {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        let r = f(&self.packet.buf[..self.packet.len]);
        self.pool.borrow_mut().push(self.packet.buf);
        r
    }
}

impl phy::TxToken for LinkTx<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let mut buf = self
            .pool
            .borrow_mut()
            .pop()
            .unwrap_or_else(|| vec![0; 1514]);
        if buf.len() < len {
            buf.resize(len, 0);
        }
        let r = f(&mut buf[..len]);
        self.tx.borrow_mut().push_back(Packet { buf, len });
        self.sent.set(self.sent.get() + 1);
        r
    }
}

impl Device for LinkDev {
    type RxToken<'a> = LinkRx<'a>;
    type TxToken<'a> = LinkTx<'a>;

    fn receive(&mut self, _t: smoltcp::time::Instant) -> Option<(LinkRx<'_>, LinkTx<'_>)> {
        let packet = self.rx.borrow_mut().pop_front()?;
        Some((
            LinkRx {
                packet,
                pool: &self.pool,
            },
            LinkTx {
                tx: &self.tx,
                pool: &self.pool,
                sent: &self.sent,
            },
        ))
    }

    fn transmit(&mut self, _t: smoltcp::time::Instant) -> Option<LinkTx<'_>> {
        Some(LinkTx {
            tx: &self.tx,
            pool: &self.pool,
            sent: &self.sent,
        })
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut c = DeviceCapabilities::default();
        c.medium = Medium::Ethernet;
        c.max_transmission_unit = 1514;
        c
    }
}

/// One smoltcp host: an interface, its device and one TCP socket.
struct SmolHost {
    iface: Interface,
    dev: LinkDev,
    sockets: SocketSet<'static>,
    handle: SocketHandle,
}

impl SmolHost {
    fn new(mut dev: LinkDev, mac: MacAddr, ip: Ipv4Addr) -> Self {
        let mut iface = Interface::new(
            Config::new(HardwareAddress::Ethernet(mac)),
            &mut dev,
            smoltcp::time::Instant::from_micros(0),
        );
        iface.update_ip_addrs(|a| {
            a.push(IpCidr::new(IpAddress::Ipv4(ip), 24)).unwrap();
        });
        let mut sock = tcp::Socket::new(
            tcp::SocketBuffer::new(vec![0; SMOL_BUF]),
            tcp::SocketBuffer::new(vec![0; SMOL_BUF]),
        );
        sock.set_nagle_enabled(false);
        let mut sockets = SocketSet::new(vec![]);
        let handle = sockets.add(sock);
        SmolHost {
            iface,
            dev,
            sockets,
            handle,
        }
    }

    #[inline]
    fn poll(&mut self, now: smoltcp::time::Instant) {
        self.iface.poll(now, &mut self.dev, &mut self.sockets);
    }

    fn socket(&mut self) -> &mut tcp::Socket<'static> {
        self.sockets.get_mut::<tcp::Socket>(self.handle)
    }
}

pub(crate) struct Smols {
    client: SmolHost,
    server: SmolHost,
}

impl Smols {
    /// Two interfaces and an established connection, at fake time `*t` (advanced).
    pub(crate) fn new(t: &mut u64) -> Self {
        let (a, b) = smol_pair();
        let mut server = SmolHost::new(a, SERVER_MAC, SERVER_IP);
        let mut client = SmolHost::new(b, CLIENT_MAC, CLIENT_IP);
        server.socket().listen(PORT).expect("listen");
        let cx = client.iface.context();
        client
            .sockets
            .get_mut::<tcp::Socket>(client.handle)
            .connect(cx, (IpAddress::Ipv4(SERVER_IP), PORT), CLIENT_PORT)
            .expect("connect");
        let mut me = Smols { client, server };
        for _ in 0..1000 {
            *t += 1;
            me.poll(*t);
            if me.client.socket().state() == tcp::State::Established
                && me.server.socket().state() == tcp::State::Established
            {
                break;
            }
        }
        assert_eq!(me.client.socket().state(), tcp::State::Established);
        assert_eq!(me.server.socket().state(), tcp::State::Established);
        me
    }
}

fn socket_write(s: &mut tcp::Socket<'_>, data: &[u8]) -> usize {
    s.send_slice(data).expect("send")
}

fn socket_read(s: &mut tcp::Socket<'_>, buf: &mut [u8]) -> usize {
    s.recv_slice(buf).expect("recv")
}

impl Stacks for Smols {
    #[inline]
    fn poll(&mut self, t: u64) {
        let now = smoltcp::time::Instant::from_micros(t as i64);
        self.client.poll(now);
        self.server.poll(now);
    }
    fn client_write(&mut self, data: &[u8]) -> usize {
        socket_write(self.client.socket(), data)
    }
    fn client_read(&mut self, buf: &mut [u8]) -> usize {
        socket_read(self.client.socket(), buf)
    }
    fn server_write(&mut self, data: &[u8]) -> usize {
        socket_write(self.server.socket(), data)
    }
    fn server_read(&mut self, buf: &mut [u8]) -> usize {
        socket_read(self.server.socket(), buf)
    }
    fn frames(&self) -> u64 {
        self.client.dev.sent.get() + self.server.dev.sent.get()
    }
}
