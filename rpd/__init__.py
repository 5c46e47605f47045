"""rpd: Refined Policy Distillation (Jülg et al., arXiv 2503.05833) as a tool.

Distils a vision-language-action teacher into a small PPO student on ManiSkill tasks.
"""

__version__ = "0.1.0"
