"""Typed settings of the counterfactual methods (``[method]`` and ``[methods.<name>]``).

A counterfactual method approximates theta_S, the model trained on the data of the players
in S only. ``[method]`` is the run's method; ``[methods.<name>]`` holds the settings of
other methods that evaluations run beside it (``diffattr lds --method ft``, ``diffattr
curve``). pydantic only: validated before torch is imported.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field

from diffattr.counterfactual.conditions import check_players
from diffattr.errors import DiffattrError
from diffattr.settings import Component, ComponentRegistry

EmaMode = Literal["restart", "carry", "none"]
Pruner = Literal["magnitude", "taylor", "random", "diff-pruning"]


class MethodSettings(Component):
    """Settings every counterfactual method shares.

    ``per_job`` names the settings that only change the per-coalition step (k, lr, EMA):
    runs that differ only in those share the method's one-time preparation (e.g. the pruned
    and fine-tuned model of ``sft``).
    """

    kind: ClassVar[str] = "counterfactual method"
    per_job: ClassVar[frozenset[str]] = frozenset()
    #: whether several coalition models of the method can train side by side (its model of
    #: S is a fine-tune of one shared starting model; ``[executor] jobs_per_batch``)
    stacks: ClassVar[bool] = False

    def shared_settings(self) -> dict[str, Any]:
        """The settings the one-time preparation depends on (everything but ``per_job``)."""
        return {k: v for k, v in self.model_dump(mode="json").items() if k not in self.per_job}

    def family_problem(self, family: Any) -> str | None:
        """Why this method cannot run on a model family (its ``FamilySettings``), as one
        line; None when it can. Checked when the config is read, before any work."""
        return None

    def check_players(self, family: Any, dataset: Any, players: Any) -> None:  # noqa: B027
        """Raise a one-line error if the method cannot credit these players of these data
        with this family (a ``ModelFamily``); called before any training."""


METHODS: ComponentRegistry[MethodSettings] = ComponentRegistry(
    "counterfactual method", MethodSettings
)


class FineTuneSettings(MethodSettings):
    """Shared by the methods that fine-tune for ``steps`` steps on the kept data.

    ``ema`` chooses the weights that are sampled after the short fine-tune:

    * ``restart`` (default): a new EMA of the fine-tuned weights with the warm-up
      min(decay, (1+t)/(10+t)): the starting weights keep 1/C(k+9, 9) of the mass (under
      0.1 % after 10 steps) and the average spans roughly the last k/9 steps. The
      counterfactual is decided by the fine-tune on S, with the step noise of the raw
      weights smoothed out.
    * ``carry``: continue the starting model's EMA and its step count t0, i.e. the research
      code's behaviour. Its decay is min(decay, (1+t)/(10+t)) at t >= t0 (0.997 after 3000
      steps), so after k steps only about 1 - decay^k of the weight comes from the
      fine-tune (26 % for k = 100 at 0.997, 10 % at 0.999, 1 % at 0.9999): the subsets'
      differences are diluted towards the all-data model.
    * ``none``: sample the raw fine-tuned weights.

    ``ema_decay`` overrides the full model's decay for the fine-tune.

    Measured (digits, tiny preset, 3000-step full model; sft with a 1000-step all-data
    fine-tune and k = 100; 4 random class subsets; share of 200 samples that a classifier
    puts in the kept classes): retrain 0.98, sft restart 0.86, none 0.86, carry 0.70, full
    model 0.40 (the kept share of the data). ``carry`` loses about a third of the subset
    effect even with this short all-data EMA; ``restart`` is the default.
    """

    per_job: ClassVar[frozenset[str]] = frozenset({"steps", "lr", "ema", "ema_decay"})
    steps: int = Field(100, ge=1, description="fine-tuning steps on the kept data (k)")
    lr: float | None = Field(None, gt=0, description="learning rate (default: the full model's)")
    batch_size: int | None = Field(None, ge=1, description="batch size (default: the full model's)")
    ema: EmaMode = Field("restart", description="restart | carry | none (see FineTuneSettings)")
    ema_decay: float | None = Field(
        None, ge=0, lt=1, description="EMA decay of the fine-tune (default: the full model's)"
    )


@METHODS.register
class RetrainSettings(MethodSettings):
    """``retrain``: train from scratch on the kept data (the ground truth)."""

    name: Literal["retrain"] = "retrain"
    implementation: ClassVar[str] = "diffattr.counterfactual.retrain:Retrain"
    steps: int | None = Field(None, ge=1, description="training steps (default: the full's)")


@METHODS.register
class SFTSettings(FineTuneSettings):
    """``sft``: sparsified fine-tuning (Lin, Lu, Kim, Lee 2025), the paper's method."""

    name: Literal["sft"] = "sft"
    implementation: ClassVar[str] = "diffattr.counterfactual.sft:SparsifiedFineTune"
    stacks: ClassVar[bool] = True
    pruner: Pruner = Field("magnitude", description="magnitude | taylor | random | diff-pruning")
    ratio: float = Field(
        0.3, gt=0, lt=1, description="share of channels removed per layer group, in (0, 1)"
    )
    thr: float = Field(0.05, gt=0, lt=1, description="Diff-Pruning's loss threshold")
    round_to: int | None = Field(
        None,
        ge=1,
        description="keep channel counts multiples of this (on a CPU, pruning saves time in "
        "whole blocks of the convolution kernels' channels: 16 on an AVX-512 CPU)",
    )
    finetune_steps: int = Field(1000, ge=0, description="steps of the all-data fine-tune")
    finetune_lr: float | None = Field(None, gt=0, description="its lr (default: the full's)")
    prune_batch: int = Field(64, ge=1, description="images for Taylor-type importance")
    prune_timesteps: int | None = Field(
        None, ge=1, description="at most this many timesteps for Taylor-type importance"
    )
    seed: int = Field(0, description="seed of the pruning batch and of the all-data fine-tune")


@METHODS.register
class FTSettings(FineTuneSettings):
    """``ft``: fine-tune the unpruned full model for k steps on the kept data."""

    name: Literal["ft"] = "ft"
    implementation: ClassVar[str] = "diffattr.counterfactual.ft:FineTune"
    stacks: ClassVar[bool] = True


@METHODS.register
class GASettings(MethodSettings):
    """``ga``: gradient ascent on the removed data (an unlearning baseline)."""

    name: Literal["ga"] = "ga"
    implementation: ClassVar[str] = "diffattr.counterfactual.ga:GradientAscent"
    per_job: ClassVar[frozenset[str]] = frozenset(
        {"steps", "lr", "batch_size", "grad_clip", "loss_limit"}
    )
    steps: int = Field(20, ge=1, description="gradient-ascent steps on the removed data")
    lr: float = Field(1e-4, gt=0, description="Adam learning rate")
    batch_size: int | None = Field(None, ge=1, description="batch size (default: the full's)")
    grad_clip: float = Field(1.0, gt=0, description="gradient-norm clipping")
    loss_limit: float = Field(1.0, gt=0, description="stop once the ascended loss reaches this")


LORA_TARGETS = ("conv1", "conv2", "to_q", "to_k", "to_v", "to_out.0")


@METHODS.register
class LoRASettings(FineTuneSettings):
    """``lora``: low-rank fine-tuning of the full model on the kept data, merged to sample."""

    name: Literal["lora"] = "lora"
    implementation: ClassVar[str] = "diffattr.counterfactual.lora:LoRAFineTune"
    per_job: ClassVar[frozenset[str]] = frozenset(
        {"steps", "lr", "ema", "ema_decay", "rank", "alpha", "target_modules"}
    )
    lr: float | None = Field(1e-3, gt=0, description="learning rate of the adapters")
    ema: Literal["restart", "none"] = Field("restart", description="restart | none")
    rank: int = Field(4, ge=1, description="LoRA rank r")
    alpha: float = Field(4.0, gt=0, description="LoRA alpha (the update is scaled by alpha/r)")
    target_modules: list[str] = Field(
        default_factory=lambda: list(LORA_TARGETS),
        min_length=1,
        description="module names (or name suffixes) that get adapters",
    )


@METHODS.register
class SurrogateSettings(MethodSettings):
    """``surrogate``: training-free; the full conditional model sampled with the conditions
    of S's data (the conditional proxy game of SurrogateSHAP, Lu et al. 2026).

    v(S) = F(samples of theta* whose labels -- or, for ``text-to-image`` with
    ``generate_with = "captions"``, prompts -- are drawn in proportion to their frequencies
    in S's data), by the one sampling rule every method shares
    (``diffattr.diffusion.sample.draw_labels``); with all players it is theta*'s own
    samples. Its cost is inference only. It needs a family whose samples are conditioned
    on the data (``conditional``; ``text-to-image`` prompted with captions), and players
    that differ in their labels or captions.
    """

    name: Literal["surrogate"] = "surrogate"
    implementation: ClassVar[str] = "diffattr.counterfactual.surrogate:Surrogate"

    def family_problem(self, family: Any) -> str | None:
        if getattr(family, "conditions", None) is not None:
            return None
        if "generate_with" in type(family).model_fields:
            return (
                f"method 'surrogate' samples the full model with the captions of each "
                f"coalition's data, but this {family.name!r} run prompts every model with the "
                "same fixed prompts; set [family] generate_with = 'captions' or use a method "
                "that trains (sft)"
            )
        return (
            f"method 'surrogate' samples the full model with the conditions of each "
            f"coalition's data, but the {family.name!r} family generates without "
            "conditions, so its players map onto none; use [family] name = "
            "'conditional' or a method that trains (sft)"
        )

    def check_players(self, family: Any, dataset: Any, players: Any) -> None:

        check_players(family, dataset, players)


def check_method_family(method: MethodSettings, family: Any) -> None:
    """A one-line error when ``method`` cannot run on ``family`` (``FamilySettings``)."""

    problem = method.family_problem(family)
    if problem is not None:
        raise DiffattrError(problem)
