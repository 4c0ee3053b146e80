// Not shipped: loops until a stack slot it never changes changes. The userspace loader must
// refuse it (a jump back), or a frame would stall the data path for ever.
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

SEC("xdp")
int spin(struct xdp_md *ctx)
{
    volatile __u32 x = 0;
    while (x == 0)
        ;
    return XDP_PASS;
}

char LICENSE[] SEC("license") = "GPL";
