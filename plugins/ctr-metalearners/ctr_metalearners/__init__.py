"""ctr-metalearners: S- and T-learner uplift baselines on LightGBM for ctr-dagster."""

from ctr_metalearners.model import MetaLearnerConfig, SLearner, TLearner

__all__ = ["MetaLearnerConfig", "SLearner", "TLearner"]
