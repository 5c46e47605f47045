"""The RPD student: `RPDPPO` (rpdppo.py), its rollout buffer (buffer.py), the distillation
losses and λ schedules (losses.py) and the label-source protocol (labels.py)."""
