"""GMIM pre-training: configuration (:mod:`.config`), data pipeline (:mod:`.data`) and the training
loop (:mod:`.train`); the ``gmim pretrain`` command is :mod:`gmim.pretrain`."""
