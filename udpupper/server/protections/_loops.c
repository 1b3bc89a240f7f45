/*
 * udpupper.server.protections._loops: the loop breaker's two comparisons, in C.
 *
 * The same functions as udpupper.server.protections.loops.sketch and udpupper.server.protections.loops.echoes, with
 * the same answers (the tests hold both to each other).  Every answered
 * datagram is compared with the last reply sent to its address; in Python
 * that is eight slices and four comparisons, about 0.4 us a datagram, more
 * than the rest of the protocol's work at 32 bytes.  Here it is a few
 * memcmp()s on the bytes where they lie, nothing allocated.  step() is
 * LoopBreaker.allow's common case, an address it remembers, in one call:
 * the table stays the Python dict it was.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <string.h>

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

/* (length, sketch, count), a new reference, or NULL. */
static PyObject *entry_of(Py_ssize_t length, PyObject *last, long count)
{
    PyObject *entry = PyTuple_New(3), *number;

    if (!entry)
        return NULL;
    if (!(number = PyLong_FromSsize_t(length))) {
        Py_DECREF(entry);
        return NULL;
    }
    PyTuple_SET_ITEM(entry, 0, number);
    PyTuple_SET_ITEM(entry, 1, Py_NewRef(last));
    if (!(number = PyLong_FromLong(count))) {
        Py_DECREF(entry);
        return NULL;
    }
    PyTuple_SET_ITEM(entry, 2, number);
    return entry;
}

static PyObject *step(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    PyObject *recent, *host, *datagram, *reply, *entry, *last, *remembered, *result;
    Py_ssize_t length, size;
    long every, count;
    int stored;

    if (nargs != 5 || !PyDict_CheckExact(args[0]) || !PyBytes_Check(args[2])
        || !PyBytes_Check(args[3]) || !PyLong_Check(args[4])) {
        PyErr_SetString(PyExc_TypeError, "step(recent, host, datagram, reply, every)");
        return NULL;
    }
    recent = args[0], host = args[1], datagram = args[2], reply = args[3];
    if ((every = PyLong_AsLong(args[4])) == -1 && PyErr_Occurred())
        return NULL;
    if (!(entry = PyDict_GetItemWithError(recent, host))) /* borrowed */
        return PyErr_Occurred() ? NULL : Py_NewRef(Py_None);
    if (!PyTuple_CheckExact(entry) || PyTuple_GET_SIZE(entry) != 3
        || !PyBytes_Check(last = PyTuple_GET_ITEM(entry, 1))) {
        PyErr_SetString(PyExc_TypeError, "an entry is (length, sketch, count)");
        return NULL;
    }
    if ((length = PyLong_AsSsize_t(PyTuple_GET_ITEM(entry, 0))) == -1 && PyErr_Occurred())
        return NULL;
    if ((count = PyLong_AsLong(PyTuple_GET_ITEM(entry, 2))) == -1 && PyErr_Occurred())
        return NULL;
    Py_INCREF(last); /* the store below may free the entry */
    if (PyBytes_GET_SIZE(datagram) == length) {
        char buffer[SKETCH];
        const char *new = sketch_of(PyBytes_AS_STRING(datagram), length, buffer, &size);

        if (size == PyBytes_GET_SIZE(last) && resemble(new, PyBytes_AS_STRING(last), size)
            && ++count >= every) {
            entry = entry_of(length, last, 0);
            Py_DECREF(last);
            stored = entry ? PyDict_SetItem(recent, host, entry) : -1;
            Py_XDECREF(entry);
            return stored < 0 ? NULL : Py_NewRef(Py_False);
        }
    }
    Py_DECREF(last);
    size = PyBytes_GET_SIZE(reply);
    if (size <= SKETCH) {
        remembered = Py_NewRef(reply);
    } else {
        if (!(remembered = PyBytes_FromStringAndSize(NULL, SKETCH)))
            return NULL;
        sketch_of(PyBytes_AS_STRING(reply), size, PyBytes_AS_STRING(remembered), &length);
    }
    entry = entry_of(size, remembered, count);
    Py_DECREF(remembered);
    stored = entry ? PyDict_SetItem(recent, host, entry) : -1;
    Py_XDECREF(entry);
    result = stored < 0 ? NULL : Py_NewRef(Py_True);
    return result;
}

static PyMethodDef methods[] = {
    {"step", (PyCFunction)(void (*)(void))step, METH_FASTCALL,
     "step(recent, host, datagram, reply, every) -> LoopBreaker.allow for a host in recent, "
     "or None when it is not there."},
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
    return PyModule_Create(&module);
}
