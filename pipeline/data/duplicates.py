"""Near-identical images found by their difference hash, grouped, so the image split keeps each group in one subset."""

from __future__ import annotations

import numpy as np

from ..core.errors import ImageReadError
from .decode import read_image
from .layouts import UNKNOWN_PATIENT, Record

DUPLICATE_BITS = 32
"""Two images of one patient whose 256-bit difference hashes differ in at most this many bits are the same cell
(a byte-identical copy, or the same cell in two overlapping microscope fields): the image split keeps them in one
subset. On C-NMC fold 1 the within-patient distances fall into two heaps: 264 pairs within 30 bits, 274 within
40, then random pairs from about 70 (15,193 pairs within 80)."""


_BLACK = 20
"""Gray level below which a pixel is the segmented cell's black background."""


def difference_hash(path: str) -> np.ndarray | None:
    """A 256-bit perceptual hash of the cell in an image (dHash of its bounding box on the black background,
    16x17 gray, each bit whether a pixel is brighter than its right neighbour), as 32 bytes; None when the image
    cannot be read or shows no cell."""
    import cv2

    try:
        gray = cv2.cvtColor(read_image(path), cv2.COLOR_RGB2GRAY)
    except ImageReadError:
        return None
    rows, cols = np.nonzero(gray > _BLACK)
    if not len(rows):
        return None
    cell = gray[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
    small = cv2.resize(cell, (17, 16), interpolation=cv2.INTER_AREA).astype(np.int16)
    return np.packbits(small[:, 1:] > small[:, :-1])


def near_duplicate_groups(records: list[Record], max_bits: int = DUPLICATE_BITS) -> np.ndarray:
    """A group number per record: near-identical images of one patient share one (union-find over the pairs whose
    hashes are within `max_bits`); every other image is a group of its own."""
    parent = list(range(len(records)))

    def root(index: int) -> int:
        while parent[index] != index:
            parent[index] = parent[parent[index]]
            index = parent[index]
        return index

    hashes = [difference_hash(record.path) for record in records]
    by_patient: dict[str, list[int]] = {}
    for index, record in enumerate(records):
        if hashes[index] is not None and record.patient != UNKNOWN_PATIENT:
            by_patient.setdefault(record.patient, []).append(index)
    for members in by_patient.values():
        values = np.stack([hashes[index] for index in members])
        for position, index in enumerate(members[:-1]):
            distance = np.unpackbits(values[position + 1 :] ^ values[position], axis=1).sum(axis=1)
            for other in np.flatnonzero(distance <= max_bits):
                parent[root(members[position + 1 + other])] = root(index)
    roots = [root(index) for index in range(len(records))]
    numbers = {value: number for number, value in enumerate(dict.fromkeys(roots))}
    return np.array([numbers[value] for value in roots])
