//! [`Error`]: what the socket API reports, and how it maps onto `std::io` errors.

use std::io;

/// Errors of the socket API.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum Error {
    /// The local port is taken.
    #[error("address in use: port {0}")]
    AddrInUse(u16),
    /// No local port is free.
    #[error("no free ephemeral port")]
    NoFreePort,
    /// The peer answered the SYN with a RST, or an ICMP protocol or port unreachable
    /// came back for it; or the connection timed out after such an ICMP error.
    #[error("connection refused")]
    ConnectionRefused,
    /// The connection was reset.
    #[error("connection reset")]
    ConnectionReset,
    /// The handshake or the peer timed out.
    #[error("timed out")]
    TimedOut,
    /// The peer's MAC address could not be resolved, or an ICMP destination unreachable or
    /// time exceeded came back for the SYN; or the connection timed out after such an
    /// ICMP error.
    #[error("host unreachable")]
    HostUnreachable,
    /// The engine that served this handle is gone.
    #[error("engine stopped")]
    EngineGone,
    /// Too many connections.
    #[error("connection table full")]
    TooManyConnections,
    /// A connection from a bound port ([`BoundPort`](super::BoundPort)) to an address and
    /// port that another connection of that local port has already.
    #[error("connection's addresses and ports in use")]
    TupleInUse,
    /// An argument was invalid.
    #[error("invalid argument: {0}")]
    InvalidInput(&'static str),
}

impl From<Error> for io::Error {
    fn from(e: Error) -> io::Error {
        let kind = match e {
            Error::AddrInUse(_) => io::ErrorKind::AddrInUse,
            Error::NoFreePort | Error::TooManyConnections | Error::TupleInUse => {
                io::ErrorKind::AddrNotAvailable
            }
            Error::ConnectionRefused => io::ErrorKind::ConnectionRefused,
            Error::ConnectionReset => io::ErrorKind::ConnectionReset,
            Error::TimedOut => io::ErrorKind::TimedOut,
            Error::HostUnreachable => io::ErrorKind::HostUnreachable,
            Error::EngineGone => io::ErrorKind::NotConnected,
            Error::InvalidInput(_) => io::ErrorKind::InvalidInput,
        };
        io::Error::new(kind, e)
    }
}

/// Result of the socket API.
pub type Result<T> = std::result::Result<T, Error>;
