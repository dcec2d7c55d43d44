"""`dvc repro` on a temporary copy of the project with tiny params: runs, reruns as a no-op,
reruns only the task whose params changed, round-trips the shards through an S3 remote,
`percept train` run twice from scratch writes the same model bytes, and `dvc plots show` draws
the loss curves in a browser with no network."""

import io
import json
import shutil

import numpy as np
import pytest
import yaml
from PIL import Image

from tests.e2e.browser import chromium

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def project(reproduced):
    return reproduced.repo, reproduced.run


def check(result) -> str:
    assert result.returncode == 0, f"{result.args} failed:\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
    return result.stdout + result.stderr


@pytest.mark.timeout(2100)  # the session's first dvc repro, then two more (600 s each)
def test_repro_runs_then_is_a_no_op_then_reruns_only_the_changed_task(project, reproduced):
    repo, run = project
    out = check(reproduced.first_repro)  # the session's first `dvc repro` of the copy
    for stage in ("acquire", "ingest", "shard@sr_x4", "shard@denoise"):
        assert f"Running stage '{stage}'" in out
    for task in ("sr_x4", "denoise"):
        for stage in ("train", "evaluate", "register", "promote"):
            assert f"Running stage '{stage}@{task}'" in out
    run_info = yaml.safe_load((repo / "models" / "sr_x4" / "run.json").read_text())
    assert run_info["steps"] == 4 and (repo / "models" / "sr_x4" / "model.pt").stat().st_size > 0
    assert (repo / "plots" / "train" / "sr_x4.tsv").read_text().splitlines()[0].startswith("step\t")
    for task, scale in (("sr_x4", 4), ("denoise", 1)):
        index = yaml.safe_load((repo / "data" / "shards" / task / "index.json").read_text())
        assert index["splits"] == {"train": 4 * 2, "val": 2} and index["scale"] == scale
    assert sorted(p.name for p in (repo / "data" / "raw" / "T91" / "HR").iterdir()) == ["t1.png", "t2.png", "t3.png", "t5.png"]
    figures = yaml.safe_load((repo / "reports" / "sr_x4" / "summary.json").read_text())
    assert figures["Set5"]["images"] == 2 and figures["Set5"]["baseline"]["model"] == "bicubic"
    metrics = yaml.safe_load((repo / "metrics" / "sr_x4.json").read_text())  # the gate's metric only
    assert metrics == {"metric": "psnr_y", "Set5": {"value": figures["Set5"]["psnr_y"], "baseline": figures["Set5"]["baseline"]["psnr_y"],
                                                    "gain": pytest.approx(figures["Set5"]["psnr_y"] - figures["Set5"]["baseline"]["psnr_y"])}}
    assert (repo / "reports" / "sr_x4" / "Set5.png").stat().st_size > 0
    registered = yaml.safe_load((repo / "registry" / "sr_x4.json").read_text())
    assert registered["version"] == 1 and registered["tags"]["percept.git_commit"] != "unknown"
    promotion = yaml.safe_load((repo / "registry" / "sr_x4.promotion.json").read_text())
    assert promotion["challenger"] == 1 and promotion["champion_after"] == (1 if promotion["promoted"] else None)
    assert "promote sr_x4: v1 " in out  # the decision, on the stage's stdout
    denoise = yaml.safe_load((repo / "reports" / "denoise" / "summary.json").read_text())
    assert denoise["Set5"]["baseline"]["model"] == "identity" and {"psnr", "ssim", "feature_distance"} <= set(denoise["Set5"])
    assert set(yaml.safe_load((repo / "metrics" / "denoise.json").read_text())) == {"metric", "Set5"}
    assert yaml.safe_load((repo / "registry" / "denoise.json").read_text())["name"] == "denoise"
    shown = check(run("dvc", "metrics", "show"))
    assert "metrics/sr_x4.json" in shown and max(map(len, shown.splitlines())) <= 160, shown

    stamp = {p: p.stat().st_mtime_ns for p in (repo / "data").rglob("*.tar")}
    out = check(run("dvc", "repro"))
    assert "Running stage" not in out and "up to date" in out
    assert {p: p.stat().st_mtime_ns for p in (repo / "data").rglob("*.tar")} == stamp

    before = yaml.safe_load((repo / "metrics" / "denoise.json").read_text())
    check(run("git", "add", "-A"))
    check(run("git", "commit", "-qm", "first repro"))
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["tasks"]["denoise"]["patches_per_image"] = 3
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    out = check(run("dvc", "repro"))
    assert "Running stage 'shard@denoise'" in out
    assert "Running stage 'shard@sr_x4'" not in out and "Running stage 'train@sr_x4'" not in out
    assert "Running stage 'train@denoise'" in out  # its shards changed
    assert all(p.stat().st_mtime_ns == t for p, t in stamp.items() if "sr_x4" in str(p))
    index = yaml.safe_load((repo / "data" / "shards" / "denoise" / "index.json").read_text())
    assert index["splits"]["train"] == 4 * 3
    assert "changed" not in check(run("dvc", "status"))
    # `dvc metrics diff` reads the commit's figures too: the metrics files are in DVC's cache
    diff = run("dvc", "metrics", "diff", "HEAD", "--all", "--json")
    assert "failed to load" not in check(diff), diff.stderr
    changes = json.loads(diff.stdout)["metrics/denoise.json"]
    assert changes["Set5.value"]["old"] == before["Set5"]["value"]
    assert changes["Set5.value"]["new"] == yaml.safe_load((repo / "metrics" / "denoise.json").read_text())["Set5"]["value"]


@pytest.mark.timeout(1500)  # dvc repro (600 s), push, clone and pull
def test_shards_round_trip_through_an_s3_remote(project, s3_server, tmp_path):
    repo, run = project
    check(run("dvc", "repro"))
    bucket = "dvc-e2e"
    s3_server.client().create_bucket(Bucket=bucket)
    check(run("dvc", "remote", "add", "s3store", f"s3://{bucket}/cache"))
    check(run("dvc", "remote", "modify", "s3store", "endpointurl", s3_server.endpoint_url))
    check(run("dvc", "remote", "modify", "--local", "s3store", "access_key_id", s3_server.access_key))
    check(run("dvc", "remote", "modify", "--local", "s3store", "secret_access_key", s3_server.secret_key))
    check(run("dvc", "push", "-r", "s3store"))
    check(run("git", "add", "-A"))
    check(run("git", "commit", "-qm", "lock"))

    clone = tmp_path / "clone"
    check(run("git", "clone", "-q", str(repo), str(clone), cwd=tmp_path))
    for key, value in (("access_key_id", s3_server.access_key), ("secret_access_key", s3_server.secret_key)):
        check(run("dvc", "remote", "modify", "--local", "s3store", key, value, cwd=clone))
    check(run("dvc", "pull", "-r", "s3store", "shard@sr_x4", cwd=clone))
    pulled = sorted(p.relative_to(clone) for p in (clone / "data" / "shards" / "sr_x4").iterdir())
    original = sorted(p.relative_to(repo) for p in (repo / "data" / "shards" / "sr_x4").iterdir())
    assert pulled == original
    for rel in pulled:
        assert (clone / rel).read_bytes() == (repo / rel).read_bytes()


@pytest.mark.timeout(900)  # the copy's two trainings (each command's own limit: 600 s)
def test_percept_train_twice_from_scratch_writes_the_same_model_bytes(project, tmp_path):
    """The README's "the same figures to the last digit": the whole train path (a local Ray, a
    Train worker, the shards' loader, bf16 autocast, the VGG feature term on) is deterministic."""
    repo, run = project
    copy = tmp_path / "copy"  # the session's project stays as dvc.lock has it
    shutil.copytree(repo, copy, ignore=shutil.ignore_patterns("runs", "mlruns", "mlartifacts"))
    params = yaml.safe_load((copy / "params.yaml").read_text())
    params["tasks"]["sr_x4"]["loss"] = {"feature_weight": 0.5}
    (copy / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    trained = []
    for _ in range(2):
        shutil.rmtree(copy / "runs", ignore_errors=True)  # no checkpoint to resume from
        shutil.rmtree(copy / "models" / "sr_x4", ignore_errors=True)
        out = check(run("percept", "train", "--task", "sr_x4", cwd=copy))
        assert "4 steps" in out and "feature" in out, out[-2000:]
        trained.append((copy / "models" / "sr_x4" / "model.pt").read_bytes())
    assert len(trained[0]) > 1000
    assert trained[0] == trained[1]


def coloured_pixels(png: bytes) -> int:
    """Pixels whose channels differ: the curves are coloured; axes, grid and text are grey."""
    rgb = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(int)
    return int(((rgb.max(axis=2) - rgb.min(axis=2)) > 60).sum())


@pytest.mark.browser
@pytest.mark.timeout(300)
def test_dvc_plots_show_draws_every_tasks_loss_curve_offline(project, tmp_path):
    """DVC's own page loads vega from a CDN and is blank offline; the project's template carries it."""
    repo, run = project
    check(run("dvc", "plots", "show", "-o", str(tmp_path / "plots")))
    page_file = tmp_path / "plots" / "index.html"
    html = page_file.read_text()
    assert "cdn.jsdelivr.net" not in html and "window.vegaEmbed" in html
    with chromium() as browser:
        page = browser.new_context(offline=True, viewport={"width": 1200, "height": 900}).new_page()
        errors = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.on("requestfailed", lambda request: errors.append(f"{request.url}: {request.failure}"))
        page.goto(page_file.as_uri())
        charts = {task: page.locator(f"#plots_train_{task}_tsv") for task in ("sr_x4", "denoise")}
        for chart in charts.values():
            chart.locator(".mark-line path, canvas").first.wait_for(timeout=30_000)
        page.wait_for_timeout(300)  # the last chart's drawing
        drawn = {task: coloured_pixels(chart.screenshot()) for task, chart in charts.items()}
        page.add_style_tag(content=".mark-line { display: none }")  # the same charts without their curves
        page.wait_for_timeout(300)
        bare = {task: coloured_pixels(chart.screenshot()) for task, chart in charts.items()}
    assert errors == []
    # each task's curve is drawn: it alone colours some hundreds of pixels (the legend's dot ~270)
    assert all(drawn[task] - bare[task] > 200 for task in charts), (drawn, bare)
