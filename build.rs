//! Build script: with the `dpdk` feature, generate the crate's DPDK binding.
//!
//! `pkg-config libdpdk` gives the include paths and the flags the headers need (they are
//! compiled with `-include rte_config.h` and a `-march`); bindgen reads `src/backends/dpdk/
//! wrapper.h` with the same flags and writes Rust declarations for an allow-listed set of
//! functions and types. DPDK's fast-path functions are `static inline` in its headers, so
//! bindgen also writes C wrappers for them, which `cc` compiles with the same flags.

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    #[cfg(feature = "dpdk")]
    dpdk::generate();
}

#[cfg(feature = "dpdk")]
mod dpdk {
    use std::env;
    use std::path::PathBuf;

    /// Functions the backend calls (plus the wrappers of their inline relatives).
    const FUNCTIONS: &[&str] = &[
        "rte_eal_init",
        "rte_eal_get_runtime_dir",
        "rte_eal_iova_mode",
        "rte_strerror",
        "flextoe_rte_errno",
        "rte_socket_id",
        "rte_dev_probe",
        "rte_dev_remove",
        "rte_eth_dev_get_port_by_name",
        "rte_eth_dev_info_get",
        "rte_eth_dev_configure",
        "rte_eth_rx_queue_setup",
        "rte_eth_tx_queue_setup",
        "rte_eth_dev_start",
        "rte_eth_dev_stop",
        "rte_eth_dev_close",
        "rte_eth_promiscuous_enable",
        "rte_eth_macaddr_get",
        "rte_eth_dev_get_mtu",
        "rte_eth_stats_get",
        "rte_eth_rx_burst",
        "rte_eth_tx_burst",
        "rte_eth_from_rings",
        "rte_ring_create",
        "rte_ring_free",
        "rte_ring_dequeue_burst",
        "rte_memzone_reserve_aligned",
        "rte_memzone_free",
        "rte_pktmbuf_pool_create_extbuf",
        "rte_pktmbuf_pool_create",
        "rte_pktmbuf_alloc",
        "rte_pktmbuf_free",
        "rte_pktmbuf_reset",
        "rte_mempool_free",
        "rte_mempool_avail_count",
        "rte_mempool_in_use_count",
    ];

    /// Constants and types used by name.
    const VARS: &[&str] = &[
        "RTE_ETH_.*OFFLOAD_.*CKSUM",
        "RTE_ETH_MQ_RX_RSS",
        "RTE_ETH_MQ_RX_NONE",
        "RTE_ETH_RSS_.*",
        "RTE_MBUF_F_TX_.*",
        "RTE_MBUF_F_EXTERNAL",
        "RTE_MEMZONE_IOVA_CONTIG",
        "RTE_PKTMBUF_HEADROOM",
        "RING_F_SP_ENQ",
        "RING_F_SC_DEQ",
        "RTE_ETH_NAME_MAX_LEN",
        "RTE_IOVA_VA",
        "RTE_MBUF_L2_LEN_OFS",
        "RTE_MBUF_L3_LEN_OFS",
    ];

    pub fn generate() {
        let wrapper = "src/backends/dpdk/wrapper.h";
        println!("cargo:rerun-if-changed={wrapper}");
        println!("cargo:rerun-if-env-changed=PKG_CONFIG");
        println!("cargo:rerun-if-env-changed=PKG_CONFIG_PATH");
        println!("cargo:rerun-if-env-changed=PKG_CONFIG_SYSROOT_DIR");
        println!("cargo:rerun-if-env-changed=PKG_CONFIG_LIBDIR");
        let lib = pkg_config::Config::new()
            .cargo_metadata(false)
            .probe("libdpdk")
            .unwrap_or_else(|e| {
                panic!(
                    "the `dpdk` feature needs DPDK's development files \
                     (Debian: apt-get install libdpdk-dev pkg-config clang): {e}"
                )
            });
        // The flags the headers need, as pkg-config gives them (`-include rte_config.h`,
        // `-march=...`, include paths).
        let mut flags: Vec<String> = Vec::new();
        for p in &lib.include_paths {
            flags.push(format!("-I{}", p.display()));
        }
        // The same pkg-config the probe used (PKG_CONFIG_<target> for cross builds; the
        // sysroot and search path come from the environment it inherits).
        let target_var = format!(
            "PKG_CONFIG_{}",
            env::var("TARGET").unwrap_or_default().replace('-', "_")
        );
        let cflags = std::process::Command::new(
            env::var(&target_var)
                .or_else(|_| env::var("PKG_CONFIG"))
                .unwrap_or_else(|_| "pkg-config".into()),
        )
        .args(["--cflags", "libdpdk"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
        let mut words = cflags.split_whitespace();
        while let Some(w) = words.next() {
            if w == "-include" {
                if let Some(h) = words.next() {
                    flags.push("-include".into());
                    flags.push(h.into());
                }
            } else if w.starts_with("-march") || w.starts_with("-mcpu") || w.starts_with("-D") {
                flags.push(w.into());
            }
        }
        let target = env::var("TARGET").expect("cargo sets TARGET");
        let host = env::var("HOST").expect("cargo sets HOST");
        let mut clang_args = flags.clone();
        if target != host {
            clang_args.push(format!("--target={target}"));
        }
        let out = PathBuf::from(env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
        let static_fns = out.join("dpdk_static_fns");
        let mut b = bindgen::Builder::default()
            .header(wrapper)
            .clang_args(&clang_args)
            .wrap_static_fns(true)
            .wrap_static_fns_path(&static_fns)
            .derive_default(true)
            .layout_tests(false)
            .generate_comments(false)
            .prepend_enum_name(false)
            .parse_callbacks(Box::new(bindgen::CargoCallbacks::new()));
        for f in FUNCTIONS {
            b = b.allowlist_function(f);
        }
        for v in VARS {
            b = b.allowlist_item(v);
        }
        b = b
            .allowlist_type("rte_eth_conf")
            .allowlist_type("rte_eth_dev_info")
            .allowlist_type("rte_eth_stats")
            .allowlist_type("rte_ether_addr")
            .allowlist_type("rte_mbuf")
            .allowlist_type("rte_memzone")
            .allowlist_type("rte_pktmbuf_extmem");
        let bindings = b
            .generate()
            .unwrap_or_else(|e| panic!("bindgen could not read DPDK's headers: {e}"));
        bindings
            .write_to_file(out.join("dpdk_bindings.rs"))
            .expect("write the DPDK binding");
        let mut cc = cc::Build::new();
        cc.file(static_fns.with_extension("c"))
            .include(".")
            .flag("-Wno-unused-parameter")
            .warnings(false);
        for f in &flags {
            cc.flag(f);
        }
        cc.compile("flextoe_dpdk_inline");
        for p in &lib.link_paths {
            println!("cargo:rustc-link-search=native={}", p.display());
        }
        for l in [
            "rte_net_ring",
            "rte_ethdev",
            "rte_mbuf",
            "rte_mempool",
            "rte_ring",
            "rte_eal",
        ] {
            println!("cargo:rustc-link-lib=dylib={l}");
        }
    }
}
