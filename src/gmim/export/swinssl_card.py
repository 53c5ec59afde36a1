"""The model card's sections on a ``gmim pretrain --method swin-ssl`` run: its pretext tasks and loss
beside what every pre-training card says (:func:`gmim.export.pretrain_card.encoder_sections`)."""

from __future__ import annotations

from gmim.export.pretrain_card import encoder_sections
from gmim.export.source import RunModel
from gmim.swinssl.config import SwinSSLConfig

__all__ = ["swinssl_sections"]


def swinssl_sections(model: RunModel, weights_file: str, merging: list[str]) -> list[str]:
    """The card body; ``weights_file`` names the format's weights, ``merging`` is its patch-merging paragraph."""
    config = model.config
    assert isinstance(config, SwinSSLConfig)
    loss, inpainting = config.loss, config.inpainting
    training = [
        f"- loss: L = {loss.rotation:g} · L_rot + {loss.contrastive:g} · L_contrast + {loss.reconstruction:g} · L_rec "
        f"(rotation cross-entropy, NT-Xent at temperature {loss.temperature:g}, L1 reconstruction); "
        f"{config.data.crops_per_volume} crop(s) per volume, each seen in two views",
        f"- views: a random 90° rotation and local regions dropped (up to {inpainting.max_fraction:g} of the crop, regions "
        f"{inpainting.min_block:g}–{inpainting.max_block:g} of its size per axis); reconstruction head `{config.model.upsample}`",
    ]
    method = (
        "Swin UNETR's own self-supervision (Tang et al., CVPR 2022): rotation prediction, contrastive coding of two "
        "views and inpainting of dropped regions"
    )
    return encoder_sections(model, weights_file, merging, method, training)
