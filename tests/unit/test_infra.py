"""Static checks of infra/ (no Docker engine or Kubernetes here): every YAML parses; compose files
pass the compose-spec schema (check-jsonschema's vendored copy), Kubernetes manifests the core
schemas (kubernetes-validate) and the KubeRay ones infra/k8s/schemas/; the Ray launcher file
passes Ray's own schema; every variable the code and compose read is in .env.example; every
`percept <verb>`, COPY source and entrypoint named exists. Offline: nothing is downloaded."""

from __future__ import annotations

import ast
import json
import math
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
INFRA = ROOT / "infra"
COMPOSE = INFRA / "compose" / "compose.yaml"
ENV_EXAMPLE = INFRA / "compose" / ".env.example"
K8S = INFRA / "k8s"
KUBERAY_SCHEMA = K8S / "schemas" / "kuberay-v1.schema.json"
CLUSTER = INFRA / "ray" / "cluster.yaml"
DOCKERFILES = sorted(p for p in (INFRA / "docker").glob("Dockerfile.*") if p.suffix != ".dockerignore")
K8S_VERSION = "1.37"
PERCEPT_SERVICES = ("prefect-worker", "ray-head", "ray-worker")   # run percept code
OFFLINE = {"HTTP_PROXY": "http://127.0.0.1:9", "HTTPS_PROXY": "http://127.0.0.1:9", "NO_PROXY": ""}


def load(path: Path):
    return yaml.safe_load(path.read_text())


def compose() -> dict:
    return load(COMPOSE)


def k8s_docs() -> list[tuple[Path, dict]]:
    return [(p, d) for p in sorted(K8S.glob("*.yaml")) for d in yaml.safe_load_all(p.read_text()) if d]


# ---------------------------------------------------------------------------------- parsing


def test_dockerfile_glob_finds_the_images():
    assert {p.name for p in DOCKERFILES} == {"Dockerfile.train", "Dockerfile.serve", "Dockerfile.mlflow"}


@pytest.mark.parametrize("path", sorted(INFRA.rglob("*.yaml")) + [ROOT / "prefect.yaml"], ids=lambda p: str(p.relative_to(ROOT)))
def test_every_yaml_parses(path):
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    assert docs and all(isinstance(d, dict) for d in docs), f"{path}: expected one or more mappings"


# ---------------------------------------------------------------------------------- compose


def check_jsonschema(path: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.compose-spec", str(path)],
                          capture_output=True, text=True, env={**os.environ, **OFFLINE}, timeout=120)


def test_compose_file_passes_the_compose_spec_schema():
    result = check_jsonschema(COMPOSE)
    assert result.returncode == 0, result.stdout + result.stderr


def test_compose_schema_check_catches_a_misspelt_key(tmp_path):
    bad = tmp_path / "compose.yaml"
    bad.write_text(COMPOSE.read_text().replace("shm_size:", "shm_sise:", 1))
    result = check_jsonschema(bad)
    assert result.returncode != 0 and "shm_sise" in result.stdout


def test_compose_services_ports_and_healthchecks():
    services = compose()["services"]
    assert {"postgres", "s3", "create-bucket", "mlflow", "prefect-server", "prefect-worker", "ray-head", "ray-worker"} <= set(services)
    for name, svc in services.items():
        one_shot = svc.get("restart") == "no"
        assert one_shot or "healthcheck" in svc, f"{name}: a long-running service needs a healthcheck"
        for dep, how in (svc.get("depends_on") or {}).items():
            target = services[dep]
            if how["condition"] == "service_healthy":
                assert "healthcheck" in target, f"{name} waits for {dep} to be healthy, which has no healthcheck"
            elif how["condition"] == "service_completed_successfully":
                assert target.get("restart") == "no", f"{name} waits for {dep} to finish, which is not a one-shot job"
    published = {name: [p.rsplit(":", 1)[1] for p in svc.get("ports", [])] for name, svc in services.items()}
    assert published["s3"] == ["9000"] and published["mlflow"] == ["5000"] and published["prefect-server"] == ["4200"]
    assert "8265" in published["ray-head"]
    assert "--port=6379" in " ".join(services["ray-head"]["command"])
    assert "--address=ray-head:6379" in " ".join(services["ray-worker"]["command"])


@pytest.mark.parametrize("service, dep, condition", [
    ("mlflow", "postgres", "service_healthy"),
    ("mlflow", "create-bucket", "service_completed_successfully"),
    ("prefect-server", "postgres", "service_healthy"),
    ("create-bucket", "s3", "service_healthy"),
    ("prefect-worker", "prefect-server", "service_healthy"),
    ("ray-worker", "ray-head", "service_healthy"),
])
def test_compose_start_order(service, dep, condition):
    assert compose()["services"][service]["depends_on"][dep]["condition"] == condition


def test_images_are_pinned():
    for name, svc in compose()["services"].items():
        if "build" in svc:
            continue
        image = svc["image"]
        tag = image.rsplit(":", 1)[1] if ":" in image.split("/")[-1] else ""
        assert re.search(r"\d", tag) and tag != "latest", f"{name}: pin {image} to a release tag"


def test_mlflow_server_proxies_artifacts_to_s3_with_postgres_and_allowed_hosts():
    svc = compose()["services"]["mlflow"]
    command = " ".join(svc["command"])
    assert "--serve-artifacts" in command and "--no-serve-artifacts" not in command
    assert "--artifacts-destination=s3://${PERCEPT_S3_BUCKET:-percept}/mlartifacts" in command
    hosts = re.search(r"--allowed-hosts=\$\{MLFLOW_ALLOWED_HOSTS:-([^}]*)\}", command)
    assert hosts and "mlflow:5000" in hosts.group(1).split(","), "the in-stack Host header must be allowed"
    assert svc["environment"]["MLFLOW_BACKEND_STORE_URI"].startswith("postgresql://mlflow:")
    assert svc["environment"]["MLFLOW_S3_ENDPOINT_URL"] == "http://s3:9000"


def test_prefect_server_uses_postgres_and_the_worker_polls_prefect_yamls_pool():
    services = compose()["services"]
    env = services["prefect-server"]["environment"]
    assert env["PREFECT_API_DATABASE_CONNECTION_URL"].startswith("postgresql+asyncpg://prefect:")
    assert env["PREFECT_API_DATABASE_CONNECTION_URL"].endswith("@postgres:5432/prefect")
    pools = {d["work_pool"]["name"] for d in load(ROOT / "prefect.yaml")["deployments"]}
    command = services["prefect-worker"]["command"][-1].split()
    assert command[command.index("--pool") + 1] in pools and command[command.index("--type") + 1] == "process"


def test_the_train_driver_runs_on_a_ray_node():
    """ray.init(address=...) attaches to the raylet of its own node: the Prefect worker, where
    `percept train` runs as a driver, must join the cluster (without CPUs, so nothing lands there)."""
    command = compose()["services"]["prefect-worker"]["command"][-1]
    assert re.match(r"ray start --address=ray-head:6379 --num-cpus=0 .*&& exec prefect worker start ", command)


def test_postgres_init_script_creates_both_databases():
    postgres = compose()["services"]["postgres"]
    mounts = [v for v in postgres["volumes"] if "/docker-entrypoint-initdb.d/" in v]
    assert len(mounts) == 1
    script = (COMPOSE.parent / mounts[0].split(":")[0]).resolve()
    text = script.read_text()
    assert re.search(r"^create mlflow ", text, re.M) and re.search(r"^create prefect ", text, re.M)
    assert os.access(script, os.X_OK) or text.startswith("#!")


def test_percept_containers_share_image_checkout_and_environment():
    services = compose()["services"]
    images = {services[s]["image"] for s in PERCEPT_SERVICES}
    assert len(images) == 1, "driver and Ray workers must run the same Ray and Python"
    for name in PERCEPT_SERVICES:
        env = services[name]["environment"]
        assert env["PERCEPT_PROFILE"] == "compose"
        assert env["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
        assert env["PREFECT_API_URL"] == "http://prefect-server:4200/api"
        assert env["RAY_ADDRESS"] == "ray-head:6379"
        for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION", "PERCEPT_DATASETS", "PERCEPT_WEIGHTS"):
            assert env.get(key), f"{name}: {key} missing"
        # The train driver hands its workers absolute paths: the checkout sits at one path everywhere.
        mounts = [re.sub(r":(ro|rw)$", "", v).rsplit(":", 1)[1] for v in services[name]["volumes"]]
        assert env["PERCEPT_HOME"] in mounts and services[name]["working_dir"] == env["PERCEPT_HOME"]
    for name, svc in services.items():
        if "build" in svc:
            assert (ROOT / svc["build"]["dockerfile"]).is_file() and (COMPOSE.parent / svc["build"]["context"]).resolve() == ROOT


def test_no_secret_is_committed():
    services = compose()["services"]
    for name, svc in services.items():
        env = svc.get("environment") or {}
        for key, value in env.items():
            if re.search(r"PASSWORD|SECRET|AUTH_KEY|ACCESS_KEY|STORE_URI|CONNECTION_URL", key):
                assert "${" in str(value), f"{name}: {key} must come from .env, not the compose file"
    example = env_example()
    for key, value in example.items():
        if re.search(r"PASSWORD|SECRET|ACCESS_KEY_ID", key):
            assert value.startswith("change-me"), f".env.example: {key} must be a placeholder"
    ignored = subprocess.run(["git", "check-ignore", "-q", str(ENV_EXAMPLE.with_name(".env"))], cwd=ROOT)
    assert ignored.returncode == 0, "infra/compose/.env must be git-ignored"
    for path, doc in k8s_docs():
        if doc["kind"] == "Secret":
            assert set((doc.get("stringData") or {}).values()) == {"REPLACE_ME"} and not doc.get("data"), path


# ----------------------------------------------------------------------- environment variables


def env_example(all_lines: bool = False) -> dict[str, str]:
    """NAME -> value of .env.example; a commented `# NAME=value` line documents a variable too."""
    pattern = r"^#?\s*([A-Za-z_][A-Za-z0-9_]*)=(\S*)" if all_lines else r"^([A-Za-z_][A-Za-z0-9_]*)=(\S*)"
    return dict(re.findall(pattern, ENV_EXAMPLE.read_text(), re.M))


def is_os_environ(node: ast.AST) -> bool:
    return (isinstance(node, ast.Attribute) and node.attr == "environ" and isinstance(node.value, ast.Name)
            and node.value.id == "os")


def code_env_vars() -> tuple[set[str], list[str]]:
    """Variables pipelines/ and training/ read (os.environ.get/[...], os.getenv) or default
    (set_defaults({...})), with module-level constants resolved; and what could not be resolved."""
    trees = [(p, ast.parse(p.read_text())) for d in ("pipelines", "training") for p in sorted((ROOT / d).rglob("*.py"))]
    consts: dict[str, str] = {}
    dicts: dict[str, list[str]] = {}
    for _, tree in trees:
        for node in tree.body:
            if isinstance(node, (ast.Assign, ast.AnnAssign)) and isinstance(getattr(node, "value", None), ast.AST):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                for t in (t for t in targets if isinstance(t, ast.Name)):
                    if isinstance(node.value, ast.Constant) and isinstance(node.value.value, str):
                        consts[t.id] = node.value.value
                    elif isinstance(node.value, ast.Dict):
                        dicts[t.id] = [k.value for k in node.value.keys if isinstance(k, ast.Constant)]
    found, unresolved = set(), []

    def resolve(arg: ast.AST, where: str) -> None:
        if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
            found.add(arg.value)
        elif isinstance(arg, ast.Name) and arg.id in consts:
            found.add(consts[arg.id])
        else:
            unresolved.append(f"{where}: {ast.unparse(arg)}")

    for path, tree in trees:
        for node in ast.walk(tree):
            where = f"{path.relative_to(ROOT)}:{getattr(node, 'lineno', '?')}"
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.args:
                f = node.func
                if (f.attr == "get" and is_os_environ(f.value)) or (f.attr == "getenv" and isinstance(f.value, ast.Name) and f.value.id == "os"):
                    resolve(node.args[0], where)
            elif isinstance(node, ast.Subscript) and is_os_environ(node.value):
                resolve(node.slice, where)
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "set_defaults" and node.args:
                arg = node.args[0]
                if isinstance(arg, ast.Dict):
                    found.update(k.value for k in arg.keys if isinstance(k, ast.Constant))
                elif isinstance(arg, ast.Name) and arg.id in dicts:
                    found.update(dicts[arg.id])
                elif not (isinstance(arg, ast.Name) and arg.id == "values"):   # set_defaults' own loop
                    unresolved.append(f"{where}: set_defaults({ast.unparse(arg)})")
    return found - {"PATH", "HOME"}, unresolved


def test_every_variable_the_code_reads_is_in_env_example():
    found, unresolved = code_env_vars()
    assert not unresolved, f"environment reads that name no constant; list them in .env.example and here: {unresolved}"
    assert {"PERCEPT_DATASETS", "PERCEPT_WEIGHTS", "PERCEPT_PROFILE", "RAY_ADDRESS", "PREFECT_API_URL"} <= found, found
    missing = sorted(found - set(env_example(all_lines=True)))
    assert not missing, f"read by the code, missing from {ENV_EXAMPLE.relative_to(ROOT)}: {missing}"


def strings(node) -> list[str]:
    if isinstance(node, dict):
        return [s for v in node.values() for s in strings(v)]
    if isinstance(node, list):
        return [s for v in node for s in strings(v)]
    return [node] if isinstance(node, str) else []


def test_every_compose_and_prefect_variable_is_in_env_example():
    text = "\n".join(strings(compose()))   # values only: comments may show ${VAR} syntax
    used = set(re.findall(r"(?<!\$)\$\{([A-Za-z_][A-Za-z0-9_]*)", text)) | set(re.findall(r"(?<!\$)\$([A-Za-z_][A-Za-z0-9_]*)", text))
    used |= set(re.findall(r"\{\{\s*\$([A-Za-z_][A-Za-z0-9_]*)\s*\}\}", (ROOT / "prefect.yaml").read_text()))
    assert {"POSTGRES_PASSWORD", "AWS_SECRET_ACCESS_KEY", "PERCEPT_S3_BUCKET", "PERCEPT_HOME"} <= used, used
    missing = sorted(used - set(env_example(all_lines=True)))
    assert not missing, f"used by compose.yaml or prefect.yaml, missing from .env.example: {missing}"
    # compose reads .env itself: its active lines must be plain NAME=value (no inline comments).
    for line in ENV_EXAMPLE.read_text().splitlines():
        if line and not line.startswith("#"):
            assert re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*=\S*", line), f".env.example: {line!r}"


# ---------------------------------------------------------------------------------- Kubernetes


def kuberay_validator(kind: str):
    import importlib.resources

    import jsonschema
    from referencing import Registry, Resource

    defs_file = (importlib.resources.files("kubernetes_validate") / "kubernetes-json-schema"
                 / f"v{K8S_VERSION}.0-local-strict" / "_definitions.json")
    defs = json.loads(defs_file.read_text())
    schema = json.loads(KUBERAY_SCHEMA.read_text())
    registry = Registry().with_resources([(defs["$id"], Resource.from_contents(defs)), (schema["$id"], Resource.from_contents(schema))])
    return jsonschema.Draft202012Validator({"$ref": f"{schema['$id']}#/$defs/{kind}"}, registry=registry)


def test_every_k8s_manifest_validates():
    import kubernetes_validate

    docs = k8s_docs()
    kinds = {d["kind"] for _, d in docs}
    assert {"RayCluster", "RayJob", "Secret", "ConfigMap", "PersistentVolumeClaim"} <= kinds
    for path, doc in docs:
        if doc["apiVersion"] == "ray.io/v1":
            errors = [f"{'.'.join(map(str, e.absolute_path))}: {e.message[:300]}" for e in kuberay_validator(doc["kind"]).iter_errors(doc)]
            assert not errors, f"{path.name}: {errors}"
        else:   # raises on an unknown kind too: nothing is skipped
            kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


@pytest.mark.parametrize("mutate, where", [
    (lambda d: d["spec"].update(shutdownAfterJobFinish=True), "shutdownAfterJobFinish"),
    (lambda d: d["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]["template"]["spec"]["containers"][0].update(resource={}), "resource"),
    (lambda d: d["spec"].update(submissionMode="K8sMode"), "K8sMode"),
])
def test_kuberay_schema_catches_mistakes(mutate, where):
    doc = load(K8S / "rayjob.yaml")
    mutate(doc)
    assert any(where in e.message for e in kuberay_validator("RayJob").iter_errors(doc))


def test_core_schema_check_catches_a_mistake():
    import kubernetes_validate

    doc = load(K8S / "pvc.yaml")
    doc["spec"]["accessMode"] = doc["spec"].pop("accessModes")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def quantity(value) -> float:
    text = str(value)
    return float(text[:-1]) / 1000 if text.endswith("m") else float(text)


def test_rayjob_trains_on_gpus_with_a_fixed_name_and_shuts_down():
    job = load(K8S / "rayjob.yaml")
    spec = job["spec"]
    assert job["metadata"]["name"] == "percept-train-sr-x4" and "generateName" not in job["metadata"]
    assert spec["shutdownAfterJobFinishes"] is True
    assert re.search(r"\bpercept train --task sr_x4\b", spec["entrypoint"])
    runtime_env = yaml.safe_load(spec["runtimeEnvYAML"])
    assert runtime_env["env_vars"]["PERCEPT_PROFILE"] == "gpu,cluster"  # the recipe, then S3 + MLflow + GPUs
    assert spec["rayClusterSpec"] == load(K8S / "raycluster.yaml")["spec"], "rayjob.yaml and raycluster.yaml drifted apart"
    constraints = (ROOT / "constraints.txt").read_text()
    assert f"ray=={spec['rayClusterSpec']['rayVersion']}\n" in constraints


def test_gpu_worker_group_fits_the_profiles_ray_train_request(monkeypatch):
    """The profile the RayJob sets asks Ray Train for workers x (cpus, gpus); they must fit the pods."""
    from pipelines.common.params import load_config

    job = load(K8S / "rayjob.yaml")["spec"]
    monkeypatch.setenv("PERCEPT_PROFILE", yaml.safe_load(job["runtimeEnvYAML"])["env_vars"]["PERCEPT_PROFILE"])
    train = load_config(ROOT / "params.yaml").train
    assert train.gpus_per_worker > 0, "the RayJob's profile should train on GPUs"
    slots = 0
    for group in job["rayClusterSpec"]["workerGroupSpecs"]:
        [container] = group["template"]["spec"]["containers"]
        limits = container["resources"]["limits"]
        gpus, cpus = quantity(limits.get("nvidia.com/gpu", 0)), quantity(limits["cpu"])
        assert gpus >= 1 and container["resources"]["requests"].get("nvidia.com/gpu") == limits["nvidia.com/gpu"]
        per_pod = min(math.floor(gpus / train.gpus_per_worker), math.floor(cpus / train.cpus_per_worker))
        assert per_pod >= 1, f"{group['groupName']}: a pod cannot hold one Ray Train worker ({train})"
        slots += per_pod * group["replicas"]
    assert train.workers == slots, "every GPU pod should hold a Ray Train worker"


def test_k8s_references_resolve():
    docs = k8s_docs()
    names = {(d["kind"], d["metadata"]["name"]) for _, d in docs}
    for _, doc in docs:
        if doc["kind"] not in ("RayCluster", "RayJob"):
            continue
        spec = doc["spec"].get("rayClusterSpec", doc["spec"])
        for template in [spec["headGroupSpec"]["template"]] + [g["template"] for g in spec["workerGroupSpecs"]]:
            for container in template["spec"]["containers"]:
                for source in container.get("envFrom", []):
                    kind, ref = ("ConfigMap", source["configMapRef"]) if "configMapRef" in source else ("Secret", source["secretRef"])
                    assert (kind, ref["name"]) in names, f"{kind} {ref['name']} is not in infra/k8s"
            for volume in template["spec"].get("volumes", []):
                if "persistentVolumeClaim" in volume:
                    assert ("PersistentVolumeClaim", volume["persistentVolumeClaim"]["claimName"]) in names


# ---------------------------------------------------------------------------------- Ray launcher


def test_ray_cluster_launcher_file_passes_rays_schema():
    import jsonschema
    import ray.autoscaler
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = load(CLUSTER)
    schema = json.loads((Path(ray.autoscaler.__file__).parent / "ray-schema.json").read_text())
    jsonschema.validate(config, schema)
    validate_config(prepare_config(config))   # what `ray up` checks before it contacts the cloud
    assert any(t["resources"].get("GPU", 0) >= 1 for t in config["available_node_types"].values())
    install = [c for c in config["setup_commands"] if "pip install" in c]
    assert install and re.search(r"pip install .*-c \S*constraints\S*\.txt\s+\.(\s|$)", install[0])
    bad = {**config, "available_node_types": {**config["available_node_types"], "gpu_worker": {
        **config["available_node_types"]["gpu_worker"], "resource": {"GPU": 1}}}}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, schema)


# --------------------------------------------------------------------------- names that must exist


def command_strings() -> list[str]:
    """Shell commands in infra/: compose commands, the RayJob entrypoint, launcher commands,
    Dockerfile RUN/CMD lines."""
    out = [" ".join(svc["command"]) if isinstance(svc.get("command"), list) else svc.get("command", "")
           for svc in compose()["services"].values()]
    out += [d["spec"]["entrypoint"] for _, d in k8s_docs() if d["kind"] == "RayJob"]
    cluster = load(CLUSTER)
    out += [c for key, value in cluster.items() if key.endswith("_commands") for c in value]
    for path in DOCKERFILES:
        for instruction in dockerfile_instructions(path):
            if instruction[0] in ("RUN", "CMD", "ENTRYPOINT"):
                body = instruction[1]
                out.append(" ".join(json.loads(body)) if body.startswith("[") else body)
    return out


def dockerfile_instructions(path: Path) -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", path.read_text())   # join continuation lines
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1] if " " in line else "") for line in lines]


def test_every_percept_verb_in_infra_exists():
    from pipelines.cli import build_parser

    parser = build_parser()
    [sub] = [a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction"]
    verbs = set(sub.choices)
    named = set()
    for command in command_strings():
        for match in re.finditer(r"(?:^|[\s;&|'\"(])percept\s+(?:(?:--params\s+\S+|-v|--verbose)\s+)*([a-z][\w-]*)", command):
            named.add(match.group(1))
    assert {"train", "remote"} <= named, named
    assert named <= verbs, f"not verbs of `percept`: {sorted(named - verbs)}"


def test_dockerfiles_copy_what_exists_run_as_non_root_and_send_it():
    for path in DOCKERFILES:
        instructions = dockerfile_instructions(path)
        users = [arg for op, arg in instructions if op == "USER"]
        assert users and users[-1] not in ("root", "0"), f"{path.name}: must end as a non-root user"
        sources = []
        for op, arg in instructions:
            if op == "COPY":
                parts = [p for p in shlex.split(arg) if not p.startswith("--")]
                sources += parts[:-1]
        for source in sources:
            assert (ROOT / source).exists(), f"{path.name}: COPY {source} does not exist"
        ignore = path.with_name(path.name + ".dockerignore")
        if ignore.exists():   # BuildKit's per-Dockerfile ignore file: what is not re-included is not sent
            patterns = ignore.read_text().splitlines()
            assert "*" in patterns
            for source in sources:
                assert f"!{source.rstrip('/')}" in patterns or f"!{source.rstrip('/')}/" in patterns, f"{ignore.name} leaves out {source}"


def test_serve_image_serves_the_champion_named_by_env():
    instructions = dockerfile_instructions(INFRA / "docker" / "Dockerfile.serve")
    [cmd] = [arg for op, arg in instructions if op == "CMD"]
    command = " ".join(json.loads(cmd))
    assert "mlflow models serve" in command and '"models:/${PERCEPT_MODEL_NAME}@champion"' in command
    assert "--env-manager local" in command
    assert any(op == "ENV" and "PERCEPT_MODEL_NAME=" in arg for op, arg in instructions)


def test_train_image_installs_from_the_lock():
    instructions = dockerfile_instructions(INFRA / "docker" / "Dockerfile.train")
    runs = " ".join(arg for op, arg in instructions if op == "RUN")
    assert re.search(r"pip install .*-c constraints\.txt \.", runs)
    assert 'ARG TORCH=torch==2.13.0+cpu' in [f"{op} {arg}" for op, arg in instructions]
    assert "torch==2.13.0+cpu\n" in (ROOT / "constraints.txt").read_text(), "the image's default must match the lock"


def test_prefect_entrypoint_resolves():
    for deployment in load(ROOT / "prefect.yaml")["deployments"]:
        file, name = deployment["entrypoint"].split(":")
        tree = ast.parse((ROOT / file).read_text())
        flows = [n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.name == name]
        assert flows, f"{file} defines no {name}"
        decorators = [ast.unparse(d) for d in flows[0].decorator_list]
        assert any(d == "flow" or d.startswith("flow(") for d in decorators), f"{name} is not a Prefect flow: {decorators}"
