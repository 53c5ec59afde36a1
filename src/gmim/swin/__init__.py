"""The Swin UNETR encoder as both commands build it: its geometry (:mod:`.geometry`), MONAI's or the
prototype's patch merging (:mod:`.merging`), fused window attention (:mod:`.attention`), and weights
made elsewhere (:mod:`.weights`)."""
