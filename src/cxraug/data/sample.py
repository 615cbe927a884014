"""The unit every reader yields, and a collection of them."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field, replace

import numpy as np

from cxraug.data.imageio import read_image
from cxraug.errors import ImageReadError


@dataclass
class Sample:
    """One radiograph.

    image: float32 HxW in [0,1] (None until decoded). labels: float32 vector over the collection's
    class names (one-hot for folder data, multi-hot for CheXpert-style; NaN = label ignored).
    patient_id: used for patient-level splits. source: ``real`` or ``synthetic`` (or a reader name).
    view: ``pa``, ``ap``, ``frontal`` (frontal, projection unknown), ``lateral``, ``other``, or ``""``
    when the source says nothing about views.
    """

    image: np.ndarray | None
    labels: np.ndarray
    patient_id: str
    source: str
    path: str
    view: str = ""

    @property
    def synthetic(self) -> bool:
        return self.source == "synthetic"

    def load(self) -> Sample:
        if self.image is not None:
            return self
        return replace(self, image=read_image(self.path))

    @property
    def label_index(self) -> int:
        """Index of the (first) positive label; for single-label data, the class index."""
        lab = np.nan_to_num(self.labels, nan=0.0)
        return int(np.argmax(lab)) if lab.max() > 0 else -1


@dataclass
class Collection:
    """Samples plus the names of their label columns (``multilabel`` when labels are multi-hot)."""

    samples: list[Sample]
    class_names: list[str]
    multilabel: bool = False
    root: str = ""
    problems: list[str] = field(default_factory=list)  # readable messages found while listing
    skipped: list[str] = field(default_factory=list)  # one line per file or manifest row left out
    views: dict[str, int] = field(default_factory=dict)  # views in the source, before the view filter
    view_filter: str = ""  # the --view filter applied ("" when the source has no views)
    unknown_patients: int = 0  # samples whose patient id is only their file name (image-level splits)

    def __len__(self) -> int:
        return len(self.samples)

    def counts(self) -> dict[str, int]:
        lab = np.stack([np.nan_to_num(s.labels) for s in self.samples]) if self.samples else None
        if lab is None:
            return {c: 0 for c in self.class_names}
        return {c: int((lab[:, i] > 0.5).sum()) for i, c in enumerate(self.class_names)}

    def subset(self, idx: list[int] | np.ndarray) -> Collection:
        return replace(self, samples=[self.samples[int(i)] for i in idx], problems=[], skipped=[])

    @property
    def n_patients(self) -> int:
        return len({s.patient_id for s in self.samples})

    def only_class(self, name: str) -> Collection:
        if name not in self.class_names:
            raise KeyError(f"class {name!r} not in {self.class_names}")
        i = self.class_names.index(name)
        return self.subset([k for k, s in enumerate(self.samples) if np.nan_to_num(s.labels[i]) > 0.5])

    def iter_loaded(self, skip_bad: bool = True, errors: list[ImageReadError] | None = None) -> Iterator[Sample]:
        """Decode each sample; bad files are reported in ``errors`` (and skipped) or raised."""
        for s in self.samples:
            try:
                yield s.load()
            except ImageReadError as e:
                if not skip_bad:
                    raise
                if errors is not None:
                    errors.append(e)
