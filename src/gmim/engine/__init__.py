"""Training machinery shared by ``gmim pretrain`` and ``gmim finetune``.

- :mod:`.device`: device names (``auto``, ``cpu``, ``cuda``, ``cuda:N``, ``mps``) and seeding.
- :mod:`.optim`: AdamW and the linear warm-up + cosine learning-rate schedule.
- :mod:`.precision`: the mixed-precision policy, gradient scaling and clipping in one step.
- :mod:`.distributed`: ``torchrun`` process groups, DDP, rank-0-only side effects.
- :mod:`.sampling`: per-rank shards in a per-epoch order, with per-sample seeded augmentation,
  so that a resumed run draws exactly the batches an uninterrupted one would.
- :mod:`.checkpoint`: atomic checkpoints with optimizer, scheduler, scaler and RNG states.
- :mod:`.progress`: a progress bar and TensorBoard scalars, on rank 0 only.
"""
