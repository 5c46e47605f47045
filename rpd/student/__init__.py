"""The RPD student: `RPDPPO` (rpdppo.py), its rollout buffer (buffer.py), the distillation
losses and λ schedules (losses.py). Where its labels come from is `rpd.labels`."""
