/*
 * udpupper.server.protections._loops: the loop breaker, in C.
 *
 * sketch() and echoes() are loops.python_sketch and python_echoes, with the
 * same answers (the tests hold both to each other): every answered datagram
 * is compared with the last reply sent to its address, here with a few
 * memcmp()s on the bytes where they lie, nothing allocated.
 *
 * LoopBreaker is loops.PythonLoopBreaker with its memory in two arrays
 * instead of two dicts, as _ratelimit.c keeps the rate limiter's: under a
 * flood of never-seen sources every datagram is a new address, and in
 * Python each one left a tuple and a sketch behind for the garbage
 * collector to walk, in dicts whose look-ups miss the caches.  A slot is 56
 * bytes: the address's hash (known by its hash alone, as in _ratelimit.c:
 * SipHash with the process's own key), the last reply's length, its sketch
 * and the count, in a table of _table.h's.  The two generations are two
 * arrays of twice `size` slots; an address found in `older` is copied to
 * `recent`; when `recent` holds `size` the arrays swap and the new `recent`
 * is cleared.  3.5 MiB at the default 16,384.
 *
 * The hashes are not kept apart from the rest, though a stranger's probe
 * would then read one cache line where it reads one or two: clearing a
 * whole generation leaves it in the caches, where a new address's slot is
 * then written; apart, every new address's memory missed them, and a
 * stranger cost more (docs/performance.md).
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

/* The loop breaker's memory: what was last sent to an address. */
typedef struct {
    uint64_t hash;        /* the address's Python hash plus one; 0: a free slot */
    uint32_t length;      /* of the last reply (a UDP payload: under 2^32) */
    uint32_t count;       /* echoes counted since the last withheld reply */
    uint8_t sketch_length;
    char sketch[SKETCH];  /* what is remembered of the last reply */
} slot;

typedef struct {
    PyObject_HEAD
    long every;
    Py_ssize_t size;
    slot *recent, *older;
    Py_ssize_t recent_count, older_count, copied; /* copied: from older */
    table_shape shape;
} Breaker;

/* The slot of `hash` in `table`, or the free slot where it would go. */
static inline slot *find(const Breaker *self, slot *table, uint64_t hash)
{
    return &table[table_find(&self->shape, table, sizeof(slot), hash)];
}

static void remember(slot *entry, const char *reply, Py_ssize_t size)
{
    Py_ssize_t length;
    const char *kept = sketch_of(reply, size, entry->sketch, &length);

    if (kept != entry->sketch)
        memcpy(entry->sketch, kept, (size_t)length);
    entry->length = (uint32_t)size;
    entry->sketch_length = (uint8_t)length;
}

/* loops.python_step on a remembered address: whether the reply may go. */
static int judge(const Breaker *self, slot *entry, PyObject *datagram, PyObject *reply)
{
    if ((uint64_t)PyBytes_GET_SIZE(datagram) == entry->length) {
        char buffer[SKETCH];
        Py_ssize_t length;
        const char *new = sketch_of(PyBytes_AS_STRING(datagram), PyBytes_GET_SIZE(datagram),
                                    buffer, &length);

        if (length == entry->sketch_length && resemble(new, entry->sketch, length)
            && (long)++entry->count >= self->every) {
            entry->count = 0; /* withheld: the last reply stays what was sent */
            return 0;
        }
    }
    remember(entry, PyBytes_AS_STRING(reply), PyBytes_GET_SIZE(reply));
    return 1;
}

static int breaker_init(Breaker *self, PyObject *args, PyObject *kwargs)
{
    static char *keywords[] = {"every", "size", NULL};
    long every;
    Py_ssize_t size, capacity;
    table_shape shape;
    slot *recent, *older;

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
    PyObject *datagram, *reply;
    uint64_t hash;
    slot *entry, moved;
    int error, found;

    if (nargs != 3 || !PyBytes_Check(args[1]) || !PyBytes_Check(args[2])) {
        PyErr_SetString(PyExc_TypeError, "allow(host, datagram: bytes, reply: bytes)");
        return NULL;
    }
    if (!self->recent) {
        PyErr_SetString(PyExc_ValueError, "LoopBreaker.__init__ was not called");
        return NULL;
    }
    datagram = args[1], reply = args[2];
    hash = table_hash(args[0], &error);
    if (error)
        return NULL;
    entry = find(self, self->recent, hash);
    if (entry->hash) /* the hot path: an address it remembers */
        return Py_NewRef(judge(self, entry, datagram, reply) ? Py_True : Py_False);
    entry = find(self, self->older, hash);
    if ((found = entry->hash != 0)) {
        moved = *entry; /* the copy left behind goes with its generation */
        self->copied++;
    }
    if (self->recent_count >= self->size) {
        slot *cleared = self->older;

        memset(cleared, 0, (size_t)(self->shape.mask + 1) * sizeof(slot));
        self->older = self->recent;
        self->recent = cleared;
        self->older_count = self->recent_count;
        self->recent_count = self->copied = 0;
    }
    entry = find(self, self->recent, hash);
    self->recent_count++;
    if (found) {
        *entry = moved;
        return Py_NewRef(judge(self, entry, datagram, reply) ? Py_True : Py_False);
    }
    entry->hash = hash;
    entry->count = 0;
    remember(entry, PyBytes_AS_STRING(reply), PyBytes_GET_SIZE(reply));
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
    {"size", T_PYSSIZET, offsetof(Breaker, size), READONLY, "Addresses a generation holds."},
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
