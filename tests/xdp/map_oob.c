// Not shipped: writes 8 bytes at offset 15 of an 8-byte map value, past the value and into
// what follows it. The kernel's verifier refuses it; the userspace interpreter must stop it
// at run time rather than write past the map's storage.
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

struct {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __uint(max_entries, 1);
    __type(key, __u32);
    __type(value, __u64);
} one SEC(".maps");

SEC("xdp")
int map_oob(struct xdp_md *ctx)
{
    __u32 k = 0;
    unsigned char *v = bpf_map_lookup_elem(&one, &k);
    if (!v)
        return XDP_ABORTED;
    *(volatile __u64 *)(v + 15) = 0x4141414141414141ULL;
    return XDP_PASS;
}

char LICENSE[] SEC("license") = "GPL";
