/*
 * udpupper._batch: receive and send UDP datagrams many at a time.
 *
 * Python's socket module makes one system call per datagram; on loopback
 * the call, not the upper-casing, is what a UDP echo spends its time on.
 * recvmmsg(2) and sendmmsg(2) move up to BATCH datagrams per call.  This
 * module does only that: which datagram gets which reply stays in Python.
 *
 * recv_batch(fd, count, pktinfo[, spin_us[, dscp]]) -> [(datagram, addr, route), ...]
 *     Reads up to `count` datagrams without blocking ([] when none wait);
 *     with `spin_us`, polls that many microseconds for the first one; with
 *     `dscp` (the socket has IP_RECVTOS and IPV6_RECVTCLASS on), the route
 *     has each reply marked with the DSCP its datagram arrived with.
 *     `addr` is (host, port), an IPv4 sender as IPv4 even on an IPv6
 *     socket.  `route` is an opaque bytes object that send_batch needs to
 *     answer the datagram: the sender's address and, with `pktinfo`, the
 *     ancillary data that makes the reply leave from the address the
 *     datagram was sent to.  Where the datagram must not be answered,
 *     `route` is an int instead, saying why: NOT_UNICAST (sent to a
 *     broadcast or multicast address), NO_DESTINATION (with `pktinfo`, the
 *     kernel did not say where it was sent, or truncated what it said), or
 *     NOT_IP (`addr` is None).  Every datagram read is in the list.
 *
 * send_batch(fd, [(reply, route), ...]) -> (sent, sent_bytes, [(index, errno), ...])
 *     Sends every reply without blocking; a reply the kernel refuses is
 *     skipped and listed with its index and errno, in order.
 *
 * route(host, port[, source]) -> bytes
 *     The route send_batch takes to send to `host` (an IPv4 or IPv6
 *     literal) and `port`, and with `source`, from that address (IP_PKTINFO
 *     or IPV6_PKTINFO): the one definition of the route's layout, which the
 *     bench and the flood build theirs with.
 *
 * count_into(buffer | None) -> None
 *     From now on, add what each recv_batch reads and each send_batch sends
 *     to the four native uint64s of `buffer` (datagrams read, replies sent,
 *     bytes read, bytes sent): what is read at once after the system call,
 *     what is to be sent before it (what fails is taken off after).  The buffer is shared
 *     memory its --workers parent reads: a worker killed before it reported
 *     leaves what it read and sent counted.  None stops it.
 *
 * reserve() -> None
 *     Allocates the receive buffers (4 MiB) now, or raises MemoryError: the
 *     daemon calls it before it says it listens, so that too little memory
 *     fails the start, not the first datagram.  With glibc, it also has the
 *     C library keep up to 16 MiB of freed memory for reuse, rather than
 *     fault the pages of large datagrams in again every batch.
 *
 * check_control(control, flags) -> bytes | int
 *     The destination check of recv_batch on one message's raw ancillary
 *     data and flags: the ancillary data of the reply, or why there is none.
 *     For tests, which hold it to the same table as the Python path's.
 *
 * The buffers are static: the GIL is held throughout (the calls never
 * block), so one thread at a time uses them.
 */
#define PY_SSIZE_T_CLEAN
#define _GNU_SOURCE
#include <Python.h>

#include <arpa/inet.h>
#include <errno.h>
#include <net/if.h>
#include <netinet/in.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif

#include "_layout.h"

#define BATCH LAYOUT_BATCH
#define BUFFER_SIZE LAYOUT_BUFFER_SIZE
/* The buffers lie this far apart: not a power of two, so that the first
 * bytes of each, where a datagram of ordinary size lands, fall into
 * different cache sets rather than all into one. */
#define BUFFER_STRIDE (BUFFER_SIZE + 1536)
/* Freed memory the C library keeps for reuse: two batches of the largest
 * datagrams and their replies. */
#define KEEP_FREED (4 * BATCH * BUFFER_SIZE)
/* Room for IP_PKTINFO and IPV6_PKTINFO together, and for what else a socket
 * unit may turn on (SO_TIMESTAMPING, SO_RXQ_OVFL, ...). */
#define CONTROL_SIZE 512

/* Why a datagram gets no route (the values of recv_batch's int routes). */
enum { NOT_UNICAST = LAYOUT_NOT_UNICAST, NO_DESTINATION = LAYOUT_NO_DESTINATION,
       NOT_IP = LAYOUT_NOT_IP };

/* Ancillary data, aligned as the CMSG_* macros need it. */
typedef union {
    struct cmsghdr header;
    char bytes[CONTROL_SIZE];
} control_buffer;

#ifndef SOL_UDP
#define SOL_UDP 17
#endif
#ifndef UDP_SEGMENT
#define UDP_SEGMENT 103 /* Linux 4.18 */
#endif
/* A segmented send: at most this many datagrams (the kernel's limit) and
 * bytes (below the 64 KiB of one IP packet, with room for the headers), of
 * at most MAX_SEGMENT bytes each: what fits an Ethernet frame.  On a route
 * with a smaller MTU the kernel refuses the run, and it goes out
 * one datagram at a time (EMSGSIZE), fragmented as it would have been. */
#define MAX_SEGMENTS 64
#define MAX_GSO_BYTES 65000
#define MAX_SEGMENT 1472

static int gso_off; /* the kernel refused UDP_SEGMENT: never try it again */
static Py_buffer counts; /* count_into(): .buf is NULL when unset */
static char *buffers;
static struct mmsghdr messages[BATCH];
static control_buffer send_controls[BATCH];
static int runs[BATCH], run_sizes[BATCH]; /* each message's first reply and how many */
static struct iovec vectors[BATCH];
/* recv_batch's own, apart from send_batch's: kept from call to call. */
static struct mmsghdr receive_messages[BATCH];
static struct iovec receive_vectors[BATCH];
static struct sockaddr_storage names[BATCH];
static control_buffer controls[BATCH];
/* How many receive headers are made, with room for control data or not,
 * and how many the last call let the kernel write to. */
static int receive_ready, receive_control, receive_used;
/* How many datagrams the next call asks for: all `count` while batches are
 * small, fewer after one of more than BATCH_BYTES, so that what a batch
 * reads, copies and upper-cases stays in the core's own cache (64
 * datagrams of 64 KiB are 4 MiB, and each was evicted before its turn). */
#define BATCH_BYTES (256 * 1024)
static int receive_limit = BATCH;

/* Append one control message to the reply's ancillary data `out`, `used`
 * bytes long (a multiple of the alignment CMSG_SPACE keeps): the new length.
 * The caller leaves room for it. */
static Py_ssize_t put_control_at(control_buffer *out, Py_ssize_t used, int level, int type,
                                 const void *data, size_t size)
{
    struct cmsghdr *c = (struct cmsghdr *)(out->bytes + used);

    memset(c, 0, CMSG_SPACE(size));
    c->cmsg_level = level;
    c->cmsg_type = type;
    c->cmsg_len = CMSG_LEN(size);
    memcpy(CMSG_DATA(c), data, size);
    return used + (Py_ssize_t)CMSG_SPACE(size);
}

/* The first control message of `out`. */
static Py_ssize_t put_control(control_buffer *out, int level, int type, const void *data,
                              size_t size)
{
    return put_control_at(out, 0, level, type, data, size);
}

/* The ancillary data of a reply to the datagram `header` received, written
 * to `out`: its length, or minus one of NOT_UNICAST and NO_DESTINATION + 1.
 * Fails closed: no destination information, or a truncated one, is no
 * reply.  `ipv4` is set when the datagram came over IPv4. */
static Py_ssize_t reply_control(struct msghdr *header, control_buffer *out, int *ipv4_packet)
{
    struct in6_pktinfo ipv6;
    struct in_pktinfo ipv4;
    int have_ipv6 = 0, have_ipv4 = 0;
    struct cmsghdr *cmsg;

    *ipv4_packet = 0;
    if (header->msg_flags & MSG_CTRUNC)
        return -(NO_DESTINATION + 1);
    for (cmsg = CMSG_FIRSTHDR(header); cmsg; cmsg = CMSG_NXTHDR(header, cmsg)) {
        /* Copied out: CMSG_DATA need not be aligned for the structure. */
        if (cmsg->cmsg_level == IPPROTO_IPV6 && cmsg->cmsg_type == IPV6_PKTINFO
            && cmsg->cmsg_len >= CMSG_LEN(sizeof(ipv6))) {
            memcpy(&ipv6, CMSG_DATA(cmsg), sizeof(ipv6));
            have_ipv6 = 1;
        } else if (cmsg->cmsg_level == IPPROTO_IP && cmsg->cmsg_type == IP_PKTINFO
                   && cmsg->cmsg_len >= CMSG_LEN(sizeof(ipv4))) {
            memcpy(&ipv4, CMSG_DATA(cmsg), sizeof(ipv4));
            have_ipv4 = 1;
        }
    }
    if (have_ipv4) {
        *ipv4_packet = 1;
        /* A subnet broadcast is sent to an address that is not the local
         * one the kernel would answer from; 224/4 and up is multicast,
         * class E and 255.255.255.255. */
        if (ipv4.ipi_addr.s_addr != ipv4.ipi_spec_dst.s_addr
            || (ntohl(ipv4.ipi_addr.s_addr) >> 28) >= 0xE)
            return -(NOT_UNICAST + 1);
        /* IP_PKTINFO on an IPv6 socket too: its 32 bytes fit the kernel's
         * stack buffer, where IPV6_PKTINFO's 40 cost an allocation a reply. */
        struct in_pktinfo info = {.ipi_ifindex = 0, .ipi_spec_dst = ipv4.ipi_spec_dst};
        return put_control(out, IPPROTO_IP, IP_PKTINFO, &info, sizeof(info));
    }
    if (have_ipv6) {
        if (ipv6.ipi6_addr.s6_addr[0] == 0xFF)
            return -(NOT_UNICAST + 1); /* ff00::/8 */
        return put_control(out, IPPROTO_IPV6, IPV6_PKTINFO, &ipv6, sizeof(ipv6));
    }
    return -(NO_DESTINATION + 1);
}

/* Append to the reply's ancillary data `out`, `used` bytes long, the DSCP
 * that `header` arrived with (IP_TOS or IPV6_TCLASS, as it came), without
 * its ECN bits, which say something of the path the request took, not of
 * the reply's: the new length.  Nothing when the kernel said none. */
static Py_ssize_t reflect_dscp(struct msghdr *header, control_buffer *out, Py_ssize_t used)
{
    struct cmsghdr *cmsg;
    int value = -1, level = 0, type = 0;

    for (cmsg = CMSG_FIRSTHDR(header); cmsg; cmsg = CMSG_NXTHDR(header, cmsg)) {
        if (cmsg->cmsg_level == IPPROTO_IP && cmsg->cmsg_type == IP_TOS
            && cmsg->cmsg_len >= CMSG_LEN(1)) {
            value = *(unsigned char *)CMSG_DATA(cmsg);
            level = IPPROTO_IP, type = IP_TOS;
        } else if (cmsg->cmsg_level == IPPROTO_IPV6 && cmsg->cmsg_type == IPV6_TCLASS
                   && cmsg->cmsg_len >= CMSG_LEN(sizeof(int))) {
            memcpy(&value, CMSG_DATA(cmsg), sizeof(value));
            level = IPPROTO_IPV6, type = IPV6_TCLASS;
        }
    }
    if (value < 0 || used + (Py_ssize_t)CMSG_SPACE(sizeof(int)) > CONTROL_SIZE)
        return used;
    value &= 0xFC;
    return put_control_at(out, used, level, type, &value, sizeof(value));
}

/* An IPv4 address as inet_ntop writes it, without its printf: a flood of
 * new senders formats one a datagram.  Returns the length written. */
static size_t format_ipv4(const unsigned char *address, char *text)
{
    char *at = text;
    int i;

    for (i = 0; i < 4; i++) {
        unsigned int byte = address[i];
        if (byte >= 100)
            *at++ = (char)('0' + byte / 100);
        if (byte >= 10)
            *at++ = (char)('0' + byte / 10 % 10);
        *at++ = (char)('0' + byte % 10);
        *at++ = '.';
    }
    *--at = '\0';
    return (size_t)(at - text);
}

/* `length` bytes of text as a str: copied, where they are ASCII (an
 * address always is), instead of decoded as UTF-8 (a scope's interface name
 * may not be). */
static PyObject *ascii_text(const char *text, size_t length)
{
    PyObject *result;
    size_t i;

    for (i = 0; i < length; i++)
        if ((unsigned char)text[i] >= 0x80)
            return PyUnicode_FromStringAndSize(text, (Py_ssize_t)length);
    if (!(result = PyUnicode_New((Py_ssize_t)length, 0x7f)))
        return NULL;
    memcpy(PyUnicode_DATA(result), text, length);
    return result;
}

/* The sender as (host, port), the host as Python's socket module writes it,
 * but an IPv4 sender (`ipv4_packet`) as IPv4 on an IPv6 socket too.  None
 * for an address that is not IP. */
static PyObject *format_address(struct sockaddr_storage *name, int ipv4_packet)
{
    char text[INET6_ADDRSTRLEN + IF_NAMESIZE + 2];
    size_t length;
    long port;
    PyObject *host, *number, *address;

    if (name->ss_family == AF_INET) {
        struct sockaddr_in *sin = (struct sockaddr_in *)name;
        length = format_ipv4((const unsigned char *)&sin->sin_addr, text);
        port = ntohs(sin->sin_port);
    } else if (name->ss_family == AF_INET6) {
        struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)name;
        if (ipv4_packet && IN6_IS_ADDR_V4MAPPED(&sin6->sin6_addr))
            format_ipv4(&sin6->sin6_addr.s6_addr[12], text);
        else
            inet_ntop(AF_INET6, &sin6->sin6_addr, text, INET6_ADDRSTRLEN);
        if (sin6->sin6_scope_id) {
            char scope[IF_NAMESIZE];
            size_t used = strlen(text);
            if (if_indextoname(sin6->sin6_scope_id, scope))
                snprintf(text + used, sizeof(text) - used, "%%%s", scope);
            else
                snprintf(text + used, sizeof(text) - used, "%%%u", sin6->sin6_scope_id);
        }
        port = ntohs(sin6->sin6_port);
        length = strlen(text);
    } else {
        Py_RETURN_NONE;
    }
    /* Made directly: Py_BuildValue("(sl)") parses its format each time. */
    if (!(host = ascii_text(text, length)))
        return NULL;
    if (!(address = PyTuple_New(2))) {
        Py_DECREF(host);
        return NULL;
    }
    PyTuple_SET_ITEM(address, 0, host);
    if (!(number = PyLong_FromLong(port))) {
        Py_DECREF(address);
        return NULL;
    }
    PyTuple_SET_ITEM(address, 1, number);
    return address;
}

static long long now_ns(void)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return now.tv_sec * 1000000000LL + now.tv_nsec;
}

static PyObject *count_into(PyObject *module, PyObject *buffer)
{
    Py_buffer view;

    if (buffer != Py_None) {
        if (PyObject_GetBuffer(buffer, &view, PyBUF_WRITABLE) < 0)
            return NULL;
        if (view.len < LAYOUT_COUNT_SLOTS * (Py_ssize_t)sizeof(uint64_t)
            || (uintptr_t)view.buf % sizeof(uint64_t)) {
            PyBuffer_Release(&view);
            PyErr_Format(PyExc_ValueError, "count_into needs %d aligned bytes",
                         LAYOUT_COUNT_SLOTS * (int)sizeof(uint64_t));
            return NULL;
        }
    }
    if (counts.buf)
        PyBuffer_Release(&counts);
    memset(&counts, 0, sizeof(counts));
    if (buffer != Py_None)
        counts = view;
    Py_RETURN_NONE;
}

/* The receive buffers, allocated once: 0, or -1 with MemoryError set. */
static int allocate_buffers(void)
{
    if (!buffers && !(buffers = PyMem_RawMalloc((size_t)BATCH * BUFFER_STRIDE))) {
        PyErr_NoMemory();
        return -1;
    }
    return 0;
}

static PyObject *reserve(PyObject *module, PyObject *unused)
{
    if (allocate_buffers() < 0)
        return NULL;
#ifdef __GLIBC__
    /* Each batch of large datagrams makes, then frees, up to 64 KiB objects
     * twice a datagram (the datagram, its reply).  glibc gives memory freed
     * at the top of its heap back to the system past 128 KiB, so every
     * batch faulted the same pages in again: at 64 KiB, window 64, that
     * halved the replies a second.  Keep up to two batches' worth. */
    mallopt(M_TRIM_THRESHOLD, KEEP_FREED);
    mallopt(M_MMAP_THRESHOLD, 256 * 1024);
#endif
    Py_RETURN_NONE;
}

/* The last sender recv_batch read, kept from one call to the next: its raw
 * address, the address object made of it and the last route. */
static struct sockaddr_storage last_name;
static socklen_t last_namelen;
static int last_ipv4;
static PyObject *last_addr, *last_route;

/* An int argument, as PyArg_ParseTuple's "i" takes it (__index__, range
 * checked); the two hot calls parse their own arguments, for at one
 * request at a time PyArg_ParseTuple's format cost a tenth of a round trip. */
static int int_argument(PyObject *object, int *out)
{
    long value = PyLong_AsLong(object);

    if (value == -1 && PyErr_Occurred())
        return -1;
    if (value < INT_MIN || value > INT_MAX) {
        PyErr_SetString(PyExc_OverflowError, "an argument is out of range for a C int");
        return -1;
    }
    *out = (int)value;
    return 0;
}

/* A truth argument, as "p" takes it. */
static int flag_argument(PyObject *object, int *out)
{
    return (*out = PyObject_IsTrue(object)) < 0 ? -1 : 0;
}

static PyObject *recv_batch(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    int fd, count, pktinfo, received, i, spin_us = 0, dscp = 0, want_control;
    long long deadline = 0;
    PyObject *list;

    if (nargs < 3 || nargs > 5) {
        PyErr_SetString(PyExc_TypeError,
                        "recv_batch(fd, count, pktinfo[, spin_us[, dscp]]) takes 3 to 5 arguments");
        return NULL;
    }
    if (int_argument(args[0], &fd) < 0 || int_argument(args[1], &count) < 0
        || flag_argument(args[2], &pktinfo) < 0
        || (nargs > 3 && int_argument(args[3], &spin_us) < 0)
        || (nargs > 4 && flag_argument(args[4], &dscp) < 0))
        return NULL;
    want_control = pktinfo || dscp;
    if (count < 1 || count > BATCH)
        count = BATCH;
    if (allocate_buffers() < 0)
        return NULL;
    /* The headers are made once, and after that only what the kernel wrote
     * in the last call's messages is set back: at one request at a time,
     * making 64 headers cost more than the rest of the call. */
    if (want_control != receive_control)
        receive_ready = 0;
    for (i = 0; i < receive_ready && i < receive_used; i++) {
        receive_messages[i].msg_hdr.msg_namelen = sizeof(names[i]);
        receive_messages[i].msg_hdr.msg_controllen = want_control ? CONTROL_SIZE : 0;
    }
    for (i = receive_ready; i < count; i++) {
        receive_vectors[i].iov_base = buffers + (size_t)i * BUFFER_STRIDE;
        receive_vectors[i].iov_len = BUFFER_SIZE;
        receive_messages[i].msg_hdr = (struct msghdr){
            .msg_name = &names[i],
            .msg_namelen = sizeof(names[i]),
            .msg_iov = &receive_vectors[i],
            .msg_iovlen = 1,
            .msg_control = want_control ? controls[i].bytes : NULL,
            .msg_controllen = want_control ? CONTROL_SIZE : 0,
        };
    }
    if (count > receive_ready)
        receive_ready = count;
    receive_control = want_control;
    receive_used = 0;
    if (spin_us > 0)
        deadline = now_ns() + spin_us * 1000LL;
    if (count > receive_limit)
        count = receive_limit;
    while ((received = recvmmsg(fd, receive_messages, count, MSG_DONTWAIT, NULL)) < 0
           && (errno == EAGAIN || errno == EWOULDBLOCK) && deadline && now_ns() < deadline)
        ; /* busy-poll: the next datagram is often a round trip away */
    /* A failed call may have written the first header too. */
    receive_used = received > 0 ? received : 1;
    if (received < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK)
            return PyList_New(0);
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    {
        uint64_t bytes = 0;
        for (i = 0; i < received; i++)
            bytes += receive_messages[i].msg_len;
        receive_limit = bytes <= BATCH_BYTES ? BATCH
                        : (int)((uint64_t)received * BATCH_BYTES / bytes) + 1;
        if (counts.buf) {
            __atomic_fetch_add((uint64_t *)counts.buf + LAYOUT_RECEIVED, (uint64_t)received,
                               __ATOMIC_RELAXED);
            __atomic_fetch_add((uint64_t *)counts.buf + LAYOUT_BYTES_IN, bytes, __ATOMIC_RELAXED);
        }
    }
    if (!(list = PyList_New(received)))
        return NULL;
    for (i = 0; i < received; i++) {
        struct msghdr *header = &receive_messages[i].msg_hdr;
        /* The route: the sender's address length, the address, then the
         * reply's ancillary data. */
        char route[1 + sizeof(struct sockaddr_storage) + CONTROL_SIZE];
        control_buffer reply;
        Py_ssize_t control = 0, route_size;
        int ipv4_packet = !pktinfo; /* without pktinfo, Linux's rule below */
        PyObject *datagram, *item;

        /* Without pktinfo (one address bound, not a wildcard), a mapped
         * sender on an IPv6 socket can only be IPv4: Linux drops IPv6
         * packets from IPv4-mapped sources. */
        if (pktinfo)
            control = reply_control(header, &reply, &ipv4_packet);
        if (dscp && control >= 0)
            control = reflect_dscp(header, &reply, control);
        /* A batch often comes from few senders, and one request at a time
         * from one: the same sender as the one before, in this batch or the
         * last, shares its address object, which saves making it again (and
         * lets Python compare it by identity). */
        if (!(last_addr && header->msg_namelen == last_namelen && ipv4_packet == last_ipv4
              && memcmp(&names[i], &last_name, last_namelen) == 0)) {
            Py_XDECREF(last_addr);
            if (!(last_addr = format_address(&names[i], ipv4_packet)))
                goto error;
            last_namelen = header->msg_namelen;
            memcpy(&last_name, &names[i], last_namelen);
            last_ipv4 = ipv4_packet;
        }
        if (last_addr == Py_None || control < 0) {
            Py_XSETREF(last_route, PyLong_FromLong(last_addr == Py_None ? NOT_IP
                                                   : (long)(-control - 1)));
        } else {
            route[0] = (char)header->msg_namelen;
            memcpy(route + 1, &names[i], header->msg_namelen);
            memcpy(route + 1 + header->msg_namelen, reply.bytes, (size_t)control);
            route_size = 1 + header->msg_namelen + control;
            if (!(last_route && PyBytes_CheckExact(last_route)
                  && PyBytes_GET_SIZE(last_route) == route_size
                  && memcmp(PyBytes_AS_STRING(last_route), route, route_size) == 0))
                Py_XSETREF(last_route, PyBytes_FromStringAndSize(route, route_size));
        }
        if (!last_route)
            goto error;
        if (!(datagram = PyBytes_FromStringAndSize(receive_vectors[i].iov_base,
                                                   (Py_ssize_t)receive_messages[i].msg_len)))
            goto error;
        if (!(item = PyTuple_New(3))) {
            Py_DECREF(datagram);
            goto error;
        }
        PyTuple_SET_ITEM(item, 0, datagram);
        PyTuple_SET_ITEM(item, 1, Py_NewRef(last_addr));
        PyTuple_SET_ITEM(item, 2, Py_NewRef(last_route));
        PyList_SET_ITEM(list, i, item);
    }
    return list;
error:
    Py_CLEAR(last_addr);
    Py_CLEAR(last_route);
    Py_DECREF(list);
    return NULL;
}

static PyObject *route(PyObject *module, PyObject *args)
{
    const char *host, *source = NULL;
    int port;
    struct sockaddr_storage name = {0};
    socklen_t namelen;
    control_buffer control;
    Py_ssize_t controllen = 0;
    char out[1 + sizeof(struct sockaddr_storage) + CONTROL_SIZE];

    if (!PyArg_ParseTuple(args, "si|z", &host, &port, &source))
        return NULL;
    if (port < 0 || port > 65535) {
        PyErr_SetString(PyExc_ValueError, "port must be 0 to 65535");
        return NULL;
    }
    if (strchr(host, ':')) {
        struct sockaddr_in6 *six = (struct sockaddr_in6 *)&name;
        six->sin6_family = AF_INET6;
        six->sin6_port = htons((uint16_t)port);
        if (inet_pton(AF_INET6, host, &six->sin6_addr) != 1)
            goto bad_address;
        namelen = sizeof(*six);
        if (source) {
            struct in6_pktinfo info = {0};
            if (inet_pton(AF_INET6, source, &info.ipi6_addr) != 1)
                goto bad_address;
            controllen = put_control(&control, IPPROTO_IPV6, IPV6_PKTINFO, &info, sizeof(info));
        }
    } else {
        struct sockaddr_in *four = (struct sockaddr_in *)&name;
        four->sin_family = AF_INET;
        four->sin_port = htons((uint16_t)port);
        if (inet_pton(AF_INET, host, &four->sin_addr) != 1)
            goto bad_address;
        namelen = sizeof(*four);
        if (source) {
            struct in_pktinfo info = {0};
            if (inet_pton(AF_INET, source, &info.ipi_spec_dst) != 1)
                goto bad_address;
            controllen = put_control(&control, IPPROTO_IP, IP_PKTINFO, &info, sizeof(info));
        }
    }
    out[0] = (char)namelen;
    memcpy(out + 1, &name, namelen);
    memcpy(out + 1 + namelen, control.bytes, (size_t)controllen);
    return PyBytes_FromStringAndSize(out, 1 + namelen + controllen);
bad_address:
    PyErr_Format(PyExc_ValueError, "not an IP address literal of one family: %s%s%s", host,
                 source ? ", " : "", source ? source : "");
    return NULL;
}

static PyObject *check_control(PyObject *module, PyObject *args)
{
    Py_buffer raw;
    int flags, ipv4_packet;
    control_buffer in, out;
    struct msghdr header = {0};
    Py_ssize_t control;

    if (!PyArg_ParseTuple(args, "y*i", &raw, &flags))
        return NULL;
    if (raw.len > CONTROL_SIZE) {
        PyBuffer_Release(&raw);
        PyErr_SetString(PyExc_ValueError, "control data too long");
        return NULL;
    }
    memset(&in, 0, sizeof(in));
    memcpy(in.bytes, raw.buf, raw.len);
    header.msg_control = raw.len ? in.bytes : NULL;
    header.msg_controllen = raw.len;
    header.msg_flags = flags;
    PyBuffer_Release(&raw);
    control = reply_control(&header, &out, &ipv4_packet);
    if (control < 0)
        return PyLong_FromLong((long)(-control - 1));
    return PyBytes_FromStringAndSize(out.bytes, control);
}

/* List reply `index` as refused with `code`. */
static int list_error(PyObject *errors, Py_ssize_t index, int code)
{
    PyObject *entry = Py_BuildValue("(ni)", index, code);
    int result = entry ? PyList_Append(errors, entry) : -1;

    Py_XDECREF(entry);
    return result;
}

/* Whether an error on a segmented send may be the segmenting's, not the
 * replies': a segment larger than the route's MTU (EMSGSIZE, EINVAL), or a
 * kernel or device that cannot segment at all (the others). */
static int segmentation_refused(int code)
{
    return code == EMSGSIZE || code == EINVAL || code == EIO || code == ENOPROTOOPT
           || code == EOPNOTSUPP;
}

static PyObject *send_batch(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    int fd;
    PyObject *replies, *errors, *result;
    Py_ssize_t total, start, sent = 0, sent_bytes = 0, sent_before = 0, bytes_before = 0;
    uint64_t chunk_bytes = 0;

    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "send_batch(fd, replies) takes 2 arguments");
        return NULL;
    }
    if (int_argument(args[0], &fd) < 0)
        return NULL;
    if (!PyList_Check(replies = args[1])) {
        PyErr_SetString(PyExc_TypeError, "send_batch takes a list of (reply, route)");
        return NULL;
    }
    if (!(errors = PyList_New(0)))
        return NULL;
    total = PyList_GET_SIZE(replies);
    for (start = 0; start < total; start += BATCH) {
        int count = (int)(total - start < BATCH ? total - start : BATCH), i, m = 0, at = 0;
        const char *routes[BATCH];
        Py_ssize_t route_sizes[BATCH];

        for (i = 0; i < count; i++) {
            PyObject *item = PyList_GET_ITEM(replies, start + i), *reply, *route;

            if (!PyTuple_Check(item) || PyTuple_GET_SIZE(item) != 2
                || !PyBytes_Check(reply = PyTuple_GET_ITEM(item, 0))
                || !PyBytes_Check(route = PyTuple_GET_ITEM(item, 1))
                || (route_sizes[i] = PyBytes_GET_SIZE(route)) < 1
                || (unsigned char)PyBytes_AS_STRING(route)[0] > route_sizes[i] - 1) {
                PyErr_SetString(PyExc_TypeError, "send_batch takes [(reply, route), ...]");
                Py_DECREF(errors);
                return NULL;
            }
            routes[i] = PyBytes_AS_STRING(route);
            vectors[i].iov_base = PyBytes_AS_STRING(reply);
            vectors[i].iov_len = PyBytes_GET_SIZE(reply);
        }
        /* One message per run of replies to the same route, of one size (the
         * last may be shorter), sent as one UDP GSO buffer that the kernel
         * cuts into datagrams: one trip down the stack for the run. */
        for (i = 0; i < count; m++) {
            const char *raw = routes[i];
            Py_ssize_t namelen = (unsigned char)raw[0], controllen = route_sizes[i] - 1 - namelen;
            size_t segment = vectors[i].iov_len, bytes = segment;
            int j = i + 1;

            if (!gso_off && segment > 0 && segment <= MAX_SEGMENT && (size_t)controllen + CMSG_SPACE(sizeof(uint16_t))
                                               <= CONTROL_SIZE)
                while (j < count && j - i < MAX_SEGMENTS && bytes + segment <= MAX_GSO_BYTES
                       && (routes[j] == raw
                           || (route_sizes[j] == route_sizes[i]
                               && memcmp(routes[j], raw, route_sizes[i]) == 0))
                       && vectors[j].iov_len > 0 && vectors[j].iov_len <= segment) {
                    bytes += vectors[j].iov_len;
                    if (vectors[j++].iov_len < segment)
                        break; /* a shorter one ends the run */
                }
            runs[m] = i;
            run_sizes[m] = j - i;
            messages[m].msg_hdr = (struct msghdr){
                .msg_name = (void *)(raw + 1),
                .msg_namelen = (socklen_t)namelen,
                .msg_iov = &vectors[i],
                .msg_iovlen = (size_t)(j - i),
                .msg_control = controllen ? (void *)(raw + 1 + namelen) : NULL,
                .msg_controllen = (size_t)controllen,
            };
            if (j - i > 1) {
                uint16_t size = (uint16_t)segment;
                control_buffer *control = &send_controls[m];
                struct cmsghdr *c;

                memcpy(control->bytes, raw + 1 + namelen, (size_t)controllen);
                c = (struct cmsghdr *)(control->bytes + controllen);
                memset(c, 0, CMSG_SPACE(sizeof(size)));
                c->cmsg_level = SOL_UDP;
                c->cmsg_type = UDP_SEGMENT;
                c->cmsg_len = CMSG_LEN(sizeof(size));
                memcpy(CMSG_DATA(c), &size, sizeof(size));
                messages[m].msg_hdr.msg_control = control->bytes;
                messages[m].msg_hdr.msg_controllen = controllen + CMSG_SPACE(sizeof(size));
            }
            i = j;
        }
        /* Counted as sent before the call, and what failed taken off after:
         * a worker killed during the call never returns from it, and the
         * kernel has sent the replies by then. */
        if (counts.buf) {
            chunk_bytes = 0;
            for (i = 0; i < count; i++)
                chunk_bytes += vectors[i].iov_len;
            sent_before = sent;
            bytes_before = sent_bytes;
            __atomic_fetch_add((uint64_t *)counts.buf + LAYOUT_REPLIED, (uint64_t)count,
                               __ATOMIC_RELAXED);
            __atomic_fetch_add((uint64_t *)counts.buf + LAYOUT_BYTES_OUT, chunk_bytes,
                               __ATOMIC_RELAXED);
        }
        while (at < m) {
            int done = sendmmsg(fd, messages + at, m - at, MSG_DONTWAIT), k;

            if (done < 0) {
                /* The first message of the rest failed. */
                int code = errno;
                struct msghdr *header = &messages[at].msg_hdr;

                if (code == EINTR)
                    continue;
                if (run_sizes[at] > 1 && segmentation_refused(code)) {
                    /* This run one by one; and when the kernel or the device
                     * cannot segment at all, one datagram a message from now. */
                    if (code != EINVAL && code != EMSGSIZE)
                        gso_off = 1;
                    for (k = 0; k < run_sizes[at]; k++) {
                        struct msghdr one = *header;
                        one.msg_iov = &vectors[runs[at] + k];
                        one.msg_iovlen = 1;
                        one.msg_controllen -= CMSG_SPACE(sizeof(uint16_t));
                        if (!one.msg_controllen)
                            one.msg_control = NULL;
                        if (sendmsg(fd, &one, MSG_DONTWAIT) >= 0) {
                            sent++;
                            sent_bytes += (Py_ssize_t)one.msg_iov->iov_len;
                        } else if (list_error(errors, start + runs[at] + k, errno) < 0) {
                            Py_DECREF(errors);
                            return NULL;
                        }
                    }
                } else {
                    for (k = 0; k < run_sizes[at]; k++)
                        if (list_error(errors, start + runs[at] + k, code) < 0) {
                            Py_DECREF(errors);
                            return NULL;
                        }
                }
                at++;
                continue;
            }
            for (k = at; k < at + done; k++) {
                sent_bytes += messages[k].msg_len;
                sent += run_sizes[k];
            }
            at += done;
        }
        if (counts.buf) {
            __atomic_fetch_sub((uint64_t *)counts.buf + LAYOUT_REPLIED,
                               (uint64_t)(count - (sent - sent_before)), __ATOMIC_RELAXED);
            __atomic_fetch_sub((uint64_t *)counts.buf + LAYOUT_BYTES_OUT,
                               chunk_bytes - (uint64_t)(sent_bytes - bytes_before), __ATOMIC_RELAXED);
        }
    }
    {
        PyObject *sent_count = PyLong_FromSsize_t(sent), *byte_count = PyLong_FromSsize_t(sent_bytes);

        result = sent_count && byte_count ? PyTuple_Pack(3, sent_count, byte_count, errors) : NULL;
        Py_XDECREF(sent_count);
        Py_XDECREF(byte_count);
        Py_DECREF(errors);
        return result;
    }
}

static PyMethodDef methods[] = {
    {"recv_batch", (PyCFunction)(void (*)(void))recv_batch, METH_FASTCALL,
     "recv_batch(fd, count, pktinfo[, spin_us[, dscp]]) -> [(datagram, (host, port), route), ...]"},
    {"send_batch", (PyCFunction)(void (*)(void))send_batch, METH_FASTCALL,
     "send_batch(fd, [(reply, route), ...]) -> (sent, sent_bytes, [(index, errno), ...])"},
    {"route", route, METH_VARARGS,
     "route(host, port[, source]) -> the route send_batch takes, from source if given"},
    {"count_into", count_into, METH_O,
     "count_into(buffer | None) -> None: count datagrams and bytes read and sent in shared memory"},
    {"reserve", reserve, METH_NOARGS, "reserve() -> None: allocate the receive buffers now"},
    {"check_control", check_control, METH_VARARGS,
     "check_control(control, flags) -> reply's ancillary data (bytes) or why none (int)"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "udpupper._batch",
    "Receive and send UDP datagrams many at a time (recvmmsg, sendmmsg).", -1, methods,
};

PyMODINIT_FUNC PyInit__batch(void)
{
    PyObject *m = PyModule_Create(&module);
    if (m && (PyModule_AddIntConstant(m, "BATCH", BATCH) < 0
              || PyModule_AddIntConstant(m, "NOT_UNICAST", NOT_UNICAST) < 0
              || PyModule_AddIntConstant(m, "NO_DESTINATION", NO_DESTINATION) < 0
              || PyModule_AddIntConstant(m, "NOT_IP", NOT_IP) < 0)) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
