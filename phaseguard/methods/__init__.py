"""Training methods, by name: ``create_method(name, model, ...)``, ``list_methods()``.

A method is a :class:`Method` subclass registered with :func:`register_method` (the contract is
in :mod:`.base`; docs/extending.md shows one written outside the package). The built-in methods
register themselves when their modules are imported below.
"""

from . import adversarial, dat, standard  # noqa: F401  (register the built-in methods)
from .base import Backward, Batch, Method, MethodContext, Metrics, Trainable, accuracy
from .registry import create_method, list_methods, method_class, method_options, register_method

__all__ = [
    "Backward",
    "Batch",
    "Method",
    "MethodContext",
    "Metrics",
    "Trainable",
    "accuracy",
    "create_method",
    "list_methods",
    "method_class",
    "method_options",
    "register_method",
]
