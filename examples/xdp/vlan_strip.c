// Strips one 802.1Q tag (moving the MAC addresses over it and the frame's start by four
// bytes with bpf_xdp_adjust_head) and passes the frame; untagged frames pass unchanged.
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

SEC("xdp")
int vlan_strip(struct xdp_md *ctx)
{
    void *data = (void *)(long)ctx->data;
    void *data_end = (void *)(long)ctx->data_end;
    unsigned char *p = data;
    if (p + 18 > (unsigned char *)data_end)
        return XDP_PASS;
    if (p[12] != 0x81 || p[13] != 0x00)
        return XDP_PASS;
    // Move the 12 bytes of MAC addresses four bytes on, over the tag.
    for (int i = 11; i >= 0; i--)
        p[i + 4] = p[i];
    if (bpf_xdp_adjust_head(ctx, 4))
        return XDP_ABORTED;
    return XDP_PASS;
}

char LICENSE[] SEC("license") = "Dual MIT/GPL";
