// Drops TCP and UDP frames to a port listed in the `blocked` hash map (key: port in host
// order, value: unused), counting them in `drops` (array, key 0); passes everything else.
// Truncated IPv4 headers are aborted.
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/in.h>
#include <linux/tcp.h>
#include <linux/udp.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

struct {
    __uint(type, BPF_MAP_TYPE_HASH);
    __uint(max_entries, 64);
    __type(key, __u32);
    __type(value, __u32);
} blocked SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __uint(max_entries, 1);
    __type(key, __u32);
    __type(value, __u64);
} drops SEC(".maps");

SEC("xdp")
int port_filter(struct xdp_md *ctx)
{
    void *data = (void *)(long)ctx->data;
    void *data_end = (void *)(long)ctx->data_end;
    struct ethhdr *eth = data;
    if ((void *)(eth + 1) > data_end)
        return XDP_PASS;
    if (eth->h_proto != bpf_htons(ETH_P_IP))
        return XDP_PASS;
    struct iphdr *ip = (void *)(eth + 1);
    if ((void *)(ip + 1) > data_end)
        return XDP_ABORTED;
    if (ip->ihl < 5)
        return XDP_ABORTED;
    void *l4 = (void *)ip + ip->ihl * 4;
    __u32 port;
    if (ip->protocol == IPPROTO_TCP) {
        struct tcphdr *tcp = l4;
        if ((void *)(tcp + 1) > data_end)
            return XDP_PASS;
        port = bpf_ntohs(tcp->dest);
    } else if (ip->protocol == IPPROTO_UDP) {
        struct udphdr *udp = l4;
        if ((void *)(udp + 1) > data_end)
            return XDP_PASS;
        port = bpf_ntohs(udp->dest);
    } else {
        return XDP_PASS;
    }
    if (!bpf_map_lookup_elem(&blocked, &port))
        return XDP_PASS;
    __u32 zero = 0;
    __u64 *n = bpf_map_lookup_elem(&drops, &zero);
    if (n)
        *n += 1; // (no atomics: the userspace VM has none; one CPU per map here)
    return XDP_DROP;
}

char LICENSE[] SEC("license") = "Dual MIT/GPL";
