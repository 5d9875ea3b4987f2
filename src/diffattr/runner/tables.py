"""The coalition table of one estimator, assembled from the store's records (phase 4).

``coalition_table`` is what ``Run.table`` returns: each sampled row of the estimator's
stream whose job finished, the all-0 rows from the null model and the all-1 row from the
method's own all-players job; v0 from the null model and v1 from the full model (or, with
``[attribution] v1 = "method"``, the method's all-players job); local behaviors attributed
per generated image as one column per image (``name[space]#i``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from diffattr.behaviors.keys import split_image_key
from diffattr.errors import DiffattrError
from diffattr.estimators import CoalitionTable
from diffattr.store import JobRecord, str_to_mask


def coalition_table(
    jobs: Any,
    estimator: str,
    refs: dict[str, JobRecord | None],
    records: dict[str, JobRecord],
    *,
    per_image: list[str],
    v1: str = "full",
    exclude_masks: set[str] | None = None,
    limit: int | None = None,
):
    """The ``CoalitionTable`` of ``estimator``'s rows in ``jobs`` (a ``JobSet``) from the
    finished ``records`` (by job key) and the reference records ``refs`` (``full``, ``null``,
    ``method``; full and null must be finished). ``exclude_masks`` drops rows equal to
    held-out test masks (LDS); ``limit`` keeps only the first rows of the sampler's stream
    (compute budgets); ``per_image``: the columns of local behaviors attributed per
    generated image (``Run.per_image_columns``)."""

    full, null = refs["full"], refs["null"]
    behaviors = sorted(full.behaviors)
    if per_image:  # one column per generated image instead of the local means
        behaviors = [b for b in behaviors if b not in full.local] + per_image
    specs = jobs.fit[estimator][:limit] if limit is not None else jobs.fit[estimator]
    all_pairs = jobs.pairs.get(estimator)
    masks, values, pair_ids = [], [], []
    for i, s in enumerate(specs):
        if exclude_masks and s.mask in exclude_masks:
            continue
        if "1" not in s.mask:
            rec = null
        elif s.key == jobs.references["method"].key:
            rec = refs["method"]
        else:
            rec = records.get(s.key)
        if rec is None or rec.status != "done":
            continue
        masks.append(str_to_mask(s.mask))
        values.append([behavior_value(rec, b) for b in behaviors])
        if all_pairs is not None:
            pair_ids.append(int(all_pairs[i]))
    n = jobs.prepared.n_players
    v1_rec = full
    if v1 == "method":
        v1_rec = refs["method"]
        if v1_rec is None:
            raise DiffattrError(
                "v1 = 'method' needs the method's all-players job, which did not finish; "
                "see diffattr status"
            )
    return CoalitionTable(
        masks=np.array(masks, dtype=bool).reshape(-1, n),
        values=np.array(values, dtype=float).reshape(-1, len(behaviors)),
        names=list(jobs.prepared.players.names),
        behaviors=behaviors,
        v0=np.array([behavior_value(null, b) for b in behaviors]),
        v1=np.array([behavior_value(v1_rec, b) for b in behaviors]),
        pair_ids=np.array(pair_ids, dtype=np.int64) if all_pairs is not None else None,
    )


def behavior_value(rec: JobRecord, key: str) -> float:
    """A record's value of a behavior key; ``name[space]#i`` is generated image i of a local
    behavior (``JobRecord.local``)."""

    base, image = split_image_key(key)
    if image is None:
        return rec.behaviors[key]
    values = rec.local.get(base)
    if values is None or image >= len(values):
        raise DiffattrError(
            f"job {rec.key} has no local value {key} (measured before the run measured it?); "
            "see diffattr status"
        )
    return float(values[image])
