"""Register and promote against a real MLflow registry (SQLite) and a Prefect test API.

Models are made here without Ray: a tiny SR net fitted for a few seconds to the validation
images (so it beats bicubic on them), and spoiled copies of it that are worse.
"""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from pipelines.common.params import parse_config
from pipelines.common.paths import Paths
from tests.shared_data import DATASETS, WEIGHTS

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
TASK = "sr_x4"


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> tuple[Path, dict]:
    """A project root: two 96 px Set5 crops as the validation set, a fake shard index, params."""
    from PIL import Image

    root = tmp_path_factory.mktemp("registry-project")
    (root / "val").mkdir()
    for name in ("butterfly", "head"):
        with Image.open(DATASETS / "Set5" / "HR" / f"{name}.png") as img:
            img.crop((80, 80, 176, 176)).save(root / "val" / f"{name}.png")
    (root / "data" / "shards" / TASK).mkdir(parents=True)
    (root / "data" / "shards" / TASK / "index.json").write_text('{"task": "sr_x4"}\n')
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["tasks"] = {TASK: {**params["tasks"][TASK], "model": {"channels": 8, "residual_blocks": 1}}}
    params["train"]["tasks"] = [TASK]
    params["compare"] = {}  # its sheet names models this project does not train
    params["feature_net"]["weights"] = str(WEIGHTS / "vgg_normalised_conv3_1.pth")
    params["evaluate"] = {"sets": {"val": str(root / "val")}}
    params["mlflow"] = {"tracking_uri": f"sqlite:///{root / 'mlflow.db'}", "artifact_location": str(root / "mlartifacts"),
                        "experiment": "registry-test"}
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    return root, params


def fitted_net(cfg, steps: int = 150):
    """The task's (tiny) net, fitted with L1 on 48 px crops of the validation images."""
    from PIL import Image

    from training.imresize import imresize_uint8
    from training.models import build_transform_net

    torch.manual_seed(0)
    net = build_transform_net(cfg.task(TASK).model, 4)
    hr = []
    for path in sorted((Path(cfg.evaluate.sets["val"])).glob("*.png")):
        with Image.open(path) as img:
            hr.append(np.asarray(img.convert("RGB")))
    lr = [imresize_uint8(h, scale=0.25) for h in hr]
    x = torch.from_numpy(np.stack(lr)).permute(0, 3, 1, 2).float() / 255
    y = torch.from_numpy(np.stack(hr)).permute(0, 3, 1, 2).float() / 255
    opt = torch.optim.Adam(net.parameters(), lr=2e-3)
    for _ in range(steps):
        opt.zero_grad()
        torch.nn.functional.l1_loss(net(x), y).backward()
        opt.step()
    return net.eval()


def spoiled(net, scale: float):
    """A copy whose output conv is pushed off its fitted weights: worse, the more ``scale``."""
    import copy

    worse = copy.deepcopy(net)
    with torch.no_grad():
        torch.manual_seed(1)
        worse.last_conv.weight.add_(torch.randn_like(worse.last_conv.weight) * scale)
    return worse


def install_model(root: Path, cfg, net, tag: str) -> None:
    """models/<task>/ as the train stage leaves it, with a real MLflow training run."""
    from pipelines.services import tracking

    client = tracking.client(cfg.mlflow, root)
    exp = tracking.experiment_id(client, cfg, root)
    run_id, _ = tracking.find_or_create_run(client, exp, f"{TASK}-{tag}", {"percept.task": TASK})
    client.set_terminated(run_id)
    out = root / "models" / TASK
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    torch.save({"task": TASK, "scale": 4, "model_config": net.cfg.model_dump(mode="json"), "model": net.state_dict(), "step": 1},
               out / "model.pt")
    (out / "config.json").write_text(json.dumps(cfg.task(TASK).model_dump(mode="json")))
    (out / "run.json").write_text(json.dumps({"run_name": f"{TASK}-{tag}", "mlflow_run_id": run_id, "steps": 1}))


def percept(root: Path, *args):
    return subprocess.run([sys.executable, "-m", "pipelines.cli", "--params", str(root / "params.yaml"), *args],
                          cwd=root, capture_output=True, text=True, timeout=300)


def latest_artifact(key: str) -> str:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    with get_client(sync_client=True) as prefect:
        found = prefect.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])))
    return max(found, key=lambda a: a.created).data


def test_register_and_promote_lifecycle(project, prefect_harness):
    from mlflow.tracking import MlflowClient

    from pipelines.stages import evaluate
    from pipelines.stages.promote import promote_flow
    from pipelines.stages.register import register

    root, params = project
    cfg, paths = parse_config(params), Paths(root)
    client = MlflowClient(tracking_uri=params["mlflow"]["tracking_uri"])
    good = fitted_net(cfg)

    def champion():
        try:
            return int(client.get_model_version_by_alias(TASK, "champion").version)
        except Exception:
            return None

    # v1: clearly worse than bicubic. Registered (twice: one version), but never champion.
    install_model(root, cfg, spoiled(good, 0.5), "bad")
    first = percept(root, "register", "--task", TASK)
    assert first.returncode == 0, first.stderr
    again = percept(root, "register", "--task", TASK)
    assert "version 1 (already registered)" in again.stdout
    assert len(client.search_model_versions(f"name = '{TASK}'")) == 1
    record = promote_flow(TASK, cfg, paths)
    assert not record["promoted"] and champion() is None and "the baseline" in record["reason"]
    assert client.get_model_version(TASK, "1").tags["percept.promotion"] == "rejected"

    # v2: fitted, beats bicubic: the first champion. Its eval metrics become version tags.
    install_model(root, cfg, good, "good")
    evaluate.run(TASK, str(root / "models" / TASK), cfg, paths, progress=False)
    reg = register(TASK, cfg, paths)
    assert reg["version"] == 2 and reg["created"]
    version = client.get_model_version(TASK, "2")
    assert float(version.tags["percept.eval.val.psnr_y"]) > float(version.tags["percept.eval.val.baseline.psnr_y"]) + 0.01
    assert version.tags["percept.training_run_id"] == json.loads((root / "models" / TASK / "run.json").read_text())["mlflow_run_id"]
    assert {"percept.git_commit", "percept.shards_index_sha256", "percept.params_hash"} <= set(version.tags)
    # Markdown for the UI: the model says what it is and how to call it; the version its steps,
    # figures against the baseline and the sheets the evaluate stage logged into the training run.
    assert "4x super-resolution" in client.get_registered_model(TASK).description
    psnr, base = float(version.tags["percept.eval.val.psnr_y"]), float(version.tags["percept.eval.val.baseline.psnr_y"])
    assert "Trained 1 step of" in version.description
    assert f"| val (2) | `psnr_y` | {psnr:.4g} | {base:.4g} (bicubic) | {psnr - base:+.4g} |" in version.description
    assert "`evaluation/val.png`" in version.description
    record = promote_flow(TASK, cfg, paths)
    assert record["promoted"] and champion() == 2
    # The gate's verdict joins the description, and stays there when the version is registered again.
    assert "#### Promotion gate: sr_x4\n\n**Promoted**: v2" in client.get_model_version(TASK, "2").description
    register(TASK, cfg, paths)
    described = client.get_model_version(TASK, "2").description
    assert described.count("#### Promotion gate") == 1 and "Trained 1 step of" in described
    # The evaluate stage had just scored these weights: its reports are reused, not recomputed;
    # other settings (here the seed of the noisy inputs) or other weights would not match them.
    assert record["challenger_figures"] == "evaluate stage"
    from pipelines.stages.promote import stage_reports

    weights = version.tags["percept.weights_sha256"]
    assert stage_reports(TASK, cfg, paths, weights) is not None
    assert stage_reports(TASK, cfg.model_copy(update={"seed": cfg.seed + 1}), paths, weights) is None
    assert stage_reports(TASK, cfg, paths, "0" * 64) is None
    assert record["figures"]["challenger"]["psnr_y"] > record["figures"]["baseline"]["psnr_y"] + 0.01
    assert json.loads(paths.promotion(TASK).read_text())["champion_after"] == 2
    assert client.get_model_version(TASK, "2").tags["percept.promotion"] == "promoted"
    assert "**Promoted**: v2" in latest_artifact(f"promotion-{TASK.replace('_', '-')}")

    # The champion evaluated through the CLI by its alias gives the gate's figures.
    out = percept(root, "evaluate", "--task", TASK, "--model", f"models:/{TASK}@champion", "--images", str(root / "val"), "--json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["psnr_y"] == pytest.approx(record["figures"]["challenger"]["psnr_y"])

    # The registered pyfunc takes and returns uint8 HxWx3 and agrees with the local weights.
    import mlflow.pyfunc

    from training.inference import apply_model

    mlflow.set_tracking_uri(params["mlflow"]["tracking_uri"])
    served = mlflow.pyfunc.load_model(f"models:/{TASK}@champion")
    image = np.random.default_rng(0).integers(0, 256, (20, 28, 3), dtype=np.uint8)
    out = served.predict(image)
    assert out.dtype == np.uint8 and out.shape == (80, 112, 3)
    np.testing.assert_array_equal(out, apply_model(good, image, 4))

    # v3: worse than the champion (still better than bicubic): registered, not promoted, the champion stays.
    install_model(root, cfg, spoiled(good, 0.03), "worse")
    assert register(TASK, cfg, paths)["version"] == 3
    record = promote_flow(TASK, cfg, paths)
    assert not record["promoted"] and champion() == 2 and record["champion_before"] == 2
    assert record["challenger_figures"] == "pyfunc"  # the reports on disk scored v2's weights
    assert record["figures"]["challenger"]["psnr_y"] < record["figures"]["champion"]["psnr_y"]

    # A person moves @champion to v1 by hand (the MLflow UI does the same call): v3 now faces v1.
    client.set_registered_model_alias(TASK, "champion", "1")
    record = promote_flow(TASK, cfg, paths, version=3)
    assert record["champion_before"] == 1 and record["promoted"] and champion() == 3
    # and it beat bicubic on every set: the harm rule (no set worse than its baseline) held
    assert all(ours > base for ours, base in record["per_set"].values()), record["per_set"]

    # v4: diverged weights (NaN). Its evaluation fails: never promoted, not even with --force;
    # the command exits 1.
    nan_net = spoiled(good, 0.0)
    with torch.no_grad():
        nan_net.last_conv.bias.fill_(float("nan"))
    install_model(root, cfg, nan_net, "nan")
    assert register(TASK, cfg, paths)["version"] == 4
    record = promote_flow(TASK, cfg, paths, force=True)
    assert record.get("failed") and not record["promoted"] and champion() == 3
    assert "non-finite" in record["reason"]

    # --force moves the alias past the gate (here to the rejected v1).
    record = promote_flow(TASK, cfg, paths, version=1, force=True)
    assert record["promoted"] and record["reason"].startswith("forced") and champion() == 1
