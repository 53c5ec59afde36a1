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

from dataclasses import dataclass
from typing import Any, Literal

import torch
from monai.transforms import MapLabelValued

from gmim.data.transforms import LabelsToRegionsd
from gmim.errors import InputError
from gmim.rules import Section, SettingError, at_least, each, non_empty, setting

__all__ = ["Task"]

DEFAULT_LABELS = {"background": 0, "foreground": 1}


@dataclass
class Task(Section):
    name: str = setting("segmentation", non_empty())
    kind: Literal["multiclass", "regions"] = "multiclass"
    #: Name → label value, background 0 included. Empty: from an nnU-Net dataset.json, else background/foreground.
    labels: dict[str, int] = setting(rule=each(at_least(0), empty_allowed=True, distinct=True), factory=dict)
    #: ``regions`` tasks: region name → the label values it unites.
    regions: dict[str, list[int]] = setting(rule=each(each(at_least(0)), empty_allowed=True), factory=dict)
    #: Input channel names, in order. Empty: from the data.
    channels: list[str] = setting(rule=each(non_empty(), empty_allowed=True, distinct=True), factory=list)
    #: ``dice_ce`` (Dice + cross-entropy) or ``dice``.
    loss: Literal["dice", "dice_ce"] = "dice_ce"

    def check(self) -> None:
        """Labels and regions that make one kind of task; empty labels are the data's to fill."""
        values = set(self.labels.values())
        if self.kind == "multiclass":
            if self.regions:
                raise SettingError("regions", self.regions, "must be empty: task.kind is multiclass", related=["kind"])
            if self.labels and (0 not in values or len(values) < 2):
                raise SettingError("labels", self.labels, "must hold background 0 and at least one class", related=["kind"])
            return
        if not self.regions:
            raise SettingError("regions", self.regions, "must be given for task.kind regions (name: [label values])", related=["kind"])
        unknown = sorted({v for region in self.regions.values() for v in region} - values) if values else []
        if unknown:
            raise SettingError("regions", self.regions, f"must use the values of task.labels ({unknown} are not)", related=["labels"])

    def require_complete(self, where: str) -> None:
        """Refuse a task that is not one once the data have filled it in; ``where`` names what defined it."""
        try:
            if not self.labels:
                raise SettingError("labels", self.labels, "must be given (name: value, background 0 included)")
            self.validate()
        except SettingError as error:
            raise InputError(f"{where}: {error.within('task')}") from None

    @property
    def out_channels(self) -> int:
        return len(self.labels) if self.kind == "multiclass" else len(self.regions)

    @property
    def output_names(self) -> list[str]:
        """The network's output channels, in order: the labels by value, or the regions as listed."""
        return list(self.regions) if self.kind == "regions" else [name for name, _ in self._sorted_labels()]

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
        """Probabilities (C, ...) of one case → a label map with the task's label values: the argmax's
        label, or the regions painted as :meth:`region_painting` says."""
        if self.kind == "multiclass":
            values = torch.tensor([v for _, v in self._sorted_labels()], device=probabilities.device)
            return values[probabilities.argmax(0)]
        out = torch.zeros(probabilities.shape[1:], dtype=torch.long, device=probabilities.device)
        for channel, value in self.region_painting():
            out[probabilities[channel] > 0.5] = value
        return out

    def region_painting(self) -> list[tuple[int, int]]:
        """How a label map shows overlapping regions: (output channel, label value) in painting order,
        each painted over the earlier ones where its probability is > 0.5. Regions go from the largest
        label set to the smallest, each with its value not in any smaller region (BraTS: WT → 2,
        TC → 1, ET → 4), which inverts nested regions exactly."""
        region_values = list(self.regions.values())
        order = sorted(range(len(region_values)), key=lambda i: -len(region_values[i]))
        painting = []
        for position, index in enumerate(order):
            smaller = {v for later in order[position + 1 :] for v in region_values[later]}
            own = sorted(set(region_values[index]) - smaller)
            if own:
                painting.append((index, own[0]))
        return painting

    def masks(self, label_map: torch.Tensor) -> torch.Tensor:
        """A label map (...) → the scored binary masks (K, ...) in the order of :attr:`scored`."""
        return torch.stack([torch.isin(label_map, torch.tensor(v, device=label_map.device)) for v in self.scored.values()])
