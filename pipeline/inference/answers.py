"""What a model answers for one image: the prediction (class, P(ALL), the input it read), a released model's input
check and band, and the columns they add to a table of predictions."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from .. import CLASS_NAMES
from ..evaluation.evaluate import label_from_prob


@dataclass(frozen=True)
class Prediction:
    """One image's prediction: the class shown, its model output index (what an explanation must explain),
    P(ALL), the probability of the class shown, whether it averages the 8 TTA views, and the model input."""

    predicted: str
    class_index: int
    prob_all: float
    probability: float
    tta: bool
    input: np.ndarray
    check: InputCheck | None = None
    """What the released model's input checks found (None for a model without them)."""
    band: str | None = None
    """The released model's uncertainty band: likely ALL, uncertain or likely HEM."""
    fold: int = 0
    """Which of a released model's heads answered: 0 the head fit on every patient, k the head of patient fold k
    (one that never saw this image's patient)."""
    member_inputs: tuple[np.ndarray, ...] = ()
    """A released ensemble's inputs of its members after the primary, each prepared at its own size."""

    def without_inputs(self) -> Prediction:
        """The same answer without the model inputs it was computed from (an empty `input`): what a table of many
        cells keeps; explaining one again needs its image."""
        return replace(self, input=np.zeros((0, 0, 3), np.uint8), member_inputs=())

    @classmethod
    def from_prob_all(
        cls,
        prob_all: float,
        tta: bool,
        model_input: np.ndarray,
        check: InputCheck | None = None,
        band: str | None = None,
        fold: int = 0,
        member_inputs: tuple[np.ndarray, ...] = (),
    ) -> Prediction:
        """A prediction from P(ALL): the class it calls and the probability of that class."""
        predicted = str(label_from_prob(np.array([prob_all]))[0])
        return cls(
            predicted,
            class_index_of(predicted),
            prob_all,
            prob_all if predicted == "ALL" else 1 - prob_all,
            tta,
            model_input,
            check,
            band,
            fold,
            member_inputs,
        )


@dataclass(frozen=True)
class PreparedImage:
    """An image as a model reads it: its input, a released ensemble's inputs of its other members, and what the
    released model's format check found (None: a cell on black, or a model without the check)."""

    model_input: np.ndarray
    member_inputs: tuple[np.ndarray, ...] = ()
    problem: str | None = None


@dataclass(frozen=True)
class InputCheck:
    """Whether an input is what the model knows: the format check's problem (None: a cell on black, as trained),
    the feature distance to the training cells and the threshold 95 % of held-out cells stay within."""

    problem: str | None
    distance: float
    threshold: float

    @property
    def in_distribution(self) -> bool:
        """Whether the input passed its checks and lies within the training cells' distance."""
        return self.problem is None and self.distance <= self.threshold

    def sentence(self) -> str:
        """A plain sentence for a flagged input ("" when it passes)."""
        if self.in_distribution:
            return ""
        why = self.problem or (
            f"its features lie far from every training cell (distance {self.distance:.2f}, "
            f"where 95 % of held-out cells stay within {self.threshold:.2f})"
        )
        return f"This picture is not like the cells the model was trained on: {why}. The answer is not reliable."


def class_index_of(label: str) -> int:
    """The model output index of a class name (ALL or HEM)."""
    return CLASS_NAMES.index(label)


CHECK_COLUMNS = ("band", "distance", "in_distribution", "input_problem")
"""What a released model adds to each prediction row."""


def check_columns(prediction: Prediction) -> dict[str, Any]:
    """The band and input-check columns of a prediction row (none for a model without checks)."""
    if prediction.check is None:
        return {}
    return {
        "band": prediction.band,
        "distance": round(prediction.check.distance, 4),
        "in_distribution": prediction.check.in_distribution,
        "input_problem": prediction.check.problem or "",
    }
