"""ALL-vs-HEM classification of C-NMC 2019 white-blood-cell images (EfficientNet transfer learning).

Everything here is importable without TensorFlow; modules that need it import it lazily. Importing it changes
nothing of the process: the entry points (the command line, the dashboard, the benchmark) quiet TensorFlow's
start-up chatter themselves (`TF_CPP_MIN_LOG_LEVEL`) before it loads.
"""

CLASS_NAMES = ("HEM", "ALL")
"""Model output order: index 1 is ALL (leukemic blast), as in the C-NMC labels (1 = ALL, 0 = HEM)."""

ALL_INDEX = CLASS_NAMES.index("ALL")
"""Column of the probability of ALL in the model's output."""

DISPLAY_ORDER = ("ALL", "HEM")
"""Label order used in confusion matrices and per-class tables (as in the paper)."""

__version__ = "0.1.0"
