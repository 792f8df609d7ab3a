"""Open Inference Protocol datatypes and their numpy dtypes: the one mapping."""

from __future__ import annotations

from typing import Any, Final

import numpy as np

NUMPY_BY_DATATYPE: Final[dict[str, np.dtype[Any]]] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype(np.uint8),
    "UINT16": np.dtype(np.uint16),
    "UINT32": np.dtype(np.uint32),
    "UINT64": np.dtype(np.uint64),
    "INT8": np.dtype(np.int8),
    "INT16": np.dtype(np.int16),
    "INT32": np.dtype(np.int32),
    "INT64": np.dtype(np.int64),
    "FP16": np.dtype(np.float16),
    "FP32": np.dtype(np.float32),
    "FP64": np.dtype(np.float64),
    "BYTES": np.dtype(object),
}
DATATYPES: Final = tuple(NUMPY_BY_DATATYPE)
_DATATYPE_BY_KIND_SIZE: Final = {
    (dtype.kind, dtype.itemsize): name for name, dtype in NUMPY_BY_DATATYPE.items()
}


def datatype_of(dtype: np.dtype[Any]) -> str:
    """The OIP datatype of a numpy dtype; strings, bytes and objects are BYTES."""
    if dtype.kind in "OUSV":
        return "BYTES"
    try:
        return _DATATYPE_BY_KIND_SIZE[(dtype.kind, dtype.itemsize)]
    except KeyError:
        raise ValueError(f"numpy dtype {dtype} has no Open Inference Protocol datatype") from None


def is_numeric(datatype: str) -> bool:
    return datatype not in ("BYTES", "BOOL")
