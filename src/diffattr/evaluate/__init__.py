"""Evaluations composed from a run's phases, each returning a dataclass the report renders:

* ``lds``: linear datamodeling score against models retrained from scratch (Park et al.
  2023; the paper's protocol: 100 held-out subsets, 3 retraining seeds);
* ``fidelity``: does F(method on S) track F(retrain on S)?
* ``counterfactual``: retrain without the top / bottom contributors;
* ``budget``: LDS against compute for retrain / ft / sft Shapley.
"""
