"""The seed plan: which episode seeds each stage of rpd may start an episode from.

Every ManiSkill episode rpd runs starts from `env.reset(seed=s)`, and a seed fixes the initial
scene (object and goal poses). If two stages share a seed, one sees a scene the other already
saw: a demo the teacher was fine-tuned on, or a state the cache labelled, would turn up in the
evaluation that is meant to measure generalisation, and tilt the comparison toward the method
that used it (RPD sees demos and cached states; plain PPO does not). So every stage draws from
its own named range, the ranges never overlap, and a `--seed` that would reach outside its
stage's range is refused with one line.

    range                   seeds                          who draws from it
    demos                   [0, 100,000,000)               rpd demos generate --seed
    cache                   [100,000,000, 200,000,000)     rpd cache --seed (teacher rollouts)
    evaluation              [200,000,000, 300,000,000)     rpd train --eval-seed, rpd eval --student
    held-out                [300,000,000, 400,000,000)     rpd eval --student --held-out, rpd run
    teacher evaluation      [1,000,000,000, 1,100,000,000) rpd eval --teacher
    training                [2^31, 2^32)                   training episodes (drawn per env)

A published success is a held-out one: no demo, cache rollout, training episode or in-training
evaluation (which picks the best checkpoint) has started from those seeds.
"""

from __future__ import annotations

from dataclasses import dataclass

from rpd.errors import InputError


@dataclass(frozen=True)
class SeedRange:
    """Episode seeds [start, stop) that one stage draws from.

    Attributes:
        name: What the range is for, as messages say it ("held-out").
        start: First seed; the stage's default.
        stop: One past the last seed.
        option: The option that picks a seed in it ("rpd demos generate --seed").
    """

    name: str
    start: int
    stop: int
    option: str

    def __contains__(self, seed: object) -> bool:
        return isinstance(seed, int) and self.start <= seed < self.stop

    def check(self, first: int, count: int = 1, option: str | None = None,
              allowed: tuple[SeedRange, ...] = ()) -> None:
        """Refuse seeds `first .. first + count - 1` unless they lie in this range (or in one
        of `allowed`).

        Raises:
            InputError: naming the option, the range the seeds reach into, and this range.
        """
        option = option or self.option
        last = first + count - 1
        for r in (self, *allowed):
            if first in r and last in r:
                return
        other = next((r for r in PLAN if r not in (self, *allowed)
                      and r.start <= last and first < r.stop), None)
        where = (f"reach into the {other.name} seeds [{other.start:,}, {other.stop:,})"
                 if other is not None else "fall outside every seed range")
        ranges = " or ".join(f"[{r.start:,}, {r.stop:,})" for r in (self, *allowed))
        raise InputError(f"{option} {first}: seeds {first:,}..{last:,} {where}; use seeds in "
                         f"the {self.name} range {ranges} (see `rpd.data.seeds`)")


DEMOS = SeedRange("demos", 0, 100_000_000, "rpd demos generate --seed")
CACHE = SeedRange("cache", 100_000_000, 200_000_000, "rpd cache --seed")
EVALUATION = SeedRange("evaluation", 200_000_000, 300_000_000, "rpd train --eval-seed")
HELD_OUT = SeedRange("held-out", 300_000_000, 400_000_000, "rpd eval --student --held-out")
TEACHER_EVALUATION = SeedRange("teacher evaluation", 1_000_000_000, 1_100_000_000,
                               "rpd eval --teacher --seed")
TRAINING = SeedRange("training", 2**31, 2**32, "rpd train --seed (drawn per env)")

PLAN: tuple[SeedRange, ...] = (DEMOS, CACHE, EVALUATION, HELD_OUT, TEACHER_EVALUATION,
                               TRAINING)
"""Every range, in the order the stages run. Pairwise disjoint (a unit test checks)."""


def range_of(seed: int) -> SeedRange | None:
    """The range a seed belongs to, or None for a seed outside the plan."""
    return next((r for r in PLAN if seed in r), None)
