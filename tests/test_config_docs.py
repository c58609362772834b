"""Plugin config fields carry the descriptions their authors wrote, and the launchpad shows them."""

import dataclasses

from ctr_dagster.config_docs import field_descriptions


@dataclasses.dataclass
class _Base:
    """Settings.

    * `patience`: epochs without a better validation AUC
      before stopping.
    """

    patience: int = 2
    # learning rate of the
    # optimizer
    lr: float = 0.1
    #: Sphinx-style comment
    depth: int = 2
    undocumented: int = 0


@dataclasses.dataclass
class _Child(_Base):
    lr: float = 0.5  # the child's own words win
    width: int = dataclasses.field(default=8, metadata={"description": "hidden units"})


def test_comments_bullets_metadata_and_inheritance():
    base = field_descriptions(_Base)
    assert base == {
        "patience": "epochs without a better validation AUC before stopping.",
        "lr": "learning rate of the optimizer",
        "depth": "Sphinx-style comment",  # the `#:` marker is not part of the words
    }
    child = field_descriptions(_Child)
    assert child["lr"] == "the child's own words win" and child["width"] == "hidden units"
    assert child["patience"].startswith("epochs without") and "undocumented" not in child


def test_the_launchpad_shows_every_shipped_plugins_field_descriptions():
    from assets.launchpad import per_plugin_configs, plugin_config
    from ctr_dagster.registry import default_registry

    registry = default_registry()
    din = plugin_config(registry.get("model", "din"), "Config")
    fields = din.model_fields
    assert "early stopping" in fields["patience"].description and "CUDA" in fields["amp"].description
    for plugin in registry.plugins:  # every field of every shipped plugin is described
        config = plugin_config(plugin, "Config")
        missing = [n for n, f in config.model_fields.items() if not f.description]
        assert not missing, f"{plugin.name}: fields without a description {missing}"
        marked = [n for n, f in config.model_fields.items() if f.description.startswith(":")]
        assert not marked, f"{plugin.name}: descriptions starting with a comment marker {marked}"
    extractors = per_plugin_configs("extractor", "ExtractorConfigs")
    nested = extractors.model_fields["hyperpave"].annotation
    assert nested.model_fields["decision"].description
