"""What a segmentation model predicts: classes (softmax) or overlapping regions (sigmoid).

- ``multiclass``: ``labels`` maps a name to each label value, background 0 included; the network
  has one output channel per label (AMOS: background + 15 organs = 16) and is scored per
  foreground class.
- ``regions``: ``regions`` maps a name to the set of label values it unites; regions may overlap
  (BraTS: TC = {1, 4}, WT = {1, 2, 4}, ET = {4}); one sigmoid channel each, scored per region.

The same definition turns a label map into training targets, network outputs back into a label
map with the original values, and label maps into the binary masks that are scored.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from monai.transforms import MapLabelValued

from gmim.data.transforms import LabelsToRegionsd
from gmim.errors import InputError

__all__ = ["Task"]

DEFAULT_LABELS = {"background": 0, "foreground": 1}


@dataclass
class Task:
    name: str = "segmentation"
    kind: Literal["multiclass", "regions"] = "multiclass"
    #: Name → label value, background 0 included. Empty: from an nnU-Net dataset.json, else background/foreground.
    labels: dict[str, int] = field(default_factory=dict)
    #: ``regions`` tasks: region name → the label values it unites.
    regions: dict[str, list[int]] = field(default_factory=dict)
    #: Input channel names, in order. Empty: from the data.
    channels: list[str] = field(default_factory=list)
    #: ``dice_ce`` (Dice + cross-entropy) or ``dice``.
    loss: Literal["dice", "dice_ce"] = "dice_ce"

    def check(self, where: str = "task") -> None:
        """Raise InputError when the definition is inconsistent."""
        values = list(self.labels.values())
        if len(set(values)) != len(values):
            raise InputError(f"{where}: task.labels gives one value to several names: {self.labels}")
        if any(v < 0 for v in values):
            raise InputError(f"{where}: task.labels must be non-negative integers: {self.labels}")
        if self.kind == "multiclass":
            if 0 not in values or len(values) < 2:
                raise InputError(f"{where}: a multiclass task needs background 0 and at least one class in task.labels")
            if self.regions:
                raise InputError(f"{where}: task.regions is for kind 'regions', this task is multiclass")
        else:
            if not self.regions:
                raise InputError(f"{where}: a regions task needs task.regions (name: [label values])")
            unknown = sorted({v for r in self.regions.values() for v in r} - set(values)) if values else []
            if unknown:
                raise InputError(f"{where}: task.regions use label values {unknown} missing from task.labels")

    @property
    def out_channels(self) -> int:
        return len(self.labels) if self.kind == "multiclass" else len(self.regions)

    @property
    def scored(self) -> dict[str, list[int]]:
        """What is scored: each foreground class (its one value) or each region (its values)."""
        if self.kind == "regions":
            return {name: list(values) for name, values in self.regions.items()}
        return {name: [value] for name, value in self._sorted_labels() if value != 0}

    @property
    def label_values(self) -> list[int]:
        """Values a label map may hold."""
        values = set(self.labels.values()) | {0}
        if self.kind == "regions":
            values |= {v for r in self.regions.values() for v in r}
        return sorted(values)

    def _sorted_labels(self) -> list[tuple[str, int]]:
        return sorted(self.labels.items(), key=lambda item: item[1])

    def target_transform(self) -> Any:
        """The transform from a label map (key ``label``) to the training target."""
        if self.kind == "regions":
            return LabelsToRegionsd("label", self.regions)
        values = [v for _, v in self._sorted_labels()]
        return MapLabelValued("label", orig_labels=values, target_labels=list(range(len(values))))

    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        """Network output (B, C, ...) → class probabilities (softmax) or region probabilities (sigmoid)."""
        return torch.softmax(logits, 1) if self.kind == "multiclass" else torch.sigmoid(logits)

    def onehot(self, probabilities: torch.Tensor) -> torch.Tensor:
        """Probabilities (B, C, ...) → binary (B, C, ...): argmax for classes, > 0.5 for regions."""
        if self.kind == "regions":
            return (probabilities > 0.5).to(probabilities.dtype)
        index = probabilities.argmax(1)
        return torch.nn.functional.one_hot(index, probabilities.shape[1]).movedim(-1, 1).to(probabilities.dtype)

    def to_label_map(self, probabilities: torch.Tensor) -> torch.Tensor:
        """Probabilities (C, ...) of one case → a label map with the task's label values.

        Regions are painted from the largest label set to the smallest, each with its value not in
        any smaller region (BraTS: WT → 2, TC → 1, ET → 4), which inverts nested regions exactly.
        """
        if self.kind == "multiclass":
            values = torch.tensor([v for _, v in self._sorted_labels()], device=probabilities.device)
            return values[probabilities.argmax(0)]
        out = torch.zeros(probabilities.shape[1:], dtype=torch.long, device=probabilities.device)
        order = sorted(range(len(self.regions)), key=lambda i: -len(list(self.regions.values())[i]))
        region_values = list(self.regions.values())
        for position, index in enumerate(order):
            smaller = {v for later in order[position + 1 :] for v in region_values[later]}
            own = sorted(set(region_values[index]) - smaller)
            if own:
                out[probabilities[index] > 0.5] = own[0]
        return out

    def masks(self, label_map: torch.Tensor) -> torch.Tensor:
        """A label map (...) → the scored binary masks (K, ...) in the order of :attr:`scored`."""
        return torch.stack([torch.isin(label_map, torch.tensor(v, device=label_map.device)) for v in self.scored.values()])
