/*
 * dp_steer.c: steering a SO_REUSEPORT group by Connection ID (Linux).
 *
 * Several worker processes bind one UDP port with SO_REUSEPORT; the kernel
 * picks a socket per datagram by hashing the 4-tuple, so a client whose NAT
 * rebinds lands on a random worker, which does not have its session. The
 * classic-BPF program attached here (SO_ATTACH_REUSEPORT_CBPF) runs on each
 * datagram's UDP payload and returns the index of the socket to use:
 *   - a CID record (content type DP_CT_CID) long enough to hold a CID of
 *     cid_len bytes and a length field: the CID's first byte, the worker id
 *     the server put there (dp_config_set_cid's prefix);
 *   - anything else: 0xFFFFFFFF.
 * The kernel (net/core/sock_reuseport.c, run_bpf_filter) falls back to its
 * hash when the returned index is not below the number of sockets in the
 * group, so everything that is not a CID record, and CIDs naming a worker
 * that does not exist, are spread as without the program. The index of a
 * socket is its position in the group: the order in which the workers bound
 * (the kernel moves the last socket into the hole when one closes).
 */
#include "dtlspeer.h"

#if defined(__linux__)
#include <errno.h>
#include <linux/filter.h>
#include <sys/socket.h>
#ifndef SO_ATTACH_REUSEPORT_CBPF
#define SO_ATTACH_REUSEPORT_CBPF 51
#endif
#endif

int dp_socket_steer_by_cid(int64_t fd, uint32_t cid_len)
{
    if (fd < 0 || cid_len == 0 || cid_len > DP_CID_MAX) {
        return DP_ERR_INVALID_ARGUMENT;
    }
#if defined(__linux__)
    /* A short datagram must not reach the worker-id load: an out-of-bounds
     * load ends a classic-BPF program with 0, i.e. socket 0. */
    uint32_t min_len = DP_CID_OFFSET + cid_len + 2;
    struct sock_filter code[] = {
        BPF_STMT(BPF_LD | BPF_W | BPF_LEN, 0),                /* A = payload length */
        BPF_JUMP(BPF_JMP | BPF_JGE | BPF_K, min_len, 0, 4),   /* too short: kernel hash */
        BPF_STMT(BPF_LD | BPF_B | BPF_ABS, 0),                /* A = content type */
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, DP_CT_CID, 0, 2), /* not a CID record: hash */
        BPF_STMT(BPF_LD | BPF_B | BPF_ABS, DP_CID_OFFSET),    /* A = the CID's worker id */
        BPF_STMT(BPF_RET | BPF_A, 0),
        BPF_STMT(BPF_RET | BPF_K, 0xFFFFFFFFu),               /* out of range: kernel hash */
    };
    struct sock_fprog prog = {(unsigned short)(sizeof(code) / sizeof(code[0])), code};
    if (setsockopt((int)fd, SOL_SOCKET, SO_ATTACH_REUSEPORT_CBPF, &prog, sizeof(prog)) != 0) {
        return DP_ERR_ERRNO_BASE - errno;
    }
    return DP_OK;
#else
    return DP_ERR_UNSUPPORTED;
#endif
}
