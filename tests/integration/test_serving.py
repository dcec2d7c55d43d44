"""`mlflow models serve` of a registered champion, started exactly as the README writes it.

The README's two serve blocks run in bash from a project folder (its `.venv` a link to this
one's) with this environment's `bin/` taken off PATH, as in a new terminal; only the port is
replaced by a free one. The answer must equal `percept apply` on the same file, and requests the
model cannot take must get a 400 with one line, not a 500 or a traceback.
"""

from __future__ import annotations

import base64
import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from pipelines.common.params import parse_config
from pipelines.common.paths import Paths
from pipelines.services.ports import free_port
from tests.shared_data import DATASETS

pytestmark = [pytest.mark.integration, pytest.mark.serving]
REPO = Path(__file__).resolve().parents[2]
TASK = "sr_x4"
README_PORT = "5001"


def readme_serve_blocks() -> tuple[str, str]:
    """The two bash blocks under the README's **serve** item: start the server, send an image."""
    text = (REPO / "README.md").read_text()
    section = text[text.index("- **serve**"):]
    blocks = re.findall(r"```bash\n(.*?)```", section, flags=re.S)
    assert len(blocks) >= 2 and "mlflow models serve" in blocks[0] and "curl" in blocks[1], blocks[:2]
    return blocks[0], blocks[1]


def new_terminal_env() -> dict[str, str]:
    """This environment as a new shell would have it: the venv not active, loopback unproxied."""
    venv_bin = str(Path(sys.executable).parent)
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "MLFLOW_TRACKING_URI")}
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep) if p and p != venv_bin)
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
    return env


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    """A project folder with a tiny sr_x4 registered and made @champion, as `make run` leaves it."""
    from mlflow.tracking import MlflowClient

    from pipelines.services import tracking
    from pipelines.stages.register import register
    from training.models import build_transform_net

    root = tmp_path_factory.mktemp("serve-project")
    (root / ".venv").symlink_to(REPO / ".venv")
    (root / "data" / "raw" / "Set5" / "HR").mkdir(parents=True)
    shutil.copyfile(DATASETS / "Set5" / "HR" / "baby.png", root / "data" / "raw" / "Set5" / "HR" / "baby.png")
    (root / "data" / "shards" / TASK).mkdir(parents=True)
    (root / "data" / "shards" / TASK / "index.json").write_text('{"task": "sr_x4"}\n')
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["tasks"] = {TASK: {**params["tasks"][TASK], "model": {"channels": 8, "residual_blocks": 1}}}
    params["train"]["tasks"] = [TASK]
    params["compare"] = {}  # its sheet names models this project does not train
    params["mlflow"]["experiment"] = "serve-test"  # the default, relative mlflow.db and mlartifacts
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    cfg, paths = parse_config(params), Paths(root)

    torch.manual_seed(0)
    net = build_transform_net(cfg.task(TASK).model, 4)
    client = tracking.client(cfg.mlflow, root)
    run_id, _ = tracking.find_or_create_run(client, tracking.experiment_id(client, cfg, root), f"{TASK}-serve", {})
    client.set_terminated(run_id)
    out = paths.models(TASK)
    out.mkdir(parents=True)
    torch.save({"task": TASK, "scale": 4, "model_config": net.cfg.model_dump(mode="json"), "model": net.state_dict(),
                "step": 1}, out / "model.pt")
    (out / "config.json").write_text(json.dumps(cfg.task(TASK).model_dump(mode="json")))
    (out / "run.json").write_text(json.dumps({"run_name": f"{TASK}-serve", "mlflow_run_id": run_id, "steps": 1}))
    version = register(TASK, cfg, paths)["version"]
    MlflowClient(tracking.resolve_tracking_uri(cfg.mlflow.tracking_uri, root)).set_registered_model_alias(TASK, "champion", str(version))
    return root


@pytest.fixture(scope="module")
def server(project, tmp_path_factory):
    """The README's serve block, in bash, on a free port; yields (base URL, port); stopped after."""
    start, _ = readme_serve_blocks()
    port = str(free_port())
    log = tmp_path_factory.mktemp("serve-log") / "serve.log"
    with open(log, "wb") as sink:
        proc = subprocess.Popen(["bash", "-c", start.replace(README_PORT, port)], cwd=project, env=new_terminal_env(),
                                stdout=sink, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None:
                pytest.fail(f"the README's serve command exited {proc.returncode}:\n{log.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"{url}/ping", timeout=2):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail(f"no answer on {url}/ping in 120 s:\n{log.read_text()[-3000:]}")
                time.sleep(0.5)
        yield url, port
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=20)


def post(url: str, body) -> tuple[int, dict]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    request = urllib.request.Request(f"{url}/invocations", data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=120) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def png(array: np.ndarray) -> str:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode("ascii")


@pytest.fixture(scope="module")
def applied(project) -> Path:
    """`percept apply` of the champion on the README's image."""
    out = project / "applied"
    done = subprocess.run([sys.executable, "-m", "pipelines.cli", "--params", "params.yaml", "apply", "--model",
                           f"models:/{TASK}@champion", "--task", TASK, "--input", "data/raw/Set5/HR/baby.png",
                           "--out", str(out)], cwd=project, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    (result,) = out.rglob("*.png")
    return result


def test_readme_curl_answers_what_percept_apply_writes(project, server, applied):
    _, send = readme_serve_blocks()
    url, port = server
    done = subprocess.run(["bash", "-o", "pipefail", "-c", send.replace(README_PORT, port)], cwd=project,
                          env=new_terminal_env(), capture_output=True, timeout=300)
    assert done.returncode == 0, done.stderr.decode()[-3000:]
    answer = project / "baby_x4.png"
    with Image.open(answer) as img, Image.open(applied) as ref:
        assert img.format == "PNG" and img.size == (2048, 2048)
        np.testing.assert_array_equal(np.asarray(img), np.asarray(ref))


def test_array_and_jpeg_forms(project, server, applied):
    url, _ = server
    with Image.open(project / "data" / "raw" / "Set5" / "HR" / "baby.png") as img:
        crop = np.asarray(img.convert("RGB"))[100:148, 200:260]
    status, body = post(url, {"inputs": crop.tolist()})
    assert status == 200
    from training.inference import apply_model, load_model_file

    local = project / "models" / TASK / "model.pt"
    net, _ = load_model_file(local)
    expected = apply_model(net, crop, 4)
    np.testing.assert_array_equal(np.array(body["predictions"], dtype=np.uint8), expected)

    status, body = post(url, {"inputs": {"image": png(crop), "format": "jpeg"}})
    assert status == 200 and body["predictions"]["format"] == "jpeg"
    assert (body["predictions"]["height"], body["predictions"]["width"]) == (192, 240)
    with Image.open(io.BytesIO(base64.b64decode(body["predictions"]["image"]))) as jpeg:
        assert jpeg.format == "JPEG" and jpeg.size == (240, 192)
        # JPEG at quality 95: close to the exact output, not equal.
        assert np.abs(np.asarray(jpeg, dtype=np.int16) - expected.astype(np.int16)).mean() < 3


def test_a_jpeg_file_as_input(project, server):
    # what a phone or a browser sends: a JPEG, decoded by the server as Pillow decodes it
    url, _ = server
    with Image.open(DATASETS / "Set5" / "HR" / "bird.png") as img:
        crop = img.convert("RGB").crop((40, 60, 104, 108))
    buf = io.BytesIO()
    crop.save(buf, format="JPEG", quality=80)
    with Image.open(io.BytesIO(buf.getvalue())) as decoded:
        pixels = np.asarray(decoded.convert("RGB"))
    assert np.abs(pixels.astype(int) - np.asarray(crop, dtype=int)).max() > 0  # the JPEG is not the PNG
    status, body = post(url, {"inputs": {"image": base64.b64encode(buf.getvalue()).decode("ascii")}})
    assert status == 200, body
    from training.inference import apply_model, load_model_file

    net, _ = load_model_file(project / "models" / TASK / "model.pt")
    with Image.open(io.BytesIO(base64.b64decode(body["predictions"]["image"]))) as answer:
        assert answer.format == "PNG" and answer.size == (64 * 4, 48 * 4)
        np.testing.assert_array_equal(np.asarray(answer), apply_model(net, pixels, 4))


@pytest.mark.parametrize("body, why", [
    ({"inputs": {"image": "not base64!"}}, "not valid base64"),
    ({"inputs": {"image": base64.b64encode(b"just text").decode()}}, "not_an_image"),
    ({"inputs": {"image": "aGVsbG8=", "colour": "red"}}, "got the keys ['colour', 'image']"),
    ({"inputs": {"image": png(np.zeros((8, 8, 3), np.uint8)), "format": "gif"}}, "format: 'gif' is not one of"),
    ({"inputs": [[[300, 0, 0]]]}, "expected integers 0..255"),
    ({"inputs": [[1, 2], [3, 4]]}, "expected one HxWx3 RGB image"),
    ({"inputs": {"image": png(np.zeros((2001, 2000, 3), np.uint8))}}, "exceeds max_pixels=4000000"),
    (b"{not json", "valid JSON"),
])  # fmt: skip
def test_malformed_requests_get_a_400_with_one_line(server, body, why):
    url, _ = server
    status, answer = post(url, body)
    assert status == 400, answer
    assert why in answer["message"]
    assert "stack_trace" not in answer and "Traceback" not in answer["message"]
    assert len(answer["message"]) < 600  # the request's base64 is not echoed back
