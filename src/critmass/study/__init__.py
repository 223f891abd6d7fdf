"""The whole study of one model in one call: ``critmass study MODEL --datasets A,B --out DIR``.

The paper's analysis (probe curves of random, PCA and supervised subsets with CKA, DR with CIs, per-class
costs, the depth profile, which neurons, partial inversion, the export of the critical mass) is planned as an
ordinary sweep config (:func:`study_config`; ``--config-out`` writes it), priced on this machine
(:func:`estimate`), scaled to a time budget (:func:`fit_budget`), run by :func:`critmass.sweep.run_sweep`
(resumable, local / Ray / Slurm) and written up by :func:`critmass.report.build_report` with the study's
Table 1 (:func:`study_table`). :func:`run_study` does it all.
"""

from ._plan import (
    BUDGET_STEPS,
    PARTS,
    QUICK,
    STUDY_DEFAULTS,
    SUPERVISED,
    Estimate,
    estimate,
    fit_budget,
    model_modality,
    parse_budget,
    study_config,
)
from ._run import STUDY_COLUMNS, StudyResult, run_study, study_table

__all__ = ["run_study", "StudyResult", "study_config", "study_table", "estimate", "Estimate", "fit_budget",
           "parse_budget", "model_modality", "PARTS", "QUICK", "STUDY_DEFAULTS", "SUPERVISED", "BUDGET_STEPS",
           "STUDY_COLUMNS"]
