//! Running a prepared XDP program on a frame: rbpf's interpreter (every memory access of the
//! program checked against the packet, the context, the stack and the maps) or, for trusted
//! programs, its x86-64 JIT; and the helper table the programs call.
//!
//! Helpers are plain functions (rbpf's interface), so a run leaves what they need (the
//! maps, the packet's bounds, the context) in a thread-local for its duration. A pointer a
//! helper gets is used only when it lies in the packet, the context or a map, or when the
//! loader proved it to be on the program's stack; any other pointer makes
//! the helper fail as the kernel's would (NULL, `-EFAULT`), never a stray access.

use std::cell::Cell;
use std::ops::Range;
use std::sync::Arc;

use super::maps::{Map, Maps, MAP_DEVMAP, MAP_XSKMAP};
use super::rewrite::{
    ctx, HELPER_DELETE, HELPER_LOOKUP, HELPER_UPDATE, MAP_HANDLE_TAG, STACK_PROVEN,
};
use super::LoadError;

/// XDP's verdicts.
pub mod action {
    /// `XDP_ABORTED`: an error in the program; the frame is dropped.
    pub const ABORTED: u32 = 0;
    /// `XDP_DROP`.
    pub const DROP: u32 = 1;
    /// `XDP_PASS`.
    pub const PASS: u32 = 2;
    /// `XDP_TX`: back out of the port.
    pub const TX: u32 = 3;
    /// `XDP_REDIRECT`: to the target `bpf_redirect`/`bpf_redirect_map` chose.
    pub const REDIRECT: u32 = 4;
}

const HELPER_KTIME: u32 = 5;
const HELPER_PRANDOM: u32 = 7;
const HELPER_REDIRECT: u32 = 23;
const HELPER_ADJUST_HEAD: u32 = 44;
const HELPER_REDIRECT_MAP: u32 = 51;
const HELPER_ADJUST_TAIL: u32 = 65;

const EFAULT: i64 = -14;
const EINVAL: i64 = -22;

/// What helpers of the current run may touch.
struct Run {
    maps: *mut Vec<Map>,
    /// The frame's whole buffer (headroom and tailroom included).
    buf: Range<u64>,
    /// The context.
    ctx: Range<u64>,
    redirect: Option<u32>,
    now_ns: u64,
    rng: u64,
}

thread_local! {
    static RUN: Cell<*mut Run> = const { Cell::new(std::ptr::null_mut()) };
}

/// The current run, if a helper is called during one.
fn with_run<T>(default: T, f: impl FnOnce(&mut Run) -> T) -> T {
    let p = RUN.with(Cell::get);
    if p.is_null() {
        return default;
    }
    // SAFETY: `p` was set by `XdpVm::run` to a `Run` on its stack frame, which outlives the
    // program's execution (it is reset to null before `run` returns); helpers run on the
    // same thread, inside that execution, and no other reference to it is alive.
    f(unsafe { &mut *p })
}

fn in_range(r: &Range<u64>, p: u64, len: u64) -> bool {
    p >= r.start && p.checked_add(len).is_some_and(|e| e <= r.end)
}

/// `len` bytes at `ptr`, if they lie in memory a helper may read.
fn bytes<'a>(run: &Run, maps: &[Map], ptr: u64, len: usize, proven: bool) -> Option<&'a [u8]> {
    let l = len as u64;
    let ok = proven
        || in_range(&run.buf, ptr, l)
        || in_range(&run.ctx, ptr, l)
        || maps.iter().any(|m| in_range(&m.range(), ptr, l));
    if !ok || ptr == 0 {
        return None;
    }
    // SAFETY: the range lies in the packet buffer, the context or a map's storage (all alive
    // for the run), or the loader proved it to be `r10 + c` with the whole range inside the
    // program's 512-byte stack, which the VM keeps alive during the call.
    Some(unsafe { std::slice::from_raw_parts(ptr as *const u8, len) })
}

fn map_index(handle: u64) -> Option<usize> {
    (handle >> 32 == MAP_HANDLE_TAG).then_some((handle & 0xffff_ffff) as usize)
}

fn map_helper(id: u32, map: u64, key: u64, value: u64, flags: u64) -> u64 {
    let proven = id & STACK_PROVEN != 0;
    let id = id & !STACK_PROVEN;
    let fail = if id == HELPER_LOOKUP {
        0
    } else {
        EFAULT as u64
    };
    with_run(fail, |run| {
        // SAFETY: `run.maps` points at the maps locked by `XdpVm::run` for this execution.
        let maps = unsafe { &mut *run.maps };
        let Some(mi) = map_index(map).filter(|i| *i < maps.len()) else {
            return fail;
        };
        let (ks, vs) = (
            maps[mi].spec.key_size as usize,
            maps[mi].spec.value_size as usize,
        );
        let Some(k) = bytes(run, maps, key, ks, proven).map(<[u8]>::to_vec) else {
            return fail;
        };
        match id {
            HELPER_LOOKUP => maps[mi].lookup_mut(&k).map_or(0, |v| v.as_mut_ptr() as u64),
            HELPER_UPDATE => {
                let Some(v) = bytes(run, maps, value, vs, proven).map(<[u8]>::to_vec) else {
                    return fail;
                };
                match maps[mi].update(&k, &v, flags) {
                    Ok(()) => 0,
                    Err(e) => e.errno() as u64,
                }
            }
            _ => match maps[mi].delete(&k) {
                Ok(()) => 0,
                Err(e) => e.errno() as u64,
            },
        }
    })
}

fn h_lookup(a: u64, b: u64, _: u64, _: u64, _: u64) -> u64 {
    map_helper(HELPER_LOOKUP, a, b, 0, 0)
}
fn h_lookup_p(a: u64, b: u64, _: u64, _: u64, _: u64) -> u64 {
    map_helper(HELPER_LOOKUP | STACK_PROVEN, a, b, 0, 0)
}
fn h_update(a: u64, b: u64, c: u64, d: u64, _: u64) -> u64 {
    map_helper(HELPER_UPDATE, a, b, c, d)
}
fn h_update_p(a: u64, b: u64, c: u64, d: u64, _: u64) -> u64 {
    map_helper(HELPER_UPDATE | STACK_PROVEN, a, b, c, d)
}
fn h_delete(a: u64, b: u64, _: u64, _: u64, _: u64) -> u64 {
    map_helper(HELPER_DELETE, a, b, 0, 0)
}
fn h_delete_p(a: u64, b: u64, _: u64, _: u64, _: u64) -> u64 {
    map_helper(HELPER_DELETE | STACK_PROVEN, a, b, 0, 0)
}

fn h_ktime(_: u64, _: u64, _: u64, _: u64, _: u64) -> u64 {
    with_run(0, |r| r.now_ns)
}

fn h_prandom(_: u64, _: u64, _: u64, _: u64, _: u64) -> u64 {
    with_run(0, |r| {
        r.rng ^= r.rng << 13;
        r.rng ^= r.rng >> 7;
        r.rng ^= r.rng << 17;
        r.rng & 0xffff_ffff
    })
}

fn h_redirect(ifindex: u64, flags: u64, _: u64, _: u64, _: u64) -> u64 {
    with_run(u64::from(action::ABORTED), |r| {
        if flags != 0 {
            return u64::from(action::ABORTED);
        }
        r.redirect = Some(ifindex as u32);
        u64::from(action::REDIRECT)
    })
}

fn h_redirect_map(map: u64, key: u64, flags: u64, _: u64, _: u64) -> u64 {
    // The lower bits of `flags` are the action when the key has no target.
    let fallback = flags & 3;
    with_run(fallback, |r| {
        // SAFETY: as in `map_helper`.
        let maps = unsafe { &*r.maps };
        let ok = map_index(map).and_then(|i| maps.get(i)).is_some_and(|m| {
            matches!(m.spec.map_type, MAP_DEVMAP | MAP_XSKMAP)
                && m.lookup(&(key as u32).to_le_bytes()).is_some()
        });
        if ok {
            r.redirect = Some(key as u32);
            u64::from(action::REDIRECT)
        } else {
            fallback
        }
    })
}

fn read_ctx(r: &Run, field: usize) -> u64 {
    // SAFETY: `r.ctx` is the live context buffer of the run, `ctx::SIZE` bytes long, and
    // `field` is one of its 8-byte-aligned pointer fields.
    unsafe { ((r.ctx.start as usize + field) as *const u64).read_unaligned() }
}

fn write_ctx(r: &Run, field: usize, v: u64) {
    // SAFETY: as in `read_ctx`; the program only reads the context during the helper call.
    unsafe { ((r.ctx.start as usize + field) as *mut u64).write_unaligned(v) }
}

fn h_adjust_head(c: u64, delta: u64, _: u64, _: u64, _: u64) -> u64 {
    with_run(EINVAL as u64, |r| {
        if c != r.ctx.start {
            return EINVAL as u64;
        }
        let (data, end, meta) = (
            read_ctx(r, ctx::DATA),
            read_ctx(r, ctx::DATA_END),
            read_ctx(r, ctx::DATA_META),
        );
        let new = data.wrapping_add(delta as i32 as i64 as u64);
        // As the kernel: at least an Ethernet header left, no further back than the buffer.
        if new < r.buf.start || new.saturating_add(14) > end || meta > new {
            return EINVAL as u64;
        }
        write_ctx(r, ctx::DATA, new);
        if meta == data {
            write_ctx(r, ctx::DATA_META, new);
        }
        0
    })
}

fn h_adjust_tail(c: u64, delta: u64, _: u64, _: u64, _: u64) -> u64 {
    with_run(EINVAL as u64, |r| {
        if c != r.ctx.start {
            return EINVAL as u64;
        }
        let (data, end) = (read_ctx(r, ctx::DATA), read_ctx(r, ctx::DATA_END));
        let new = end.wrapping_add(delta as i32 as i64 as u64);
        if new < data.saturating_add(14) || new > r.buf.end {
            return EINVAL as u64;
        }
        // Room added at the tail holds zeroes, as the kernel gives it (Linux 5.8 on), not
        // the bytes an earlier frame left in the buffer.
        if new > end {
            if !in_range(&r.buf, end, new - end) {
                return EINVAL as u64;
            }
            // SAFETY: `end..new` lies inside the run's frame buffer (checked just above),
            // which is alive and writable for the whole run; the program is suspended in
            // this helper call. rbpf keeps a shared borrow of the buffer while it runs and
            // the program's own stores write through raw pointers into it the same way.
            unsafe { std::ptr::write_bytes(end as *mut u8, 0, (new - end) as usize) };
        }
        write_ctx(r, ctx::DATA_END, new);
        0
    })
}

/// rbpf's x86-64 JIT calls helpers with the stack 8 bytes off the 16-byte alignment the
/// System V ABI promises (its prologue ends with a `call` that sets up the exit path), and
/// compiled Rust may use aligned SSE stores to the stack. For the JIT each helper is
/// therefore entered through a small trampoline that realigns the stack and calls it with
/// the C convention the JIT uses.
macro_rules! helper_table {
    ($($id:expr => $name:ident, $c:ident, $tramp:ident;)*) => {
        $(
            #[cfg(all(target_arch = "x86_64", target_os = "linux"))]
            extern "sysv64" fn $c(a: u64, b: u64, c: u64, d: u64, e: u64) -> u64 {
                $name(a, b, c, d, e)
            }
            #[cfg(all(target_arch = "x86_64", target_os = "linux"))]
            std::arch::global_asm!(
                concat!(".globl ", stringify!($tramp)),
                concat!(stringify!($tramp), ":"),
                "push rbp",
                "mov rbp, rsp",
                "and rsp, -16",
                "call {f}",
                "mov rsp, rbp",
                "pop rbp",
                "ret",
                f = sym $c,
            );
        )*

        /// The helpers, by number (the kernel's; the stack-proven variants of the map
        /// helpers are the loader's own numbers), as the interpreter or the JIT calls them.
        pub(crate) fn helpers(jit: bool) -> Vec<(u32, rbpf::Helper)> {
            #[cfg(all(target_arch = "x86_64", target_os = "linux"))]
            extern "sysv64" {
                $(fn $tramp(a: u64, b: u64, c: u64, d: u64, e: u64) -> u64;)*
            }
            let _ = jit;
            vec![$(
                ($id, {
                    #[cfg(all(target_arch = "x86_64", target_os = "linux"))]
                    let f: rbpf::Helper = if jit {
                        let t: unsafe extern "sysv64" fn(u64, u64, u64, u64, u64) -> u64 = $tramp;
                        // SAFETY: rbpf's JIT calls a helper's address with the System V
                        // convention (arguments in rdi, rsi, rdx, rcx, r8; result in rax),
                        // which is what the trampoline and its `extern "sysv64"` target expect;
                        // the pointer is only ever called by the JIT, never through the
                        // Rust-ABI type.
                        unsafe {
                            std::mem::transmute::<
                                unsafe extern "sysv64" fn(u64, u64, u64, u64, u64) -> u64,
                                rbpf::Helper,
                            >(t)
                        }
                    } else {
                        $name
                    };
                    #[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
                    let f: rbpf::Helper = $name;
                    f
                }),
            )*]
        }
    };
}

helper_table! {
    HELPER_LOOKUP => h_lookup, c_lookup, flextoe_ebpf_lookup;
    HELPER_LOOKUP | STACK_PROVEN => h_lookup_p, c_lookup_p, flextoe_ebpf_lookup_p;
    HELPER_UPDATE => h_update, c_update, flextoe_ebpf_update;
    HELPER_UPDATE | STACK_PROVEN => h_update_p, c_update_p, flextoe_ebpf_update_p;
    HELPER_DELETE => h_delete, c_delete, flextoe_ebpf_delete;
    HELPER_DELETE | STACK_PROVEN => h_delete_p, c_delete_p, flextoe_ebpf_delete_p;
    HELPER_KTIME => h_ktime, c_ktime, flextoe_ebpf_ktime;
    HELPER_PRANDOM => h_prandom, c_prandom, flextoe_ebpf_prandom;
    HELPER_REDIRECT => h_redirect, c_redirect, flextoe_ebpf_redirect;
    HELPER_ADJUST_HEAD => h_adjust_head, c_adjust_head, flextoe_ebpf_adjust_head;
    HELPER_REDIRECT_MAP => h_redirect_map, c_redirect_map, flextoe_ebpf_redirect_map;
    HELPER_ADJUST_TAIL => h_adjust_tail, c_adjust_tail, flextoe_ebpf_adjust_tail;
}

/// How a program runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Exec {
    /// rbpf's interpreter: every memory access checked to stay in the frame's buffer (its
    /// whole 2 KiB slot: bytes past `data_end` are readable, as they would not be under the
    /// kernel's verifier), the context, the stack or a map; a program that strays is stopped
    /// (its frame aborted). The default.
    #[default]
    Interpreter,
    /// rbpf's x86-64 JIT: several times faster, with no check of the program's own memory
    /// accesses. Only for programs one trusts (x86-64 Linux only).
    Jit,
}

/// What one run decided.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    /// The XDP action.
    pub action: u32,
    /// Where the frame's data now starts and ends in its buffer (after `adjust_head`/`_tail`).
    pub data: Range<usize>,
    /// The redirect target, for `XDP_REDIRECT`.
    pub redirect: Option<u32>,
}

/// A program ready to run: its image, a VM over it, its maps.
pub struct XdpVm {
    /// Borrows `image` (declared first, so dropped first).
    vm: rbpf::EbpfVmMbuff<'static>,
    _image: Arc<[u8]>,
    maps: Maps,
    exec: Exec,
    rng: u64,
    /// The context buffer (`ctx::SIZE` bytes), owned by `_cx`; the JIT wants it for as long
    /// as the VM lives.
    cx: *mut u8,
    _cx: Box<[u8]>,
}

// SAFETY: `cx` points into `_cx`, which only this VM uses, from the thread that holds the
// `XdpVm` (`burst` takes `&mut self`); the rest is `Send`.
unsafe impl Send for XdpVm {}

impl XdpVm {
    pub(crate) fn new(image: Arc<[u8]>, maps: Maps, exec: Exec) -> Result<XdpVm, LoadError> {
        // SAFETY: the slice lives in `image`'s allocation, which `XdpVm` keeps (`_image`)
        // for as long as `vm` (dropped before it) borrows it; it is never mutated.
        let prog: &'static [u8] =
            unsafe { std::slice::from_raw_parts(image.as_ptr(), image.len()) };
        let mut vm =
            rbpf::EbpfVmMbuff::new(Some(prog)).map_err(|e| LoadError::Verifier(e.to_string()))?;
        for (id, f) in helpers(exec == Exec::Jit) {
            vm.register_helper(id, f)
                .map_err(|e| LoadError::Verifier(e.to_string()))?;
        }
        for m in maps.lock().iter() {
            vm.register_allowed_memory(m.range());
        }
        if exec == Exec::Jit {
            #[cfg(all(target_arch = "x86_64", target_os = "linux"))]
            vm.jit_compile()
                .map_err(|e| LoadError::Verifier(e.to_string()))?;
            #[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
            return Err(LoadError::Unsupported("the JIT needs x86-64 Linux".into()));
        }
        let mut owned = vec![0u8; ctx::SIZE].into_boxed_slice();
        let cx = owned.as_mut_ptr();
        Ok(XdpVm {
            vm,
            _image: image,
            maps,
            exec,
            rng: 0x2545_f491_4f6c_dd1d,
            cx,
            _cx: owned,
        })
    }

    /// The program's maps.
    pub fn maps(&self) -> &Maps {
        &self.maps
    }

    /// Run on frames with the maps locked once: `f` gets a closure that runs the program on
    /// one frame's buffer (`buf`, the frame's data at `data`).
    pub fn burst<T>(
        &mut self,
        now_ns: u64,
        f: impl FnOnce(&mut dyn FnMut(&mut [u8], Range<usize>, u32) -> Result<Outcome, String>) -> T,
    ) -> T {
        let maps = self.maps.clone();
        let mut guard = maps.lock();
        let maps_ptr: *mut Vec<Map> = &mut *guard;
        let vm = &self.vm;
        let exec = self.exec;
        let rng = &mut self.rng;
        let cx_ptr = self.cx;
        let mut one = |buf: &mut [u8], data: Range<usize>, queue: u32| -> Result<Outcome, String> {
            if data.start > data.end || data.end > buf.len() {
                return Err("frame outside its buffer".into());
            }
            let base = buf.as_ptr() as u64;
            // SAFETY: `cx_ptr` is this VM's own `ctx::SIZE`-byte buffer (`_cx`), alive as long
            // as the VM; `burst` holds `&mut self`, so no other reference to it exists while
            // this one is used.
            let cx: &'static mut [u8] =
                unsafe { std::slice::from_raw_parts_mut(cx_ptr, ctx::SIZE) };
            cx.fill(0);
            cx[ctx::DATA..ctx::DATA + 8].copy_from_slice(&(base + data.start as u64).to_le_bytes());
            cx[ctx::DATA_END..ctx::DATA_END + 8]
                .copy_from_slice(&(base + data.end as u64).to_le_bytes());
            cx[ctx::DATA_META..ctx::DATA_META + 8]
                .copy_from_slice(&(base + data.start as u64).to_le_bytes());
            cx[ctx::RX_QUEUE_INDEX..ctx::RX_QUEUE_INDEX + 4].copy_from_slice(&queue.to_le_bytes());
            let ctx_start = cx.as_ptr() as u64;
            let mut run = Run {
                maps: maps_ptr,
                buf: base..base + buf.len() as u64,
                ctx: ctx_start..ctx_start + ctx::SIZE as u64,
                redirect: None,
                now_ns,
                rng: *rng,
            };
            /// Clears the helpers' pointer to the run however the run ends.
            struct Clear;
            impl Drop for Clear {
                fn drop(&mut self) {
                    RUN.with(|c| c.set(std::ptr::null_mut()));
                }
            }
            RUN.with(|c| c.set(&mut run));
            let clear = Clear;
            let r = match exec {
                Exec::Interpreter => vm.execute_program(buf, cx),
                #[cfg(all(target_arch = "x86_64", target_os = "linux"))]
                // SAFETY: the JIT's code has no bounds checks; `Exec::Jit` is documented as
                // for trusted programs only, and the program passed rbpf's verifier and the
                // loader's checks. The buffers it gets (`buf`, `cx`) are alive and writable.
                Exec::Jit => unsafe { vm.execute_program_jit(buf, cx) },
                // (`XdpVm::new` refuses the JIT elsewhere.)
                #[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
                Exec::Jit => Err(rbpf::Error::other("no JIT on this platform")),
            };
            drop(clear);
            *rng = run.rng;
            let v = r.map_err(|e| e.to_string())?;
            // SAFETY: as above; the program has finished with the buffer.
            let cx: &[u8] = unsafe { std::slice::from_raw_parts(cx_ptr, ctx::SIZE) };
            let rd = |o: usize| u64::from_le_bytes(cx[o..o + 8].try_into().unwrap_or([0; 8]));
            let (ds, de) = (
                rd(ctx::DATA).wrapping_sub(base),
                rd(ctx::DATA_END).wrapping_sub(base),
            );
            if ds > de || de > buf.len() as u64 {
                return Err("the program left the frame outside its buffer".into());
            }
            Ok(Outcome {
                action: v as u32,
                data: ds as usize..de as usize,
                redirect: run.redirect,
            })
        };
        f(&mut one)
    }
}
