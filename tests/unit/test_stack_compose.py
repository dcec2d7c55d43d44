"""pipelines.services.stack reads the services from infra/compose/compose.yaml: the commands it would run
are compose's, rewritten for one host, and params.yaml's `stack` profile matches its ports."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
import yaml

from pipelines.services.ports import SERVER_PORTS, free_ports
from pipelines.services.stack import COMPOSE, Ports, Stack, StackError, interpolate, profile

pytestmark = pytest.mark.unit
ROOT = Path(__file__).resolve().parents[2]
PORTS = Ports(postgres=15432, s3=19000, mlflow=15000, prefect=14200, ray=16379, dashboard=18265, worker_health=18080)


@pytest.fixture
def stack(tmp_path) -> Stack:
    return Stack(tmp_path / "services", project=tmp_path / "project", ports=PORTS)


def test_interpolate_follows_compose():
    values = {"SET": "x", "EMPTY": ""}
    assert interpolate("${SET}-${UNSET:-d}-${EMPTY:-e}-$${LITERAL}", values) == "x-d-e-${LITERAL}"
    with pytest.raises(StackError, match="UNSET is not set: give it"):
        interpolate("${UNSET:?give it}", values)


def test_params_stack_profile_matches_the_default_ports():
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    assert params["profiles"]["stack"] == profile(Ports())


def test_commands_are_composes_rewritten_for_this_host(stack):
    compose = yaml.safe_load(COMPOSE.read_text())["services"]
    mlflow = stack.command("mlflow")
    assert mlflow[:2] == compose["mlflow"]["command"][:2] == ["mlflow", "server"]
    assert "--serve-artifacts" in mlflow and "--artifacts-destination=s3://percept/mlartifacts" in mlflow
    assert "--host=127.0.0.1" in mlflow and "127.0.0.1:15000" in next(a for a in mlflow if a.startswith("--allowed-hosts"))
    env = stack.env("mlflow")
    assert env["MLFLOW_BACKEND_STORE_URI"].startswith("postgresql://mlflow:") and "@127.0.0.1:15432/mlflow" in env["MLFLOW_BACKEND_STORE_URI"]
    assert env["MLFLOW_S3_ENDPOINT_URL"] == "http://127.0.0.1:19000"
    assert stack.env("prefect-server")["PREFECT_API_DATABASE_CONNECTION_URL"].endswith("@127.0.0.1:15432/prefect")
    assert stack.command("prefect-server")[:3] == ["prefect", "server", "start"]
    assert "ray start --head --port=6379" in stack.command("ray-head")[2]  # start_ray swaps the ports in
    assert "--address=127.0.0.1:16379" in stack.command("ray-worker")[2]
    assert "prefect worker start --pool percept" in stack.command("prefect-worker")[2]
    assert "prefect --no-prompt deploy --all" in stack.command("prefect-deploy")[2]


def test_percept_services_get_this_machines_paths_and_profile(stack):
    env = stack.client_env()
    assert env["PERCEPT_PROFILE"] == "stack" and env["PERCEPT_HOME"] == str(stack.project)
    assert env["MLFLOW_TRACKING_URI"] == "http://127.0.0.1:15000"
    assert env["PREFECT_API_URL"] == "http://127.0.0.1:14200/api" and env["RAY_ADDRESS"] == "127.0.0.1:16379"
    assert env["AWS_ACCESS_KEY_ID"] == stack.values["AWS_ACCESS_KEY_ID"] != "change-me-access-key"


def test_secrets_are_generated_once_per_folder(tmp_path):
    first = Stack(tmp_path / "s", project=tmp_path).values
    again = Stack(tmp_path / "s", project=tmp_path).values
    other = Stack(tmp_path / "t", project=tmp_path).values
    assert first["POSTGRES_PASSWORD"] == again["POSTGRES_PASSWORD"] != other["POSTGRES_PASSWORD"]
    assert oct((tmp_path / "s" / "secrets.env").stat().st_mode & 0o777) == "0o600"


def test_free_ports_are_distinct_bindable_and_never_handed_out_by_the_kernel():
    low, high = map(int, Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    assert SERVER_PORTS.stop <= low or SERVER_PORTS.start > high  # bind(0) and Ray's raylets draw from [low, high]
    assert SERVER_PORTS.start >= 20000  # above Ray's worker ports (10002-19999)
    ports = free_ports(len(Ports.__dataclass_fields__))
    assert len(set(ports)) == len(ports) and all(p in SERVER_PORTS for p in ports)
    with socket.socket() as taken:  # a port in use is never offered
        taken.bind(("127.0.0.1", ports[0]))
        taken.listen()
        again = free_ports(200)
        assert ports[0] not in again
    socks = [socket.socket() for _ in ports[1:]]
    try:
        for sock, port in zip(socks, ports[1:]):
            sock.bind(("127.0.0.1", port))
    finally:
        for sock in socks:
            sock.close()
