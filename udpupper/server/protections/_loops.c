/*
 * udpupper.server.protections._loops: the loop breaker, in C.
 *
 * sketch() and echoes() are loops.python_sketch and python_echoes, with the
 * same answers (the tests hold both to each other): every answered datagram
 * is compared with the last reply sent to its address, here with a few
 * memcmp()s on the bytes where they lie, nothing allocated.
 *
 * LoopBreaker is loops.PythonLoopBreaker with its memory in two arrays
 * instead of two dicts, as _ratelimit.c keeps the rate limiter's.  A slot is
 * 16 bytes: a key (one pair of a sketch's quarters, with the payload's
 * length and the address's hash, mixed with a secret of the table's own
 * from getentropy) and its chain's count, in a table of _table.h's.  The
 * two generations are two arrays of twice `size` slots; a key found in
 * `older` is copied to `recent`; when `recent` holds `size` the arrays swap
 * and the new `recent` is cleared.  4 MiB at the default 65,536.
 *
 * A request that is not its own upper case (ordinary text) is told by the
 * sketches alone and touches no slot.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>

#include <stdint.h>
#include <string.h>

#include "_table.h"

#define SKETCH 32 /* replies this long or shorter are remembered whole */
#define PART (SKETCH / 4)

/* What is remembered of `size` bytes at `payload`: themselves, or four
 * samples of PART bytes written to `buffer`.  Sets *length. */
static const char *sketch_of(const char *payload, Py_ssize_t size, char *buffer,
                             Py_ssize_t *length)
{
    Py_ssize_t step;

    if (size <= SKETCH) {
        *length = size;
        return payload;
    }
    step = size / 4;
    memcpy(buffer, payload, PART);
    memcpy(buffer + PART, payload + step, PART);
    memcpy(buffer + 2 * PART, payload + 2 * step, PART);
    memcpy(buffer + 3 * PART, payload + size - PART, PART);
    *length = SKETCH;
    return buffer;
}

/* Two sketches of `size` bytes one echo apart: equal, or equal in at least
 * two of their four quarters (the last quarter takes the remainder). */
static int resemble(const char *new, const char *last, Py_ssize_t size)
{
    Py_ssize_t q;
    int same;

    if (memcmp(new, last, (size_t)size) == 0)
        return 1;
    if (size < 4)
        return 0;
    q = size / 4;
    same = (memcmp(new, last, (size_t)q) == 0)
           + (memcmp(new + q, last + q, (size_t)q) == 0)
           + (memcmp(new + 2 * q, last + 2 * q, (size_t)q) == 0)
           + (memcmp(new + 3 * q, last + 3 * q, (size_t)(size - 3 * q)) == 0);
    return same >= 2;
}

static int both_bytes(PyObject *const *args, Py_ssize_t nargs, Py_ssize_t wanted,
                      const char *name)
{
    Py_ssize_t i;

    if (nargs != wanted) {
        PyErr_Format(PyExc_TypeError, "%s() takes %zd arguments (%zd given)", name,
                     wanted, nargs);
        return 0;
    }
    for (i = 0; i < nargs; i++) {
        if (!PyBytes_Check(args[i])) {
            PyErr_Format(PyExc_TypeError, "%s() takes bytes, not %.100s", name,
                         Py_TYPE(args[i])->tp_name);
            return 0;
        }
    }
    return 1;
}

static PyObject *sketch(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    PyObject *payload, *result;
    Py_ssize_t length;

    if (!both_bytes(args, nargs, 1, "sketch"))
        return NULL;
    payload = args[0];
    if (PyBytes_GET_SIZE(payload) <= SKETCH)
        return Py_NewRef(payload);
    if (!(result = PyBytes_FromStringAndSize(NULL, SKETCH)))
        return NULL;
    sketch_of(PyBytes_AS_STRING(payload), PyBytes_GET_SIZE(payload),
              PyBytes_AS_STRING(result), &length);
    return result;
}

static PyObject *echoes(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    char buffer[SKETCH];
    const char *new;
    Py_ssize_t length;

    if (!both_bytes(args, nargs, 2, "echoes"))
        return NULL;
    new = sketch_of(PyBytes_AS_STRING(args[0]), PyBytes_GET_SIZE(args[0]), buffer, &length);
    if (length != PyBytes_GET_SIZE(args[1]))
        Py_RETURN_FALSE;
    return PyBool_FromLong(resemble(new, PyBytes_AS_STRING(args[1]), length));
}

/* The loop breaker's memory: the keys upper-case replies left, each with
 * its chain's count. */
typedef struct {
    uint64_t key;   /* a pair of quarters, the length and the address, mixed; 0: free */
    uint64_t count; /* round trips its chain counted since its last withheld reply */
} slot;

#define PAIRS 6
#define MAX_KEYS PAIRS

typedef struct {
    PyObject_HEAD
    long every;
    Py_ssize_t size;
    slot *recent, *older;
    Py_ssize_t recent_count, older_count, copied; /* copied: from older */
    table_shape shape;
    uint64_t secret; /* mixed into every key: which keys collide cannot be chosen */
} Breaker;

static const int pairs[PAIRS][2] = {{0, 1}, {0, 2}, {0, 3}, {1, 2}, {1, 3}, {2, 3}};

/* A 64-bit mix (the finalizer of MurmurHash3): every bit of x moves them all. */
static inline uint64_t mix(uint64_t x)
{
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdULL;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ULL;
    x ^= x >> 33;
    return x;
}

/* Up to 16 bytes at `part` (a quarter of a sketch), mixed into `h`. */
static inline uint64_t mix_part(uint64_t h, const char *part, Py_ssize_t length)
{
    uint64_t words[2] = {0, 0};

    memcpy(words, part, (size_t)length);
    h = mix(h ^ words[0]);
    return mix(h ^ words[1] ^ (uint64_t)length);
}

/* loops.python_keys: the keys a payload of `size` bytes whose sketch is
 * `sketch` (`length` bytes) leaves for the address hashed `host`.  Returns
 * how many (1 or 6); never a 0 key. */
static int keys_of(const Breaker *self, uint64_t host, Py_ssize_t size, const char *sketch,
                   Py_ssize_t length, uint64_t *keys)
{
    uint64_t base = mix(self->secret ^ host) ^ ((uint64_t)size << 8);
    Py_ssize_t q, starts[4], lengths[4];
    int n;

    if (length < 4) {
        keys[0] = mix_part(base, sketch, length) | 1;
        return 1;
    }
    q = length / 4;
    for (n = 0; n < 4; n++) {
        starts[n] = n * q;
        lengths[n] = n < 3 ? q : length - 3 * q;
    }
    for (n = 0; n < PAIRS; n++) {
        int i = pairs[n][0], j = pairs[n][1];
        uint64_t h = mix(base ^ (uint64_t)(n + 1));

        h = mix_part(h, sketch + starts[i], lengths[i]);
        keys[n] = mix_part(h, sketch + starts[j], lengths[j]) | 1;
    }
    return PAIRS;
}

/* The slot of `key` in `table`, or the free slot where it would go. */
static inline slot *find(const Breaker *self, slot *table, uint64_t key)
{
    return &table[table_find(&self->shape, table, sizeof(slot), key)];
}

/* The count remembered for `key`, or -1. */
static inline long long get(const Breaker *self, uint64_t key)
{
    slot *entry = find(self, self->recent, key);

    if (entry->key)
        return (long long)entry->count;
    entry = find(self, self->older, key);
    return entry->key ? (long long)entry->count : -1;
}

/* Remember `count` for `key` in the recent generation (loops._put). */
static void put(Breaker *self, uint64_t key, uint64_t count)
{
    slot *entry = find(self, self->recent, key), *old;

    if (!entry->key) {
        old = find(self, self->older, key);
        if (old->key)
            self->copied++; /* the copy left behind goes with its generation */
        if (self->recent_count >= self->size) {
            slot *cleared = self->older;

            memset(cleared, 0, (size_t)(self->shape.mask + 1) * sizeof(slot));
            self->older = self->recent;
            self->recent = cleared;
            self->older_count = self->recent_count;
            self->recent_count = self->copied = 0;
            entry = find(self, self->recent, key);
        }
        entry->key = key;
        self->recent_count++;
    }
    entry->count = count;
}

static int breaker_init(Breaker *self, PyObject *args, PyObject *kwargs)
{
    static char *keywords[] = {"every", "size", NULL};
    long every;
    Py_ssize_t size, capacity;
    table_shape shape;
    slot *recent, *older;
    uint64_t secret;

    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "ln", keywords, &every, &size))
        return -1;
    if (every < 1 || every > UINT32_MAX) {
        PyErr_Format(PyExc_ValueError, "every must be 1 or more, not %ld", every);
        return -1;
    }
    if (size < 1) {
        PyErr_Format(PyExc_ValueError, "size must be 1 or more, not %zd", size);
        return -1;
    }
    if ((capacity = table_shape_init(&shape, size, sizeof(slot), self)) < 0)
        return -1;
    if (getentropy(&secret, sizeof(secret)) != 0)
        secret = shape.multiplier * 0x9E3779B97F4A7C15ULL; /* no entropy */
    recent = PyMem_RawCalloc((size_t)capacity, sizeof(slot));
    older = PyMem_RawCalloc((size_t)capacity, sizeof(slot));
    if (!recent || !older) {
        PyMem_RawFree(recent);
        PyMem_RawFree(older);
        PyErr_NoMemory();
        return -1;
    }
    PyMem_RawFree(self->recent);
    PyMem_RawFree(self->older);
    self->recent = recent;
    self->older = older;
    self->every = every;
    self->size = size;
    self->recent_count = self->older_count = self->copied = 0;
    self->shape = shape;
    self->secret = secret;
    return 0;
}

static void breaker_dealloc(Breaker *self)
{
    PyMem_RawFree(self->recent);
    PyMem_RawFree(self->older);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* loops.PythonLoopBreaker.allow, step for step, on the two arrays. */
static PyObject *breaker_allow(Breaker *self, PyObject *const *args, Py_ssize_t nargs)
{
    char new_buffer[SKETCH], out_buffer[SKETCH];
    const char *new, *out;
    Py_ssize_t size, new_length, out_length;
    uint64_t host, keys[MAX_KEYS];
    long long counted = 0, count;
    int error, n, i;

    if (nargs != 3 || !PyBytes_Check(args[1]) || !PyBytes_Check(args[2])) {
        PyErr_SetString(PyExc_TypeError, "allow(host, datagram: bytes, reply: bytes)");
        return NULL;
    }
    if (!self->recent) {
        PyErr_SetString(PyExc_ValueError, "LoopBreaker.__init__ was not called");
        return NULL;
    }
    host = table_hash(args[0], &error);
    if (error)
        return NULL;
    size = PyBytes_GET_SIZE(args[1]);
    if (PyBytes_GET_SIZE(args[2]) != size)
        Py_RETURN_TRUE;
    new = sketch_of(PyBytes_AS_STRING(args[1]), size, new_buffer, &new_length);
    out = sketch_of(PyBytes_AS_STRING(args[2]), size, out_buffer, &out_length);
    /* The hot path: a lower-case request is not its upper-cased reply. */
    if (!resemble(new, out, new_length))
        Py_RETURN_TRUE;
    n = keys_of(self, host, size, new, new_length, keys);
    for (i = 0; i < n; i++)
        if ((count = get(self, keys[i])) >= counted)
            counted = count + 1;
    if (counted < 1)
        counted = 1;
    if (counted >= self->every) {
        for (i = 0; i < n; i++)
            put(self, keys[i], 0); /* withheld: the chain starts again */
        Py_RETURN_FALSE;
    }
    if (memcmp(new, out, (size_t)new_length) != 0)
        n = keys_of(self, host, size, out, out_length, keys);
    for (i = 0; i < n; i++)
        put(self, keys[i], (uint64_t)counted);
    Py_RETURN_TRUE;
}

static Py_ssize_t breaker_length(Breaker *self)
{
    return self->recent_count + self->older_count - self->copied;
}

static PyMethodDef breaker_methods[] = {
    {"allow", (PyCFunction)(void (*)(void))breaker_allow, METH_FASTCALL,
     "allow(host, datagram, reply) -> whether the reply to datagram from host may go."},
    {NULL, NULL, 0, NULL},
};

static PyMemberDef breaker_members[] = {
    {"every", T_LONG, offsetof(Breaker, every), READONLY, "One in so many echoes is withheld."},
    {"size", T_PYSSIZET, offsetof(Breaker, size), READONLY, "Keys a generation holds."},
    {NULL, 0, 0, 0, NULL},
};

static PySequenceMethods breaker_sequence = {
    .sq_length = (lenfunc)breaker_length,
};

static PyTypeObject BreakerType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "udpupper.server.protections._loops.LoopBreaker",
    .tp_doc = "Whether a reply may go, or is withheld to end a possible loop.",
    .tp_basicsize = sizeof(Breaker),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)breaker_init,
    .tp_dealloc = (destructor)breaker_dealloc,
    .tp_methods = breaker_methods,
    .tp_members = breaker_members,
    .tp_as_sequence = &breaker_sequence,
};

static PyMethodDef methods[] = {
    {"sketch", (PyCFunction)(void (*)(void))sketch, METH_FASTCALL,
     "sketch(payload) -> what is remembered of a reply: itself, or four samples."},
    {"echoes", (PyCFunction)(void (*)(void))echoes, METH_FASTCALL,
     "echoes(datagram, last) -> whether datagram's sketch resembles the sketch last."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "udpupper.server.protections._loops",
    "The loop breaker's comparisons in C: udpupper.server.protections.loops.sketch and echoes.", -1,
    methods,
};

PyMODINIT_FUNC PyInit__loops(void)
{
    PyObject *m;

    if (PyType_Ready(&BreakerType) < 0 || !(m = PyModule_Create(&module)))
        return NULL;
    if (PyModule_AddObjectRef(m, "LoopBreaker", (PyObject *)&BreakerType) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
