"""Inference benchmark: megapixels/s and latency of the SR x4 and style networks, per path, in one run.

Both networks are the task registry's defaults (``training/tasks.py``: ``sr_x4`` and ``style``),
with random weights (speed does not depend on them). For each output size (256², 512², 1024² by
default; SR x4 gets a quarter of that side as input) every path runs the same input:

- ``eager``: the baseline, PyTorch eager in fp32, ``torch.inference_mode`` (on CUDA, cuDNN's
  default TF32 convolutions);
- ``channels_last``: the same in the channels-last memory format;
- ``compile``: ``torch.compile`` (default mode on the CPU; ``max-autotune`` with bf16 autocast
  and channels-last on CUDA), compiled by an untimed warm-up whose time is printed apart;
- ``onnxruntime`` (CPU only): the file ``percept export`` writes, on ONNX Runtime's CPU provider;
- on CUDA also ``bf16`` and ``bf16+channels_last`` (autocast).

Rounds run every path once each, in a rotating order, so drift in machine load hits all paths
alike; the figure is the median over ``--repeats`` rounds after ``--warmup`` untimed ones. Speed-ups
are against ``eager`` measured in the same run. GFLOP per image is counted with
``torch.utils.flop_counter.FlopCounterMode`` (convolutions and matmuls; element-wise work is not
counted); achieved GFLOP/s (TFLOP/s on CUDA) sets a path against the hardware's peak. Each
path's output is compared with eager's (largest absolute difference on the [0, 1] scale).

Tiling (``--no-tiling`` skips it): at the largest size, ``training.inference.Engine`` on the whole
image against the same engine in tiles of half the input side (overlap: the receptive radius):
the largest difference of the 8-bit outputs, and the time it costs (the style net's instance
norm takes one statistics sweep per layer before the output pass).

    .venv/bin/python benchmarks/infer.py                      # cpu, 256,512,1024, both networks
    .venv/bin/python benchmarks/infer.py --sizes 256 --repeats 3 --paths eager,onnxruntime
    .venv/bin/python benchmarks/infer.py --device cuda        # adds bf16 paths; the aim: style 1024² < 3 ms

The table goes to stdout; progress to stderr.
"""

from __future__ import annotations

import argparse
import copy
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

from common import count_flops, ending, load_average, progress  # benchmarks/common.py: run as scripts, this folder is on sys.path
from typing import Callable

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipelines.common.env import keep_freed_memory# noqa: E402

keep_freed_memory()  # as `percept apply` runs (see pipelines/common/env.py)
NETS = ("sr_x4", "style")
CPU_PATHS = ("eager", "channels_last", "compile", "onnxruntime")
CUDA_PATHS = ("eager", "channels_last", "bf16", "bf16+channels_last", "compile")


def _list(kind: Callable[[str], object]) -> Callable[[str], list]:
    def parse(text: str) -> list:
        try:
            values = [kind(x.strip()) for x in text.split(",") if x.strip()]
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a comma-separated list, got {text!r}") from None
        if not values:
            raise argparse.ArgumentTypeError("expected at least one value")
        return values
    return parse


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="Megapixels/s and latency of the sr_x4 and style networks (registry defaults) per inference path "
        "(eager fp32 baseline, channels-last, torch.compile, ONNX Runtime; on CUDA also bf16), as speed-ups over eager "
        "measured in the same run, with GFLOP per image. Table on stdout, progress on stderr.",
    )
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="(default: %(default)s)")
    p.add_argument("--sizes", type=_list(int), default=[256, 512, 1024],
                   help="output sides in pixels, comma-separated (default: 256,512,1024)")
    p.add_argument("--nets", type=_list(str), default=list(NETS), help="comma-separated, of sr_x4,style (default: both)")
    p.add_argument("--paths", type=_list(str), default=None,
                   help=f"comma-separated (default: all; cpu: {','.join(CPU_PATHS)}; cuda: {','.join(CUDA_PATHS)})")
    p.add_argument("--repeats", type=int, default=5, help="timed rounds; medians are printed (default: %(default)s)")
    p.add_argument("--warmup", type=int, default=1, help="untimed rounds before them (default: %(default)s)")
    p.add_argument("--threads", type=int, default=None, help="torch and ONNX Runtime threads (default: all cores)")
    p.add_argument("--no-tiling", dest="tiling", action="store_false", help="skip the tiled-vs-whole comparison")
    args = p.parse_args(argv)
    allowed = CUDA_PATHS if args.device == "cuda" else CPU_PATHS
    args.paths = args.paths or list(allowed)
    for name, values, known in (("--paths", args.paths, allowed), ("--nets", args.nets, NETS)):
        if unknown := [v for v in values if v not in known]:
            p.error(f"{name}: unknown {', '.join(unknown)} (choose from {', '.join(known)})")
    if "eager" not in args.paths:
        args.paths.insert(0, "eager")  # the baseline every ratio is against
    if any(s % 4 or s < 32 for s in args.sizes):
        p.error("--sizes: output sides must be multiples of 4 (SR x4 inputs), at least 32")
    return args


def build_net(name: str):
    """(network in eval mode, scale) with the registry's default settings for ``name``."""
    import torch

    from training.models import build_transform_net
    from training.tasks import TASKS

    task = TASKS[name]
    scale = task.make_degradation().input_scale
    torch.manual_seed(0)
    model = build_transform_net(task.make_model_config(), scale).eval()
    for p in model.parameters():  # the SR net's zero-initialised output conv would make it bicubic
        p.data.normal_(0, 0.02)
    return model, scale


def count_gflop(model, x) -> float:
    import torch

    with torch.inference_mode():
        return count_flops(lambda: model(x))[0] / 1e9


def prepare(path: str, model, x, device: str, onnx_file: Path | None, threads: int) -> tuple[Callable, float]:
    """(a call that runs the path once and returns its output on the CPU as float, warm-up s)."""
    import torch

    cuda = device == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    if path == "onnxruntime":
        from training.onnx_export import OnnxRunner

        runner = OnnxRunner(onnx_file, threads=threads)
        data = x.cpu().numpy()
        t0 = time.perf_counter()
        runner(data)
        return (lambda: torch.from_numpy(runner(data))), time.perf_counter() - t0
    net, inp = model, x
    bf16 = cuda and path.startswith("bf16") or (cuda and path == "compile")
    if "channels_last" in path or (cuda and path == "compile"):
        net = copy.deepcopy(model).to(memory_format=torch.channels_last)
        inp = x.contiguous(memory_format=torch.channels_last)
    if path == "compile":
        net = torch.compile(copy.deepcopy(net), mode="max-autotune" if cuda else None)

    def run():
        with torch.inference_mode(), torch.autocast("cuda", dtype=torch.bfloat16, enabled=bf16):
            y = net(inp)
        sync()
        return y

    t0 = time.perf_counter()
    run()  # the warm-up: compiles, picks kernels
    return (lambda: run().float().cpu()), time.perf_counter() - t0


def bench_size(name: str, model, scale: int, side: int, args, onnx_file: Path | None) -> list[dict]:
    import torch

    x = torch.rand(1, 3, side // scale, side // scale, device=args.device)
    gflop = count_gflop(model, x)
    calls, warm = {}, {}
    for path in args.paths:
        progress(f"{name} {side}²: preparing {path}")
        calls[path], warm[path] = prepare(path, model, x, args.device, onnx_file, args.threads)
    times: dict[str, list[float]] = {p: [] for p in args.paths}
    outputs = {}
    sync = torch.cuda.synchronize if args.device == "cuda" else (lambda: None)
    for r in range(args.warmup + args.repeats):
        order = args.paths[r % len(args.paths):] + args.paths[:r % len(args.paths)]
        for path in order:
            sync()
            t0 = time.perf_counter()
            out = calls[path]()
            dt = time.perf_counter() - t0
            if r >= args.warmup:
                times[path].append(dt)
            outputs[path] = out
    progress(f"{name} {side}²: " + ", ".join(f"{p} {statistics.median(t) * 1000:.1f} ms" for p, t in times.items()))
    base = statistics.median(times["eager"])
    rows = []
    for path in args.paths:
        latency = statistics.median(times[path])
        rows.append({"net": name, "side": side, "path": path, "gflop": gflop, "latency": latency,
                     "mpx_s": side * side / 1e6 / latency, "speedup": base / latency, "warm_s": warm[path],
                     "diff": float((outputs[path] - outputs["eager"]).abs().max()),
                     "spread": (min(times[path]), max(times[path]))})
    return rows


def bench_tiling(name: str, model, scale: int, side: int, device: str) -> dict:
    """Whole image against tiles of half its input side through ``Engine``: 8-bit difference, time."""
    import numpy as np

    from training.inference import Engine
    from training.options import InferenceConfig

    steps = np.random.default_rng(0).integers(-6, 7, (side // scale, side // scale, 3))
    image = np.clip(np.cumsum(steps, axis=1) + 128, 0, 255).astype(np.uint8)  # smooth, like a photo
    whole = Engine(model, scale, cfg=InferenceConfig(device=device, tile=None))
    tile = max(side // scale // 2, 2 * whole.overlap + 4 * whole.align)  # at least a little past the overlaps
    tiled = Engine(model, scale, cfg=InferenceConfig(device=device, tile=tile, batch=1))
    whole(image)  # warm-up
    t0 = time.perf_counter()
    a = whole(image)
    t1 = time.perf_counter()
    b = tiled(image)
    t2 = time.perf_counter()
    diff = np.abs(a.astype(int) - b.astype(int))
    return {"net": name, "side": side, "tile": tiled.tile, "overlap": tiled.overlap, "passes": tiled.passes,
            "max": int(diff.max()), "mean": float(diff.mean()), "whole_s": t1 - t0, "tiled_s": t2 - t1}


def machine(device: str) -> str:
    import torch

    if device == "cuda":
        return f"{torch.cuda.get_device_name(0)}, CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}"
    name = platform.processor() or "cpu"
    try:
        name = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                    if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{name}, {os.cpu_count()} cores"


def report(args, rows: list[dict], tiling: list[dict], params: dict[str, float], load_start: str, elapsed: float) -> None:
    import torch

    try:
        import onnxruntime

        ort = f", onnxruntime {onnxruntime.__version__}"
    except ImportError:
        ort = ""
    unit, per = ("TFLOP/s", 1e3) if args.device == "cuda" else ("GFLOP/s", 1.0)
    out = [
        f"percept inference benchmark — {', '.join(args.nets)} (registry defaults), output sides "
        f"{', '.join(map(str, args.sizes))} px, batch 1, median of {args.repeats} rounds after {args.warmup} warm-up",
        f"device {args.device}: {machine(args.device)}; torch {torch.__version__}{ort}, {torch.get_num_threads()} threads; "
        f"python {sys.version.split()[0]}",
        "   " + "; ".join(f"{n}: {params[n] / 1e6:.3f} M parameters" for n in args.nets),
        "",
        f"   {'net':<6} {'output':>9} {'GFLOP':>7}  {'path':<18} {'latency ms':>10} {'(min-max)':>15} {'MP/s':>7} "
        f"{'x eager':>7} {unit:>8} {'max |diff|':>10} {'warm-up s':>9}",
    ]
    for r in rows:
        lo, hi = r["spread"]
        out.append(f"   {r['net']:<6} {r['side']:>4}x{r['side']:<4} {r['gflop']:>7.1f}  {r['path']:<18} {r['latency'] * 1e3:>10.1f} "
                   f"{f'({lo * 1e3:.0f}-{hi * 1e3:.0f})':>15} {r['mpx_s']:>7.3f} {r['speedup']:>7.2f} "
                   f"{r['gflop'] / r['latency'] / per:>8.1f} {r['diff']:>10.1e} {r['warm_s']:>9.1f}")
    out.append("")
    best = {}
    for r in rows:
        key = (r["net"], r["side"])
        if r["path"] != "eager" and (key not in best or r["speedup"] > best[key]["speedup"]):
            best[key] = r
    out.append("   fastest path per network and size: " + "; ".join(
        f"{n} {s}: {r['path']} x{r['speedup']:.2f}" for (n, s), r in best.items()))
    out.append("   (x eager: eager latency / path latency, same run. max |diff|: against eager's output, on [0, 1]. "
               "warm-up s: the first call, untimed (compilation for compile).)")
    out.append("")
    if tiling:
        out.append("tiles against the whole image (training.inference.Engine, fp32, tiles of half the input side):")
        for t in tiling:
            if not t["passes"]:
                out.append(f"   {t['net']:<6} {t['side']}x{t['side']}: fits one tile of {t['tile']} px: not tiled")
                continue
            out.append(f"   {t['net']:<6} {t['side']}x{t['side']}: tile {t['tile']} px in, overlap {t['overlap']}, "
                       f"{t['passes']} pass(es) over the tiles; max |diff| {t['max']}/255 (mean {t['mean']:.1e}); "
                       f"whole {t['whole_s']:.2f} s, tiled {t['tiled_s']:.2f} s (x{t['tiled_s'] / t['whole_s']:.1f})")
        out.append("")
    out.extend(ending(load_start, elapsed))
    print("\n".join(out), flush=True)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    start = time.perf_counter()
    load_start = load_average()
    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        print("error: --device cuda, but torch sees no CUDA device", file=sys.stderr)
        return 2
    if args.threads:
        torch.set_num_threads(args.threads)
    args.threads = args.threads or torch.get_num_threads()
    rows, tiling, params = [], [], {}
    with tempfile.TemporaryDirectory(prefix="percept-bench-infer-") as work:
        for name in args.nets:
            model, scale = build_net(name)
            params[name] = sum(p.numel() for p in model.parameters())
            onnx_file = None
            if "onnxruntime" in args.paths:
                from training.onnx_export import export_onnx

                progress(f"{name}: exporting to ONNX")
                onnx_file = export_onnx(model, Path(work) / f"{name}.onnx", scale)
            model = model.to(args.device)
            for side in args.sizes:
                rows.extend(bench_size(name, model, scale, side, args, onnx_file))
            if args.tiling:
                progress(f"{name}: tiles against the whole image at {max(args.sizes)}²")
                tiling.append(bench_tiling(name, model, scale, max(args.sizes), args.device))
    report(args, rows, tiling, params, load_start, time.perf_counter() - start)
    return 0


if __name__ == "__main__":
    sys.exit(main())
