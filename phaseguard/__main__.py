"""``python -m phaseguard`` (what ``torchrun -m phaseguard`` runs)."""

import sys

from .cli import main

sys.exit(main())
