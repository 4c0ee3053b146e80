// Counts frames and bytes per EtherType class in an array map (0: IPv4, 1: ARP, 2: other;
// value: frames, bytes) and reflects frames whose first byte of destination MAC is 0xff
// back out (XDP_TX) after swapping the MAC addresses; everything else passes.
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

struct counts {
    __u64 frames;
    __u64 bytes;
};

struct {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __uint(max_entries, 3);
    __type(key, __u32);
    __type(value, struct counts);
} by_type SEC(".maps");

SEC("xdp")
int counter(struct xdp_md *ctx)
{
    void *data = (void *)(long)ctx->data;
    void *data_end = (void *)(long)ctx->data_end;
    struct ethhdr *eth = data;
    if ((void *)(eth + 1) > data_end)
        return XDP_DROP;
    __u32 key = 2;
    if (eth->h_proto == bpf_htons(ETH_P_IP))
        key = 0;
    else if (eth->h_proto == bpf_htons(ETH_P_ARP))
        key = 1;
    struct counts *c = bpf_map_lookup_elem(&by_type, &key);
    if (c) {
        c->frames += 1;
        c->bytes += (__u64)(data_end - data);
    }
    if (eth->h_dest[0] == 0xff) {
        unsigned char tmp[ETH_ALEN];
        __builtin_memcpy(tmp, eth->h_dest, ETH_ALEN);
        __builtin_memcpy(eth->h_dest, eth->h_source, ETH_ALEN);
        __builtin_memcpy(eth->h_source, tmp, ETH_ALEN);
        return XDP_TX;
    }
    return XDP_PASS;
}

char LICENSE[] SEC("license") = "Dual MIT/GPL";
