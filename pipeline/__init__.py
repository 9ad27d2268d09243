"""ALL-vs-HEM classification of C-NMC 2019 white-blood-cell images (EfficientNet transfer learning).

Everything here is importable without TensorFlow; modules that need it import it lazily.
"""

import os as _os

_os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's start-up chatter hides our messages

CLASS_NAMES = ("HEM", "ALL")
"""Model output order: index 1 is ALL (leukemic blast), as in the C-NMC labels (1 = ALL, 0 = HEM)."""

ALL_INDEX = CLASS_NAMES.index("ALL")
"""Column of the probability of ALL in the model's output."""

DISPLAY_ORDER = ("ALL", "HEM")
"""Label order used in confusion matrices and per-class tables (as in the paper)."""

__version__ = "0.1.0"
