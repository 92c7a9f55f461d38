"""Transform-aware training: ``newcompute train`` as a library call.

``train(run_config)`` builds or loads the model, applies the paradigms,
packs the data, and trains on HF accelerate with checkpoints, resume and a
divergence guard; see docs/training.md.
"""

from newcompute.train.loop import TrainResult, train

__all__ = ["TrainResult", "train"]
