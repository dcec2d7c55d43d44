"""A local Ray that percept starts keeps working beside another Ray on the same machine.

Ray's state API, given no address, looks for *the* Ray of the machine and raises once two are up.
Ray Train's placement-group cleaner calls it from inside the cluster; when it raised, a trial that
Tune stopped left its workers' CPUs reserved and a resumed search waited for them forever (CI,
2026-12-06, with another test's cluster up). ``start_local_ray`` points the API at its own Ray.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time

import pytest

from pipelines.services.ports import free_port

pytestmark = pytest.mark.integration


@pytest.fixture
def another_ray():
    """A second Ray head on this machine, in its own temp folder, stopped (its group killed) after."""
    temp_dir = tempfile.mkdtemp(prefix="rayo", dir="/tmp")
    head = subprocess.Popen(["ray", "start", "--head", "--block", f"--port={free_port()}", "--num-cpus=0",
                             "--include-dashboard=false", f"--temp-dir={temp_dir}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while not list_gcs_servers(temp_dir):
            assert head.poll() is None and time.monotonic() < deadline, "the second Ray did not start"
            time.sleep(0.5)
        yield
    finally:
        os.killpg(head.pid, signal.SIGTERM)  # `ray start --block` stops its processes on SIGTERM...
        try:
            head.wait(timeout=30)
        except subprocess.TimeoutExpired:  # ...unless it is slow to: then they all go at once
            os.killpg(head.pid, signal.SIGKILL)
            head.wait(timeout=30)
        subprocess.run(["pkill", "-9", "-f", temp_dir])  # any that left the group
        shutil.rmtree(temp_dir, ignore_errors=True)


def list_gcs_servers(temp_dir: str) -> list[str]:
    found = subprocess.run(["pgrep", "-af", "gcs_server"], capture_output=True, text=True).stdout
    return [line for line in found.splitlines() if temp_dir in line]


def test_the_state_api_inside_a_local_ray_finds_that_ray_with_another_one_up(another_ray):
    import ray

    from pipelines.services.engine import API_SERVER_ADDRESS_ENV, start_local_ray, stop_ray

    if ray.is_initialized():
        ray.shutdown()
    before = os.environ.get(API_SERVER_ADDRESS_ENV)
    start_local_ray(num_cpus=1)
    try:
        assert os.environ.get(API_SERVER_ADDRESS_ENV) == before, "this process's environment is left as it was"

        @ray.remote(num_cpus=0)
        class Guarded:
            def ping(self) -> str:
                return "pong"

        @ray.remote(num_cpus=0)
        def state_of(actor_id: str) -> str:  # what the placement-group cleaner asks, from a worker
            from ray.util.state import get_actor

            return get_actor(actor_id, timeout=30).state

        guarded = Guarded.remote()
        assert ray.get(guarded.ping.remote()) == "pong"
        assert ray.get(state_of.remote(guarded._actor_id.hex()), timeout=120) == "ALIVE"
    finally:
        stop_ray()
