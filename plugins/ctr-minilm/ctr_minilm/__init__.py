"""ctr-minilm: the `minilm` text encoder plugin for ctr-dagster."""

from ctr_minilm.encoder import MinilmConfig, MinilmEncoder

__all__ = ["MinilmConfig", "MinilmEncoder"]
