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
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

/// Longest key.
pub const KEY_MAX: usize = 250;
/// Largest value (memcached's default item size limit, less its item header).
pub const VALUE_MAX: usize = 1024 * 1024 - 512;
/// Longest command line before the connection is closed.
const LINE_MAX: usize = 8192;
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
        let v = parse_u64_prefix(&it.data).ok_or(())?;
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
            for s in &self.shards {
                s.lock().unwrap().clear();
            }
        }
    }
}

/// A number as `strtoull` reads it (leading blanks, then digits, then a blank or the end).
fn parse_u64_prefix(b: &[u8]) -> Option<u64> {
    let s = std::str::from_utf8(b).ok()?;
    let t = s.trim_start_matches([' ', '\t', '\n', '\r']);
    let end = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    if end == 0 {
        return None;
    }
    let rest = &t[end..];
    if !(rest.is_empty() || rest.starts_with([' ', '\t', '\r', '\n'])) {
        return None;
    }
    t[..end].parse().ok()
}

fn parse_u32(t: &[u8]) -> Option<u32> {
    std::str::from_utf8(t).ok()?.parse().ok()
}

fn parse_i64(t: &[u8]) -> Option<i64> {
    std::str::from_utf8(t).ok()?.parse().ok()
}

fn parse_u64(t: &[u8]) -> Option<u64> {
    parse_u64_prefix(t)
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
    /// Too large: read and drop, then answer with this error.
    swallow_err: Option<&'static str>,
}

/// One connection's protocol state.
#[derive(Default)]
pub struct Session {
    buf: Vec<u8>,
    pending: Option<Pending>,
}

impl Session {
    /// Take `input`, append every complete reply to `out`.
    pub fn feed(&mut self, store: &Store, input: &[u8], out: &mut Vec<u8>) -> Next {
        self.buf.extend_from_slice(input);
        let mut start = 0;
        let next = loop {
            if let Some(p) = &self.pending {
                if self.buf.len() - start < p.need {
                    break Next::More;
                }
                let p = self.pending.take().expect("pending");
                let block = &self.buf[start..start + p.need];
                start += p.need;
                if let Some(e) = p.swallow_err {
                    reply(out, e, p.noreply);
                    continue;
                }
                if !block.ends_with(b"\r\n") {
                    reply(out, "CLIENT_ERROR bad data chunk", p.noreply);
                    continue;
                }
                let data = block[..block.len() - 2].to_vec();
                let r = store.store(p.how, &p.key, p.flags, p.exptime, data);
                reply(out, r, p.noreply);
                continue;
            }
            let Some(nl) = self.buf[start..].iter().position(|&b| b == b'\n') else {
                if self.buf.len() - start > LINE_MAX {
                    reply(out, "CLIENT_ERROR line too long", false);
                    break Next::Close;
                }
                break Next::More;
            };
            let mut line = &self.buf[start..start + nl];
            start += nl + 1;
            if line.ends_with(b"\r") {
                line = &line[..line.len() - 1];
            }
            let line = line.to_vec();
            if self.command(store, &line, out) == Next::Close {
                break Next::Close;
            }
        };
        self.buf.drain(..start);
        next
    }

    fn command(&mut self, store: &Store, line: &[u8], out: &mut Vec<u8>) -> Next {
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
            reply(out, "ERROR", false);
            return Next::More;
        };
        let noreply = toks.last() == Some(&&b"noreply"[..]);
        match (cmd, ntokens) {
            (b"get" | b"gets", n) if n >= 3 => {
                let with_cas = cmd == b"gets";
                let mut body = Vec::new();
                for key in &toks[1..] {
                    if key.len() > KEY_MAX {
                        reply(out, "CLIENT_ERROR bad command line format", false);
                        return Next::More;
                    }
                    if let Some(it) = store.get(key) {
                        body.extend_from_slice(b"VALUE ");
                        body.extend_from_slice(key);
                        if with_cas {
                            body.extend_from_slice(
                                format!(" {} {} {}\r\n", it.flags, it.data.len(), it.cas)
                                    .as_bytes(),
                            );
                        } else {
                            body.extend_from_slice(
                                format!(" {} {}\r\n", it.flags, it.data.len()).as_bytes(),
                            );
                        }
                        body.extend_from_slice(&it.data);
                        body.extend_from_slice(b"\r\n");
                    }
                }
                out.extend_from_slice(&body);
                out.extend_from_slice(b"END\r\n");
            }
            (b"set" | b"add" | b"replace" | b"append" | b"prepend", 6 | 7) | (b"cas", 7 | 8) => {
                self.storage(store, cmd, &toks, noreply, out);
            }
            (b"delete", 3..=5) => {
                let key = toks[1];
                if key.len() > KEY_MAX {
                    reply(out, "CLIENT_ERROR bad command line format", noreply);
                    return Next::More;
                }
                if ntokens > 3 {
                    let hold_zero = toks[2] == b"0";
                    let valid = (ntokens == 4 && (hold_zero || noreply))
                        || (ntokens == 5 && hold_zero && noreply);
                    if !valid {
                        reply(
                            out,
                            "CLIENT_ERROR bad command line format.  Usage: delete <key> [noreply]",
                            noreply,
                        );
                        return Next::More;
                    }
                }
                let r = if store.delete(key) {
                    "DELETED"
                } else {
                    "NOT_FOUND"
                };
                reply(out, r, noreply);
            }
            (b"incr" | b"decr", 4 | 5) => {
                let key = toks[1];
                if key.len() > KEY_MAX {
                    reply(out, "CLIENT_ERROR bad command line format", noreply);
                    return Next::More;
                }
                let Some(delta) = parse_u64(toks[2]) else {
                    reply(out, "CLIENT_ERROR invalid numeric delta argument", noreply);
                    return Next::More;
                };
                match store.delta(key, cmd == b"incr", delta) {
                    Ok(Some(v)) => reply(out, &v.to_string(), noreply),
                    Ok(None) => reply(out, "NOT_FOUND", noreply),
                    Err(()) => reply(
                        out,
                        "CLIENT_ERROR cannot increment or decrement non-numeric value",
                        noreply,
                    ),
                }
            }
            (b"touch", 4 | 5) => {
                let key = toks[1];
                if key.len() > KEY_MAX {
                    reply(out, "CLIENT_ERROR bad command line format", noreply);
                    return Next::More;
                }
                let Some(exptime) = parse_i64(toks[2]) else {
                    reply(out, "CLIENT_ERROR invalid exptime argument", noreply);
                    return Next::More;
                };
                let r = if store.touch(key, exptime) {
                    "TOUCHED"
                } else {
                    "NOT_FOUND"
                };
                reply(out, r, noreply);
            }
            (b"flush_all", 2..=4) => {
                let delay = if ntokens == (2 + usize::from(noreply)) {
                    Some(0)
                } else {
                    parse_i64(toks[1])
                };
                match delay {
                    Some(d) => {
                        store.flush(d);
                        reply(out, "OK", noreply);
                    }
                    None => reply(out, "CLIENT_ERROR invalid exptime argument", noreply),
                }
            }
            (b"version", _) => {
                reply(
                    out,
                    concat!("VERSION flextoe-kv ", env!("CARGO_PKG_VERSION")),
                    false,
                );
            }
            (b"quit", _) => return Next::Close,
            _ => reply(out, "ERROR", false),
        }
        Next::More
    }

    fn storage(
        &mut self,
        store: &Store,
        cmd: &[u8],
        toks: &[&[u8]],
        noreply: bool,
        out: &mut Vec<u8>,
    ) {
        let key = toks[1];
        if key.len() > KEY_MAX {
            reply(out, "CLIENT_ERROR bad command line format", noreply);
            return;
        }
        let (Some(flags), Some(exptime), Some(len)) =
            (parse_u32(toks[2]), parse_i64(toks[3]), parse_i64(toks[4]))
        else {
            reply(out, "CLIENT_ERROR bad command line format", noreply);
            return;
        };
        let how = match cmd {
            b"set" => Store1::Set,
            b"add" => Store1::Add,
            b"replace" => Store1::Replace,
            b"append" => Store1::Append,
            b"prepend" => Store1::Prepend,
            _ => match parse_u64(toks[5]) {
                Some(c) => Store1::Cas(c),
                None => {
                    reply(out, "CLIENT_ERROR bad command line format", noreply);
                    return;
                }
            },
        };
        if !(0..=i32::MAX as i64 - 2).contains(&len) {
            reply(out, "CLIENT_ERROR bad command line format", noreply);
            return;
        }
        let len = len as usize;
        let too_large = len > VALUE_MAX;
        self.pending = Some(Pending {
            how,
            key: key.to_vec(),
            flags,
            exptime,
            need: len + 2,
            noreply,
            swallow_err: too_large.then_some("SERVER_ERROR object too large for cache"),
        });
        if too_large && cmd == b"set" {
            // memcached drops the old value so that no stale one survives a failed set.
            store.delete(key);
        }
    }
}

fn reply(out: &mut Vec<u8>, s: &str, noreply: bool) {
    if noreply {
        return;
    }
    out.extend_from_slice(s.as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// Serve one connection until the client quits or closes it.
pub fn serve_connection<S: std::io::Read + std::io::Write>(s: &mut S, store: &Store) {
    let mut session = Session::default();
    let mut input = vec![0u8; 64 * 1024];
    let mut out = Vec::with_capacity(64 * 1024);
    loop {
        let n = match s.read(&mut input) {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        out.clear();
        let next = session.feed(store, &input[..n], &mut out);
        if !out.is_empty() && s.write_all(&out).is_err() {
            return;
        }
        if next == Next::Close {
            return;
        }
    }
}
