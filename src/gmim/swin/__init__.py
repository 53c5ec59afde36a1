"""The Swin UNETR encoder as both commands build it: its geometry (:mod:`.geometry`), MONAI's patch
mergings and MONAI < 1.5's (:mod:`.merging`, :mod:`.legacy_merging`), fused window attention
(:mod:`.attention`), and weights made elsewhere (:mod:`.weights`)."""
