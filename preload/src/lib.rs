//! POSIX sockets on a [`flextoe`] engine for unmodified programs.
//!
//! Built as a shared library and loaded with `LD_PRELOAD`, this crate takes over the socket
//! calls of TCP over IPv4 on the engine's address and leaves everything else to the C
//! library:
//!
//! ```sh
//! cargo build --release -p flextoe-preload
//! FLEXTOE_IP=10.0.0.2 FLEXTOE_IFACE=veth1 \
//!   LD_PRELOAD=target/release/libflextoe_preload.so python3 -m http.server 8080
//! ```
//!
//! # What is an engine socket
//!
//! - A TCP socket bound to the engine's address, or to any address (`INADDR_ANY`), then
//!   listening: the engine accepts its connections.
//! - A TCP socket connecting to an address inside the engine's subnet (`FLEXTOE_PREFIX`,
//!   default /24), other than the engine's own.
//!
//! Everything else (UDP, Unix sockets, IPv6, loopback, files, pipes) goes to the kernel
//! unchanged. An engine socket keeps the kernel socket the program created as a placeholder
//! for its descriptor number, so `poll`, `select` and epoll take engine sockets and kernel
//! descriptors in one set.
//!
//! # Modes
//!
//! - In-process (`FLEXTOE_MODE=inprocess`, the default): the engine runs on a thread of the
//!   program, on the port `FLEXTOE_BACKEND` names (AF_PACKET by default, AF_XDP, TAP) on
//!   `FLEXTOE_IFACE`.
//! - Service (`FLEXTOE_MODE=service`): the program attaches to `flextoe-serviced`
//!   ([`service`]) over its Unix socket; each connection's bytes go through shared memory
//!   ([`shm`], [`client`]).
//!
//! See [`engine`] for every variable.
//!
//! # Calls
//!
//! `bind` (the port is taken at once, a free one for port 0), `listen`, `accept`/`accept4`, `connect` (blocking, and nonblocking with
//! `EINPROGRESS` and `SO_ERROR`), `read`/`readv`/`recv`/`recvfrom`/`recvmsg` (with
//! `MSG_PEEK`, `MSG_DONTWAIT`, `MSG_WAITALL`), `write`/`writev`/`send`/`sendto`/`sendmsg`
//! (`EPIPE` and `SIGPIPE` unless `MSG_NOSIGNAL`), `close`, `close_range`, `shutdown`,
//! `dup`/`dup2`/`dup3`, `fcntl` (`O_NONBLOCK`, `F_DUPFD`), `ioctl` (`FIONREAD`, `SIOCOUTQ`, `FIONBIO`),
//! `setsockopt`/`getsockopt` (`SO_RCVTIMEO`/`SO_SNDTIMEO` bound blocking calls, `SO_LINGER`
//! at zero makes `close` a RST),
//! `getsockname`/`getpeername`, `sendfile`, `poll`/`ppoll`, `select`/`pselect`,
//! `epoll_ctl`/`epoll_wait`/`epoll_pwait`/`epoll_pwait2` (level- and edge-triggered,
//! one-shot; a socket registered before it was bound or connected is taken over from the
//! kernel's set, [`adopt`]), and the fortified `__read_chk`, `__recv_chk`, `__recvfrom_chk`, `__poll_chk`.
//! A signal handler ends a blocking call with `EINTR` as on Linux ([`signals`]).
//!
//! After `fork` the child's engine sockets are let go of: the engine runs in the parent,
//! and the child's descriptors fail as unconnected sockets do. In service mode the child
//! also closes its copies of the service's sockets, so the parent's session ends with the
//! parent.
//!
//! This crate is the socket edge of the engine: a foreign-function boundary, so its calls
//! are `unsafe extern "C"` functions, each unsafe block with its reason.

pub mod adopt;
pub mod calls;
pub mod client;
pub mod conn;
pub mod engine;
pub mod events;
pub mod io;
pub mod linger;
pub mod opts;
pub mod peer;
pub mod real;
pub mod sendfile;
pub mod service;
pub mod shm;
pub mod signals;
pub mod sock;
