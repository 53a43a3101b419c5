# Checked raw access to the NumPy arrays handed to the kernels that run at
# every training step (_spmm's products, updates and gather_columns;
# _activation's losses).
#
# A typed memoryview argument costs about 85 ns to acquire (NumPy's buffer
# protocol builds and compares a format string, Cython allocates a
# memoryview object); a small network's step hands its kernels some 90
# arrays, 7-8 us of Madelon's 75 us step.  These checks read the array's
# header instead (type, flags, dimensions), about 8 ns an array, and refuse
# what a memoryview would have refused: another dtype or byte order, a
# non-C-contiguous or misaligned array, a read-only array where the kernel
# writes, a wrong number of dimensions; and None where an array is required.
cimport numpy as cnp
from libc.stdint cimport int64_t

# (each module that cimports this calls cnp.import_array() once)


# the element types, as typenum arguments of take()
cdef enum:
    F32 = cnp.NPY_FLOAT32
    F64 = cnp.NPY_FLOAT64
    I32 = cnp.NPY_INT32
    I64 = cnp.NPY_INT64
    U16 = cnp.NPY_UINT16


ctypedef struct arr_t:
    char* p       # first element (NULL: None was passed for an optional array)
    int64_t n0    # shape[0] (0 for None)
    int64_t n1    # shape[1] of a 2-D array, else 1


cdef inline int take(object a, int typenum, int ndim, bint writable, bint optional,
                     arr_t* out, str kernel, str name) except -1:
    """Fill ``out`` from array ``a`` after checking it (see above); None
    gives p NULL when ``optional``.  Raises TypeError or ValueError naming
    the kernel and the argument."""
    cdef cnp.ndarray arr
    if a is None:
        if not optional:
            raise TypeError(f"{kernel}: {name} must be an array, got None")
        out.p = NULL
        out.n0 = 0
        out.n1 = 0
        return 0
    if not cnp.PyArray_Check(a):
        raise TypeError(f"{kernel}: {name} must be a NumPy array, got {type(a).__name__}")
    arr = <cnp.ndarray>a
    if (cnp.PyArray_TYPE(arr) != typenum or cnp.PyArray_NDIM(arr) != ndim
            or not cnp.PyArray_IS_C_CONTIGUOUS(arr) or not cnp.PyArray_ISALIGNED(arr)
            or not cnp.PyArray_ISNOTSWAPPED(arr)):
        _refuse(arr, typenum, ndim, kernel, name)
    if writable and not cnp.PyArray_ISWRITEABLE(arr):
        raise ValueError(f"{kernel}: {name} is read-only, and the kernel writes to it")
    out.p = cnp.PyArray_BYTES(arr)
    out.n0 = cnp.PyArray_DIM(arr, 0)
    out.n1 = cnp.PyArray_DIM(arr, 1) if ndim == 2 else 1
    return 0


cdef inline int _refuse(object arr, int typenum, int ndim, str kernel,
                        str name) except -1:
    want = {cnp.NPY_FLOAT32: "float32", cnp.NPY_FLOAT64: "float64", cnp.NPY_INT32: "int32",
            cnp.NPY_INT64: "int64", cnp.NPY_UINT16: "uint16"}.get(typenum, f"type {typenum}")
    raise ValueError(f"{kernel}: {name} must be a {ndim}-D C-contiguous aligned array of "
                     f"native {want}, got {arr.dtype.str} of shape {arr.shape} "
                     f"(C-contiguous: {arr.flags.c_contiguous}, aligned: {arr.flags.aligned})")
