"""What a ``[behaviors]`` section resolves to for a dataset: each behavior's concrete
feature space, its output key (``fid[digits-cnn]``, ``ssim[pixel]``) and the plan-time
checks a suite would otherwise fail with (one-line errors; no torch, no training).
"""

from __future__ import annotations

from pathlib import Path

from diffattr.behaviors.settings import BehaviorSettings, BehaviorsSettings
from diffattr.behaviors.spaces import FeatureSettings, resolve_features, spaces_with_probs
from diffattr.errors import DiffattrError


def behavior_space(
    behavior: BehaviorSettings,
    settings: BehaviorsSettings,
    dataset_name: str,
    has_semantic_labels: bool,
) -> FeatureSettings:
    """The concrete feature space a behavior is measured in."""
    space = behavior.features if behavior.features is not None else settings.features
    return resolve_features(space, dataset_name, has_semantic_labels)


def behavior_key(name: str, space_name: str) -> str:
    """Output key of a behavior in a feature space, e.g. ``fid[digits-cnn]``."""
    return f"{name}[{space_name}]"


def check_settings(
    settings: BehaviorsSettings, dataset_name: str, has_semantic_labels: bool
) -> None:
    """Raise the one-line ``DiffattrError`` a suite would fail with, cheaply (no torch, no
    training): unknown/unusable spaces, missing local files, behaviors needing class
    probabilities in a label-free space, aesthetic scores outside CLIP space."""
    settings = settings.resolved(dataset_name, has_semantic_labels)
    ref = settings.reference
    if ref != "train":
        p = Path(ref).expanduser()
        if not p.is_dir():
            raise DiffattrError(
                f"behaviors.reference: folder of real images not found: {p} (give 'train' or "
                "an existing folder of PNG/JPEG images)"
            )
    checked: set[str] = set()
    keys: set[str] = set()
    for i, b in enumerate(settings.measure):
        where = "behaviors.features" if b.features is None else f"behaviors.measure[{i}].features"
        space = behavior_space(b, settings, dataset_name, has_semantic_labels)
        sid = space.model_dump_json()
        if b.local and b.space is not None:  # pixels or the model: no feature space
            key = local_key(b, space, dataset_name)
            if key in keys:
                raise DiffattrError(f"behaviors.measure[{i}]: {key} is measured twice")
            keys.add(key)
            continue
        if sid not in checked:
            problem = space.problems(dataset_name, has_semantic_labels)
            if problem:
                raise DiffattrError(f"{where}: {problem}")
            checked.add(sid)
        shown = space.space_name(dataset_name)
        key = behavior_key(b.name, shown)
        if key in keys:
            raise DiffattrError(f"behaviors.measure[{i}]: {key} is measured twice")
        keys.add(key)
        if b.needs_probs and not space.has_probs:
            raise DiffattrError(
                f"behaviors.measure[{i}]: {b.name} needs class probabilities and the feature "
                f"space {shown!r} has none (label-free); measure it in one of: "
                f"{', '.join(spaces_with_probs())}, or drop it"
            )
        if b.needs_space is not None and space.name != b.needs_space:
            raise DiffattrError(
                f"behaviors.measure[{i}]: {b.name} is defined on {b.needs_space} image "
                f'embeddings, not {shown!r}: set features = {{ name = "{b.needs_space}", '
                'path = "DIR" } for the section or for this behavior'
            )
        head = getattr(b, "head", None)
        if head is not None and not Path(head).expanduser().is_file():
            raise DiffattrError(
                f"behaviors.measure[{i}].head: aesthetic head not found: {head} (give the LAION "
                "sa_0_4_vit_l_14_linear weights as .safetensors or .pth)"
            )


def suite_keys(
    settings: BehaviorsSettings, dataset_name: str, has_semantic_labels: bool
) -> list[str]:
    """The output keys of the suite ``build_suite`` would build, in ``measure`` order."""
    settings = settings.resolved(dataset_name, has_semantic_labels)
    return [
        local_key(b, behavior_space(b, settings, dataset_name, has_semantic_labels), dataset_name)
        for b in settings.measure
    ]


def local_key(behavior: BehaviorSettings, space: FeatureSettings, dataset_name: str) -> str:
    """Output key of a behavior measured in ``space``: ``ssim[pixel]`` for the local pixel
    metrics, ``denoising-loss[model]``, else ``name[feature space]``."""
    shown = getattr(behavior, "space", None) if behavior.local else None
    return behavior_key(behavior.name, shown or space.space_name(dataset_name))


def local_behavior_keys(
    settings: BehaviorsSettings, dataset_name: str, has_semantic_labels: bool
) -> list[str]:
    """The keys of the local behaviors among ``measure`` (one value per generated image)."""
    settings = settings.resolved(dataset_name, has_semantic_labels)
    return [
        local_key(b, behavior_space(b, settings, dataset_name, has_semantic_labels), dataset_name)
        for b in settings.measure
        if b.local
    ]
