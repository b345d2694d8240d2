"""Unpickling untrusted files that may hold only numpy arrays, lists, dicts, bytes and numbers.

``pickle.load`` runs any callable a file names. :func:`load_pickle` resolves only the globals
numpy needs to rebuild an array (``_reconstruct``, ``ndarray``, ``dtype``, and ``_frombuffer``
that numpy uses for pickle protocol 5), plus ``_codecs.encode`` restricted to latin-1 (how
Python 3 writes bytes at protocols 0-2), and raises :class:`DataError` for anything else.
"""

from __future__ import annotations

import io
import pickle

import numpy as np

from phaseguard.errors import DataError

try:
    from numpy._core import multiarray, numeric
except ImportError:  # numpy < 2
    from numpy.core import multiarray, numeric


def _latin1_encode(text: str, encoding: str) -> bytes:
    if encoding not in ("latin1", "latin-1"):
        raise DataError(f"refusing to decode bytes pickled with encoding {encoding!r}")
    return text.encode("latin-1")


_ALLOWED = {
    ("_codecs", "encode"): _latin1_encode,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    **{
        (f"numpy.{core}.multiarray", "_reconstruct"): multiarray._reconstruct
        for core in ("core", "_core")
    },
    **{(f"numpy.{core}.numeric", "_frombuffer"): numeric._frombuffer for core in ("core", "_core")},
}


class _NumpyOnlyUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> object:
        if (module, name) not in _ALLOWED:
            raise DataError(
                f"refusing to load {module}.{name} from an untrusted pickle "
                "(only numpy arrays are allowed)"
            )
        return _ALLOWED[module, name]


def load_pickle(data: bytes, where: str) -> object:
    """Unpickle ``data`` (Python 2 strings become bytes); ``where`` names the file in errors."""
    try:
        return _NumpyOnlyUnpickler(io.BytesIO(data), encoding="bytes").load()
    except DataError as error:
        raise DataError(f"{where}: {error}") from None
    except Exception as error:  # a malformed pickle can fail in many ways; all mean "corrupt"
        raise DataError(f"{where} is not a readable pickle (truncated?): {error!r}") from error
