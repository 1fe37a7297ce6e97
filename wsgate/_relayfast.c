/* The relay's per-read step in C: scan a read for whole WebSocket data frames and write
 * it, verbatim, to the peer's transport -- without a Python frame.
 *
 * Why C: at order-entry rates (~1k frames/s) every read wakes a cold interpreter, and the
 * Python version of this step (header scan, checks, gates, write, counters: ~15 Python
 * calls) cost wsgate 20-30 us of latency per frame over HAProxy (docs/BENCHMARKS.md,
 * "Relay"). The semantics are those of wsgate/runtime/relaypipe.py (PyPipe, scan_frames),
 * which tests/runtime/test_relayfast.py checks this module against, byte for byte.
 *
 * A read is written only when ALL of it is whole, valid data frames and every gate is
 * open; otherwise nothing is written and 0 is returned, and the caller's Python path
 * (FrameReader / the frame scan that hands control frames to websockets) takes the read.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include <stdint.h>

/* Whole valid data frames in data[0:n], exactly; else 0. masked: client frames (mask
 * bit required, opcodes 0/1/2, any FIN: a fragmented message stays fragmented);
 * unmasked: server frames (mask bit refused, FIN text/binary only). max_message < 0:
 * no limit. Reserved bits always refuse. */
static Py_ssize_t
scan(const unsigned char *d, Py_ssize_t n, int masked, long long max_message)
{
    Py_ssize_t pos = 0, count = 0;
    while (pos < n) {
        Py_ssize_t left = n - pos;
        if (left < 2)
            return 0;
        unsigned char b0 = d[pos], b1 = d[pos + 1];
        if (masked) {
            unsigned char op = b0 & 0x0F;
            if (!(b1 & 0x80) || (b0 & 0x70) || op > 2)
                return 0;
        }
        else if ((b0 != 0x81 && b0 != 0x82) || (b1 & 0x80)) {
            return 0;
        }
        uint64_t length = b1 & 0x7F;
        Py_ssize_t head = 2;
        if (length == 126) {
            if (left < 4)
                return 0;
            length = ((uint64_t)d[pos + 2] << 8) | d[pos + 3];
            head = 4;
        }
        else if (length == 127) {
            if (left < 10)
                return 0;
            length = 0;
            for (int i = 2; i < 10; i++)
                length = (length << 8) | d[pos + i];
            head = 10;
        }
        if (masked)
            head += 4;
        if (max_message >= 0 && length > (uint64_t)max_message)
            return 0;
        if (head > left || length > (uint64_t)(left - head))
            return 0; /* partial (or a 64-bit length no read can hold) */
        pos += head + (Py_ssize_t)length;
        count++;
    }
    return count;
}

static PyObject *
relayfast_scan(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "scan(data, masked, max_message)");
        return NULL;
    }
    Py_buffer view;
    if (PyObject_GetBuffer(args[0], &view, PyBUF_SIMPLE) < 0)
        return NULL;
    int masked = PyObject_IsTrue(args[1]);
    long long limit = -1;
    if (masked >= 0 && args[2] != Py_None)
        limit = PyLong_AsLongLong(args[2]);
    if (masked < 0 || (limit == -1 && PyErr_Occurred())) {
        PyBuffer_Release(&view);
        return NULL;
    }
    Py_ssize_t count = scan(view.buf, view.len, masked, limit < 0 ? -1 : limit);
    PyBuffer_Release(&view);
    return PyLong_FromSsize_t(count);
}

typedef struct {
    PyObject_HEAD
    vectorcallfunc vectorcall; /* calls skip the args tuple: the per-read call is cheap */
    PyObject *write;      /* transport.write */
    PyObject *buffered;   /* transport.get_write_buffer_size */
    PyObject *protocol;   /* websockets' protocol of the peer connection (its _state) */
    PyObject *open_state; /* State.OPEN */
    PyObject *holds;      /* tuple of (object, attribute name): write only while all falsy */
    Py_ssize_t buffer_limit;
    long long max_message; /* -1: none */
    int masked;
    unsigned long long frames;
    unsigned long long bytes;
    unsigned long long writes;
} Pipe;

static PyObject *str_state;

static int
Pipe_init(Pipe *self, PyObject *args, PyObject *kwds)
{
    static char *kw[] = {"transport", "protocol", "open_state", "buffer_limit",
                         "max_message", "masked", "holds", NULL};
    PyObject *transport, *protocol, *open_state, *max_message, *holds = NULL;
    Py_ssize_t buffer_limit;
    int masked;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OOOnOp|O!", kw, &transport, &protocol,
                                     &open_state, &buffer_limit, &max_message, &masked,
                                     &PyTuple_Type, &holds))
        return -1;
    long long limit = -1;
    if (max_message != Py_None) {
        limit = PyLong_AsLongLong(max_message);
        if (limit == -1 && PyErr_Occurred())
            return -1;
        if (limit < 0) {
            PyErr_SetString(PyExc_ValueError, "max_message must be >= 0 or None");
            return -1;
        }
    }
    if (holds == NULL)
        holds = PyTuple_New(0);
    else
        Py_INCREF(holds);
    if (holds == NULL)
        return -1;
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(holds); i++) {
        PyObject *h = PyTuple_GET_ITEM(holds, i);
        if (!PyTuple_Check(h) || PyTuple_GET_SIZE(h) != 2 ||
            !PyUnicode_Check(PyTuple_GET_ITEM(h, 1))) {
            Py_DECREF(holds);
            PyErr_SetString(PyExc_TypeError, "holds: a tuple of (object, attribute name)");
            return -1;
        }
    }
    PyObject *write = PyObject_GetAttrString(transport, "write");
    PyObject *buffered = write ? PyObject_GetAttrString(transport, "get_write_buffer_size")
                               : NULL;
    if (buffered == NULL) {
        Py_XDECREF(write);
        Py_DECREF(holds);
        return -1;
    }
    Py_XSETREF(self->write, write);
    Py_XSETREF(self->buffered, buffered);
    Py_XSETREF(self->holds, holds);
    Py_INCREF(protocol);
    Py_XSETREF(self->protocol, protocol);
    Py_INCREF(open_state);
    Py_XSETREF(self->open_state, open_state);
    self->buffer_limit = buffer_limit;
    self->max_message = limit;
    self->masked = masked;
    return 0;
}

/* 1: every gate open; 0: a gate is shut; -1: an error is set. */
static int
gates_open(Pipe *self)
{
    PyObject *state = PyObject_GetAttr(self->protocol, str_state);
    if (state == NULL)
        return -1;
    int open = state == self->open_state;
    Py_DECREF(state);
    if (!open)
        return 0;
    PyObject *holds = self->holds;
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(holds); i++) {
        PyObject *h = PyTuple_GET_ITEM(holds, i);
        PyObject *v = PyObject_GetAttr(PyTuple_GET_ITEM(h, 0), PyTuple_GET_ITEM(h, 1));
        if (v == NULL)
            return -1;
        int held = PyObject_IsTrue(v);
        Py_DECREF(v);
        if (held != 0)
            return held < 0 ? -1 : 0;
    }
    return 1;
}

/* The step itself: the number of frames written (all of data), 0 (nothing written), or
 * -1 with an exception set. data must be bytes. */
static Py_ssize_t
pipe_step(Pipe *self, PyObject *data)
{
    if (self->write == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "Pipe not initialised");
        return -1;
    }
    Py_ssize_t n = PyBytes_GET_SIZE(data);
    Py_ssize_t count =
        scan((const unsigned char *)PyBytes_AS_STRING(data), n, self->masked, self->max_message);
    if (count == 0)
        return 0;
    int open = gates_open(self);
    if (open <= 0)
        return open;
    PyObject *size = PyObject_CallNoArgs(self->buffered);
    if (size == NULL)
        return -1;
    Py_ssize_t buffered = PyLong_AsSsize_t(size);
    Py_DECREF(size);
    if (buffered == -1 && PyErr_Occurred())
        return -1;
    if (buffered > self->buffer_limit)
        return 0;
    PyObject *r = PyObject_CallOneArg(self->write, data);
    if (r == NULL)
        return -1;
    Py_DECREF(r);
    self->frames += (unsigned long long)count;
    self->bytes += (unsigned long long)n;
    self->writes++;
    return count;
}

/* pipe(data) -> the number of frames written (all of data), or 0 (nothing written). */
static PyObject *
Pipe_vectorcall(PyObject *callable, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    if (PyVectorcall_NARGS(nargsf) != 1 || kwnames != NULL) {
        PyErr_SetString(PyExc_TypeError, "Pipe takes one argument: the bytes read");
        return NULL;
    }
    if (!PyBytes_Check(args[0])) {
        PyErr_SetString(PyExc_TypeError, "Pipe: data must be bytes");
        return NULL;
    }
    Py_ssize_t count = pipe_step((Pipe *)callable, args[0]);
    return count < 0 ? NULL : PyLong_FromSsize_t(count);
}

static PyObject *
Pipe_call(PyObject *self, PyObject *args, PyObject *kwds)
{
    if (kwds != NULL && PyDict_GET_SIZE(kwds)) {
        PyErr_SetString(PyExc_TypeError, "Pipe takes no keyword arguments");
        return NULL;
    }
    return Pipe_vectorcall(self, &PyTuple_GET_ITEM(args, 0), PyTuple_GET_SIZE(args), NULL);
}

static PyObject *
Pipe_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    Pipe *self = (Pipe *)type->tp_alloc(type, 0);
    if (self != NULL)
        self->vectorcall = Pipe_vectorcall;
    return (PyObject *)self;
}

static int
Pipe_traverse(Pipe *self, visitproc visit, void *arg)
{
    Py_VISIT(self->write);
    Py_VISIT(self->buffered);
    Py_VISIT(self->protocol);
    Py_VISIT(self->open_state);
    Py_VISIT(self->holds);
    return 0;
}

static int
Pipe_clear(Pipe *self)
{
    Py_CLEAR(self->write);
    Py_CLEAR(self->buffered);
    Py_CLEAR(self->protocol);
    Py_CLEAR(self->open_state);
    Py_CLEAR(self->holds);
    return 0;
}

static void
Pipe_dealloc(Pipe *self)
{
    PyObject_GC_UnTrack(self);
    Pipe_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *
Pipe_get_frames(Pipe *self, void *closure)
{
    return PyLong_FromUnsignedLongLong(self->frames);
}

static PyObject *
Pipe_get_bytes(Pipe *self, void *closure)
{
    return PyLong_FromUnsignedLongLong(self->bytes);
}

static PyObject *
Pipe_get_writes(Pipe *self, void *closure)
{
    return PyLong_FromUnsignedLongLong(self->writes);
}

static PyObject *
Pipe_get_max_message(Pipe *self, void *closure)
{
    if (self->max_message < 0)
        Py_RETURN_NONE;
    return PyLong_FromLongLong(self->max_message);
}

/* A reload lowers the frame limit of open sessions: the pipe must refuse what
   websockets would refuse from then on. */
static int
Pipe_set_max_message(Pipe *self, PyObject *value, void *closure)
{
    if (value == NULL) {
        PyErr_SetString(PyExc_AttributeError, "max_message cannot be deleted");
        return -1;
    }
    long long limit = -1;
    if (value != Py_None) {
        limit = PyLong_AsLongLong(value);
        if (limit == -1 && PyErr_Occurred())
            return -1;
        if (limit < 0) {
            PyErr_SetString(PyExc_ValueError, "max_message must be >= 0 or None");
            return -1;
        }
    }
    self->max_message = limit;
    return 0;
}

static PyGetSetDef Pipe_getset[] = {
    {"max_message", (getter)Pipe_get_max_message, (setter)Pipe_set_max_message,
     "the largest frame payload passed on (None: no limit)", NULL},
    {"frames", (getter)Pipe_get_frames, NULL, "data frames written", NULL},
    {"bytes", (getter)Pipe_get_bytes, NULL, "bytes written", NULL},
    {"writes", (getter)Pipe_get_writes, NULL, "transport.write calls made", NULL},
    {NULL},
};

static PyMemberDef Pipe_members[] = {
    {"__vectorcalloffset__", T_PYSSIZET, offsetof(Pipe, vectorcall), READONLY},
    {NULL},
};

static PyTypeObject PipeType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "wsgate._relayfast.Pipe",
    .tp_doc = "Writes reads made of whole data frames to a transport, verbatim.",
    .tp_basicsize = sizeof(Pipe),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_new = Pipe_new,
    .tp_init = (initproc)Pipe_init,
    .tp_dealloc = (destructor)Pipe_dealloc,
    .tp_traverse = (traverseproc)Pipe_traverse,
    .tp_clear = (inquiry)Pipe_clear,
    .tp_call = Pipe_call,
    .tp_vectorcall_offset = offsetof(Pipe, vectorcall),
    .tp_getset = Pipe_getset,
    .tp_members = Pipe_members,
};

/* An asyncio protocol for a relayed connection: the transport calls its data_received
 * (a C method: uvloop calls it with no Python frame at all), which runs the Pipe step on
 * the read; a read the pipe does not take (not armed, a control or partial frame, a
 * shut gate) and every other callback go to the Python protocol, unchanged. The Python
 * protocol disarms it while it holds state a read must not overtake (a partial frame, a
 * backlog), and re-arms it once that is gone. */
typedef struct {
    PyObject_HEAD
    Pipe *pipe;         /* NULL: detached, every read goes to the Python protocol */
    PyObject *protocol; /* the Python protocol (websockets' connection subclass) */
    PyObject *on_error; /* called with the exception when the pipe's write raises */
    int armed;
} PipedProtocol;

static PyTypeObject PipedProtocolType;
static PyObject *str_data_received, *str_connection_made, *str_connection_lost,
    *str_eof_received, *str_pause_writing, *str_resume_writing;

static int
PipedProtocol_init(PipedProtocol *self, PyObject *args, PyObject *kwds)
{
    static char *kw[] = {"pipe", "protocol", "on_error", NULL};
    PyObject *pipe, *protocol, *on_error;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O!OO", kw, &PipeType, &pipe, &protocol,
                                     &on_error))
        return -1;
    if (!PyCallable_Check(on_error)) {
        PyErr_SetString(PyExc_TypeError, "on_error must be callable");
        return -1;
    }
    Py_INCREF(pipe);
    Py_XSETREF(self->pipe, (Pipe *)pipe);
    Py_INCREF(protocol);
    Py_XSETREF(self->protocol, protocol);
    Py_INCREF(on_error);
    Py_XSETREF(self->on_error, on_error);
    self->armed = 0;
    return 0;
}

static PyObject *
PipedProtocol_data_received(PipedProtocol *self, PyObject *data)
{
    if (self->armed && self->pipe != NULL && PyBytes_CheckExact(data)) {
        Pipe *pipe = self->pipe;
        Py_INCREF(pipe); /* the write may run code that detaches it */
        Py_ssize_t count = pipe_step(pipe, data);
        Py_DECREF(pipe);
        if (count > 0)
            Py_RETURN_NONE;
        if (count < 0) {
            /* As a failed frame handler: reported, and the read counts as taken. */
            PyObject *type, *value, *tb;
            PyErr_Fetch(&type, &value, &tb);
            PyErr_NormalizeException(&type, &value, &tb);
            if (tb != NULL)
                PyException_SetTraceback(value, tb);
            PyObject *r = PyObject_CallOneArg(self->on_error, value);
            Py_XDECREF(type);
            Py_XDECREF(value);
            Py_XDECREF(tb);
            if (r == NULL)
                return NULL;
            Py_DECREF(r);
            Py_RETURN_NONE;
        }
    }
    if (self->protocol == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "PipedProtocol not initialised");
        return NULL;
    }
    return PyObject_CallMethodOneArg(self->protocol, str_data_received, data);
}

static PyObject *
delegate(PipedProtocol *self, PyObject *name, PyObject *arg)
{
    if (self->protocol == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "PipedProtocol not initialised");
        return NULL;
    }
    if (arg == NULL)
        return PyObject_CallMethodNoArgs(self->protocol, name);
    return PyObject_CallMethodOneArg(self->protocol, name, arg);
}

static PyObject *
PipedProtocol_connection_made(PipedProtocol *self, PyObject *transport)
{
    return delegate(self, str_connection_made, transport);
}

static PyObject *
PipedProtocol_connection_lost(PipedProtocol *self, PyObject *exc)
{
    return delegate(self, str_connection_lost, exc);
}

static PyObject *
PipedProtocol_eof_received(PipedProtocol *self, PyObject *unused)
{
    return delegate(self, str_eof_received, NULL);
}

static PyObject *
PipedProtocol_pause_writing(PipedProtocol *self, PyObject *unused)
{
    return delegate(self, str_pause_writing, NULL);
}

static PyObject *
PipedProtocol_resume_writing(PipedProtocol *self, PyObject *unused)
{
    return delegate(self, str_resume_writing, NULL);
}

static PyObject *
PipedProtocol_get_armed(PipedProtocol *self, void *closure)
{
    return PyBool_FromLong(self->armed);
}

static int
PipedProtocol_set_armed(PipedProtocol *self, PyObject *value, void *closure)
{
    if (value == NULL) {
        PyErr_SetString(PyExc_AttributeError, "armed cannot be deleted");
        return -1;
    }
    int armed = PyObject_IsTrue(value);
    if (armed < 0)
        return -1;
    self->armed = armed;
    return 0;
}

static PyObject *
PipedProtocol_get_pipe(PipedProtocol *self, void *closure)
{
    if (self->pipe == NULL)
        Py_RETURN_NONE;
    Py_INCREF(self->pipe);
    return (PyObject *)self->pipe;
}

/* None detaches the pipe for good (the relay ended): every read goes to the protocol. */
static int
PipedProtocol_set_pipe(PipedProtocol *self, PyObject *value, void *closure)
{
    if (value == NULL || value == Py_None) {
        Py_CLEAR(self->pipe);
        return 0;
    }
    if (!PyObject_TypeCheck(value, &PipeType)) {
        PyErr_SetString(PyExc_TypeError, "pipe must be a Pipe or None");
        return -1;
    }
    Py_INCREF(value);
    Py_XSETREF(self->pipe, (Pipe *)value);
    return 0;
}

static PyObject *
PipedProtocol_get_protocol(PipedProtocol *self, void *closure)
{
    if (self->protocol == NULL)
        Py_RETURN_NONE;
    Py_INCREF(self->protocol);
    return self->protocol;
}

static int
PipedProtocol_traverse(PipedProtocol *self, visitproc visit, void *arg)
{
    Py_VISIT(self->pipe);
    Py_VISIT(self->protocol);
    Py_VISIT(self->on_error);
    return 0;
}

static int
PipedProtocol_clear(PipedProtocol *self)
{
    Py_CLEAR(self->pipe);
    Py_CLEAR(self->protocol);
    Py_CLEAR(self->on_error);
    return 0;
}

static void
PipedProtocol_dealloc(PipedProtocol *self)
{
    PyObject_GC_UnTrack(self);
    PipedProtocol_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyMethodDef PipedProtocol_methods[] = {
    {"data_received", (PyCFunction)PipedProtocol_data_received, METH_O,
     "the pipe writes the read, or the Python protocol takes it"},
    {"connection_made", (PyCFunction)PipedProtocol_connection_made, METH_O, NULL},
    {"connection_lost", (PyCFunction)PipedProtocol_connection_lost, METH_O, NULL},
    {"eof_received", (PyCFunction)PipedProtocol_eof_received, METH_NOARGS, NULL},
    {"pause_writing", (PyCFunction)PipedProtocol_pause_writing, METH_NOARGS, NULL},
    {"resume_writing", (PyCFunction)PipedProtocol_resume_writing, METH_NOARGS, NULL},
    {NULL},
};

static PyGetSetDef PipedProtocol_getset[] = {
    {"armed", (getter)PipedProtocol_get_armed, (setter)PipedProtocol_set_armed,
     "reads go to the pipe first (the Python protocol holds nothing they could overtake)",
     NULL},
    {"pipe", (getter)PipedProtocol_get_pipe, (setter)PipedProtocol_set_pipe,
     "the Pipe, or None (detached)", NULL},
    {"protocol", (getter)PipedProtocol_get_protocol, NULL, "the Python protocol", NULL},
    {NULL},
};

static PyTypeObject PipedProtocolType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "wsgate._relayfast.PipedProtocol",
    .tp_doc = "A transport's protocol for a relay: reads through a Pipe, the rest to Python.",
    .tp_basicsize = sizeof(PipedProtocol),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)PipedProtocol_init,
    .tp_dealloc = (destructor)PipedProtocol_dealloc,
    .tp_traverse = (traverseproc)PipedProtocol_traverse,
    .tp_clear = (inquiry)PipedProtocol_clear,
    .tp_methods = PipedProtocol_methods,
    .tp_getset = PipedProtocol_getset,
};

static PyMethodDef module_methods[] = {
    {"scan", (PyCFunction)(void (*)(void))relayfast_scan, METH_FASTCALL,
     "scan(data, masked, max_message) -> whole data frames in data, exactly; else 0"},
    {NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "wsgate._relayfast",
    .m_doc = "The relay's per-read step (scan, gates, write, counters) and protocol in C.",
    .m_size = -1,
    .m_methods = module_methods,
};

PyMODINIT_FUNC
PyInit__relayfast(void)
{
    /* websockets' Protocol.state is a Python property: its slot is read instead, so the
       gate runs no Python frame. */
    str_state = PyUnicode_InternFromString("_state");
    str_data_received = PyUnicode_InternFromString("data_received");
    str_connection_made = PyUnicode_InternFromString("connection_made");
    str_connection_lost = PyUnicode_InternFromString("connection_lost");
    str_eof_received = PyUnicode_InternFromString("eof_received");
    str_pause_writing = PyUnicode_InternFromString("pause_writing");
    str_resume_writing = PyUnicode_InternFromString("resume_writing");
    if (str_state == NULL || str_data_received == NULL || str_connection_made == NULL ||
        str_connection_lost == NULL || str_eof_received == NULL ||
        str_pause_writing == NULL || str_resume_writing == NULL ||
        PyType_Ready(&PipeType) < 0 || PyType_Ready(&PipedProtocolType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    if (PyModule_AddObjectRef(m, "Pipe", (PyObject *)&PipeType) < 0 ||
        PyModule_AddObjectRef(m, "PipedProtocol", (PyObject *)&PipedProtocolType) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
