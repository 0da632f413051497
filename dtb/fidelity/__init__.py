"""Held-out fidelity of twins against the field's baselines (docs/fidelity.md).

- :mod:`dtb.fidelity.splits`: which frames a twin or baseline may learn from (assimilated) and
  which it is scored on (held out).
- :mod:`dtb.fidelity.preprocess`: detrending, causal band-pass and scaling, every parameter fitted
  on the assimilated frames only.
- :mod:`dtb.fidelity.baselines`: persistence, climatology, per-region AR(1), ridge VAR(1)/VAR(2)
  k-step forecasts.
- :mod:`dtb.fidelity.scores`: per-region R^2 and r, FC and FCD scores, fingerprinting.
- :mod:`dtb.fidelity.protocol`: one subject's and a group's baseline table, and the same scores
  for a twin's held-out forecasts and free run.
- :mod:`dtb.fidelity.table`: the per-protocol results table of the dev subjects' twins and its
  paired Wilcoxon tests (thalamus vs interoceptive inputs).
- :mod:`dtb.fidelity.ceiling`: the data-only linear ceiling of protocol A.
- :mod:`dtb.fidelity.ablation`: the wiring/size ablation's summary, each variant paired with DTI.
"""
