/*
 * udpupper._batch: receive and send UDP datagrams many at a time.
 *
 * Python's socket module makes one system call per datagram; on loopback
 * the call, not the upper-casing, is what a UDP echo spends its time on.
 * recvmmsg(2) and sendmmsg(2) move up to BATCH datagrams per call.  This
 * module does only that: which datagram gets which reply stays in Python.
 *
 * recv_batch(fd, count, pktinfo[, spin_us]) -> [(datagram, host, port, route), ...]
 *     Reads up to `count` datagrams without blocking ([] when none wait);
 *     with `spin_us`, polls that many microseconds for the first one.
 *     `route` is an opaque bytes object that send_batch needs to answer
 *     the datagram: the sender's address and, with `pktinfo`, the ancillary
 *     data that makes the reply leave from the address the datagram was
 *     sent to.  `route` is None for a datagram sent to a broadcast or
 *     multicast address: it must not be answered.
 *
 * send_batch(fd, [(reply, route), ...]) -> (sent, sent_bytes, [errno, ...])
 *     Sends every reply without blocking; a reply the kernel refuses is
 *     skipped and its errno listed, in order.
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
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#define BATCH 64
#define BUFFER_SIZE 65536
#define CONTROL_SIZE 128

static char *buffers;
static struct mmsghdr messages[BATCH];
static struct iovec vectors[BATCH];
static struct sockaddr_storage names[BATCH];
static char controls[BATCH][CONTROL_SIZE];

/* The ancillary data of a reply, written to `out`; its length, 0 for none,
 * -1 when the datagram was sent to a broadcast or multicast address. */
static Py_ssize_t reply_control(struct msghdr *header, char *out)
{
    struct in6_pktinfo *ipv6 = NULL;
    struct in_pktinfo *ipv4 = NULL;
    struct cmsghdr *cmsg;

    for (cmsg = CMSG_FIRSTHDR(header); cmsg; cmsg = CMSG_NXTHDR(header, cmsg)) {
        if (cmsg->cmsg_level == IPPROTO_IPV6 && cmsg->cmsg_type == IPV6_PKTINFO)
            ipv6 = (struct in6_pktinfo *)CMSG_DATA(cmsg);
        else if (cmsg->cmsg_level == IPPROTO_IP && cmsg->cmsg_type == IP_PKTINFO)
            ipv4 = (struct in_pktinfo *)CMSG_DATA(cmsg);
    }
    if (ipv4) {
        /* A subnet broadcast is sent to an address that is not the local
         * one the kernel would answer from; 224/4 and up is multicast,
         * class E and 255.255.255.255. */
        if (ipv4->ipi_addr.s_addr != ipv4->ipi_spec_dst.s_addr
            || (ntohl(ipv4->ipi_addr.s_addr) >> 28) >= 0xE)
            return -1;
        if (!ipv6) {
            struct msghdr reply = {.msg_control = out, .msg_controllen = CMSG_SPACE(sizeof(*ipv4))};
            struct cmsghdr *c = CMSG_FIRSTHDR(&reply);
            struct in_pktinfo info = {.ipi_ifindex = 0, .ipi_spec_dst = ipv4->ipi_spec_dst};
            memset(out, 0, CMSG_SPACE(sizeof(info)));
            c->cmsg_level = IPPROTO_IP;
            c->cmsg_type = IP_PKTINFO;
            c->cmsg_len = CMSG_LEN(sizeof(info));
            memcpy(CMSG_DATA(c), &info, sizeof(info));
            return CMSG_SPACE(sizeof(info));
        }
    }
    if (ipv6) {
        if (ipv6->ipi6_addr.s6_addr[0] == 0xFF)
            return -1; /* ff00::/8 */
        struct msghdr reply = {.msg_control = out, .msg_controllen = CMSG_SPACE(sizeof(*ipv6))};
        struct cmsghdr *c = CMSG_FIRSTHDR(&reply);
        memset(out, 0, CMSG_SPACE(sizeof(*ipv6)));
        c->cmsg_level = IPPROTO_IPV6;
        c->cmsg_type = IPV6_PKTINFO;
        c->cmsg_len = CMSG_LEN(sizeof(*ipv6));
        memcpy(CMSG_DATA(c), ipv6, sizeof(*ipv6));
        return CMSG_SPACE(sizeof(*ipv6));
    }
    return 0;
}

/* The host, as Python's socket module writes it, and the port. */
static int format_address(struct sockaddr_storage *name, PyObject **host, long *port)
{
    char text[INET6_ADDRSTRLEN + IF_NAMESIZE + 2];

    if (name->ss_family == AF_INET) {
        struct sockaddr_in *sin = (struct sockaddr_in *)name;
        inet_ntop(AF_INET, &sin->sin_addr, text, sizeof(text));
        *port = ntohs(sin->sin_port);
    } else if (name->ss_family == AF_INET6) {
        struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)name;
        inet_ntop(AF_INET6, &sin6->sin6_addr, text, INET6_ADDRSTRLEN);
        if (sin6->sin6_scope_id) {
            char scope[IF_NAMESIZE];
            size_t used = strlen(text);
            if (if_indextoname(sin6->sin6_scope_id, scope))
                snprintf(text + used, sizeof(text) - used, "%%%s", scope);
            else
                snprintf(text + used, sizeof(text) - used, "%%%u", sin6->sin6_scope_id);
        }
        *port = ntohs(sin6->sin6_port);
    } else {
        PyErr_SetString(PyExc_OSError, "datagram from an address that is not IP");
        return -1;
    }
    *host = PyUnicode_FromString(text);
    return *host ? 0 : -1;
}

static long long now_ns(void)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return now.tv_sec * 1000000000LL + now.tv_nsec;
}

static PyObject *recv_batch(PyObject *module, PyObject *args)
{
    int fd, count, pktinfo, received, i, spin_us = 0;
    long long deadline = 0;
    PyObject *list;

    if (!PyArg_ParseTuple(args, "iip|i", &fd, &count, &pktinfo, &spin_us))
        return NULL;
    if (count < 1 || count > BATCH)
        count = BATCH;
    if (!buffers && !(buffers = PyMem_RawMalloc((size_t)BATCH * BUFFER_SIZE)))
        return PyErr_NoMemory();
    for (i = 0; i < count; i++) {
        vectors[i].iov_base = buffers + (size_t)i * BUFFER_SIZE;
        vectors[i].iov_len = BUFFER_SIZE;
        messages[i].msg_hdr = (struct msghdr){
            .msg_name = &names[i],
            .msg_namelen = sizeof(names[i]),
            .msg_iov = &vectors[i],
            .msg_iovlen = 1,
            .msg_control = pktinfo ? controls[i] : NULL,
            .msg_controllen = pktinfo ? CONTROL_SIZE : 0,
        };
    }
    if (spin_us > 0)
        deadline = now_ns() + spin_us * 1000LL;
    while ((received = recvmmsg(fd, messages, count, MSG_DONTWAIT, NULL)) < 0
           && (errno == EAGAIN || errno == EWOULDBLOCK) && deadline && now_ns() < deadline)
        ; /* busy-poll: the next datagram is often a round trip away */
    if (received < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK)
            return PyList_New(0);
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    if (!(list = PyList_New(received)))
        return NULL;
    for (i = 0; i < received; i++) {
        struct msghdr *header = &messages[i].msg_hdr;
        char route[1 + sizeof(struct sockaddr_storage) + CONTROL_SIZE];
        Py_ssize_t control = 0;
        PyObject *host, *item, *route_object;
        long port;

        if (format_address(&names[i], &host, &port) < 0)
            goto error;
        if (pktinfo)
            control = reply_control(header, route + 1 + header->msg_namelen);
        if (control < 0) {
            route_object = Py_NewRef(Py_None);
        } else {
            route[0] = (char)header->msg_namelen;
            memcpy(route + 1, &names[i], header->msg_namelen);
            route_object = PyBytes_FromStringAndSize(route, 1 + header->msg_namelen + control);
        }
        item = Py_BuildValue("(y#NlN)", vectors[i].iov_base, (Py_ssize_t)messages[i].msg_len,
                             host, port, route_object);
        if (!item)
            goto error;
        PyList_SET_ITEM(list, i, item);
    }
    return list;
error:
    Py_DECREF(list);
    return NULL;
}

static PyObject *send_batch(PyObject *module, PyObject *args)
{
    int fd;
    PyObject *replies, *errors;
    Py_ssize_t total, start, sent = 0, sent_bytes = 0;

    if (!PyArg_ParseTuple(args, "iO!", &fd, &PyList_Type, &replies))
        return NULL;
    if (!(errors = PyList_New(0)))
        return NULL;
    total = PyList_GET_SIZE(replies);
    for (start = 0; start < total; start += BATCH) {
        int count = (int)(total - start < BATCH ? total - start : BATCH), i, at = 0;

        for (i = 0; i < count; i++) {
            PyObject *item = PyList_GET_ITEM(replies, start + i), *reply, *route;
            const char *raw;
            Py_ssize_t size, namelen;

            if (!PyTuple_Check(item) || PyTuple_GET_SIZE(item) != 2
                || !PyBytes_Check(reply = PyTuple_GET_ITEM(item, 0))
                || !PyBytes_Check(route = PyTuple_GET_ITEM(item, 1))
                || (size = PyBytes_GET_SIZE(route)) < 1
                || (namelen = (unsigned char)(raw = PyBytes_AS_STRING(route))[0]) > size - 1) {
                PyErr_SetString(PyExc_TypeError, "send_batch takes [(reply, route), ...]");
                Py_DECREF(errors);
                return NULL;
            }
            vectors[i].iov_base = PyBytes_AS_STRING(reply);
            vectors[i].iov_len = PyBytes_GET_SIZE(reply);
            messages[i].msg_hdr = (struct msghdr){
                .msg_name = (void *)(raw + 1),
                .msg_namelen = (socklen_t)namelen,
                .msg_iov = &vectors[i],
                .msg_iovlen = 1,
                .msg_control = size - 1 - namelen ? (void *)(raw + 1 + namelen) : NULL,
                .msg_controllen = size - 1 - namelen,
            };
        }
        while (at < count) {
            int done = sendmmsg(fd, messages + at, count - at, MSG_DONTWAIT);
            if (done < 0) {
                /* The first message of the rest failed: list it, go on. */
                PyObject *code;
                if (errno == EINTR)
                    continue;
                if (!(code = PyLong_FromLong(errno)) || PyList_Append(errors, code) < 0) {
                    Py_XDECREF(code);
                    Py_DECREF(errors);
                    return NULL;
                }
                Py_DECREF(code);
                at++;
                continue;
            }
            for (i = at; i < at + done; i++)
                sent_bytes += messages[i].msg_len;
            sent += done;
            at += done;
        }
    }
    return Py_BuildValue("(nnN)", sent, sent_bytes, errors);
}

static PyMethodDef methods[] = {
    {"recv_batch", recv_batch, METH_VARARGS,
     "recv_batch(fd, count, pktinfo[, spin_us]) -> [(datagram, host, port, route), ...]"},
    {"send_batch", send_batch, METH_VARARGS,
     "send_batch(fd, [(reply, route), ...]) -> (sent, sent_bytes, [errno, ...])"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "udpupper._batch",
    "Receive and send UDP datagrams many at a time (recvmmsg, sendmmsg).", -1, methods,
};

PyMODINIT_FUNC PyInit__batch(void)
{
    PyObject *m = PyModule_Create(&module);
    if (m && PyModule_AddIntConstant(m, "BATCH", BATCH) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
