//! The same objects in the Linux kernel, through the `bpf(2)` system call: maps created with
//! `BPF_MAP_CREATE`, the program loaded with `BPF_PROG_LOAD` (the kernel's verifier), and
//! frames run with `BPF_PROG_TEST_RUN`. Needs root (or `CAP_BPF`). The differential tests
//! compare the userspace VM with it.

use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use super::elf::ObjectSpec;
use super::rewrite;
use super::LoadError;

const BPF_MAP_CREATE: u32 = 0;
const BPF_MAP_LOOKUP_ELEM: u32 = 1;
const BPF_MAP_UPDATE_ELEM: u32 = 2;
const BPF_PROG_LOAD: u32 = 5;
const BPF_PROG_TEST_RUN: u32 = 10;
const BPF_PROG_TYPE_XDP: u32 = 6;

/// The `bpf` system call with a zero-padded attribute block.
fn bpf(cmd: u32, attr: &mut [u64; 16]) -> Result<i64, std::io::Error> {
    // SAFETY: `attr` is a 128-byte buffer that outlives the call; every pointer stored in it
    // points at memory alive for the call, of the length given beside it.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd as libc::c_long,
            attr.as_mut_ptr(),
            std::mem::size_of_val(attr) as libc::c_long,
        )
    };
    if r < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

fn pair(lo: u32, hi: u32) -> u64 {
    u64::from(lo) | (u64::from(hi) << 32)
}

fn fd(r: i64) -> OwnedFd {
    // SAFETY: `r` is a file descriptor the kernel just returned to us; nothing else owns it.
    unsafe { OwnedFd::from_raw_fd(r as i32) }
}

/// A program loaded into the kernel, with its maps.
pub struct KernelProgram {
    prog: OwnedFd,
    maps: Vec<(String, OwnedFd, u32, u32)>,
}

impl KernelProgram {
    /// Create the object's maps and load program `name` (the kernel's verifier log comes
    /// back in the error).
    pub fn load(obj: &ObjectSpec, name: &str) -> Result<KernelProgram, LoadError> {
        let p = obj
            .programs
            .iter()
            .find(|p| p.name == name)
            .ok_or_else(|| LoadError::NoProgram(name.into()))?;
        let mut maps = Vec::new();
        for m in &obj.maps {
            if matches!(
                m.map_type,
                super::maps::MAP_PERCPU_HASH | super::maps::MAP_PERCPU_ARRAY
            ) {
                // (Their values are one copy per CPU in the kernel: not compared here.)
                return Err(LoadError::Unsupported(format!("{}: per-CPU map", m.name)));
            }
            let mut a = [0u64; 16];
            a[0] = pair(m.map_type, m.key_size);
            a[1] = pair(m.value_size, m.max_entries);
            let r = bpf(BPF_MAP_CREATE, &mut a)
                .map_err(|e| LoadError::Map(format!("{}: BPF_MAP_CREATE: {e}", m.name)))?;
            maps.push((m.name.clone(), fd(r), m.key_size, m.value_size));
        }
        let fds: Vec<i32> = maps.iter().map(|(_, f, _, _)| f.as_raw_fd()).collect();
        let image = rewrite::kernel_image(p, &fds);
        let license = CString::new(if obj.license.is_empty() {
            "GPL".to_string()
        } else {
            obj.license.clone()
        })
        .map_err(|_| LoadError::Elf("license".into()))?;
        let mut log = vec![0u8; 1 << 16];
        let mut a = [0u64; 16];
        a[0] = pair(BPF_PROG_TYPE_XDP, (image.len() / 8) as u32);
        a[1] = image.as_ptr() as u64;
        a[2] = license.as_ptr() as u64;
        a[3] = pair(1, log.len() as u32);
        a[4] = log.as_mut_ptr() as u64;
        match bpf(BPF_PROG_LOAD, &mut a) {
            Ok(r) => Ok(KernelProgram { prog: fd(r), maps }),
            Err(e) => {
                let end = log.iter().position(|c| *c == 0).unwrap_or(log.len());
                Err(LoadError::Verifier(format!(
                    "BPF_PROG_LOAD: {e}\n{}",
                    String::from_utf8_lossy(&log[..end])
                )))
            }
        }
    }

    /// Run the program on `frame`: its action and the frame as it left (after
    /// `adjust_head`/`_tail` and any rewrite).
    pub fn test_run(&self, frame: &[u8]) -> Result<(u32, Vec<u8>), std::io::Error> {
        let mut out = vec![0u8; frame.len() + 512];
        let mut a = [0u64; 16];
        a[0] = pair(self.prog.as_raw_fd() as u32, 0);
        a[1] = pair(frame.len() as u32, out.len() as u32);
        a[2] = frame.as_ptr() as u64;
        a[3] = out.as_mut_ptr() as u64;
        a[4] = pair(1, 0);
        bpf(BPF_PROG_TEST_RUN, &mut a)?;
        let retval = (a[0] >> 32) as u32;
        let out_len = (a[1] >> 32) as usize;
        out.truncate(out_len.min(out.len()));
        Ok((retval, out))
    }

    fn map(&self, name: &str) -> Option<&(String, OwnedFd, u32, u32)> {
        self.maps.iter().find(|m| m.0 == name)
    }

    /// Set `key` to `value` in map `name`.
    pub fn update(&self, name: &str, key: &[u8], value: &[u8]) -> Result<(), std::io::Error> {
        let m = self.map(name).ok_or(std::io::ErrorKind::NotFound)?;
        if key.len() != m.2 as usize || value.len() != m.3 as usize {
            return Err(std::io::ErrorKind::InvalidInput.into());
        }
        let mut a = [0u64; 16];
        a[0] = u64::from(m.1.as_raw_fd() as u32);
        a[1] = key.as_ptr() as u64;
        a[2] = value.as_ptr() as u64;
        bpf(BPF_MAP_UPDATE_ELEM, &mut a).map(|_| ())
    }

    /// The value of `key` in map `name`.
    pub fn lookup(&self, name: &str, key: &[u8]) -> Option<Vec<u8>> {
        let m = self.map(name)?;
        if key.len() != m.2 as usize {
            return None;
        }
        let mut v = vec![0u8; m.3 as usize];
        let mut a = [0u64; 16];
        a[0] = u64::from(m.1.as_raw_fd() as u32);
        a[1] = key.as_ptr() as u64;
        a[2] = v.as_mut_ptr() as u64;
        bpf(BPF_MAP_LOOKUP_ELEM, &mut a).ok()?;
        Some(v)
    }
}
