// Not shipped: calls the loader's own "key proven on the stack" helper number with a key
// pointer taken from the packet, which the loader must refuse.
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

static long (*forged_update)(void *map, const void *key, const void *value, __u64 flags) = (void *)0x1002;

struct {
    __uint(type, BPF_MAP_TYPE_HASH);
    __uint(max_entries, 4);
    __type(key, __u64);
    __type(value, __u64);
} m SEC(".maps");

SEC("xdp")
int forged(struct xdp_md *ctx)
{
    void *far = (void *)(long)ctx->data + 100000;
    forged_update(&m, far, far, 0);
    return XDP_PASS;
}

char LICENSE[] SEC("license") = "GPL";
