//! DPDK's Environment Abstraction Layer: set up once per process.

use std::ffi::{CStr, CString};
use std::os::raw::{c_char, c_int};
use std::sync::{Mutex, OnceLock};

use super::ffi;
use super::DpdkError;

/// The initialised EAL. DPDK allows one per process, so [`Eal::init`] runs `rte_eal_init`
/// the first time and afterwards returns the same instance.
#[derive(Debug)]
pub struct Eal {
    args: Vec<String>,
}

static EAL: OnceLock<Result<Eal, DpdkError>> = OnceLock::new();
static INIT: Mutex<()> = Mutex::new(());

impl Eal {
    /// Initialise the EAL with `args`, passed through as DPDK's command line (without the
    /// program name), for example `["--no-huge", "-m", "512", "--no-pci",
    /// "--file-prefix=app", "--vdev=net_ring0"]`.
    ///
    /// A second call with the same arguments returns the running EAL; with other arguments
    /// it fails with [`DpdkError::AlreadyInitialised`], because DPDK cannot be set up twice
    /// in one process. Devices can still be added later with
    /// [`DpdkPort::open`](super::DpdkPort::open) and a `Device::Probe` string.
    pub fn init<S: AsRef<str>>(args: &[S]) -> Result<&'static Eal, DpdkError> {
        let args: Vec<String> = args.iter().map(|a| a.as_ref().to_string()).collect();
        let _g = INIT.lock().unwrap_or_else(|e| e.into_inner());
        let eal = EAL.get_or_init(|| Self::start(args.clone()));
        match eal {
            Ok(e) if e.args == args => Ok(e),
            Ok(e) => Err(DpdkError::AlreadyInitialised(e.args.join(" "))),
            Err(e) => Err(e.clone()),
        }
    }

    /// The running EAL, if [`init`](Self::init) succeeded.
    pub fn get() -> Option<&'static Eal> {
        EAL.get().and_then(|r| r.as_ref().ok())
    }

    /// The arguments the EAL was started with.
    pub fn args(&self) -> &[String] {
        &self.args
    }

    fn start(args: Vec<String>) -> Result<Eal, DpdkError> {
        let mut owned = Vec::with_capacity(args.len() + 1);
        owned.push(CString::new("flextoe").expect("no NUL"));
        for a in &args {
            owned.push(
                CString::new(a.as_str())
                    .map_err(|_| DpdkError::Config(format!("EAL argument {a:?} holds a NUL")))?,
            );
        }
        // rte_eal_init may permute argv: give it a private array of pointers; the strings
        // themselves live in `owned`, which is leaked because DPDK may keep pointers to them.
        let mut argv: Vec<*mut c_char> = owned.iter().map(|s| s.as_ptr() as *mut c_char).collect();
        let argc = argv.len() as c_int;
        // rte_eal_init pins the calling thread to the main lcore's CPU, and every thread
        // spawned from it later would inherit that: keep the caller's CPU set instead.
        // SAFETY: a zeroed cpu_set_t is a valid empty set; the calls get its size.
        let mut cpus: libc::cpu_set_t = unsafe { std::mem::zeroed() };
        // SAFETY: writes at most size_of::<cpu_set_t>() bytes into `cpus`.
        let saved = unsafe {
            libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut cpus)
        } == 0;
        // SAFETY: argv holds argc pointers to NUL-terminated strings that are never freed
        // (leaked below), and argv itself is leaked too, so every pointer DPDK keeps stays
        // valid for the life of the process.
        let r = unsafe { ffi::rte_eal_init(argc, argv.as_mut_ptr()) };
        std::mem::forget(owned);
        std::mem::forget(argv);
        if saved {
            // SAFETY: `cpus` is the set read above.
            unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &cpus) };
        }
        if r < 0 {
            return Err(DpdkError::rte("rte_eal_init", errno()));
        }
        // The EAL makes a runtime directory (/var/run/dpdk/<file-prefix>); without shared
        // configuration it stays empty and is removed when the process exits.
        // SAFETY: returns a pointer to the EAL's static path string.
        let dir = unsafe { CStr::from_ptr(ffi::rte_eal_get_runtime_dir()) }.to_owned();
        if RUNTIME_DIR.set(dir).is_ok() {
            // SAFETY: registers a plain `extern "C" fn()` without captured state.
            unsafe { libc::atexit(remove_runtime_dir) };
        }
        Ok(Eal { args })
    }
}

static RUNTIME_DIR: OnceLock<CString> = OnceLock::new();

extern "C" fn remove_runtime_dir() {
    if let Some(dir) = RUNTIME_DIR.get() {
        // SAFETY: a NUL-terminated path; rmdir removes the directory only when empty.
        unsafe { libc::rmdir(dir.as_ptr()) };
    }
}

/// The calling thread's `rte_errno`.
pub(super) fn errno() -> i32 {
    // SAFETY: reads a thread-local integer through the wrapper in wrapper.h.
    unsafe { ffi::flextoe_rte_errno() }
}

/// DPDK's text for an error number (its own codes and errno values).
pub(super) fn strerror(code: i32) -> String {
    // SAFETY: rte_strerror returns a pointer to a static or thread-local NUL-terminated
    // string, read at once.
    unsafe {
        let p = ffi::rte_strerror(code);
        if p.is_null() {
            return format!("error {code}");
        }
        CStr::from_ptr(p).to_string_lossy().into_owned()
    }
}
