"""The MLflow UI in a real browser after a short `dvc repro`: headless Debian Chromium driven by
Playwright against `mlflow server` on the project's mlflow.db, as a person browses and promotes.

The registered models page lists the tasks; sr_x4's page shows both versions with their aliases
and lineage tags, and its description; a version's page its markdown; the training run its
metrics, loss curve and comparison sheet. Then `@champion` is moved to the other version through
the alias editor, and `percept promote` must compare against the version chosen there.

Every page is saved as a screenshot; on a failure they and the page at that moment are kept in
test-artifacts/mlflow-ui/. `PERCEPT_UI_SCREENSHOTS=docs/ui` also copies them there (docs/operations.md shows them).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pipelines.services.ports import free_port
from pipelines.services.stack import Process, wait_for_url
from tests.e2e.browser import chromium
from tests.e2e.project_copy import ROOT

pytestmark = [pytest.mark.e2e, pytest.mark.browser]
# The UI's first-visit extras, already seen: the registry promo modal and the assistant panel.
FIRST_VISIT_SEEN = """
localStorage.setItem('_mlflow_model_registry_promo_modal_dismissed_v1', 'true');
localStorage.setItem('mlflow.assistant.panelOpen_v1', 'false');
localStorage.setItem('mlflow.assistant.fab.autoOpenedOnFirstLoad_v1', 'true');
localStorage.setItem('mlflow.workflowType_v1', JSON.stringify('machine_learning'));
"""
FAILURES = ROOT / "test-artifacts" / "mlflow-ui"
TASK = "sr_x4"



def check(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 0, f"{result.args} failed:\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
    return result.stdout + result.stderr


@pytest.fixture(scope="module")
def project(reproduced):
    """The session's reproduced tiny project (sr_x4 and denoise registered), then sr_x4 again with
    more steps: sr_x4 has versions 1 and 2."""
    repo, run = reproduced.repo, reproduced.run
    check(reproduced.first_repro)
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["tasks"][TASK]["optim"]["steps"] = 6
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    check(run("dvc", "repro", f"promote@{TASK}"))
    assert json.loads((repo / "registry" / f"{TASK}.json").read_text())["version"] == 2
    return repo, run


@pytest.fixture(scope="module")
def mlflow_ui(project, tmp_path_factory):
    """`mlflow server` on the project's database, as the README starts it; yields its URL."""
    repo, _ = project
    port = free_port()
    log = tmp_path_factory.mktemp("mlflow-ui") / "server.log"
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", "NO_PROXY": "127.0.0.1,localhost"}
    server = Process("mlflow-ui", [str(Path(sys.executable).parent / "mlflow"), "server", "--backend-store-uri",
                                   "sqlite:///mlflow.db", "--host", "127.0.0.1", "--port", str(port)], env, log, cwd=repo).start()
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for_url(f"{url}/health", server)
        yield url
    finally:
        server.stop(timeout=20)


class Screens:
    """Screenshots of each page visited, kept on failure and copied where asked."""

    def __init__(self, page, folder: Path):
        self.page, self.folder, self.taken, self.for_readme = page, folder, [], []
        folder.mkdir(parents=True, exist_ok=True)

    def shot(self, name: str, full_page: bool = False, readme: bool = True) -> None:
        self.page.wait_for_timeout(300)  # let charts and images finish drawing
        path = self.folder / f"{name}.png"
        self.page.screenshot(path=str(path), full_page=full_page)
        self.taken.append(path)
        if readme:
            self.for_readme.append(path)

    def keep(self, where: Path, paths: list[Path] | None = None) -> None:
        where.mkdir(parents=True, exist_ok=True)
        for path in self.taken if paths is None else paths:
            shutil.copyfile(path, where / path.name)


@pytest.fixture
def browser_page(tmp_path, request):
    with chromium() as browser:
        context = browser.new_context(viewport={"width": 1400, "height": 900})
        context.add_init_script(FIRST_VISIT_SEEN)
        page = context.new_page()
        page.set_default_timeout(30_000)
        screens = Screens(page, tmp_path / "screens")
        yield page, screens
        failed = getattr(request.node, "rep_call", None) is not None and request.node.rep_call.failed
        if failed:
            screens.shot("at-failure", full_page=True, readme=False)
            shutil.rmtree(FAILURES, ignore_errors=True)
            screens.keep(FAILURES)
            print(f"screenshots kept in {FAILURES}")
        elif os.environ.get("PERCEPT_UI_SCREENSHOTS"):
            screens.keep(ROOT / os.environ["PERCEPT_UI_SCREENSHOTS"], screens.for_readme)


@pytest.mark.timeout(1800)  # the session's first dvc repro and sr_x4's second (600 s each), the server, the browser
def test_browse_the_registry_and_move_champion_in_the_ui(project, mlflow_ui, browser_page):
    from mlflow.tracking import MlflowClient

    repo, run = project
    page, screens = browser_page
    client = MlflowClient(tracking_uri=f"sqlite:///{repo / 'mlflow.db'}")
    v2 = client.get_model_version(TASK, "2")
    run_id = v2.tags["percept.training_run_id"]
    experiment = client.get_run(run_id).info.experiment_id

    # Registered models: every task the run trained.
    page.goto(f"{mlflow_ui}/#/models")
    page.get_by_role("link", name=TASK, exact=True).wait_for()
    assert page.get_by_role("link", name="denoise", exact=True).is_visible()
    screens.shot("registered-models")

    # The model: both versions, the aliases, the lineage tags, the description.
    page.goto(f"{mlflow_ui}/#/models/{TASK}")
    page.get_by_role("link", name="Version 2").wait_for()
    assert page.get_by_role("link", name="Version 1").is_visible()
    body = page.inner_text("body").replace("\xa0", " ")
    assert "@ challenger" in body  # v2's
    for tag in ("percept.git_commit", "percept.shards_index_sha256", "percept.params_hash", "percept.training_run_id"):
        assert tag in body, tag
    assert "4x super-resolution" in body
    screens.shot("model")

    # A version: its markdown description rendered (the figures table, the gate's verdict).
    page.goto(f"{mlflow_ui}/#/models/{TASK}/versions/2")
    page.get_by_text("Trained", exact=False).first.wait_for()
    assert page.locator("table").filter(has_text="psnr_y").count() >= 1
    assert page.get_by_text("Promotion gate: sr_x4").is_visible()
    for tag in ("percept.git_commit", "percept.params_hash"):
        assert page.get_by_text(v2.tags[tag], exact=False).count() >= 1, tag
    screens.shot("model-version", full_page=True)

    # Its training run: metrics, the loss curve, the comparison sheet.
    page.goto(f"{mlflow_ui}/#/experiments/{experiment}/runs/{run_id}")
    page.get_by_role("link", name="loss_total").wait_for()
    screens.shot("training-run")
    page.goto(f"{mlflow_ui}/#/experiments/{experiment}/runs/{run_id}/model-metrics")
    page.get_by_placeholder("Search metric charts").fill("loss_total")
    chart = page.locator("div").filter(has_text=re.compile(r"^loss_total$")).first
    chart.wait_for()
    page.locator("path.js-line").first.wait_for()  # plotly drew the curve
    screens.shot("loss-curve")
    page.goto(f"{mlflow_ui}/#/experiments/{experiment}/runs/{run_id}/artifacts")
    page.get_by_text("evaluation", exact=True).click()
    page.get_by_text("Set5.png", exact=True).click()
    # The sheet is shown as an image (a blob URL): at least as wide as its four 96 px columns.
    page.wait_for_function("[...document.images].some(i => i.complete && i.naturalWidth >= 384)")
    screens.shot("sheet")

    # Move @champion to the other version through the alias editor, as a person would.
    before = {a: int(client.get_model_version_by_alias(TASK, a).version) for a in client.get_registered_model(TASK).aliases}
    target = 1 if before.get("champion") != 1 else 2
    page.goto(f"{mlflow_ui}/#/models/{TASK}")
    row = page.get_by_role("row").filter(has=page.get_by_role("link", name=f"Version {target}", exact=True))
    row.locator("button").last.click()  # the pencil under the row's aliases
    dialog = page.get_by_role("dialog")
    dialog.get_by_text(f"Add/Edit alias for model version {target}").wait_for()
    dialog.get_by_role("combobox").fill("champion")
    dialog.get_by_role("combobox").press("Enter")
    screens.shot("alias-editor")
    dialog.get_by_role("button", name="Save aliases").click()
    dialog.wait_for(state="hidden")
    row.get_by_text(re.compile(r"@\s*champion")).wait_for()
    screens.shot("model-after-alias", readme=False)
    assert int(client.get_model_version_by_alias(TASK, "champion").version) == target

    # The next promote compares the other version against the champion chosen in the UI.
    other = 3 - target
    out = check(run(sys.executable, "-m", "pipelines.cli", "promote", "--task", TASK, "--version", str(other)))
    record = json.loads((repo / "registry" / f"{TASK}.promotion.json").read_text())
    assert record["champion_before"] == target and record["challenger"] == other, out
    assert "champion" in record["figures"]
