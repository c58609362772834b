"""The synthetic marketplace: a seeded world with planted, known truth (the embedded default data).

The generative story
--------------------
*Catalogue.* Items belong to 6-12 categories (shirts, mugs, sofas, ...); each category uses some of
the attributes brand / colour / material / style, each with its value vocabulary. An item's latent
vector is its category centre plus noise. About 30% of attribute values are missing from the
structured catalogue (more for new items); most missing values are still stated in the title, and
colour and material are visible in the 32x32 PNG image (fill colour = colour, shape = category,
texture = material), except the line values the `neighbourhood` knob hides. Titles are readable
English from several templates with filler words and state exactly the values the oracle flags
`in_title`. Some items appear after day 0 (`first_seen`) and are never shown before it.

*Users.* Each user has a region, an age group, a latent interest vector (leaning towards 1-3
categories), a favourite colour and material, and a lognormal (power-law-like) activity: many
long-tail users with a handful of behaviours, a few heavy users. The top `heavy_share` by activity
form the *heavy* segment. Some users sign up during the world and are active only from then.

*Requests.* Every active user makes Poisson(activity) requests a day at diurnal times; each request
shows a slate of `slate_size` distinct items (random order) mixing the user's preferred categories
with popular items, on a device, in a coupon arm drawn per request (`treatment`: 0 = control, 1-3 =
coupon arms, probabilities `arm_shares`, default 0.4 / 0.2 / 0.2 / 0.2).

*Clicks.* ``p_click = sigmoid(sum of components)`` with one additive component per signal (the
`components` table holds each, under the assigned arm). Each knob of `Signals` scales one of them;
0 removes it exactly. Which model mechanism should exploit it:

- ``base`` + ``popularity`` + ``affinity`` (user interest . item latent): always on; ID/embedding
  models learn these.
- ``sequence`` (knob `sequence`): relevance of the target to the user's last `max_seq_len` clicks
  strictly before the request, ``sum_j w_j relu(cos(target, click_j))``. -> target attention (DIN).
- `temporal` shapes those weights: ``w_j ~ exp(-temporal (gap_j/24h + rank_j/5))``; at 0 they are
  uniform over the window. -> target-aware temporal encoding (TIN), time-bias attention (SUAN).
- ``target_time`` (knob `target_time`): the gap decay's time constant depends on the *target's*
  category (log-spaced from 3 hours to 2 weeks over the categories, `Effects.cat_tau_hours`, own
  stream): the component is what this changes in the sequence term, so ``sequence + target_time``
  uses ``tau = 24h (tau_cat / 24h) ** target_time`` per target; 0 at target_time=0 (today's decay).
  Time must be read relative to the target. -> target-aware temporal encoding (TIN).
- ``profile_sequence`` (knob `profile_sequence`): each remembered click's relevance re-weighted by
  an (age group x behaviour category) table with no main effects (`Effects.age_cat_affinity`, own
  stream): ``2.5 sum_j w_j relu(cos(target, click_j)) A[age, cat_j]``; which behaviours matter
  depends on who the user is. -> user-aware cross-attention over the sequence (SUAN).
 from day to day (towards random categories), so recent
  behaviour beats the long-run profile. -> sequence models, recency features, retraining.
- ``multimodal`` (knob `multimodal`): match of the item's colour/material with the user's favourites;
  those values are often only in the title/image, and new items have no click history. ->
  multimodal item embeddings, attribute extraction.
- ``interaction`` (knob `interaction`): two multiplicative 3-way terms (age group x category x
  daypart, region x category x device) with zero-mean factors, i.e. no main effects. -> quadratic /
  high-order interaction layers (QIN).
- ``segment`` (knob `segment`): heavy users prefer expensive, niche items; light users cheap,
  popular ones. -> mixture of experts with a behaviour-conditioned gate (AW-MoE), long-tail AUC.
- ``behaviour_segment`` (knob `behaviour_segment`): the price/popularity response of `segment`,
  gated by the *content* of the history: ``gate (zprice - 0.5 popularity)`` with gate = (premium -
  cheap remembered clicks) / (clicks + 2), premium meaning zprice > 0; positive for users whose
  clicks were mostly premium, negative otherwise, 0 without history, and visible only through the
  sequence. -> mixture of experts whose gate reads the behaviour sequence (AW-MoE).
- `long_tail`: 30% of the users (drawn among the light ones, own stream) are made 0.15 times as
  active, the other light users taking over their traffic; many users then have only a handful of
  behaviours. -> long-tail robustness of the gate (AW-MoE), long-tail AUC.
- ``position`` (knob `position_bias`): ``-0.6 log(position)``. -> position features / debiasing.
- ``scaling`` (knob `scaling`): a fine-grained user x item low-rank term with `scaling_rank` factors
  unrelated to categories, only learnable from plenty of per-id data. -> scaling curves (SUAN).
- ``uplift_click`` (knob `uplift`): the assigned coupon arm's click effect (0 for control and arm 3):
  arm 1 by region and age group, arm 2 by age group only and much larger for young users, arm 3 a
  placebo (`behaviour.COUPON_ARMS`). -> uplift models.

Profiles: `tiny` (tests), `small` (the demo), `large` (benchmarks) and `long` (tiny-sized, few very
active users remembering up to `max_seq_len=200` clicks: long-sequence models).

*Conversions.* Only after a click: ``p_conv = sigmoid(conv_base - 0.5 zprice + 0.2 popularity +
propensity + uplift_conv[arm])`` where the arm's conversion effect (knob `uplift_conversion`, apart
from `uplift` which scales only the click effect; each at 0 removes exactly its stage's effect)
depends on price and user activity, not region/age: arm 1 on expensive items and light users, arm 2
on cheap items and active users, arm 3 none. The effect differs by arm, by user and by chain stage.
-> entire-chain uplift (ECUP). The oracle table holds p_click (assigned arm), `p_click_arm{k}` and
`p_conv_arm{k}` (given a click) under every arm k = 0..3, so the true effect of arm k is
p_click_arm{k} - p_click_arm0 on the click, p_conv_arm{k} - p_conv_arm0 on the conversion and
p_click_arm{k} p_conv_arm{k} - p_click_arm0 p_conv_arm0 on the whole chain; p_click_control /
p_conv_control are arm 0's, p_click_treated / p_conv_treated the row's own arm's (arm 1's for
control rows: a binary treated/control view).

*Zero-shot* (knob `zero_shot`): held-out categories draw part of their values from a vocabulary no
training category uses; these values are new to the taxonomy, so they are never in the structured
catalogue (only titles/images) and are flagged `zero_shot` in the oracle. -> zero-shot link
prediction (HyperPAVE).

*Neighbourhood* (knob `neighbourhood`): within each category, items form product lines of ~5-9
members that share their material and style values (zero-shot values included) and whose latent
vectors are pulled towards a line centre, so users who like one member like the others. Each
member hides its line value from its title and image with probability 0.6 (one anchor per line,
its most popular member stating it, always states it), and 30% of slates carry a "more from this line"
widget (`line_widget_share`; a user's widgets of one day feature one line), so line mates are viewed and clicked by the
same user on the same day. Many values are then stated only by an item's co-view / co-buy
neighbours, not by its own title or image; `Catalogue.line` and `Catalogue.hidden_by_line` hold the
truth. -> hypergraph attribute-value extraction over also_view / also_buy hyperedges (HyperPAVE),
against which a text-only extractor is the ablation.

*Corruption* (`corruption_rate`): raw impressions only get null user ids, unknown items, positions
<= 0, timestamps outside the day, conversions without click, click=2 and duplicate impression ids;
`DayData.corruption` logs each one.

Determinism: all randomness comes from named streams of `seed` (`seeding.rng_for`), days are
simulated in order from day 0 with history checkpoints, so any day is identical whatever was
requested before it.

Usage::

    from ctr_dagster.datagen import build_world, profile, Signals
    world = build_world(profile("tiny", seed=7, signals=Signals(sequence=0.0)))
    day = world.day(world.dates()[0])   # DayData(impressions, oracle, components, corruption)
"""

from ctr_dagster.datagen.config import PROFILES, Signals, WorldConfig, profile

# The simulator needs numpy/pyarrow/PIL; load it on first use so that reading the profiles (which
# the code location does at load time to lay out the daily partitions) stays cheap.
_LAZY = {
    "COMPONENTS": "ctr_dagster.datagen.behaviour",
    "sequence_component": "ctr_dagster.datagen.behaviour",
    "sequence_weights": "ctr_dagster.datagen.behaviour",
    "CORRUPTION_KINDS": ("ctr_dagster.datagen.corruption", "KINDS"),
    "DayData": "ctr_dagster.datagen.world",
    "World": "ctr_dagster.datagen.world",
    "build_world": "ctr_dagster.datagen.world",
}


def __getattr__(name: str):
    import importlib

    target = _LAZY.get(name)
    if target is None:
        raise AttributeError(f"module 'ctr_dagster.datagen' has no attribute {name!r}")
    module, attr = target if isinstance(target, tuple) else (target, name)
    return getattr(importlib.import_module(module), attr)


__all__ = [
    "COMPONENTS",
    "CORRUPTION_KINDS",
    "PROFILES",
    "DayData",
    "Signals",
    "World",
    "WorldConfig",
    "build_world",
    "profile",
    "sequence_component",
    "sequence_weights",
]
