//! The match terms the firewall and the classifier share: address prefixes and port ranges,
//! parsed from text (`"10.0.0.0/8"`, `"8000-8099"`).

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

/// An IPv4 prefix (`addr/len`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Prefix {
    addr: u32,
    len: u8,
}

impl Prefix {
    /// `addr/len` (`len` at most 32; the host bits of `addr` are ignored).
    pub fn new(addr: Ipv4Addr, len: u8) -> Self {
        let len = len.min(32);
        Prefix {
            addr: u32::from(addr) & Self::mask(len),
            len,
        }
    }

    fn mask(len: u8) -> u32 {
        if len == 0 {
            0
        } else {
            u32::MAX << (32 - u32::from(len))
        }
    }

    /// Whether `ip` is inside.
    #[inline]
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & Self::mask(self.len) == self.addr
    }
}

impl fmt::Display for Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", Ipv4Addr::from(self.addr), self.len)
    }
}

/// What was wrong with a rule's text.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("bad {what}: {text:?}")]
pub struct ParseError {
    /// What was being parsed.
    pub what: &'static str,
    /// The text.
    pub text: String,
}

impl ParseError {
    pub(crate) fn new(what: &'static str, text: &str) -> Self {
        ParseError {
            what,
            text: text.to_string(),
        }
    }
}

impl FromStr for Prefix {
    type Err = ParseError;

    /// `a.b.c.d/len` or a bare address (a /32).
    fn from_str(s: &str) -> Result<Self, ParseError> {
        let bad = || ParseError::new("prefix", s);
        let (a, l) = s.split_once('/').unwrap_or((s, "32"));
        let addr: Ipv4Addr = a.trim().parse().map_err(|_| bad())?;
        let len: u8 = l.trim().parse().map_err(|_| bad())?;
        if len > 32 {
            return Err(bad());
        }
        Ok(Prefix::new(addr, len))
    }
}

/// An inclusive range of ports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PortRange {
    /// First port.
    pub lo: u16,
    /// Last port.
    pub hi: u16,
}

impl PortRange {
    /// `lo..=hi` (swapped if given the wrong way round).
    pub fn new(lo: u16, hi: u16) -> Self {
        PortRange {
            lo: lo.min(hi),
            hi: lo.max(hi),
        }
    }

    /// One port.
    pub fn one(p: u16) -> Self {
        PortRange { lo: p, hi: p }
    }

    /// Whether `p` is inside.
    #[inline]
    pub fn contains(&self, p: u16) -> bool {
        (self.lo..=self.hi).contains(&p)
    }
}

impl From<std::ops::RangeInclusive<u16>> for PortRange {
    fn from(r: std::ops::RangeInclusive<u16>) -> Self {
        PortRange::new(*r.start(), *r.end())
    }
}

impl From<u16> for PortRange {
    fn from(p: u16) -> Self {
        PortRange::one(p)
    }
}

impl FromStr for PortRange {
    type Err = ParseError;

    /// `port` or `lo-hi`.
    fn from_str(s: &str) -> Result<Self, ParseError> {
        let bad = || ParseError::new("port range", s);
        match s.split_once('-') {
            Some((a, b)) => Ok(PortRange::new(
                a.trim().parse().map_err(|_| bad())?,
                b.trim().parse().map_err(|_| bad())?,
            )),
            None => Ok(PortRange::one(s.trim().parse().map_err(|_| bad())?)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_and_ranges_parse_and_match() {
        let p: Prefix = "10.1.2.3/8".parse().unwrap();
        assert_eq!(p.to_string(), "10.0.0.0/8");
        assert!(p.contains(Ipv4Addr::new(10, 200, 0, 1)));
        assert!(!p.contains(Ipv4Addr::new(11, 0, 0, 1)));
        let all: Prefix = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains(Ipv4Addr::new(1, 2, 3, 4)));
        let host: Prefix = "192.0.2.7".parse().unwrap();
        assert!(host.contains(Ipv4Addr::new(192, 0, 2, 7)));
        assert!(!host.contains(Ipv4Addr::new(192, 0, 2, 8)));
        for bad in ["10.0.0.0/33", "10.0.0/8", "x", "10.0.0.0/"] {
            assert!(bad.parse::<Prefix>().is_err(), "{bad}");
        }
        let r: PortRange = "9000-8000".parse().unwrap();
        assert_eq!((r.lo, r.hi), (8000, 9000));
        assert!(r.contains(8500) && !r.contains(7999));
        assert_eq!("80".parse::<PortRange>().unwrap(), PortRange::one(80));
        assert!("80-".parse::<PortRange>().is_err());
        assert!("70000".parse::<PortRange>().is_err());
    }
}
