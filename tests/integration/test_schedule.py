"""The retrain schedule: prefect.yaml agrees with params.yaml, and `percept schedule` registers a
deployment with that cron on a real Prefect API."""

import importlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from pipelines.services.retrain import RUN_LIMIT

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def test_prefect_yaml_deploys_the_retrain_flow_on_the_params_schedule():
    spec = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    (deployment,) = [d for d in spec["deployments"] if d["name"] == "percept-weekly"]
    module_path, func = deployment["entrypoint"].split(":")
    module = importlib.import_module(module_path.removesuffix(".py").replace("/", "."))
    assert getattr(module, func).name == "retrain"
    (schedule,) = deployment["schedules"]
    assert schedule["cron"] == params["retrain"]["cron"] and schedule["timezone"] == params["retrain"]["timezone"]
    assert schedule["slug"] and schedule["active"] is True
    assert deployment["concurrency_limit"] == RUN_LIMIT  # as `percept schedule` serves it
    assert set(deployment["parameters"]) <= {"params", "force", "push", "retries", "retry_delay_s"}


def test_prefect_yaml_deploys_the_tune_flow_for_a_task_with_a_search():
    import inspect

    spec = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    (deployment,) = [d for d in spec["deployments"] if d["name"] == "percept-tune"]
    module_path, func = deployment["entrypoint"].split(":")
    flow = getattr(importlib.import_module(module_path.removesuffix(".py").replace("/", ".")), func)
    assert flow.name == "tune"
    assert set(deployment["parameters"]) <= set(inspect.signature(flow.fn).parameters)
    assert deployment["parameters"]["task"] in params["tune"], "the deployed task has a search in params.yaml"
    assert deployment["concurrency_limit"]["collision_strategy"] == "CANCEL_NEW"


def test_percept_schedule_serves_a_deployment_with_the_cron(prefect_harness, tmp_path):
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound
    from prefect.settings import PREFECT_API_URL

    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["retrain"]["cron"] = "15 4 * * 2"
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value()}
    proc = subprocess.Popen([sys.executable, "-m", "pipelines.cli", "--params", str(path), "schedule"], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        deadline, deployment = time.monotonic() + 90, None
        with get_client(sync_client=True) as client:
            while deployment is None and time.monotonic() < deadline and proc.poll() is None:
                try:
                    deployment = client.read_deployment_by_name("retrain/percept-weekly")
                except ObjectNotFound:
                    time.sleep(1)
        assert deployment is not None, proc.stdout.read() if proc.poll() is not None else "not registered in 90 s"
        (schedule,) = deployment.schedules
        assert schedule.schedule.cron == "15 4 * * 2" and schedule.active and schedule.slug == "percept-retrain-cron"
        assert deployment.parameters["params"] == str(path.resolve())
        limit = deployment.concurrency_options
        assert deployment.global_concurrency_limit.limit == 1 and limit.collision_strategy.value == "CANCEL_NEW"
    finally:
        try:
            os.killpg(proc.pid, signal.SIGINT)
            proc.wait(timeout=30)
        except ProcessLookupError:
            pass  # it already exited: the assertion above says why
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
