"""Training: stage presets (stages.py), the one loop for every stage (loop.py), data order
(sampler.py), checkpoints (checkpoint.py), multi-process setup (distributed.py), FLOP counting (flops.py)
and the metrics log + loss curve (metrics.py)."""
