// SPDX-License-Identifier: GPL-2.0
/* Programs attached to a target rather than by name: a socket, a network interface (XDP,
 * tcx), a cgroup (cgroup_skb, cgroup/sock_create). The network ones count IPv4 UDP packets
 * to port 4242; the cgroup ones count everything of the cgroup. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "counts.h"

#define PORT 4242
#define ETH_P_IP 0x0800
#define IPPROTO_UDP 17

enum { SOCKET, SOCKET_DROPPED, XDP, TCX, CGROUP_INGRESS, CGROUP_EGRESS, SOCK_CREATE };

SEC("socket")
int socket_count(struct __sk_buff *skb)
{
	count(SOCKET, 1);
	return skb->len;  /* keep the whole packet */
}

SEC("socket")
int socket_drop(struct __sk_buff *skb)
{
	count(SOCKET_DROPPED, 1);
	return 0;  /* keep nothing: the socket never sees it */
}

/* Whether bytes [data, end) hold an Ethernet + IPv4 + UDP header to PORT. */
static __always_inline int udp_to_port(void *data, void *end)
{
	struct ethhdr *eth = data;
	struct iphdr *ip = data + sizeof(*eth);
	struct udphdr *udp;

	if ((void *)(ip + 1) > end || eth->h_proto != bpf_htons(ETH_P_IP))
		return 0;
	if (ip->protocol != IPPROTO_UDP || ip->ihl != 5)
		return 0;
	udp = (void *)(ip + 1);
	if ((void *)(udp + 1) > end)
		return 0;
	return udp->dest == bpf_htons(PORT);
}

SEC("xdp")
int xdp_count(struct xdp_md *ctx)
{
	if (udp_to_port((void *)(long)ctx->data, (void *)(long)ctx->data_end))
		count(XDP, 1);
	return XDP_PASS;
}

SEC("tcx/ingress")
int tcx_count(struct __sk_buff *skb)
{
	if (udp_to_port((void *)(long)skb->data, (void *)(long)skb->data_end))
		count(TCX, 1);
	return TCX_NEXT;
}

SEC("cgroup_skb/ingress")
int cgroup_ingress(struct __sk_buff *skb)
{
	count(CGROUP_INGRESS, 1);
	return 1;  /* let it through */
}

SEC("cgroup_skb/egress")
int cgroup_egress(struct __sk_buff *skb)
{
	count(CGROUP_EGRESS, 1);
	return 1;
}

SEC("cgroup/sock_create")
int sock_create(struct bpf_sock *sk)
{
	count(SOCK_CREATE, 1);
	return 1;  /* allow it */
}

char LICENSE[] SEC("license") = "GPL";
