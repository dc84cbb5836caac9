/* The compiled UDP hot loop of resolverguard: recvmmsg, answer remembered replies, sendmmsg.
 *
 * drain(fd, table, clients, counts, now, bounds) reads up to BATCH datagrams in one recvmmsg call. A datagram
 * whose client address is in `clients` and whose octets after the ID are a key of `table` with a fresh entry
 * is answered here: the entry's reply with the query's ID, sent with one sendmmsg for the whole batch, its
 * counters incremented in `counts` (an int64 buffer). A renewable entry past its second gets its TTLs counted
 * down from its template here, once per second, and goes back in the table. An entry with a sixth item (a block's
 * event line tail, while the event log is on) also appends (tail, client address octets) to the optional
 * list `logged`, for resolverguard/events.py to write. Every other datagram is returned, as (data, address),
 * for the Python pipeline. resolverguard/fastpath.py holds the same loop in pure Python (the fallback, and the
 * reference the tests hold this one to); it documents the entry layout.
 *
 * Built by setup.py as an optional extension: without a compiler the pure-Python loop is used.
 */
#define PY_SSIZE_T_CLEAN
#define _GNU_SOURCE
#include <Python.h>
#include <arpa/inet.h>
#include <errno.h>
#include <net/if.h>
#include <netinet/in.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#define BATCH 64
#define BUFSZ 65536 /* a UDP payload never exceeds 65507 octets: nothing is truncated */

static unsigned char *bufs;
static struct mmsghdr rmsgs[BATCH], smsgs[BATCH];
static struct iovec riov[BATCH], siov[BATCH][2];
static struct sockaddr_storage raddr[BATCH];
static PyObject *held[BATCH];

static int64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* The client's address octets as a bytes key (4 or 16 octets); NULL for a scoped IPv6 address. */
static PyObject *client_key(const struct sockaddr_storage *sa) {
    if (sa->ss_family == AF_INET)
        return PyBytes_FromStringAndSize((const char *)&((const struct sockaddr_in *)sa)->sin_addr, 4);
    if (sa->ss_family == AF_INET6 && ((const struct sockaddr_in6 *)sa)->sin6_scope_id == 0)
        return PyBytes_FromStringAndSize((const char *)&((const struct sockaddr_in6 *)sa)->sin6_addr, 16);
    return NULL;
}

/* The address as Python's socket module gives it: (host, port) or (host, port, flowinfo, scope_id). */
static PyObject *address(const struct sockaddr_storage *sa) {
    char host[INET6_ADDRSTRLEN + IF_NAMESIZE + 1];
    if (sa->ss_family == AF_INET) {
        const struct sockaddr_in *a = (const struct sockaddr_in *)sa;
        inet_ntop(AF_INET, &a->sin_addr, host, sizeof host);
        return Py_BuildValue("(si)", host, ntohs(a->sin_port));
    }
    const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)sa;
    inet_ntop(AF_INET6, &a->sin6_addr, host, sizeof host);
    if (a->sin6_scope_id) {
        size_t n = strlen(host);
        host[n] = '%';
        if (!if_indextoname(a->sin6_scope_id, host + n + 1))
            snprintf(host + n + 1, IF_NAMESIZE, "%u", a->sin6_scope_id);
    }
    return Py_BuildValue("(siII)", host, ntohs(a->sin6_port), ntohl(a->sin6_flowinfo), a->sin6_scope_id);
}

/* A renewable entry (9 items) whose second has passed: its template with every TTL counted down by the whole
 * seconds since it was stored, fresh until the next second, put back in the table; a new reference, or NULL
 * when the entry is not renewable or has expired. The same arithmetic as wire.patch_ttls. */
static PyObject *renewed(PyObject *table, PyObject *key, PyObject *entry, double now) {
    if (PyTuple_GET_SIZE(entry) != 9)
        return NULL;
    PyObject *tmpl = PyTuple_GET_ITEM(entry, 5), *offsets = PyTuple_GET_ITEM(entry, 6);
    PyObject *stored_o = PyTuple_GET_ITEM(entry, 7), *expires_o = PyTuple_GET_ITEM(entry, 8);
    if (!PyBytes_CheckExact(tmpl) || !PyTuple_CheckExact(offsets) || !PyFloat_CheckExact(stored_o) ||
        !PyFloat_CheckExact(expires_o))
        return NULL;
    double stored = PyFloat_AS_DOUBLE(stored_o);
    if (now >= PyFloat_AS_DOUBLE(expires_o) || now < stored)
        return NULL;
    uint32_t age = (uint32_t)(now - stored);
    Py_ssize_t n = PyBytes_GET_SIZE(tmpl);
    PyObject *reply = PyBytes_FromStringAndSize(PyBytes_AS_STRING(tmpl), n);
    if (reply == NULL)
        return NULL;
    unsigned char *buf = (unsigned char *)PyBytes_AS_STRING(reply);
    for (Py_ssize_t k = 0; k < PyTuple_GET_SIZE(offsets); k++) {
        Py_ssize_t off = PyLong_AsSsize_t(PyTuple_GET_ITEM(offsets, k));
        if (off < 0 || off + 4 > n) {
            PyErr_Clear();
            continue;
        }
        uint32_t ttl = (uint32_t)buf[off] << 24 | (uint32_t)buf[off + 1] << 16 | (uint32_t)buf[off + 2] << 8 | buf[off + 3];
        ttl = ttl > age ? ttl - age : 0;
        buf[off] = ttl >> 24, buf[off + 1] = ttl >> 16, buf[off + 2] = ttl >> 8, buf[off + 3] = ttl;
    }
    PyObject *until = PyFloat_FromDouble(stored + age + 1);
    PyObject *fresh = until ? PyTuple_Pack(9, until, reply, PyTuple_GET_ITEM(entry, 2), PyTuple_GET_ITEM(entry, 3),
                                           PyTuple_GET_ITEM(entry, 4), tmpl, offsets, stored_o, expires_o)
                            : NULL;
    Py_XDECREF(until);
    Py_DECREF(reply);
    if (fresh != NULL && PyDict_SetItem(table, key, fresh) < 0)
        Py_CLEAR(fresh);
    return fresh;
}

/* The entry for this datagram if it may be answered here (a new reference), else NULL; *client gets a new
 * reference to the client's key when an entry is returned and client is not NULL. */
static PyObject *fresh_entry(PyObject *table, PyObject *clients, int i, double now, PyObject **client) {
    unsigned len = rmsgs[i].msg_len;
    if (len < 12)
        return NULL;
    PyObject *ck = client_key(&raddr[i]);
    if (ck == NULL)
        return NULL;
    PyObject *ok = PyDict_GetItemWithError(clients, ck);
    if (ok != Py_True) {
        Py_DECREF(ck);
        return NULL;
    }
    PyObject *key = PyBytes_FromStringAndSize((const char *)bufs + (size_t)i * BUFSZ + 2, len - 2);
    if (key == NULL) {
        Py_DECREF(ck);
        return NULL;
    }
    PyObject *entry = PyDict_GetItemWithError(table, key), *result = NULL;
    if (entry != NULL && PyTuple_CheckExact(entry) && PyTuple_GET_SIZE(entry) >= 5 &&
        PyFloat_CheckExact(PyTuple_GET_ITEM(entry, 0)) && PyTuple_CheckExact(PyTuple_GET_ITEM(entry, 2))) {
        if (PyFloat_AS_DOUBLE(PyTuple_GET_ITEM(entry, 0)) > now) {
            result = entry;
            Py_INCREF(result);
        } else {
            result = renewed(table, key, entry, now);
        }
    }
    Py_DECREF(key);
    if (result != NULL) {
        PyObject *reply = PyTuple_GET_ITEM(result, 1);
        if (!PyBytes_CheckExact(reply) || PyBytes_GET_SIZE(reply) < 12)
            Py_CLEAR(result);
    }
    if (result != NULL && client != NULL)
        *client = ck;
    else
        Py_DECREF(ck);
    return result;
}

static void bump(int64_t *counts, Py_ssize_t n, PyObject *index, int64_t by) {
    Py_ssize_t i = PyLong_AsSsize_t(index);
    if (i >= 0 && i < n)
        counts[i] += by;
    else
        PyErr_Clear();
}

static PyObject *drain(PyObject *self, PyObject *args) {
    int fd;
    PyObject *table, *clients, *bounds, *logged = Py_None;
    Py_buffer counts;
    double now;
    if (!PyArg_ParseTuple(args, "iO!O!w*dO!|O", &fd, &PyDict_Type, &table, &PyDict_Type, &clients, &counts, &now,
                          &PyTuple_Type, &bounds, &logged))
        return NULL;
    if (logged != Py_None && !PyList_Check(logged)) {
        PyBuffer_Release(&counts);
        PyErr_SetString(PyExc_TypeError, "logged must be a list or None");
        return NULL;
    }
    int logging = logged != Py_None;
    int64_t *cnt = counts.buf;
    Py_ssize_t ncnt = counts.len / (Py_ssize_t)sizeof(int64_t);
    for (int i = 0; i < BATCH; i++) {
        riov[i].iov_base = bufs + (size_t)i * BUFSZ;
        riov[i].iov_len = BUFSZ;
        memset(&rmsgs[i].msg_hdr, 0, sizeof rmsgs[i].msg_hdr);
        rmsgs[i].msg_hdr.msg_name = &raddr[i];
        rmsgs[i].msg_hdr.msg_namelen = sizeof raddr[i];
        rmsgs[i].msg_hdr.msg_iov = &riov[i];
        rmsgs[i].msg_hdr.msg_iovlen = 1;
    }
    int64_t started = now_ns();
    int n = recvmmsg(fd, rmsgs, BATCH, MSG_DONTWAIT, NULL);
    PyObject *slow = PyList_New(0);
    if (slow == NULL || n <= 0) { /* EAGAIN, EINTR, or an ICMP error reported on the socket: nothing read */
        PyBuffer_Release(&counts);
        return slow == NULL ? NULL : Py_BuildValue("(iN)", 0, slow);
    }
    int nsend = 0;
    for (int i = 0; i < n; i++) {
        PyObject *client = NULL;
        PyObject *entry = fresh_entry(table, clients, i, now, logging ? &client : NULL);
        if (PyErr_Occurred())
            PyErr_Clear(); /* an unhashable oddity in a dict: the datagram takes the Python path */
        if (entry != NULL && client != NULL) { /* a block whose event is handed back: (tail, client) */
            if (PyTuple_GET_SIZE(entry) == 6) {
                PyObject *pair = PyTuple_Pack(2, PyTuple_GET_ITEM(entry, 5), client);
                if (pair == NULL || PyList_Append(logged, pair) < 0)
                    PyErr_Clear(); /* out of memory only */
                Py_XDECREF(pair);
            }
            Py_DECREF(client);
        }
        if (entry != NULL) {
            PyObject *reply = PyTuple_GET_ITEM(entry, 1);
            siov[nsend][0].iov_base = riov[i].iov_base; /* the query's ID */
            siov[nsend][0].iov_len = 2;
            siov[nsend][1].iov_base = PyBytes_AS_STRING(reply) + 2;
            siov[nsend][1].iov_len = PyBytes_GET_SIZE(reply) - 2;
            memset(&smsgs[nsend].msg_hdr, 0, sizeof smsgs[nsend].msg_hdr);
            smsgs[nsend].msg_hdr.msg_name = &raddr[i];
            smsgs[nsend].msg_hdr.msg_namelen = rmsgs[i].msg_hdr.msg_namelen;
            smsgs[nsend].msg_hdr.msg_iov = siov[nsend];
            smsgs[nsend].msg_hdr.msg_iovlen = 2;
            held[nsend++] = entry; /* a reference of ours: the reply stays alive until sendmmsg is done */
            continue;
        }
        PyObject *data = PyBytes_FromStringAndSize(riov[i].iov_base, rmsgs[i].msg_len);
        PyObject *addr = address(&raddr[i]);
        PyObject *item = (data && addr) ? PyTuple_Pack(2, data, addr) : NULL;
        Py_XDECREF(data);
        Py_XDECREF(addr);
        if (item == NULL || PyList_Append(slow, item) < 0) {
            Py_XDECREF(item);
            Py_DECREF(slow);
            for (int j = 0; j < nsend; j++)
                Py_DECREF(held[j]);
            PyBuffer_Release(&counts);
            return NULL;
        }
        Py_DECREF(item);
    }
    for (int off = 0; off < nsend;) { /* a datagram the kernel will not take is dropped, as UDP may */
        int sent = sendmmsg(fd, smsgs + off, nsend - off, MSG_DONTWAIT);
        if (sent < 0 && errno == EINTR)
            continue;
        off += sent > 0 ? sent : 1;
    }
    int64_t elapsed = now_ns() - started; /* one duration for every datagram answered in this batch */
    Py_ssize_t bucket = 0, nb = PyTuple_GET_SIZE(bounds);
    while (bucket < nb && PyLong_AsLongLong(PyTuple_GET_ITEM(bounds, bucket)) < elapsed)
        bucket++;
    for (int j = 0; j < nsend; j++) {
        PyObject *entry = held[j], *slots = PyTuple_GET_ITEM(entry, 2);
        for (Py_ssize_t k = 0; k < PyTuple_GET_SIZE(slots); k++)
            bump(cnt, ncnt, PyTuple_GET_ITEM(slots, k), 1);
        Py_ssize_t first = PyLong_AsSsize_t(PyTuple_GET_ITEM(entry, 3));
        if (first >= 0 && first + bucket < ncnt)
            cnt[first + bucket] += 1;
        bump(cnt, ncnt, PyTuple_GET_ITEM(entry, 4), elapsed);
        Py_DECREF(entry);
    }
    PyErr_Clear();
    PyBuffer_Release(&counts);
    return Py_BuildValue("(iN)", n, slow);
}

static PyMethodDef methods[] = {
    {"drain", drain, METH_VARARGS, "drain(fd, table, clients, counts, now, bounds_ns[, logged]) -> (received, slow)"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_fastudp", NULL, -1, methods};

PyMODINIT_FUNC PyInit__fastudp(void) {
    bufs = PyMem_RawMalloc((size_t)BATCH * BUFSZ);
    if (bufs == NULL)
        return PyErr_NoMemory();
    PyObject *m = PyModule_Create(&module);
    if (m != NULL)
        PyModule_AddIntConstant(m, "BATCH", BATCH);
    return m;
}
