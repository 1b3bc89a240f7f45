/*
 * udpupper.server.protections._sources: udpupper.server.protections.policy.Sources, in C.
 *
 * The same class, the same answers (the tests hold both to each other): each
 * source address as the hot path keeps it, one bytes object, its kind (one
 * byte: NORMAL, EXEMPT or BAD) then its rate-limiting prefix, remembered for
 * up to `size` addresses and then all forgotten at once.
 *
 * A flood of spoofed sources brings nothing but addresses never seen, and in
 * Python each cost a dict miss, a method call, `inet_pton`, slices, a
 * concatenation and a dict store: about 0.5 us a datagram in the daemon,
 * against 0.05 us for a known one.  Here a known address is one probe of a
 * small array (its hash, the text and the key side by side) and a new one is
 * read, judged and stored without leaving C.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>

#include <arpa/inet.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>

#include "_table.h"

enum { NORMAL = 0, EXEMPT = 1, BAD = 2 };

typedef struct {
    Py_hash_t hash;
    PyObject *host; /* NULL: a free slot */
    PyObject *key;
} entry;

typedef struct {
    unsigned char bytes[16];
    int size;       /* 4 or 16: the family's address length */
    int prefixlen;
} network;

typedef struct {
    PyObject_HEAD
    Py_ssize_t size, count;
    entry *table;
    table_shape shape;
    network *exempt;
    Py_ssize_t exempt_count;
} Sources;

static const unsigned char ipv4_mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xFF, 0xFF};
static const unsigned char unspecified[16] = {0};

static void forget_all(Sources *self)
{
    uint64_t i;

    for (i = 0; self->table && i <= self->shape.mask; i++) {
        Py_CLEAR(self->table[i].host);
        Py_CLEAR(self->table[i].key);
    }
    self->count = 0;
}

/* One network of `exempt`: an ipaddress network's packed address and length. */
static int read_network(PyObject *object, network *out)
{
    PyObject *address = PyObject_GetAttrString(object, "network_address"), *packed = NULL,
             *length = NULL;
    Py_ssize_t size;
    long prefixlen;
    int result = -1;

    if (!address || !(packed = PyObject_GetAttrString(address, "packed"))
        || !(length = PyObject_GetAttrString(object, "prefixlen")))
        goto done;
    if (!PyBytes_Check(packed) || ((size = PyBytes_GET_SIZE(packed)) != 4 && size != 16)) {
        PyErr_SetString(PyExc_TypeError, "exempt must be IPv4 or IPv6 networks");
        goto done;
    }
    prefixlen = PyLong_AsLong(length);
    if (prefixlen == -1 && PyErr_Occurred())
        goto done;
    if (prefixlen < 0 || prefixlen > 8 * size) {
        PyErr_SetString(PyExc_ValueError, "a network's prefix length is out of range");
        goto done;
    }
    memcpy(out->bytes, PyBytes_AS_STRING(packed), (size_t)size);
    out->size = (int)size;
    out->prefixlen = (int)prefixlen;
    result = 0;
done:
    Py_XDECREF(address);
    Py_XDECREF(packed);
    Py_XDECREF(length);
    return result;
}

static int sources_init(Sources *self, PyObject *args, PyObject *kwargs)
{
    static char *names[] = {"exempt", "size", NULL};
    PyObject *exempt, *list;
    Py_ssize_t size = 4096, slots, i;
    table_shape shape;

    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O|n", names, &exempt, &size))
        return -1;
    if (size < 1) {
        PyErr_Format(PyExc_ValueError, "size must be 1 or more, not %zd", size);
        return -1;
    }
    if ((slots = table_shape_init(&shape, size, sizeof(entry), self)) < 0)
        return -1;
    if (!(list = PySequence_List(exempt)))
        return -1;
    forget_all(self);
    PyMem_Free(self->table);
    PyMem_Free(self->exempt);
    self->table = NULL;
    self->exempt = PyMem_Calloc((size_t)PyList_GET_SIZE(list) + 1, sizeof(network));
    self->exempt_count = 0;
    if (!self->exempt) {
        Py_DECREF(list);
        PyErr_NoMemory();
        return -1;
    }
    for (i = 0; i < PyList_GET_SIZE(list); i++) {
        if (read_network(PyList_GET_ITEM(list, i), &self->exempt[i]) < 0) {
            Py_DECREF(list);
            return -1;
        }
        self->exempt_count++;
    }
    Py_DECREF(list);
    if (!(self->table = PyMem_Calloc((size_t)slots, sizeof(entry)))) {
        PyErr_NoMemory();
        return -1;
    }
    self->shape = shape;
    self->size = size;
    self->count = 0;
    return 0;
}

static void sources_dealloc(Sources *self)
{
    forget_all(self);
    PyMem_Free(self->table);
    PyMem_Free(self->exempt);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int is_exempt(const Sources *self, const unsigned char *packed, int size)
{
    Py_ssize_t i;

    for (i = 0; i < self->exempt_count; i++) {
        const network *net = &self->exempt[i];
        int whole = net->prefixlen / 8, bits = net->prefixlen % 8;

        if (net->size != size || memcmp(net->bytes, packed, (size_t)whole) != 0)
            continue;
        if (!bits || ((net->bytes[whole] ^ packed[whole]) & (0xFF << (8 - bits)) & 0xFF) == 0)
            return 1;
    }
    return 0;
}

/* `host`, a str, as a key: its kind, then its prefix (policy.py's
 * Sources.add). */
static PyObject *classify(const Sources *self, PyObject *host)
{
    unsigned char packed[16], key[8];
    char text[64];
    const char *utf8;
    Py_ssize_t length;
    int size, prefix;

    if (!(utf8 = PyUnicode_AsUTF8AndSize(host, &length)))
        return NULL;
    if ((Py_ssize_t)strlen(utf8) != length) {
        PyErr_SetString(PyExc_ValueError, "embedded null character");
        return NULL;
    }
    if (memchr(utf8, ':', (size_t)length)) {
        const char *scope = memchr(utf8, '%', (size_t)length);
        Py_ssize_t used = scope ? scope - utf8 : length;

        if (used >= (Py_ssize_t)sizeof(text))
            goto illegal;
        memcpy(text, utf8, (size_t)used); /* without its scope, as inet_pton needs */
        text[used] = '\0';
        if (inet_pton(AF_INET6, text, packed) != 1)
            goto illegal;
        size = 16;
        prefix = 7; /* the /56 */
        key[0] = packed[0] == 0xFF || memcmp(packed, ipv4_mapped, 12) == 0
                         || memcmp(packed, unspecified, 16) == 0
                     ? BAD
                     : NORMAL;
    } else {
        if (inet_pton(AF_INET, utf8, packed) != 1)
            goto illegal;
        size = 4;
        prefix = 3; /* the /24 */
        key[0] = packed[0] == 0 || packed[0] >= 224 ? BAD : NORMAL;
    }
    if (key[0] == NORMAL && is_exempt(self, packed, size))
        key[0] = EXEMPT;
    memcpy(key + 1, packed, (size_t)prefix);
    return PyBytes_FromStringAndSize((const char *)key, 1 + prefix);
illegal:
    PyErr_SetString(PyExc_OSError, "illegal IP address string passed to inet_pton");
    return NULL;
}

/* The slot of `host` (of `hash`), or the free one where it would go: as
 * _table.h's table_find, but a key is its text, compared. */
static entry *find(Sources *self, PyObject *host, Py_hash_t hash)
{
    uint64_t at = table_start(&self->shape, (uint64_t)hash);

    for (;; at = table_next(&self->shape, at)) {
        entry *slot = &self->table[at];
        if (!slot->host)
            return slot;
        if (slot->hash == hash) {
            int same = slot->host == host ? 1 : PyObject_RichCompareBool(slot->host, host, Py_EQ);
            if (same < 0)
                return NULL;
            if (same)
                return slot;
        }
    }
}

/* Classify `host`, not known yet, and remember it (at `slot`, if given). */
static PyObject *remember(Sources *self, PyObject *host, Py_hash_t hash, entry *slot)
{
    PyObject *key = classify(self, host);

    if (!key)
        return NULL;
    if (self->count >= self->size) {
        forget_all(self); /* full: simply cleared, as the Python class does */
        slot = NULL;
    }
    if (!slot && !(slot = find(self, host, hash))) {
        Py_DECREF(key);
        return NULL;
    }
    if (!slot->host)
        self->count++;
    Py_XSETREF(slot->host, Py_NewRef(host));
    Py_XSETREF(slot->key, Py_NewRef(key));
    slot->hash = hash;
    return key;
}

static int check_ready(Sources *self)
{
    if (self->table)
        return 0;
    PyErr_SetString(PyExc_ValueError, "Sources.__init__ was not called");
    return -1;
}

/* get() and add(): `host`'s key, from memory unless `again`.  A str
 * subclass is taken as its plain text, so that no Python code (its own
 * __hash__ or __eq__) runs while a slot is held. */
static PyObject *look_up(Sources *self, PyObject *host, int again)
{
    Py_hash_t hash;
    entry *slot;
    PyObject *key;

    if (check_ready(self) < 0)
        return NULL;
    if (!PyUnicode_CheckExact(host)) {
        if (!PyUnicode_Check(host)) {
            PyErr_Format(PyExc_TypeError, "a source address is a str, not %.100s",
                         Py_TYPE(host)->tp_name);
            return NULL;
        }
        if (!(host = PyUnicode_FromObject(host)))
            return NULL;
        key = look_up(self, host, again);
        Py_DECREF(host);
        return key;
    }
    if ((hash = PyObject_Hash(host)) == -1 || !(slot = find(self, host, hash)))
        return NULL;
    if (slot->host && !again)
        return Py_NewRef(slot->key); /* the hot path: one probe */
    return remember(self, host, hash, slot);
}

static PyObject *sources_get(Sources *self, PyObject *host)
{
    return look_up(self, host, 0);
}

static PyObject *sources_add(Sources *self, PyObject *host)
{
    return look_up(self, host, 1);
}

static Py_ssize_t sources_length(Sources *self)
{
    return self->count;
}

static PyMethodDef sources_methods[] = {
    {"get", (PyCFunction)sources_get, METH_O,
     "get(host) -> its key: its kind (NORMAL, EXEMPT or BAD), then its prefix"},
    {"add", (PyCFunction)sources_add, METH_O, "add(host) -> its key, classified again"},
    {NULL, NULL, 0, NULL},
};

static PyMemberDef sources_members[] = {
    {"size", T_PYSSIZET, offsetof(Sources, size), READONLY, "addresses remembered"},
    {NULL, 0, 0, 0, NULL},
};

static PySequenceMethods sources_sequence = {
    .sq_length = (lenfunc)sources_length,
};

static PyTypeObject SourcesType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "udpupper.server.protections._sources.Sources",
    .tp_doc = "Each source address as the hot path keeps it, remembered for up to "
              "`size` addresses.",
    .tp_basicsize = sizeof(Sources),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)sources_init,
    .tp_dealloc = (destructor)sources_dealloc,
    .tp_methods = sources_methods,
    .tp_members = sources_members,
    .tp_as_sequence = &sources_sequence,
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "udpupper.server.protections._sources",
    "udpupper.server.protections.policy.Sources in C: a new source costs about what a known one does.", -1,
    NULL,
};

PyMODINIT_FUNC PyInit__sources(void)
{
    PyObject *m;

    if (PyType_Ready(&SourcesType) < 0 || !(m = PyModule_Create(&module)))
        return NULL;
    if (PyModule_AddObjectRef(m, "Sources", (PyObject *)&SourcesType) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
