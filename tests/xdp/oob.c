// Not shipped: reads past the frame without a bounds check. The kernel's verifier refuses
// it; the userspace interpreter must stop it at run time.
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

SEC("xdp")
int oob(struct xdp_md *ctx)
{
    unsigned char *p = (void *)(long)ctx->data;
    return p[4000] == 7 ? XDP_DROP : XDP_PASS;
}

char LICENSE[] SEC("license") = "GPL";
