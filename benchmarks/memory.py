"""Allocator benchmark: what ``pipelines.common.env.keep_freed_memory`` buys, against glibc's defaults, in one run.

Each case runs in two fresh processes, one with glibc's default malloc policy and one with
``keep_freed_memory()`` applied first (as every ``percept`` command does), in alternating order:

- ``vgg``: a forward pass of the default feature network (relu1_1..relu3_1) over a whole
  500x480 image, as ``percept evaluate`` scores every output (``feature_distance``);
- ``train``: a training step of sr_x4_perceptual's network (batch 8 of 96 px targets, pixel + VGG
  feature loss, Adam), in a thread, as Ray Train runs its loop.

Printed per case: seconds per call (median of ``--repeats`` processes), minor page faults per
call, system CPU seconds per call, and the speed-up. No files are written.

    .venv/bin/python benchmarks/memory.py
    .venv/bin/python benchmarks/memory.py --calls 5 --repeats 3
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

from common import ending, load_average  # benchmarks/common.py: run as scripts, this folder is on sys.path

ROOT = Path(__file__).resolve().parents[1]
CASES = ("vgg", "train")
POLICIES = ("default", "keep")

# One process: build the case, run it once to warm up, then time ``calls`` calls and report.
CHILD = r"""
import json, os, resource, sys, threading, time
sys.path[:0] = [{root!r}, {root!r} + "/benchmarks"]
os.environ.pop("GLIBC_TUNABLES", None)
from pipelines.common.env import apply_quiet_defaults, keep_freed_memory
apply_quiet_defaults()
if {policy!r} == "keep":
    keep_freed_memory()
import torch, yaml
from common import with_feature_weights
from pipelines.common.params import parse_config
from training.vgg import load_feature_net
torch.manual_seed(0)
torch.set_num_threads(2)
cfg = parse_config(with_feature_weights(yaml.safe_load(open({params!r})), __import__("pathlib").Path({root!r})))
if {case!r} == "vgg":
    net = load_feature_net(cfg.feature_net)
    image = torch.rand(1, 3, 500, 480)
    def call():
        with torch.inference_mode():
            net(image)
else:
    from training.loop import make_optimizer, train_step
    from training.losses import PerceptualLoss
    from training.models import build_transform_net
    params = cfg.task("sr_x4_perceptual")  # the SR net on pixel + VGG feature loss
    terms = params.loss.model_copy(update={{"pixel_only_steps": 0}})  # the VGG term from the first step
    model = build_transform_net(params.model, params.degradation.input_scale)
    loss = PerceptualLoss(terms, load_feature_net(cfg.feature_net, terms.needed_layers), grid_period=params.degradation.input_scale)
    optimizer, scheduler = make_optimizer(model, params.optim)
    low, high = torch.rand(8, 3, 24, 24), torch.rand(8, 3, 96, 96)
    def call():
        train_step(model, loss, optimizer, scheduler, low, high, params.optim.grad_clip)
result = {{}}
def run():
    call()
    usage, start = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    for _ in range({calls}):
        call()
    elapsed, after = time.perf_counter() - start, resource.getrusage(resource.RUSAGE_SELF)
    result.update(seconds=elapsed / {calls}, faults=(after.ru_minflt - usage.ru_minflt) / {calls},
                  system=(after.ru_stime - usage.ru_stime) / {calls})
thread = threading.Thread(target=run)  # Ray Train's loop runs in a thread; so do both cases here
thread.start()
thread.join()
print(json.dumps(result))
"""


def measure(case: str, policy: str, calls: int, params: Path) -> dict[str, float]:
    code = CHILD.format(root=str(ROOT), policy=policy, case=case, calls=calls, params=str(params))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    if out.returncode != 0:
        raise SystemExit(f"{case}/{policy} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cases", default=",".join(CASES), help="comma list of %s (default: all)" % ", ".join(CASES))
    p.add_argument("--calls", type=int, default=5, help="timed calls per process, after one warm-up call (default: %(default)s)")
    p.add_argument("--repeats", type=int, default=3, help="processes per policy and case; medians are printed (default: %(default)s)")
    p.add_argument("--params", type=Path, default=ROOT / "params.yaml", help="settings file (default: %(default)s)")
    args = p.parse_args()
    cases = [c for c in args.cases.split(",") if c]
    unknown = set(cases) - set(CASES)
    if unknown:
        p.error(f"unknown case(s) {sorted(unknown)}; choose from {', '.join(CASES)}")
    load_start, start = load_average(), time.perf_counter()
    lines = ["| case | policy | s per call | minor faults per call | system s per call | speed-up |",
             "| --- | --- | --- | --- | --- | --- |"]
    for case in cases:
        runs: dict[str, list[dict[str, float]]] = {policy: [] for policy in POLICIES}
        for repeat in range(args.repeats):
            order = POLICIES if repeat % 2 == 0 else POLICIES[::-1]  # a drift in load hits both alike
            for policy in order:
                runs[policy].append(measure(case, policy, args.calls, args.params))
                print(f"[bench] {case} {policy} #{repeat + 1}: {runs[policy][-1]['seconds']:.3f} s per call",
                      file=sys.stderr, flush=True)
        median = {policy: {k: statistics.median(r[k] for r in runs[policy]) for k in ("seconds", "faults", "system")}
                  for policy in POLICIES}
        for policy in POLICIES:
            m = median[policy]
            ratio = median["default"]["seconds"] / m["seconds"]
            lines.append(f"| {case} | {policy} | {m['seconds']:.3f} | {m['faults']:.0f} | {m['system']:.3f} | x{ratio:.2f} |")
    print("\n".join(lines))
    for line in ending(load_start, time.perf_counter() - start):
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
