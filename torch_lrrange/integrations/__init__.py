"""Drop-in LR range tests for the trainers people already use.

* :func:`torch_lrrange.integrations.lightning.lr_range_test` for a Lightning ``Trainer``
  (``lightning.pytorch`` or ``pytorch_lightning``): the module's own ``training_step``,
  optimizers and dataloaders, run through the trainer's own fit loop.
* :func:`torch_lrrange.integrations.transformers.lr_range_test` for a Hugging Face
  ``Trainer``: its own optimizer, data, ``training_step``, accumulation, clipping and mixed precision.
* Accelerate loops need no helper: :class:`torch_lrrange.RangeTest` works around
  ``accelerator.prepare``\\ d objects, ``accelerator.backward`` and ``accelerator.accumulate``.

Each integration imports its library only when called, with an install hint when it is
missing (from a clone: ``pip install -e ".[lightning]"``, ``".[transformers]"``; once published:
``pip install "torch_lrrange[lightning]"``). Afterwards the trainer
behaves as if the test had never run: model, optimizers, schedulers, scaler and RNG states are
restored bit-exactly, counters are back, and nothing reached loggers, callbacks or checkpoints.
"""
