"""Uplift evaluation: AUUC / Qini with bootstrap intervals, per arm and chain stage, and tabular experiments.

Modules (each one job; import the one you need, this package imports nothing itself, and the Dagster
code location must import it only inside asset bodies: it loads numpy, pyarrow and scikit-uplift):

* `metrics`: uplift and Qini curves, normalised AUUC and Qini coefficient (scikit-uplift's
  definitions), seeded bootstrap intervals stratified by treatment (`score_uplift`).
* `evaluate`: `evaluate_uplift(models, test, oracle)` -> `UpliftReport` (model x arm x stage, the
  oracle as the ceiling row, the zero-effect-arm verdict); `oracle_for(test, oracle_table)`.
* `plots`: `uplift_curves_png(report, directory)`: one PNG per stage, one subplot per arm.
* `tabular`: `read_experiment(csv, ...)`: a randomized experiment CSV -> train/valid/test tables in
  the uplift plugin contract's columns, bad rows quarantined with file / row / column named.
* `experiment`: `run_experiment(...)`: what `ctr uplift` does (read, split, fit every installed
  uplift plugin, evaluate), and the text table it prints.

The uplift plugin contract is `ctr_dagster.contracts.UpliftPlugin`.
"""
