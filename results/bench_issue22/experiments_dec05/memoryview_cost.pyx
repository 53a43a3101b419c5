# cython: language_level=3, boundscheck=False, wraparound=False
cimport numpy as cnp
import numpy as np
cnp.import_array()

def mv3(float[::1] a, float[::1] b, const float[::1] c, float lr, int n):
    return a.shape[0]

def mv2d(float[:, ::1] a, float[:, ::1] b, float[:, ::1] c, float lr, int n):
    return a.shape[0]

cdef inline float* _f(object o, bint write) except NULL:
    if type(o) is not cnp.ndarray:
        raise TypeError("x")
    cdef cnp.ndarray a = <cnp.ndarray>o
    if cnp.PyArray_TYPE(a) != cnp.NPY_FLOAT32 or not cnp.PyArray_IS_C_CONTIGUOUS(a):
        raise TypeError("y")
    if write and not cnp.PyArray_ISWRITEABLE(a):
        raise ValueError("ro")
    return <float*>cnp.PyArray_DATA(a)

def nd3(a, b, c, float lr, int n):
    cdef float* pa = _f(a, True)
    cdef float* pb = _f(b, True)
    cdef float* pc = _f(c, False)
    return 0
