//! The memcached text protocol, without I/O: a shared [`Store`] and one [`Session`] per
//! connection that turns request bytes into reply bytes.
//!
//! Commands: get, gets (several keys), set, add, replace, append, prepend, cas, delete, incr,
//! decr, touch, flush_all, version, quit, with memcached's replies for malformed commands
//! (`ERROR`, `CLIENT_ERROR ...`, `SERVER_ERROR object too large for cache`) and `noreply`.

#![allow(dead_code)]

use std::collections::hash_map::DefaultHasher;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::io::{self, Write};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

/// Longest key.
pub const KEY_MAX: usize = 250;
/// memcached's default largest item (1 MiB) less its fixed item header; what is left holds
/// the key, a NUL, the flags (when not zero), the value and its CRLF.
const ITEM_SPACE: usize = 1024 * 1024 - 56;
/// Longest command line; memcached closes the connection on a longer one.
const LINE_MAX: usize = 2048;
/// Longest `get` / `gets` line (memcached takes them in pieces; this bounds the memory).
const GET_LINE_MAX: usize = 1 << 20;
/// Relative expiration times are at most 30 days; larger values are Unix times.
const REALTIME_MAXDELTA: i64 = 60 * 60 * 24 * 30;
const SHARDS: usize = 16;

#[derive(Clone)]
struct Item {
    flags: u32,
    /// Unix time in seconds after which the item is gone; 0 for never.
    expires: i64,
    data: Vec<u8>,
    cas: u64,
    /// When it was stored (for `flush_all` with a delay).
    stored: i64,
}

/// Largest value memcached stores for this key and flags.
pub fn value_max(key_len: usize, flags: u32) -> usize {
    ITEM_SPACE - key_len - 1 - if flags != 0 { 4 } else { 0 } - 2
}

/// Items, in shards by key hash.
pub struct Store {
    shards: Vec<Mutex<HashMap<Vec<u8>, Item>>>,
    next_cas: std::sync::atomic::AtomicU64,
    /// Items stored at or before this Unix time are invalid once it has passed.
    flushed_at: std::sync::atomic::AtomicI64,
    /// Commands served.
    pub commands: std::sync::atomic::AtomicU64,
}

impl Default for Store {
    fn default() -> Self {
        Store {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            next_cas: std::sync::atomic::AtomicU64::new(1),
            flushed_at: std::sync::atomic::AtomicI64::new(i64::MIN),
            commands: std::sync::atomic::AtomicU64::new(0),
        }
    }
}

fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// An expiration time as memcached reads it: 0 never, negative already, up to 30 days
/// relative, beyond that absolute.
fn expiry(exptime: i64, now: i64) -> i64 {
    if exptime == 0 {
        0
    } else if exptime < 0 {
        now - 1
    } else if exptime <= REALTIME_MAXDELTA {
        now + exptime
    } else {
        exptime
    }
}

enum Store1 {
    Set,
    Add,
    Replace,
    Append,
    Prepend,
    Cas(u64),
}

impl Store {
    fn shard(&self, key: &[u8]) -> &Mutex<HashMap<Vec<u8>, Item>> {
        let mut h = DefaultHasher::new();
        key.hash(&mut h);
        &self.shards[h.finish() as usize % SHARDS]
    }

    fn cas_id(&self) -> u64 {
        self.next_cas
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    }

    fn live(&self, it: &Item, now: i64) -> bool {
        let flushed = self.flushed_at.load(std::sync::atomic::Ordering::Relaxed);
        (it.expires == 0 || it.expires > now) && !(now >= flushed && it.stored <= flushed)
    }

    fn get(&self, key: &[u8]) -> Option<Item> {
        let now = now_secs();
        let mut m = self.shard(key).lock().unwrap();
        match m.get(key) {
            Some(it) if self.live(it, now) => Some(it.clone()),
            Some(_) => {
                m.remove(key);
                None
            }
            None => None,
        }
    }

    fn store(
        &self,
        how: Store1,
        key: &[u8],
        flags: u32,
        exptime: i64,
        data: Vec<u8>,
    ) -> &'static str {
        let now = now_secs();
        let mut m = self.shard(key).lock().unwrap();
        let exists = m.get(key).is_some_and(|it| self.live(it, now));
        if !exists {
            m.remove(key);
        }
        let fresh = |data: Vec<u8>, cas: u64| Item {
            flags,
            expires: expiry(exptime, now),
            data,
            cas,
            stored: now,
        };
        match how {
            Store1::Set => {
                m.insert(key.to_vec(), fresh(data, self.cas_id()));
                "STORED"
            }
            Store1::Add if exists => "NOT_STORED",
            Store1::Add => {
                m.insert(key.to_vec(), fresh(data, self.cas_id()));
                "STORED"
            }
            Store1::Replace if !exists => "NOT_STORED",
            Store1::Replace => {
                m.insert(key.to_vec(), fresh(data, self.cas_id()));
                "STORED"
            }
            Store1::Append | Store1::Prepend if !exists => "NOT_STORED",
            Store1::Append | Store1::Prepend => {
                let cas = self.cas_id();
                let it = m.get_mut(key).expect("exists");
                if it.data.len() + data.len() > value_max(key.len(), it.flags) {
                    return "NOT_STORED";
                }
                if matches!(how, Store1::Append) {
                    it.data.extend_from_slice(&data);
                } else {
                    let mut d = data;
                    d.extend_from_slice(&it.data);
                    it.data = d;
                }
                it.cas = cas;
                "STORED"
            }
            Store1::Cas(_) if !exists => "NOT_FOUND",
            Store1::Cas(c) => {
                if m.get(key).map(|it| it.cas) == Some(c) {
                    m.insert(key.to_vec(), fresh(data, self.cas_id()));
                    "STORED"
                } else {
                    "EXISTS"
                }
            }
        }
    }

    fn delete(&self, key: &[u8]) -> bool {
        let now = now_secs();
        let mut m = self.shard(key).lock().unwrap();
        match m.remove(key) {
            Some(it) => self.live(&it, now),
            None => false,
        }
    }

    fn touch(&self, key: &[u8], exptime: i64) -> bool {
        let now = now_secs();
        let mut m = self.shard(key).lock().unwrap();
        match m.get_mut(key) {
            Some(it) if self.live(it, now) => {
                it.expires = expiry(exptime, now);
                true
            }
            _ => false,
        }
    }

    /// `Ok(Some(new))`, `Ok(None)` when missing, `Err(())` when the value is not a number.
    fn delta(&self, key: &[u8], incr: bool, delta: u64) -> Result<Option<u64>, ()> {
        let now = now_secs();
        let mut m = self.shard(key).lock().unwrap();
        let cas = self.cas_id();
        let Some(it) = m.get_mut(key).filter(|it| self.live(it, now)) else {
            return Ok(None);
        };
        let v = parse_u64(&it.data).ok_or(())?;
        let new = if incr {
            v.wrapping_add(delta)
        } else {
            v.saturating_sub(delta)
        };
        let text = new.to_string().into_bytes();
        if text.len() <= it.data.len() {
            // In place, padded with spaces, as memcached does.
            let old = it.data.len();
            it.data.clear();
            it.data.extend_from_slice(&text);
            it.data.resize(old, b' ');
        } else {
            it.data = text;
        }
        it.cas = cas;
        Ok(Some(new))
    }

    /// `flush_all`: now, or (with a delay) every item stored before the delay runs out.
    /// Items stored after an immediate flush, in the same second too, stay.
    fn flush(&self, delay: i64) {
        if delay > 0 {
            let at = expiry(delay, now_secs()) - 1;
            self.flushed_at
                .store(at, std::sync::atomic::Ordering::Relaxed);
        } else {
            self.flushed_at
                .store(i64::MIN, std::sync::atomic::Ordering::Relaxed);
            for s in &self.shards {
                s.lock().unwrap().clear();
            }
        }
    }
}

fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r')
}

/// `strtoull`/`strtoll` as memcached's `safe_strto*` use them: leading white space, an
/// optional sign, at least one digit, then white space or the end. Returns the magnitude,
/// whether it was negative, and `None` on no digits, trailing garbage or overflow.
fn strto(b: &[u8]) -> Option<(u64, bool)> {
    let b = &b[..b.iter().position(|&c| c == 0).unwrap_or(b.len())];
    let mut i = 0;
    while i < b.len() && is_space(b[i]) {
        i += 1;
    }
    let neg = match b.get(i) {
        Some(b'-') => {
            i += 1;
            true
        }
        Some(b'+') => {
            i += 1;
            false
        }
        _ => false,
    };
    let digits = i;
    let mut v: u64 = 0;
    while i < b.len() && b[i].is_ascii_digit() {
        v = v.checked_mul(10)?.checked_add(u64::from(b[i] - b'0'))?;
        i += 1;
    }
    if i == digits || (i < b.len() && !is_space(b[i])) {
        return None;
    }
    Some((v, neg))
}

/// `safe_strtoull`: a negative number is refused unless it wraps to a small one ("-0").
/// A NUL ends the text, as it ends a C string.
fn parse_u64(b: &[u8]) -> Option<u64> {
    let (v, neg) = strto(b)?;
    let v = if neg { v.wrapping_neg() } else { v };
    if (v as i64) < 0 && neg {
        return None;
    }
    Some(v)
}

/// `safe_strtoul` into a 32-bit field: memcached keeps the low 32 bits.
fn parse_u32(b: &[u8]) -> Option<u32> {
    parse_u64(b).map(|v| v as u32)
}

/// `safe_strtol` into a 32-bit field: a `long`, of which memcached keeps the low 32 bits.
fn parse_i32(b: &[u8]) -> Option<i64> {
    let (v, neg) = strto(b)?;
    let l: i64 = if neg {
        if v > i64::MAX as u64 + 1 {
            return None;
        }
        (v as i64).wrapping_neg()
    } else {
        i64::try_from(v).ok()?
    };
    Some(i64::from(l as i32))
}

/// What a session wants after a batch of input.
#[derive(Debug, PartialEq, Eq)]
pub enum Next {
    /// Keep reading.
    More,
    /// Close the connection (after sending what was produced).
    Close,
}

/// A storage command waiting for its data block.
struct Pending {
    how: Store1,
    key: Vec<u8>,
    flags: u32,
    exptime: i64,
    /// Data bytes plus the closing CRLF.
    need: usize,
    noreply: bool,
}

/// One connection's protocol state.
#[derive(Default)]
pub struct Session {
    buf: Vec<u8>,
    pending: Option<Pending>,
    /// Bytes of a too-large value still to be read and dropped.
    swallow: usize,
}

impl Session {
    /// Bytes held for an incomplete command or data block.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// Take `input` and write every complete reply to `out`. A write error closes.
    pub fn feed(&mut self, store: &Store, input: &[u8], out: &mut impl Write) -> Next {
        let mut input = input;
        if self.swallow > 0 {
            let k = self.swallow.min(input.len());
            self.swallow -= k;
            input = &input[k..];
        }
        self.buf.extend_from_slice(input);
        let mut start = 0;
        let next = loop {
            if self.swallow > 0 {
                let k = self.swallow.min(self.buf.len() - start);
                self.swallow -= k;
                start += k;
                if self.swallow > 0 {
                    break Next::More;
                }
            }
            if let Some(p) = &self.pending {
                if self.buf.len() - start < p.need {
                    break Next::More;
                }
                let p = self.pending.take().expect("pending");
                let block = &self.buf[start..start + p.need];
                start += p.need;
                let r = if !block.ends_with(b"\r\n") {
                    reply(out, "CLIENT_ERROR bad data chunk", p.noreply)
                } else {
                    let data = block[..block.len() - 2].to_vec();
                    let r = store.store(p.how, &p.key, p.flags, p.exptime, data);
                    reply(out, r, p.noreply)
                };
                if r.is_err() {
                    break Next::Close;
                }
                continue;
            }
            let Some(nl) = self.buf[start..].iter().position(|&b| b == b'\n') else {
                let pending = &self.buf[start..];
                let is_get = pending.starts_with(b"get ") || pending.starts_with(b"gets ");
                let limit = if is_get { GET_LINE_MAX } else { LINE_MAX };
                if pending.len() > limit {
                    // memcached closes the connection without a reply.
                    break Next::Close;
                }
                break Next::More;
            };
            let mut line = &self.buf[start..start + nl];
            start += nl + 1;
            if line.ends_with(b"\r") {
                line = &line[..line.len() - 1];
            }
            // A NUL ends the command line, as it ends memcached's C string.
            if let Some(z) = line.iter().position(|&b| b == 0) {
                line = &line[..z];
            }
            let line = line.to_vec();
            match self.command(store, &line, out) {
                Ok(Next::More) => {}
                Ok(Next::Close) | Err(_) => break Next::Close,
            }
        };
        self.buf.drain(..start);
        next
    }

    fn command(&mut self, store: &Store, line: &[u8], out: &mut impl Write) -> io::Result<Next> {
        let toks: Vec<&[u8]> = line
            .split(|&b| b == b' ')
            .filter(|t| !t.is_empty())
            .collect();
        // memcached counts a terminating empty token.
        let ntokens = toks.len() + 1;
        store
            .commands
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let Some(&cmd) = toks.first() else {
            reply(out, "ERROR", false)?;
            return Ok(Next::More);
        };
        let noreply = toks.last() == Some(&&b"noreply"[..]);
        match (cmd, ntokens) {
            (b"get" | b"gets", n) if n >= 3 => {
                let with_cas = cmd == b"gets";
                if toks[1..].iter().any(|k| k.len() > KEY_MAX) {
                    reply(out, "CLIENT_ERROR bad command line format", false)?;
                    return Ok(Next::More);
                }
                // One item at a time: a request naming a large item many times does not
                // make one reply buffer of all of them.
                for key in &toks[1..] {
                    if let Some(it) = store.get(key) {
                        out.write_all(b"VALUE ")?;
                        out.write_all(key)?;
                        if with_cas {
                            write!(out, " {} {} {}\r\n", it.flags, it.data.len(), it.cas)?;
                        } else {
                            write!(out, " {} {}\r\n", it.flags, it.data.len())?;
                        }
                        out.write_all(&it.data)?;
                        out.write_all(b"\r\n")?;
                    }
                }
                out.write_all(b"END\r\n")?;
            }
            (b"set" | b"add" | b"replace" | b"append" | b"prepend", 6 | 7) | (b"cas", 7 | 8) => {
                self.storage(store, cmd, &toks, noreply, out)?;
            }
            (b"delete", 3..=5) => {
                // Only a fourth or fifth token can be "noreply" (a key may be named so).
                let noreply = ntokens > 3 && noreply;
                if ntokens > 3 {
                    let hold_zero = toks[2] == b"0";
                    let valid = (ntokens == 4 && (hold_zero || noreply))
                        || (ntokens == 5 && hold_zero && noreply);
                    if !valid {
                        reply(
                            out,
                            "CLIENT_ERROR bad command line format.  Usage: delete <key> [noreply]",
                            noreply,
                        )?;
                        return Ok(Next::More);
                    }
                }
                let key = toks[1];
                if key.len() > KEY_MAX {
                    reply(out, "CLIENT_ERROR bad command line format", noreply)?;
                    return Ok(Next::More);
                }
                let r = if store.delete(key) {
                    "DELETED"
                } else {
                    "NOT_FOUND"
                };
                reply(out, r, noreply)?;
            }
            (b"incr" | b"decr", 4 | 5) => {
                let key = toks[1];
                if key.len() > KEY_MAX {
                    reply(out, "CLIENT_ERROR bad command line format", noreply)?;
                    return Ok(Next::More);
                }
                let Some(delta) = parse_u64(toks[2]) else {
                    reply(out, "CLIENT_ERROR invalid numeric delta argument", noreply)?;
                    return Ok(Next::More);
                };
                match store.delta(key, cmd == b"incr", delta) {
                    Ok(Some(v)) => reply(out, &v.to_string(), noreply)?,
                    Ok(None) => reply(out, "NOT_FOUND", noreply)?,
                    Err(()) => reply(
                        out,
                        "CLIENT_ERROR cannot increment or decrement non-numeric value",
                        noreply,
                    )?,
                }
            }
            (b"touch", 4 | 5) => {
                let key = toks[1];
                if key.len() > KEY_MAX {
                    reply(out, "CLIENT_ERROR bad command line format", noreply)?;
                    return Ok(Next::More);
                }
                let Some(exptime) = parse_i32(toks[2]) else {
                    reply(out, "CLIENT_ERROR invalid exptime argument", noreply)?;
                    return Ok(Next::More);
                };
                let r = if store.touch(key, exptime) {
                    "TOUCHED"
                } else {
                    "NOT_FOUND"
                };
                reply(out, r, noreply)?;
            }
            (b"flush_all", 2..=4) => {
                let delay = if ntokens == (2 + usize::from(noreply)) {
                    Some(0)
                } else {
                    parse_i32(toks[1])
                };
                match delay {
                    Some(d) => {
                        store.flush(d);
                        reply(out, "OK", noreply)?;
                    }
                    None => reply(out, "CLIENT_ERROR invalid exptime argument", noreply)?,
                }
            }
            (b"version", _) => {
                reply(
                    out,
                    concat!("VERSION flextoe-kv ", env!("CARGO_PKG_VERSION")),
                    false,
                )?;
            }
            (b"quit", _) => return Ok(Next::Close),
            _ => reply(out, "ERROR", false)?,
        }
        Ok(Next::More)
    }

    fn storage(
        &mut self,
        store: &Store,
        cmd: &[u8],
        toks: &[&[u8]],
        noreply: bool,
        out: &mut impl Write,
    ) -> io::Result<()> {
        let key = toks[1];
        if key.len() > KEY_MAX {
            return reply(out, "CLIENT_ERROR bad command line format", noreply);
        }
        let (Some(flags), Some(exptime), Some(len)) =
            (parse_u32(toks[2]), parse_i32(toks[3]), parse_i32(toks[4]))
        else {
            return reply(out, "CLIENT_ERROR bad command line format", noreply);
        };
        let how = match cmd {
            b"set" => Store1::Set,
            b"add" => Store1::Add,
            b"replace" => Store1::Replace,
            b"append" => Store1::Append,
            b"prepend" => Store1::Prepend,
            _ => match parse_u64(toks[5]) {
                Some(c) => Store1::Cas(c),
                None => return reply(out, "CLIENT_ERROR bad command line format", noreply),
            },
        };
        if !(0..=i32::MAX as i64 - 2).contains(&len) {
            return reply(out, "CLIENT_ERROR bad command line format", noreply);
        }
        let len = len as usize;
        if len > value_max(key.len(), flags) {
            // memcached answers at once, drops the value's bytes as they arrive, and removes
            // the old value so that no stale one survives a failed set.
            if cmd == b"set" {
                store.delete(key);
            }
            self.swallow = len + 2;
            return reply(out, "SERVER_ERROR object too large for cache", noreply);
        }
        self.pending = Some(Pending {
            how,
            key: key.to_vec(),
            flags,
            exptime,
            need: len + 2,
            noreply,
        });
        Ok(())
    }
}

fn reply(out: &mut impl Write, s: &str, noreply: bool) -> io::Result<()> {
    if noreply {
        return Ok(());
    }
    out.write_all(s.as_bytes())?;
    out.write_all(b"\r\n")
}

/// Serve one connection until the client quits or closes it.
pub fn serve_connection<S: std::io::Read + std::io::Write>(s: &mut S, store: &Store) {
    let mut session = Session::default();
    let mut input = vec![0u8; 64 * 1024];
    loop {
        let n = match s.read(&mut input) {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        let mut out = io::BufWriter::with_capacity(64 * 1024, &mut *s);
        let next = session.feed(store, &input[..n], &mut out);
        if out.flush().is_err() || next == Next::Close {
            return;
        }
    }
}
