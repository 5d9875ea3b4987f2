"""``surrogate``: the training-free counterfactual of SurrogateSHAP (Lu, Gadgil, Lin, Kim &
Lee 2026, "the conditional proxy game").

When contributors map onto *conditions* (class labels; the captions of a text-to-image run
with ``generate_with = "captions"``), the model retrained on the data of S is approximated
by the full model theta* generating with conditions drawn from S's data only:
v(S) = F(samples of theta* with labels or prompts in proportion to their frequencies in
S's data). The job's model is theta* itself; the worker samples it with the conditions of
S by the rule every method shares (``ModelFamily.generation_conditions``;
``diffattr.diffusion.sample.draw_labels``), so with all players the samples are theta*'s
own for the same seeds, and one player's coalition generates only that player's labels
(captions). A job costs sampling and measuring only.

What a class-mixture sampler cannot know: how training on fewer classes changes each class
(capacity, quality, shared features), and anything about players beyond their labels --
players whose data have the same label distribution get the same singleton value, and when
every player has the same distribution the game is constant, which ``check_players``
(``diffattr.counterfactual.conditions``) refuses before any work.
"""

from __future__ import annotations

import numpy as np

from diffattr.counterfactual.base import CounterfactualMethod, CounterfactualResult
from diffattr.counterfactual.conditions import check_players
from diffattr.counterfactual.settings import SurrogateSettings, check_method_family
from diffattr.families.base import TrainingSet

__all__ = ["Surrogate", "check_players"]


class Surrogate(CounterfactualMethod):
    Settings = SurrogateSettings
    settings: SurrogateSettings

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        check_method_family(self.settings, self.family.settings)

    def load(self) -> None:
        self.full.load()

    def run(self, kept: np.ndarray, data: TrainingSet, seed: int = 0) -> CounterfactualResult:
        """theta* unchanged: the coalition enters through the labels it is sampled with."""
        subset = self.kept_data(kept, data)
        return CounterfactualResult(
            self.full.load().model, 0.0, {"training_free": True, "n_kept": len(subset)}
        )
