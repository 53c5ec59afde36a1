"""What MONAI 1.4 computed with Swin UNETR weights (``fixtures/monai14``, made by its
``make_fixtures.py`` under MONAI 1.4), for the tests that check gmim computes it too."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from monai.networks.nets import SwinUNETR

from swin_layouts import PUBLIC_LAYOUTS, checksum, model_zoo, reproducible_weights

FIXTURES = Path(__file__).parent / "fixtures" / "monai14"
RECORD = json.loads((FIXTURES / "expected.json").read_text())
EXPECTED = dict(np.load(FIXTURES / "expected.npz"))
CROP = torch.from_numpy(EXPECTED["crop"])
TOLERANCE = {"rtol": 1e-5, "atol": 1e-5}


def monai14_state(name: str) -> dict[str, torch.Tensor]:
    """The weights MONAI 1.4's network ``name`` (v1, v2) held, bit for bit, under today's MONAI."""
    template = SwinUNETR(in_channels=1, out_channels=2, feature_size=12, use_v2=RECORD[name]["use_v2"]).state_dict()
    assert {k: list(v.shape) for k, v in template.items()} == RECORD[name]["shapes"]  # MONAI 1.4's keys and shapes
    state = reproducible_weights(template)
    assert checksum(state) == RECORD[name]["checksum"]
    return state


def write_layout(folder: Path, layout: str) -> Path:
    """The file of ``layout`` (:data:`PUBLIC_LAYOUTS`) holding MONAI 1.4's weights."""
    name, writer, use_v2 = PUBLIC_LAYOUTS[layout]
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(writer(monai14_state("v2" if use_v2 else "v1")), path)
    if writer is model_zoo:  # a bundle: its metadata says which MONAI made it
        (folder / "configs").mkdir()
        (folder / "configs" / "metadata.json").write_text(json.dumps({"monai_version": RECORD["monai_version"]}))
    return path


def assert_hidden_states(encoder: torch.nn.Module, name: str) -> None:
    with torch.no_grad():
        for stage, hidden in enumerate(encoder(CROP)):
            torch.testing.assert_close(hidden, torch.from_numpy(EXPECTED[f"{name}_hidden{stage}"]), **TOLERANCE, msg=f"stage {stage}")
