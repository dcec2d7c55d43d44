"""The metric registry and the promotion gate: directions, margins, tolerances, failed evaluations."""

import math

import numpy as np
import pytest

from training.quality import METRICS, ScoreContext, better, decide, score
from training.options import GateConfig

pytestmark = pytest.mark.unit


def test_directions_of_the_registered_metrics():
    assert better("psnr_y", 30.0, 29.0) == pytest.approx(1.0)
    assert better("feature_distance", 1.0, 1.5) == pytest.approx(0.5)  # lower is better
    assert not METRICS["feature_distance"].higher_is_better and METRICS["ssim"].higher_is_better


def test_score_uses_the_crop_and_the_feature_function():
    target = np.full((20, 20, 3), 100, np.uint8)
    output = target.copy()
    output[0, :] = 0  # only the border differs
    ctx = ScoreContext(crop=2, feature_distance=lambda o, t: float(np.abs(o.astype(int) - t).sum()))
    figures = score(("psnr", "psnr_y", "feature_distance"), output, target, ctx)
    assert figures["psnr"] == math.inf and figures["psnr_y"] == math.inf
    assert figures["feature_distance"] == 20 * 3 * 100
    with pytest.raises(ValueError, match="feature network"):
        score(("feature_distance",), output, target, ScoreContext())


GATE = GateConfig(metric="psnr_y", margin=0.05, tolerances={"ssim_y": 0.002})


@pytest.mark.parametrize(
    ("challenger", "promote", "reason"),
    [
        ({"psnr_y": 29.10, "ssim_y": 0.8001}, True, "beats"),
        ({"psnr_y": 29.04, "ssim_y": 0.8100}, False, "below the margin"),
        ({"psnr_y": 29.50, "ssim_y": 0.7970}, False, "ssim_y regresses by 0.0030"),
        ({"psnr_y": 29.50, "ssim_y": 0.7985}, True, "beats"),  # a regression inside the tolerance
        ({"psnr_y": float("nan"), "ssim_y": 0.9}, False, "not a valid evaluation"),
        ({"ssim_y": 0.9}, False, "not a valid evaluation"),
    ],
)
def test_gate(challenger, promote, reason):
    decision = decide(GATE, challenger, {"psnr_y": 29.0, "ssim_y": 0.8}, "@champion v1")
    assert decision.promote is promote
    assert reason in decision.reason


def test_gate_on_a_lower_is_better_metric():
    gate = GateConfig(metric="feature_distance", margin=0.1)
    assert decide(gate, {"feature_distance": 0.8}, {"feature_distance": 1.0}, "baseline").promote
    assert not decide(gate, {"feature_distance": 0.95}, {"feature_distance": 1.0}, "baseline").promote
    assert not decide(gate, {"feature_distance": 1.2}, {"feature_distance": 1.0}, "baseline").promote


def test_a_limit_holds_whatever_the_primary_metric_says():
    """Style: a model that paints over its input has a low weighted total and a high content loss."""
    gate = GateConfig(metric="perceptual_total", limits={"content_loss": 8.0})
    baseline = {"perceptual_total": 15.0, "content_loss": 0.0}
    erased = decide(gate, {"perceptual_total": 4.0, "content_loss": 11.9}, baseline, "the baseline")
    assert not erased.promote and "content_loss 11.9 is above its limit 8" in erased.reason
    kept = decide(gate, {"perceptual_total": 6.0, "content_loss": 3.4}, baseline, "the baseline")
    assert kept.promote
    floor = GateConfig(metric="psnr", limits={"colourfulness": 20.0})  # a higher-is-better limit is a floor
    faded = decide(floor, {"psnr": 21.0, "colourfulness": 12.0}, {"psnr": 18.0, "colourfulness": 0.0}, "the baseline")
    assert not faded.promote and "below its limit" in faded.reason
    assert not decide(gate, {"perceptual_total": 4.0}, baseline, "the baseline").promote  # no figure: never


def test_the_style_gate_bounds_the_content_loss():
    from training.tasks import TASKS

    assert TASKS["style"].make_gate_config().limits == {"content_loss": 8.0}


def test_gate_metrics_must_be_reported_by_the_task(make_config):
    from pipelines.common.errors import ConfigError

    with pytest.raises(ConfigError, match=r"promote\.sr_x4: promote metric 'psnr' is not reported"):
        make_config({"promote": {"sr_x4": {"metric": "psnr"}}})
    with pytest.raises(ConfigError, match=r"promote\.denoise: .*'ssim_y' is not reported"):
        make_config({"promote": {"denoise": {"tolerances": {"ssim_y": 0.01}}}})
    with pytest.raises(ConfigError, match=r"promote\.sr_x5: no such task under `tasks:`"):
        make_config({"promote": {"sr_x5": {}}})
    cfg = make_config({"promote": {"sr_x4": {"margin": 0.2}}})
    assert cfg.gate("sr_x4").metric == "psnr_y" and cfg.gate("sr_x4").margin == 0.2
    assert cfg.gate("denoise").metric == "psnr"  # not listed: the registry's default


def test_style_metrics_are_the_tasks_weighted_loss_parts():
    import torch

    from training.losses import PerceptualLoss
    from training.options import LossConfig
    from training.quality import PerceptualScorer
    from training.vgg import load_feature_net
    from training.options import FeatureNetConfig

    loss_cfg = LossConfig(feature_weight=1.0, feature_layer="relu2_2", style_weight=1e3, tv_weight=1e-4)
    net = load_feature_net(FeatureNetConfig(kind="random", seed=0), loss_cfg.needed_layers)
    style = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    scorer = PerceptualScorer(PerceptualLoss(loss_cfg, net, style))
    rng = np.random.default_rng(0)
    content = rng.integers(0, 256, (24, 24, 3), dtype=np.uint8)
    other = rng.integers(0, 256, (24, 24, 3), dtype=np.uint8)
    names = ("perceptual_total", "content_loss", "style_loss")
    same = score(names, content, content, ScoreContext(perceptual=scorer))
    assert same["content_loss"] == 0.0 and same["style_loss"] > 0
    moved = score(names, other, content, ScoreContext(perceptual=scorer))
    assert moved["content_loss"] > 0
    parts = scorer(other, content)
    assert moved["perceptual_total"] == pytest.approx(parts["feature"] + parts["style"] + parts["tv"])
    assert scorer(other, content) is parts  # the same pair is computed once


def test_feature_distance_keeps_the_targets_features_only_for_the_same_target():
    import torch

    from training.losses import feature_reconstruction_loss
    from training.quality import FeatureDistance
    from training.vgg import load_feature_net
    from training.options import FeatureNetConfig

    net = load_feature_net(FeatureNetConfig(kind="random", seed=0), ("relu2_2",))
    distance = FeatureDistance(net, ("relu2_2",))
    rng = np.random.default_rng(1)
    a, b, c = (rng.integers(0, 256, (20, 28, 3), dtype=np.uint8) for _ in range(3))

    def fresh(out, target):
        with torch.inference_mode():
            batch = torch.from_numpy(np.stack([out, target])).permute(0, 3, 1, 2).float() / 255
            feats = net(batch)["relu2_2"]
            return feature_reconstruction_loss(feats[:1], feats[1:]).item()

    assert distance(a, a) == 0.0
    assert distance(b, a) == pytest.approx(fresh(b, a), rel=1e-5)
    assert distance(b, c) == pytest.approx(fresh(b, c), rel=1e-5)  # a new target is not confused with the old
    assert distance(b, c.copy()) == pytest.approx(fresh(b, c), rel=1e-5)


def test_the_gate_refuses_a_model_that_harms_any_set_or_level():
    """A JPEG model that gains on average but loses at quality 90 is never promoted."""
    gate = GateConfig(metric="psnr", margin=0.01)
    ours, base = {"psnr": 30.0}, {"psnr": 28.0}
    helps = {"Set5": (31.0, 29.0), "Set5-quality10": (28.0, 26.5), "Set5-quality90": (40.2, 40.1)}
    assert decide(gate, ours, base, "the baseline", helps).promote
    harms = {**helps, "Set5-quality90": (39.0, 40.1)}
    decision = decide(gate, ours, base, "the baseline", harms)
    assert not decision.promote and decision.reason.startswith("harms Set5-quality90: psnr 39.0000 against")
    # on a lower-is-better metric, harm is a higher figure than the baseline's
    fd = GateConfig(metric="feature_distance", margin=0.0)
    assert not decide(fd, {"feature_distance": 1.0}, {"feature_distance": 2.0}, "bicubic", {"Set14": (2.1, 2.0)}).promote
    assert decide(GateConfig(metric="psnr", no_harm=False), ours, base, "the baseline", harms).promote
