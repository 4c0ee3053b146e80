// Not shipped: grows the frame by 16 bytes at its tail and writes nothing there. The kernel
// hands the program zeroes in the new room (since 5.8); so must the userspace VM, or the
// bytes of an earlier frame in the same buffer would leave with this one.
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

SEC("xdp")
int grow_tail(struct xdp_md *ctx)
{
    if (bpf_xdp_adjust_tail(ctx, 16) != 0)
        return XDP_ABORTED;
    return XDP_PASS;
}

char LICENSE[] SEC("license") = "GPL";
