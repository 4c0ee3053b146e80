/* What the crate's DPDK binding is generated from (see build.rs). */
#include <rte_config.h>
#include <rte_eal.h>
#include <rte_errno.h>
#include <rte_dev.h>
#include <rte_ethdev.h>
#include <rte_eth_ring.h>
#include <rte_lcore.h>
#include <rte_mbuf.h>
#include <rte_memzone.h>
#include <rte_ring.h>

/* rte_errno is a thread-local variable: read it through a function. */
static inline int flextoe_rte_errno(void) { return rte_errno; }
