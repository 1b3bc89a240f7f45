/*
 * limit.c - what one core can do: the yardstick bench/compare measures
 * udpupper against.  An upper-case UDP echo with nothing else in it: no
 * protections, no UTF-8 (ASCII letters only), no Python.
 *
 *   - recvmmsg(2) batches of 64, any datagram UDP can carry (64 KiB buffers);
 *   - replies to one sender of one size (the last of a run may be shorter)
 *     coalesced into one UDP GSO send (UDP_SEGMENT), every run of a batch in
 *     one sendmmsg(2);
 *   - after a batch, busy-polls SPIN_US microseconds for the next before
 *     blocking again (udpupper's --busy-poll, 50 by default).
 *
 * Build: cc -O3 -o limit bench/servers/limit.c   (bench/compare does it)
 * Usage: limit PORT [SPIN_US [ADDRESS]]   (ADDRESS: 127.0.0.1 by default)
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#ifndef SOL_UDP
#define SOL_UDP 17
#endif
#ifndef UDP_SEGMENT
#define UDP_SEGMENT 103
#endif
#define BATCH 64
#define BUFFER 65536
#define STRIDE (BUFFER + 1536) /* not a power of two: no cache-set pile-up */
#define MAX_SEGMENT 1472       /* a segment fits an Ethernet frame */
#define MAX_GSO_BYTES 65000    /* one GSO send stays below 64 KiB */

static long long now_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1000000000LL + t.tv_nsec;
}

/* ASCII letters upper-cased in place, eight bytes a step where no byte has
 * its top bit set (then no byte carries into the next). */
static void upper(unsigned char *p, size_t n)
{
    const uint64_t ones = 0x0101010101010101ULL, high = 0x8080808080808080ULL;
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t word;
        memcpy(&word, p + i, 8);
        if (!(word & high)) {
            uint64_t from_a = word + ones * (0x80 - 'a'), past_z = word + ones * (0x80 - 'z' - 1);
            word ^= ((from_a & ~past_z) & high) >> 2;
            memcpy(p + i, &word, 8);
            continue;
        }
        for (size_t j = i; j < i + 8; j++)
            p[j] -= (unsigned char)((unsigned)(p[j] - 'a') < 26u) << 5;
    }
    for (; i < n; i++)
        p[i] -= (unsigned char)((unsigned)(p[i] - 'a') < 26u) << 5;
}

static int same_sender(const struct sockaddr_storage *a, socklen_t alen,
                       const struct sockaddr_storage *b, socklen_t blen)
{
    return alen == blen && memcmp(a, b, alen) == 0;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: %s PORT [SPIN_US [ADDRESS]]\n", argv[0]);
        return 2;
    }
    long spin_us = argc > 2 ? atol(argv[2]) : 0;
    const char *address = argc > 3 ? argv[3] : "127.0.0.1";
    struct sockaddr_storage bound = {0};
    socklen_t boundlen;
    int family;
    if (strchr(address, ':')) {
        struct sockaddr_in6 *six = (struct sockaddr_in6 *)&bound;
        six->sin6_family = family = AF_INET6;
        six->sin6_port = htons((uint16_t)atoi(argv[1]));
        if (inet_pton(AF_INET6, address, &six->sin6_addr) != 1)
            return fprintf(stderr, "bad address %s\n", address), 2;
        boundlen = sizeof *six;
    } else {
        struct sockaddr_in *four = (struct sockaddr_in *)&bound;
        four->sin_family = family = AF_INET;
        four->sin_port = htons((uint16_t)atoi(argv[1]));
        if (inet_pton(AF_INET, address, &four->sin_addr) != 1)
            return fprintf(stderr, "bad address %s\n", address), 2;
        boundlen = sizeof *four;
    }
    int fd = socket(family, SOCK_DGRAM, 0), big = 4 << 20;
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &big, sizeof big);
    if (bind(fd, (struct sockaddr *)&bound, boundlen) < 0) {
        perror("bind");
        return 1;
    }

    unsigned char *buffers = malloc((size_t)BATCH * STRIDE);
    static struct sockaddr_storage names[BATCH];
    static struct iovec in[BATCH], out_vectors[BATCH];
    static struct mmsghdr msgs[BATCH], out[BATCH];
    static union {
        char buf[CMSG_SPACE(sizeof(uint16_t))];
        struct cmsghdr align;
    } control[BATCH];
    if (!buffers)
        return perror("malloc"), 1;
    for (int i = 0; i < BATCH; i++) {
        in[i].iov_base = buffers + (size_t)i * STRIDE;
        in[i].iov_len = BUFFER;
        msgs[i].msg_hdr.msg_iov = &in[i];
        msgs[i].msg_hdr.msg_iovlen = 1;
        msgs[i].msg_hdr.msg_name = &names[i];
    }
    long long deadline = 0;
    for (;;) {
        for (int i = 0; i < BATCH; i++)
            msgs[i].msg_hdr.msg_namelen = sizeof names[i];
        int n;
        if (spin_us > 0 && deadline) {
            do
                n = recvmmsg(fd, msgs, BATCH, MSG_DONTWAIT, NULL);
            while (n <= 0 && now_ns() < deadline);
            if (n <= 0) {
                deadline = 0;
                continue;
            }
        } else if ((n = recvmmsg(fd, msgs, BATCH, MSG_WAITFORONE, NULL)) <= 0) {
            continue;
        }
        for (int i = 0; i < n; i++) {
            upper(in[i].iov_base, msgs[i].msg_len);
            out_vectors[i].iov_base = in[i].iov_base;
            out_vectors[i].iov_len = msgs[i].msg_len;
        }
        int runs = 0;
        for (int i = 0; i < n; runs++) {
            size_t segment = out_vectors[i].iov_len, bytes = segment;
            int j = i + 1;
            if (segment > 0 && segment <= MAX_SEGMENT)
                while (j < n && bytes + segment <= MAX_GSO_BYTES
                       && same_sender(&names[j], msgs[j].msg_hdr.msg_namelen, &names[i],
                                      msgs[i].msg_hdr.msg_namelen)
                       && out_vectors[j].iov_len > 0 && out_vectors[j].iov_len <= segment) {
                    bytes += out_vectors[j].iov_len;
                    if (out_vectors[j++].iov_len < segment)
                        break;
                }
            struct msghdr *h = &out[runs].msg_hdr;
            memset(h, 0, sizeof *h);
            h->msg_name = &names[i];
            h->msg_namelen = msgs[i].msg_hdr.msg_namelen;
            h->msg_iov = &out_vectors[i];
            h->msg_iovlen = (size_t)(j - i);
            if (j - i > 1) {
                uint16_t size = (uint16_t)segment;
                h->msg_control = control[runs].buf;
                h->msg_controllen = sizeof control[runs].buf;
                struct cmsghdr *c = CMSG_FIRSTHDR(h);
                c->cmsg_level = SOL_UDP;
                c->cmsg_type = UDP_SEGMENT;
                c->cmsg_len = CMSG_LEN(sizeof size);
                memcpy(CMSG_DATA(c), &size, sizeof size);
            }
            i = j;
        }
        for (int at = 0; at < runs;) {
            int sent = sendmmsg(fd, out + at, runs - at, 0);
            if (sent <= 0)
                at++; /* that one is lost, as a UDP server would lose it */
            else
                at += sent;
        }
        if (spin_us > 0)
            deadline = now_ns() + spin_us * 1000LL;
    }
}
