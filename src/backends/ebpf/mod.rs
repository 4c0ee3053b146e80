//! Unmodified eBPF/XDP programs (clang-built ELF objects) run in userspace, at the
//! `rx_frame` and `tx_frame` hook points ([`XdpStage`](crate::stages::ext::xdp::XdpStage)),
//! over rbpf (feature `ebpf`).
//!
//! Loading ([`XdpObject::parse`]): the `object` crate reads the ELF file; programs are the
//! functions of its sections other than `.text`; maps come from libbpf's BTF-defined
//! `.maps` (or the older `maps` section); map relocations are resolved. Then what the
//! kernel's verifier would do is done here ([`rewrite`]): the context's 32-bit `data`,
//! `data_end` and `data_meta` loads become 64-bit pointer loads. rbpf's own verifier checks
//! the instructions. What is not supported is refused with the reason: loops (any jump
//! back; rbpf's VM has no instruction budget, so a run is bounded only by running each
//! instruction at most once), programs longer than 32,767 instructions (the interpreter
//! computes jump targets in 16 bits), calls between functions, global data, atomic instructions
//! (rbpf has none), map types other than array, hash (and per-CPU variants as one copy),
//! devmap and xskmap.
//!
//! Running ([`XdpVm`]): rbpf's interpreter by default (every memory access the program makes
//! is checked to stay within the frame's buffer slot, the context, its stack and its maps; a
//! program that strays is stopped and its frame aborted; unlike under the kernel's verifier,
//! bytes of the slot past `data_end` are readable), or its x86-64 JIT for trusted programs
//! ([`Exec::Jit`], Linux). Helpers: `bpf_map_lookup_elem`, `_update_elem`,
//! `_delete_elem`, `bpf_ktime_get_ns`, `bpf_get_prandom_u32`, `bpf_redirect`,
//! `bpf_redirect_map`, `bpf_xdp_adjust_head`, `bpf_xdp_adjust_tail`. Maps are readable and
//! writable from the application while the program runs ([`Maps`]).
//!
//! For comparison, [`kernel`] loads the same object into the Linux kernel and runs it with
//! `BPF_PROG_TEST_RUN` (root).
//!
//! ```no_run
//! use flextoe::backends::ebpf::{Exec, XdpObject};
//!
//! let bytes = std::fs::read("port_filter.o").unwrap();
//! let obj = XdpObject::parse(&bytes).unwrap();
//! let prog = obj.program("port_filter", Exec::Interpreter).unwrap();
//! // Block port 23: the program's `blocked` hash map, key and value u32.
//! prog.maps().update("blocked", &23u32.to_le_bytes(), &1u32.to_le_bytes()).unwrap();
//! ```

mod btf;
pub mod elf;
#[cfg(target_os = "linux")]
pub mod kernel;
pub mod maps;
pub mod rewrite;
pub mod vm;

pub use elf::{ObjectSpec, ProgramSpec};
pub use maps::{MapError, MapSpec, Maps};
pub use vm::{action, Exec, Outcome, XdpVm};

/// Why an object or a program could not be loaded.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LoadError {
    /// The ELF file is malformed or not an eBPF object.
    #[error("ELF: {0}")]
    Elf(String),
    /// Its BTF is malformed.
    #[error("BTF: {0}")]
    Btf(String),
    /// A map definition is not supported or out of range.
    #[error("map: {0}")]
    Map(String),
    /// It needs something the userspace loader does not do.
    #[error("not supported: {0}")]
    Unsupported(String),
    /// rbpf's verifier refused the program.
    #[error("refused: {0}")]
    Verifier(String),
    /// No program of that name.
    #[error("no program named {0}")]
    NoProgram(String),
}

/// A parsed object: its programs and maps.
#[derive(Clone, Debug)]
pub struct XdpObject {
    spec: ObjectSpec,
}

impl XdpObject {
    /// Parse an object file's bytes.
    pub fn parse(bytes: &[u8]) -> Result<XdpObject, LoadError> {
        Ok(XdpObject {
            spec: elf::parse(bytes)?,
        })
    }

    /// What the object holds.
    pub fn spec(&self) -> &ObjectSpec {
        &self.spec
    }

    /// Prepare program `name` with a fresh set of its maps.
    pub fn program(&self, name: &str, exec: Exec) -> Result<XdpProgram, LoadError> {
        let p = self
            .spec
            .programs
            .iter()
            .find(|p| p.name == name)
            .ok_or_else(|| LoadError::NoProgram(name.to_string()))?;
        let image: std::sync::Arc<[u8]> = rewrite::userspace_image(p, &self.spec.maps)?.into();
        let maps = Maps::new(&self.spec.maps);
        let prog = XdpProgram {
            name: p.name.clone(),
            image,
            maps,
            exec,
        };
        // Run rbpf's verifier now, so that a bad program is refused at load.
        prog.vm()?;
        Ok(prog)
    }
}

/// A program prepared for the userspace VM, with its maps. Each runtime instance of a stage
/// makes its own VM ([`XdpProgram::vm`]); all share the maps.
#[derive(Clone, Debug)]
pub struct XdpProgram {
    name: String,
    /// The rewritten instructions (each VM keeps them alive while it borrows them).
    image: std::sync::Arc<[u8]>,
    maps: Maps,
    exec: Exec,
}

impl XdpProgram {
    /// The program's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its maps.
    pub fn maps(&self) -> &Maps {
        &self.maps
    }

    /// How it runs.
    pub fn exec(&self) -> Exec {
        self.exec
    }

    /// A VM running it.
    pub fn vm(&self) -> Result<XdpVm, LoadError> {
        XdpVm::new(self.image.clone(), self.maps.clone(), self.exec)
    }

    /// The rewritten instructions the VM runs.
    pub fn image(&self) -> &[u8] {
        &self.image
    }
}
