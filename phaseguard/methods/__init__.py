"""Training methods, by name: ``create_method(section, ctx)``, ``list_methods()``.

The registry lives in :mod:`.registry`; the built-in methods register themselves when their
modules are imported below.
"""

from . import adversarial, dat, standard  # noqa: F401  (register the built-in methods)
from .base import Batch, Method, MethodContext, Metrics
from .registry import create_method, list_methods, method_class, method_options, register_method

__all__ = [
    "Batch",
    "Method",
    "MethodContext",
    "Metrics",
    "create_method",
    "list_methods",
    "method_class",
    "method_options",
    "register_method",
]
