"""Optional dependencies, installed as pip extras.

Features that only some users need (SVHN's ``.mat`` files, TensorBoard logs, report figures)
import their third-party module through :func:`require`, which names the extra to install
when the module is missing.
"""

import importlib
from types import ModuleType

from phaseguard.errors import PhaseguardError


class MissingExtraError(PhaseguardError):
    """An optional dependency is not installed."""


def require(module: str, extra: str, feature: str) -> ModuleType:
    """Import and return ``module``, or raise a one-line error naming the pip extra.

    ``feature`` says what needs the module (e.g. ``"the SVHN reader"``), ``extra`` is the
    extra of phaseguard that installs it (e.g. ``"svhn"``).
    """
    try:
        return importlib.import_module(module)
    except ImportError as exc:  # the module or one of the modules it needs is missing
        missing = (exc.name or module).split(".")[0]
        raise MissingExtraError(
            f"{feature} needs {missing}: pip install 'phaseguard[{extra}]'"
        ) from None
