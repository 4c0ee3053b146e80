//! A small filter language over a frame's headers, in the spirit of tcpdump's:
//!
//! ```text
//! expr      := term ("or" term)*
//! term      := factor ("and" factor)*
//! factor    := "not" factor | "(" expr ")" | primitive
//! primitive := "tcp" | "udp" | "ip" | "arp" | "vlan" [VID]
//!            | ["src" | "dst"] "host" ADDRESS
//!            | ["src" | "dst"] "net" PREFIX
//!            | ["src" | "dst"] "port" PORT ["-" PORT]
//!            | "len" ("<" | "<=" | ">" | ">=" | "==" | "!=") NUMBER
//!            | "dscp" NUMBER
//!            | "syn" | "ack" | "fin" | "rst" | "psh" | "urg" | "ece" | "cwr"
//! ```
//!
//! `host`, `net` and `port` without `src` or `dst` match either side. A flag matches a TCP
//! segment that has it set. `len` is the frame's length in bytes.
//!
//! ```
//! use flextoe::stages::ext::filter::Filter;
//!
//! let f: Filter = "tcp and port 80 and (syn or fin) and not src net 10.0.0.0/8".parse().unwrap();
//! assert!("len >".parse::<Filter>().is_err());
//! # drop(f);
//! ```

use std::net::Ipv4Addr;
use std::str::FromStr;

use super::headers::{FrameInfo, ETHERTYPE_IPV4, PROTO_TCP, PROTO_UDP};
use super::rules::{ParseError, PortRange, Prefix};
use crate::wire::flags;

/// Which side of the frame an address or port term looks at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// The source.
    Src,
    /// The destination.
    Dst,
    /// Either.
    Any,
}

/// A comparison.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cmp {
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `>`
    Gt,
    /// `>=`
    Ge,
    /// `==`
    Eq,
    /// `!=`
    Ne,
}

/// A parsed filter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Filter {
    /// Every frame.
    True,
    /// Both.
    And(Box<Filter>, Box<Filter>),
    /// Either.
    Or(Box<Filter>, Box<Filter>),
    /// Not.
    Not(Box<Filter>),
    /// TCP over IPv4.
    Tcp,
    /// UDP over IPv4.
    Udp,
    /// IPv4.
    Ip,
    /// ARP.
    Arp,
    /// 802.1Q-tagged, of this VLAN if given.
    Vlan(Option<u16>),
    /// An address in a prefix (a host is a /32).
    Net(Side, Prefix),
    /// A TCP or UDP port in a range.
    Port(Side, PortRange),
    /// The frame's length.
    Len(Cmp, usize),
    /// The DSCP.
    Dscp(u8),
    /// A TCP flag set.
    Flag(u8),
}

const MAX_DEPTH: usize = 64;
/// The most words a filter may have: a chain of `and`s or `or`s nests its tree one level a
/// term, which matching and dropping walk recursively (100,000 terms overflowed the stack).
const MAX_TOKENS: usize = 1024;

impl Filter {
    /// Whether a frame with headers `i` matches.
    pub fn matches(&self, i: &FrameInfo) -> bool {
        let ip = i.ethertype == ETHERTYPE_IPV4;
        match self {
            Filter::True => true,
            Filter::And(a, b) => a.matches(i) && b.matches(i),
            Filter::Or(a, b) => a.matches(i) || b.matches(i),
            Filter::Not(a) => !a.matches(i),
            Filter::Tcp => ip && i.proto == PROTO_TCP,
            Filter::Udp => ip && i.proto == PROTO_UDP,
            Filter::Ip => ip,
            Filter::Arp => i.ethertype == 0x0806,
            Filter::Vlan(v) => i.vid.is_some() && v.is_none_or(|v| i.vid == Some(v)),
            Filter::Net(side, p) => {
                ip && match side {
                    Side::Src => p.contains(i.src),
                    Side::Dst => p.contains(i.dst),
                    Side::Any => p.contains(i.src) || p.contains(i.dst),
                }
            }
            Filter::Port(side, r) => {
                ip && (i.proto == PROTO_TCP || i.proto == PROTO_UDP)
                    && match side {
                        Side::Src => r.contains(i.sport),
                        Side::Dst => r.contains(i.dport),
                        Side::Any => r.contains(i.sport) || r.contains(i.dport),
                    }
            }
            Filter::Len(c, n) => {
                let l = i.len;
                match c {
                    Cmp::Lt => l < *n,
                    Cmp::Le => l <= *n,
                    Cmp::Gt => l > *n,
                    Cmp::Ge => l >= *n,
                    Cmp::Eq => l == *n,
                    Cmp::Ne => l != *n,
                }
            }
            Filter::Dscp(d) => ip && i.dscp == *d,
            Filter::Flag(f) => ip && i.proto == PROTO_TCP && i.tcp_flags & f != 0,
        }
    }
}

fn tokens(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '(' | ')' => {
                if !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
                out.push(c.to_string());
            }
            '<' | '>' | '=' | '!' => {
                if !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
                let mut op = c.to_string();
                if chars.peek() == Some(&'=') {
                    op.push('=');
                    chars.next();
                }
                out.push(op);
            }
            c if c.is_whitespace() => {
                if !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
            }
            c => cur.push(c),
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

struct Parser {
    toks: Vec<String>,
    pos: usize,
    text: String,
}

impl Parser {
    fn bad(&self) -> ParseError {
        ParseError::new("filter", &self.text)
    }

    fn peek(&self) -> Option<&str> {
        self.toks.get(self.pos).map(String::as_str)
    }

    fn next(&mut self) -> Result<String, ParseError> {
        let t = self.toks.get(self.pos).cloned().ok_or_else(|| self.bad())?;
        self.pos += 1;
        Ok(t)
    }

    fn expr(&mut self, depth: usize) -> Result<Filter, ParseError> {
        if depth > MAX_DEPTH {
            return Err(self.bad());
        }
        let mut f = self.term(depth)?;
        while self.peek() == Some("or") {
            self.pos += 1;
            f = Filter::Or(Box::new(f), Box::new(self.term(depth)?));
        }
        Ok(f)
    }

    fn term(&mut self, depth: usize) -> Result<Filter, ParseError> {
        let mut f = self.factor(depth)?;
        while self.peek() == Some("and") {
            self.pos += 1;
            f = Filter::And(Box::new(f), Box::new(self.factor(depth)?));
        }
        Ok(f)
    }

    fn factor(&mut self, depth: usize) -> Result<Filter, ParseError> {
        if depth > MAX_DEPTH {
            return Err(self.bad());
        }
        match self.next()?.as_str() {
            "not" => Ok(Filter::Not(Box::new(self.factor(depth + 1)?))),
            "(" => {
                let f = self.expr(depth + 1)?;
                if self.next()? != ")" {
                    return Err(self.bad());
                }
                Ok(f)
            }
            "tcp" => Ok(Filter::Tcp),
            "udp" => Ok(Filter::Udp),
            "ip" => Ok(Filter::Ip),
            "arp" => Ok(Filter::Arp),
            "vlan" => {
                let vid = match self.peek().and_then(|t| t.parse::<u16>().ok()) {
                    Some(v) if v < 4096 => {
                        self.pos += 1;
                        Some(v)
                    }
                    Some(_) => return Err(self.bad()),
                    None => None,
                };
                Ok(Filter::Vlan(vid))
            }
            "src" => self.sided(Side::Src),
            "dst" => self.sided(Side::Dst),
            "host" | "net" | "port" => {
                self.pos -= 1;
                self.sided(Side::Any)
            }
            "len" => {
                let cmp = match self.next()?.as_str() {
                    "<" => Cmp::Lt,
                    "<=" => Cmp::Le,
                    ">" => Cmp::Gt,
                    ">=" => Cmp::Ge,
                    "==" | "=" => Cmp::Eq,
                    "!=" => Cmp::Ne,
                    _ => return Err(self.bad()),
                };
                let n = self.next()?.parse().map_err(|_| self.bad())?;
                Ok(Filter::Len(cmp, n))
            }
            "dscp" => {
                let d: u8 = self.next()?.parse().map_err(|_| self.bad())?;
                if d > 63 {
                    return Err(self.bad());
                }
                Ok(Filter::Dscp(d))
            }
            "syn" => Ok(Filter::Flag(flags::SYN)),
            "ack" => Ok(Filter::Flag(flags::ACK)),
            "fin" => Ok(Filter::Flag(flags::FIN)),
            "rst" => Ok(Filter::Flag(flags::RST)),
            "psh" => Ok(Filter::Flag(flags::PSH)),
            "urg" => Ok(Filter::Flag(flags::URG)),
            "ece" => Ok(Filter::Flag(flags::ECE)),
            "cwr" => Ok(Filter::Flag(flags::CWR)),
            _ => Err(self.bad()),
        }
    }

    fn sided(&mut self, side: Side) -> Result<Filter, ParseError> {
        let what = self.next()?;
        let arg = self.next()?;
        match what.as_str() {
            "host" => {
                let a: Ipv4Addr = arg.parse().map_err(|_| self.bad())?;
                Ok(Filter::Net(side, Prefix::new(a, 32)))
            }
            "net" => Ok(Filter::Net(side, arg.parse()?)),
            "port" => Ok(Filter::Port(side, arg.parse()?)),
            _ => Err(self.bad()),
        }
    }
}

impl FromStr for Filter {
    type Err = ParseError;

    /// Parse a filter; an empty string matches every frame.
    fn from_str(s: &str) -> Result<Self, ParseError> {
        let mut p = Parser {
            toks: tokens(s),
            pos: 0,
            text: s.to_string(),
        };
        if p.toks.is_empty() {
            return Ok(Filter::True);
        }
        if p.toks.len() > MAX_TOKENS {
            return Err(p.bad());
        }
        let f = p.expr(0)?;
        if p.pos != p.toks.len() {
            return Err(p.bad());
        }
        Ok(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tcp(src: [u8; 4], sport: u16, dport: u16, fl: u8, len: usize) -> FrameInfo {
        FrameInfo {
            ethertype: ETHERTYPE_IPV4,
            src: src.into(),
            dst: Ipv4Addr::new(192, 0, 2, 1),
            proto: PROTO_TCP,
            sport,
            dport,
            tcp_flags: fl,
            len,
            ..FrameInfo::default()
        }
    }

    #[test]
    fn parses_and_matches() {
        let f: Filter = "tcp and port 80 and (syn or fin) and not src net 10.0.0.0/8"
            .parse()
            .unwrap();
        assert!(f.matches(&tcp([1, 2, 3, 4], 5000, 80, flags::SYN, 60)));
        assert!(!f.matches(&tcp([10, 2, 3, 4], 5000, 80, flags::SYN, 60)));
        assert!(!f.matches(&tcp([1, 2, 3, 4], 5000, 80, flags::ACK, 60)));
        assert!(!f.matches(&tcp([1, 2, 3, 4], 5000, 81, flags::SYN, 60)));
        let g: Filter = "dst port 8000-8100 or len>=1500".parse().unwrap();
        assert!(g.matches(&tcp([1, 1, 1, 1], 1, 8050, 0, 60)));
        assert!(g.matches(&tcp([1, 1, 1, 1], 1, 9, 0, 1514)));
        assert!(!g.matches(&tcp([1, 1, 1, 1], 8050, 9, 0, 60)));
        let h: Filter = "src host 1.1.1.1 and not vlan".parse().unwrap();
        assert!(h.matches(&tcp([1, 1, 1, 1], 1, 2, 0, 60)));
        assert_eq!("".parse::<Filter>().unwrap(), Filter::True);
        let arp = FrameInfo {
            ethertype: 0x0806,
            ..FrameInfo::default()
        };
        assert!("arp".parse::<Filter>().unwrap().matches(&arp));
        assert!(!"port 80".parse::<Filter>().unwrap().matches(&arp));
    }

    #[test]
    fn refuses_what_it_cannot_read() {
        for bad in [
            "len >",
            "tcp and",
            "(tcp",
            "tcp)",
            "host 1.2.3",
            "port 99999",
            "vlan 5000",
            "dscp 64",
            "frobnicate",
            "src len 3",
            "net 10.0.0.0/40",
        ] {
            assert!(bad.parse::<Filter>().is_err(), "{bad}");
        }
        let deep = "(".repeat(1000) + "tcp" + &")".repeat(1000);
        assert!(deep.parse::<Filter>().is_err(), "nesting is bounded");
        let nots = "not ".repeat(1000) + "tcp";
        assert!(nots.parse::<Filter>().is_err());
        let chain = "tcp".to_string() + &" and tcp".repeat(100_000);
        assert!(chain.parse::<Filter>().is_err(), "chains are bounded");
        let long = "tcp".to_string() + &" and tcp".repeat(500);
        let f: Filter = long.parse().expect("a long chain within the bound");
        assert!(f.matches(&tcp([1, 2, 3, 4], 1, 2, 0, 60)));
    }
}
