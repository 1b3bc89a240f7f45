/*
 * udpupper.server.protections._loops: the loop breaker's two comparisons, in C.
 *
 * The same functions as udpupper.server.protections.loops.sketch and udpupper.server.protections.loops.echoes, with
 * the same answers (the tests hold both to each other).  Every answered
 * datagram is compared with the last reply sent to its address; in Python
 * that is eight slices and four comparisons, about 0.4 us a datagram, more
 * than the rest of the protocol's work at 32 bytes.  Here it is a few
 * memcmp()s on the bytes where they lie, nothing allocated.
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
    return PyModule_Create(&module);
}
