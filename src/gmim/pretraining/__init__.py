"""The GMIM method: where and how much to mask (:mod:`.masking`), the Swin UNETR encoder with masks
inside (:mod:`.encoder`), the Siamese model (:mod:`.model`) and its losses (:mod:`.losses`); the two
views (:mod:`.views`, :mod:`.data`), pictures (:mod:`.visualize`), the configuration
(:mod:`.config`), and GMIM as a method of the training loop with ``pretrain`` (:mod:`.method`).
The ``gmim pretrain`` command is :mod:`gmim.cli.pretrain`."""
