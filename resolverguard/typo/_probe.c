/* A compiled prefilter for the two-edit index (typo/twoedits.py): a set of 64-bit FNV-1a hashes of the
 * index keys, and one call that says whether a label, any of its 1-deletions or (for long labels) any
 * of its 2-deletions might be a key, without building a Python string per deletion. A "maybe" is
 * confirmed by the pure-Python path, which looks the keys up exactly; a "no" is always right.
 * The pure-Python path is the fallback when this module is not built (setup.py: optional). */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#define FNV_OFFSET 1469598103934665603ULL
#define FNV_PRIME 1099511628211ULL
#define MAX_LABEL 255

typedef struct {
    PyObject_HEAD
    uint64_t *slots; /* 0 = empty */
    Py_ssize_t mask;
    Py_ssize_t count;
} HashSet;

static uint64_t fnv_skip(const unsigned char *s, Py_ssize_t n, Py_ssize_t skip1, Py_ssize_t skip2) {
    uint64_t h = FNV_OFFSET;
    for (Py_ssize_t i = 0; i < n; i++) {
        if (i == skip1 || i == skip2) continue;
        h ^= s[i];
        h *= FNV_PRIME;
    }
    return h ? h : 1;
}

static int contains(const HashSet *set, uint64_t h) {
    Py_ssize_t i = (Py_ssize_t)(h & (uint64_t)set->mask);
    while (set->slots[i]) {
        if (set->slots[i] == h) return 1;
        i = (i + 1) & set->mask;
    }
    return 0;
}

static void insert(HashSet *set, uint64_t h) {
    Py_ssize_t i = (Py_ssize_t)(h & (uint64_t)set->mask);
    while (set->slots[i]) {
        if (set->slots[i] == h) return;
        i = (i + 1) & set->mask;
    }
    set->slots[i] = h;
    set->count++;
}

static void HashSet_dealloc(HashSet *self) {
    PyMem_Free(self->slots);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int HashSet_init(HashSet *self, PyObject *args, PyObject *kwds) {
    PyObject *keys;
    if (!PyArg_ParseTuple(args, "O", &keys)) return -1;
    PyObject *seq = PySequence_Fast(keys, "HashSet(keys): keys must be iterable");
    if (seq == NULL) return -1;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq), size = 16;
    while (size < 2 * n + 16) size <<= 1;
    PyMem_Free(self->slots);
    self->slots = PyMem_Calloc((size_t)size, sizeof(uint64_t));
    if (self->slots == NULL) {
        Py_DECREF(seq);
        PyErr_NoMemory();
        return -1;
    }
    self->mask = size - 1;
    self->count = 0;
    PyObject **items = PySequence_Fast_ITEMS(seq);
    for (Py_ssize_t k = 0; k < n; k++) {
        Py_ssize_t len;
        const char *text = PyUnicode_Check(items[k]) ? PyUnicode_AsUTF8AndSize(items[k], &len) : NULL;
        if (text == NULL) {
            Py_DECREF(seq);
            if (!PyErr_Occurred()) PyErr_SetString(PyExc_TypeError, "HashSet(keys): keys must be str");
            return -1;
        }
        insert(self, fnv_skip((const unsigned char *)text, len, -1, -1));
    }
    Py_DECREF(seq);
    return 0;
}

/* any_deletions(label, depth): label itself, a 1-deletion, or (depth 2) a 2-deletion is in the set. */
static PyObject *HashSet_any_deletions(HashSet *self, PyObject *args) {
    const char *text;
    Py_ssize_t n;
    int depth;
    if (!PyArg_ParseTuple(args, "s#i", &text, &n, &depth)) return NULL;
    if (n > MAX_LABEL) Py_RETURN_TRUE; /* not worth filtering: let the exact path decide */
    const unsigned char *s = (const unsigned char *)text;
    if (contains(self, fnv_skip(s, n, -1, -1))) Py_RETURN_TRUE;
    for (Py_ssize_t i = 0; i < n; i++) {
        if (i > 0 && s[i] == s[i - 1]) continue; /* deleting either of two equal neighbours: same string */
        if (contains(self, fnv_skip(s, n, i, -1))) Py_RETURN_TRUE;
    }
    if (depth >= 2) {
        for (Py_ssize_t i = 0; i < n; i++) {
            for (Py_ssize_t j = i + 1; j < n; j++) {
                if (contains(self, fnv_skip(s, n, i, j))) Py_RETURN_TRUE;
            }
        }
    }
    Py_RETURN_FALSE;
}

static Py_ssize_t HashSet_len(HashSet *self) { return self->count; }

static PyMethodDef HashSet_methods[] = {
    {"any_deletions", (PyCFunction)HashSet_any_deletions, METH_VARARGS,
     "any_deletions(label, depth) -> bool: label or one of its deletions (up to depth) may be a key"},
    {NULL, NULL, 0, NULL},
};

static PySequenceMethods HashSet_as_sequence = {.sq_length = (lenfunc)HashSet_len};

static PyTypeObject HashSetType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "resolverguard.typo._probe.HashSet",
    .tp_basicsize = sizeof(HashSet),
    .tp_dealloc = (destructor)HashSet_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "A set of 64-bit hashes of str keys, probed by label deletions",
    .tp_methods = HashSet_methods,
    .tp_as_sequence = &HashSet_as_sequence,
    .tp_init = (initproc)HashSet_init,
    .tp_new = PyType_GenericNew,
};

static struct PyModuleDef probe_module = {
    PyModuleDef_HEAD_INIT, "_probe", "Compiled prefilter for the two-edit typo index", -1, NULL,
};

PyMODINIT_FUNC PyInit__probe(void) {
    if (PyType_Ready(&HashSetType) < 0) return NULL;
    PyObject *m = PyModule_Create(&probe_module);
    if (m == NULL) return NULL;
    Py_INCREF(&HashSetType);
    if (PyModule_AddObject(m, "HashSet", (PyObject *)&HashSetType) < 0) {
        Py_DECREF(&HashSetType);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
