"""Serving bundles: a trained model as a folder that scores one user's candidates without the engine.

* `runtime` -- the standalone loader and scorer every bundle carries as ``score.py`` (numpy, and
  torch or lightgbm as the model needs; no ctr_dagster, Dagster or plugin import);
* `bundle` -- the shared parts a bundle is written with: manifest (sha256 of every file, versions,
  provenance), vocabularies as JSON, the runtime copy; `NotExportable`;
* `export` -- `ctr export`: resolve a model (or the champion) to its artifact, let the plugin write its
  part, check the bundle against the model's `predict` before keeping it;
* `torch_export` -- the export every `TorchModel` has (torch.export program + batch encoding);
* `probes`, `convert` -- the rows an export is checked on, and training rows as runtime rows / requests.

Nothing heavy is imported here: the CLI imports the modules it needs inside its commands.
"""
