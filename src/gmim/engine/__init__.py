"""The training machinery every method shares: ``gmim pretrain`` and ``gmim finetune`` run one loop.

- :mod:`.loop`: the loop (:class:`~.loop.Trainer`) and what a method gives it (:class:`~.loop.Method`).
- :mod:`.config`: the training settings every method shares (``train.*``).
- :mod:`.sampling`: one stream of seeded per-epoch permutations, cut into global batches, with
  per-sample seeded augmentation, so that a resumed run, or one over several processes, draws
  exactly the samples of an uninterrupted single-process one; the run's one loader.
- :mod:`.checkpoint`: atomic checkpoints with optimizer, scheduler, scaler and RNG states.
- :mod:`.run_folder`: no run overwrites another; a resume keeps the run's settings.
- :mod:`.signals`: Ctrl-C and SIGTERM end a run after the step in flight, with a checkpoint.
- :mod:`.metrics`: ``metrics.jsonl``.
- :mod:`.progress`: a progress bar and TensorBoard scalars, on rank 0 only.
- :mod:`.device`: device names (``auto``, ``cpu``, ``cuda``, ``cuda:N``, ``mps``) and seeding.
- :mod:`.optim`: AdamW and the linear warm-up + cosine learning-rate schedule.
- :mod:`.precision`: the mixed-precision policy, gradient scaling and clipping in one step.
- :mod:`.distributed`: ``torchrun`` process groups, DDP, rank-0-only side effects.
"""
