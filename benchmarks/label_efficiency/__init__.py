"""Label efficiency on real brain MRI: does GMIM pre-training beat training from scratch and plain
random masking, most of all when labels are few?

The task: grey / white matter segmentation of skull-stripped T1 brains (background, grey matter,
white matter), and with a preset's ``context_class`` deep CSF too. Grey and white matter differ by
intensity, which a convolution on the raw image tells apart alone. Deep CSF (the ventricles and the
deepest fissures, :func:`gmim.sample_data.brain_tissue`) has the intensity of the CSF in the sulci,
which is background: only context finds it, and context is what pre-training should teach the
encoder. Its Dice gets tables of its own. Brain extraction is not the task because the ICBM152
template ships skull-stripped (only 0.04 % of its non-zero voxels lie outside its brain mask):
there would be nothing to learn.

Subjects (``gmim.sample_data``): smooth random deformations, bias fields, contrast changes and noise
of two real brains, image and tissue labels alike, then skull-stripped with their own brain masks.

- unlabelled pool (pre-training only): deformed ICBM152 subjects;
- labelled pool: other ICBM152 seeds; a fine-tuning run draws 1, 2 or 4 of them (its seed decides which);
- test set ``icbm152``: more ICBM152 seeds, the brain the labels were learned on;
- test set ``itk``: the ITK example brain (another person, scanner and labelling: its k-means
  classes) and deformed copies of it.

Arms (:data:`presets.ARMS`): no pre-training (``scratch``), GMIM as specified, random masking (half the
2×2×2-voxel tokens of the crop, uniformly: one cell, no adaptive ratios, no hierarchy; a SimMIM-like
baseline with the same Siamese losses, so that only the masking differs), and the specification's
options on top of GMIM, and the prototype as its code ran (``prototype``: the settings of
``gmim.pretraining.config.AS_RUN``, its encoder fine-tuned with the prototype's patch merging), and
Swin UNETR's own self-supervision (``swin-ssl``: ``gmim pretrain --method swin-ssl``, rotation,
contrastive coding and inpainting; :func:`.runs.method_section` gives it the preset's settings less
GMIM's own keys, the crop's sizes reordered where its rotation needs it, and one crop a volume in two
views, so that a step puts as many voxels through the encoder as GMIM's two views); all pre-trained
on the same volumes with the same step budget, from the same initial weights as the ``scratch``
arm's seed 0 (both methods build the same encoder first, so at the same seed they start alike). Every arm is fine-tuned with each label count and
seed (no validation: the final weights), predicts the test sets and is scored (Dice, HD95).

The probe (a preset's ``probe_labels``): every arm fine-tuned once more with its encoder frozen, so
that only Swin UNETR's convolutional decoder learns. When a frozen random encoder does as well as a
trained one, the task does not use what an encoder learns, and no pre-training can show in it.

The linear probe (:mod:`benchmarks.linear_probe`, every preset): each arm's frozen encoder alone, its hidden
states upsampled to the voxel grid and a logistic regression on them, fitted on the labelled pool
and scored per class on the test sets. No decoder and no full-resolution convolution can make up
for the encoder there, so it shows what pre-training put into the features; ``scratch`` is the
random initial encoder every arm starts from.

The run's time (:mod:`benchmarks.time_window`): before it starts the benchmark prints its plan and an estimate
from the preset's per-part figures for the device kind it runs on (``seconds``), times every phase,
and with a budget (``budget_minutes``, ``--budget-minutes``) reports a phase that ran over its share
and shortens what remains: later fine-tuning seeds first, then fine-tuning steps, then the
pre-training steps of arms still to come. The ``gpu-window`` preset fits one H100 in 9 minutes.

    python -m benchmarks.label_efficiency --preset smoke --out runs/le_smoke      # minutes
    python -m benchmarks.label_efficiency --preset cpu                            # about 1 h, 2 cores
    python -m benchmarks.label_efficiency --preset cpu-long --out runs/cpu_long   # 4× pre-training
    python -m benchmarks.label_efficiency --preset cpu-context --out runs/cpu_context  # deep CSF too
    python -m benchmarks.label_efficiency --preset gpu-window --plan              # the plan, nothing run
    python -m benchmarks.label_efficiency --preset gpu-window --device cuda --out runs/gpu_window  # ≤ 9 min, H100
    python -m benchmarks.label_efficiency --preset gpu --device cuda --docs docs  # hours; and docs/results.md

Runs that finished are reused: rerunning after an interruption goes on where it stopped (an
interrupted pre-training resumes from its ``last.pt``). ``OUT`` holds ``results.json`` (every run's
numbers, the linear probe's, the plan as it ran and each phase's time), ``results.md`` (the tables),
``dice_vs_labels.png`` and ``examples.png``.

Its modules: :mod:`.presets` (presets, arms, the task's classes and test sets), :mod:`.data` (the
subjects), :mod:`.runs` (pre-training, the linear probe and fine-tuning through gmim), :mod:`.plan`
(the plan and time window), :mod:`.results` (the numbers), :mod:`.report` (the markdown),
:mod:`.plots`, and ``__main__`` (the command line, run from the repository's root).
"""
