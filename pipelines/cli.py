"""The ``percept`` command line: its parser, and ``VERBS``, the table of what each verb runs."""

from __future__ import annotations

import argparse
import gc
import logging
import sys
from collections.abc import Callable
from pathlib import Path

from pipelines.common.env import apply_quiet_defaults, keep_freed_memory
from pipelines.common.errors import ConfigError, one_line_user_errors, show_client_retries
from pipelines.common.params import DEFAULT_PARAMS, load_config
from pipelines.common.paths import DATASETS_ENV
from pipelines.common.schema import Config

apply_quiet_defaults()  # before the libraries are imported by the verbs
keep_freed_memory()  # before the first large tensor (see pipelines/common/env.py)

log = logging.getLogger("percept")


TASK_HELP = "a task listed under `tasks:` in params.yaml"


def add_task_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--task", required=True, help=TASK_HELP)


MODEL_HELP = ("a models/<task>/ folder or model.pt, or an MLflow URI such as models:/sr_x4@champion "
              "or models:/sr_x4/3 (its model.pt artifact is downloaded)")


def _tile(text: str) -> int | str | None:
    if text in ("auto", "none"):
        return None if text == "none" else text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of input pixels, auto or none; got {text!r}") from None


LEVEL_HELP = ("for a model conditioned on its input's level (a task with `condition: true`; denoise: the noise "
              "sigma on 0..255, deblur: the blur sigma in pixels, jpeg: the quality, read from each JPEG file when "
              "not given): that level for every file")


def add_apply_parser(sub) -> None:
    apply = sub.add_parser(
        "apply",
        help="run a model over a folder (or file) of images; write PNGs to --out",
        description="Stream --input through the model: decoding, inference and encoding overlap (thread pools); "
        "same-size images share a forward pass; images larger than the tile run in overlapping tiles whose "
        "output matches the whole image. Writes <out>/<relative path>.png atomically, skips outputs that exist "
        "(unless --overwrite), reports and skips unreadable files. Defaults for the options come from "
        "`inference:` in params.yaml. Progress (images/s) on stderr.",
    )
    apply.add_argument("--model", required=True, help=MODEL_HELP)
    add_task_argument(apply)
    apply.add_argument("--input", required=True, type=Path, help="an image file, or a folder searched recursively")
    apply.add_argument("--out", required=True, type=Path, help="output folder")
    apply.add_argument("--overwrite", action="store_true", help="replace outputs that already exist")
    apply.add_argument("--level", type=float, help=LEVEL_HELP)
    apply.add_argument("--workers", type=int, default=2, help="decode threads and encode threads, each (default: %(default)s)")
    apply.add_argument("--device", help="cpu, cuda or cuda:N (default: inference.device)")
    apply.add_argument("--tile", type=_tile, default=argparse.SUPPRESS,
                       help="input pixels per tile side, auto (about 1024 output pixels) "
                       "or none (whole images) (default: inference.tile)")
    apply.add_argument("--overlap", type=int, help="tile overlap in input pixels; at least the network's "
                       "receptive radius is used (default: inference.overlap)")
    apply.add_argument("--batch", type=int, help="same-size images or tiles per forward pass (default: inference.batch)")
    apply.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=None,
                       help="channels-last memory format (default: inference.channels_last)")
    apply.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                       help="torch.compile the network, warmed up before the first image (default: inference.compile)")


def add_compare_parser(sub) -> None:
    compare = sub.add_parser(
        "compare",
        help="models side by side on images without a clean original (real photos): one PNG sheet",
        description="Run each --model on every image of --input and draw one row per image: the input (enlarged "
        "by pixel repetition for SR), each model's output, and the file of --reference named like the input "
        "(another method's published output, e.g. RealSRSet's BSRGAN_x4/), all cropped to the same centred "
        "region. For judging models where no figure can: real photos have no ground truth.",
    )
    compare.add_argument("--sheet", help="a sheet named under `compare:` in params.yaml (its input, models and "
                         "reference; written to reports/compare/<sheet>.png): what `dvc repro` runs")
    compare.add_argument("--input", type=Path, help="an image file, or a folder searched recursively")
    compare.add_argument("--model", action="append",
                         help="repeat for each column: bicubic / identity (the baseline at the models' scale), "
                         "or " + MODEL_HELP)
    compare.add_argument("--reference", type=Path, help="a folder of reference outputs, matched by file name "
                         "(<stem>.png or <stem>_<anything>.png)")
    compare.add_argument("--out", type=Path, help="the sheet to write (PNG)")
    compare.add_argument("--crop", type=int, default=160, help="side of each crop in output pixels (default: %(default)s)")
    compare.add_argument("--max-images", type=int, help="only the first N images (sorted by name)")
    compare.add_argument("--level", type=float, help=LEVEL_HELP)
    compare.add_argument("--scale", type=int, help="the baseline's scale when no model gives it (bicubic alone)")


def add_export_parser(sub) -> None:
    export = sub.add_parser(
        "export",
        help="write a model as ONNX (dynamic batch, height, width), checked on ONNX Runtime",
        description="Export the network to one self-contained ONNX file with dynamic batch, height and width "
        "(NCHW float in [0, 1] in, the network's output out; clamp it), compare ONNX Runtime's output with "
        "PyTorch's at two input sizes, and only then write --out.",
    )
    export.add_argument("--model", required=True, help=MODEL_HELP)
    export.add_argument("--out", required=True, type=Path, help="the .onnx file to write")
    export.add_argument("--task", help="refuse a model trained for another task")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="percept",
        description="Perceptual-loss image-to-image pipeline: acquire -> ingest -> shard (-> train, evaluate, ...). "
        "Every setting lives in params.yaml; `dvc repro` runs the stages in order.",
    )
    parser.add_argument("--params", type=Path, default=DEFAULT_PARAMS, help="settings file (default: %(default)s)")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    sub.add_parser(
        "acquire",
        help="copy the raw collections into data/raw/, verifying every checksum",
        description=f"Copy acquire.collections into data/raw/<name>/. `dataset:` collections come from "
        f"${DATASETS_ENV} (default ../shared/datasets) and are checked against SHA256SUMS; `files:` "
        "collections are fetched from https://, s3:// or local paths and checked against params.",
    )
    sub.add_parser(
        "ingest",
        help="decode, validate and de-duplicate the sources into data/manifest/",
        description="Run the Prefect ingest flow over ingest.sources (folders, globs, s3:// prefixes): "
        "writes data/manifest/manifest.csv, rejects.csv and images/. Files are fetched and decoded by Ray tasks "
        "(data.engine: a local Ray, or the cluster train.ray_address / $RAY_ADDRESS names; local: this process).",
    )
    shard = sub.add_parser(
        "shard",
        help="build WebDataset (input, target) shards for a task under data/shards/<task>/",
        description="Run the Prefect shard flow for one task (or all tasks in params); samples are made by Ray "
        "tasks as for ingest (data.engine), with the same bytes wherever they run.",
    )
    which = shard.add_mutually_exclusive_group(required=True)
    which.add_argument("--task", help=TASK_HELP)
    which.add_argument("--all", action="store_true", help="every task listed in params.yaml")
    train = sub.add_parser(
        "train",
        help="train a task's network with Ray Train; writes models/<task>/",
        description="Run a Ray Train TorchTrainer over the task's shards (train.workers workers; a local Ray "
        "unless train.ray_address or $RAY_ADDRESS names a cluster; an http:// train.ray_address, the cluster's "
        "dashboard, submits this command there as a Ray job and follows its output). Re-running the same command with the "
        "same settings resumes from the last checkpoint under train.storage_path. One MLflow run per training.",
    )
    add_task_argument(train)
    tune = sub.add_parser(
        "tune",
        help="search a task's recipe on Ray Tune (params.yaml tune.<task>); --apply writes the best into params.yaml",
        description="Run the search tune.<task> declares: trials train the task (the train stage's loop) on shards "
        "without a tuning split held out by seed from the training images, and are scored on that split by the "
        "task's gate metric at tune.<task>.reports points; ASHA stops the trailing ones early, Optuna's TPE "
        "picks the next settings (the task's current recipe first). Trials run in parallel on the local Ray or "
        "the train.ray_address cluster. MLflow gets a parent run per search and a nested run per trial. Running "
        "the same command again resumes an interrupted search. Prints the best settings as a params block.",
    )
    add_task_argument(tune)
    tune.add_argument("--apply", action="store_true", help="write the best settings into tasks.<task> of --params "
                      "(comments kept); `dvc repro` then trains, evaluates and promotes it through the gate")
    evaluate = sub.add_parser(
        "evaluate",
        help="score a model and its baseline by the field's protocol; write reports and sheets",
        description="Make each input from the clean images with the task's degradation (SR: mod-crop, MATLAB "
        "bicubic downscale, 8 bits), run the model on whole images and score it against the clean image: "
        "PSNR/SSIM on the BT.601 Y channel with a scale-pixel border crop for SR, RGB PSNR/SSIM otherwise, "
        "plus the VGG feature distance. A blind task (a degradation range) is also scored at fixed levels "
        "(denoise sigma 10/25/50, jpeg quality 10/30/60/90, deblur sigma 1/2/3; evaluate.levels), each "
        "against its input, as <set>-<level>. An image the model or baseline reproduces exactly (infinite "
        "PSNR) is left out of the means, with the reason. Without --images: every evaluate.sets folder, "
        "writing reports/<task>/ and metrics/<task>.json (the DVC stage). Progress and logs go to stderr.",
    )
    add_task_argument(evaluate)
    evaluate.add_argument("--model", required=True,
                          help="bicubic (SR) or identity (same-size tasks): the baseline; a models/<task>/ folder or "
                          "model.pt; or an MLflow URI such as models:/sr_x4@champion or models:/sr_x4/3")
    evaluate.add_argument("--images", type=Path, help="a folder of clean images (any sizes and modes); "
                          "default: the evaluate.sets folders")
    evaluate.add_argument("--json", action="store_true", help="print the report as one JSON object on stdout "
                          "(with --images: the folder's report, and its reports per level under `levels`)")
    evaluate.add_argument("--out", type=Path, help="write <set>.json and <set>.png (comparison sheet) here")
    evaluate.add_argument("--any-task", action="store_true", help="accept a model trained for another task of the "
                          "same scale (with --images): e.g. how sr_x4 copes with sr_x4_real's degraded inputs")
    register = sub.add_parser(
        "register",
        help="register models/<task>/ in MLflow as a pyfunc version with lineage tags; alias challenger",
        description="Log the trained model as an MLflow pyfunc (uint8 HxWx3 in and out, tiled for large images) "
        "under the registered model named after the task, tag it (git commit, shard index sha256, params hash, "
        "eval metrics, training run id) and point @challenger at it. The same weights are registered once.",
    )
    add_task_argument(register)
    promote = sub.add_parser(
        "promote",
        help="move @champion to the challenger only if it beats the champion (or the baseline)",
        description="Evaluate @challenger (or --version) and the current @champion on the same evaluate.sets images; "
        "move @champion only if tasks.<task>.promote.metric improves by at least its margin and no metric in "
        "promote.tolerances regresses by more than its tolerance. A version whose evaluation fails is never "
        "promoted. The decision goes to version tags, a Prefect artifact and registry/<task>.promotion.json.",
    )
    add_task_argument(promote)
    promote.add_argument("--version", type=int, help="the version to consider (default: @challenger)")
    promote.add_argument("--force", action="store_true", help="promote even if the gate says no (never a failed evaluation)")
    retrain = sub.add_parser(
        "retrain",
        help="run the retrain flow once: re-ingest; if the data changed, dvc repro, dvc push, promote",
        description="Re-acquire and re-ingest the sources; if the manifest differs from the one the registered "
        "models were trained on (or --force), run the pipeline through DVC up to registration, push to the DVC "
        "remote, then pass the promotion gate. One retrain at a time per project (a Prefect concurrency limit).",
    )
    retrain.add_argument("--force", action="store_true", help="retrain even if the data did not change")
    retrain.add_argument("--no-push", action="store_true", help="skip `dvc push`")
    sub.add_parser(
        "schedule",
        help="serve the retrain flow on retrain.cron in this process (single machine; Ctrl-C stops)",
        description="Serve the retrain flow as the deployment 'retrain/percept-weekly' with the cron schedule "
        "in params.yaml. It shows in `prefect deployment ls` and the Prefect UI; start a run by hand with "
        "`prefect deployment run retrain/percept-weekly`. For a work pool and worker, use prefect.yaml.",
    )
    repro = sub.add_parser(
        "repro",
        help="`dvc repro` with one Prefect server for every stage (what `make run` does)",
        description="Run `dvc repro` (any further arguments are passed on, e.g. `percept repro promote@sr_x4`) "
        "with one temporary Prefect server shared by every stage, instead of one per stage; with "
        "PREFECT_API_URL set, that server is used.",
    )
    repro.add_argument("dvc_args", nargs="*", help="arguments for `dvc repro`, options included (e.g. --dry, -s)")
    sub.add_parser(
        "remote",
        help="point DVC's default remote at s3://<s3.bucket>/<s3.prefix>/dvc (when s3.bucket is set)",
        description="Write the S3 remote that params' s3 settings name into .dvc/config.local (never committed), "
        "for a `dvc push` or `dvc pull` by hand; `percept repro` and the retrain flow do this themselves. "
        "Without s3.bucket, the remote in .dvc/config (a local folder) is the default again.",
    )
    add_apply_parser(sub)
    add_compare_parser(sub)
    add_export_parser(sub)
    sub.add_parser("tasks", help="list the tasks params.yaml configures (and their registry entries), then the unused entries")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    dvc_args: list[str] = []
    if "repro" in argv and not {"-h", "--help"} & set(argv[argv.index("repro") + 1:]):
        # everything after `repro` is dvc's, options included (argparse would claim those)
        split = argv.index("repro") + 1
        argv, dvc_args = argv[:split], argv[split:]
    args = build_parser().parse_args(argv)
    if args.command == "repro":
        args.dvc_args = dvc_args
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    for noisy in ("httpx", "httpcore"):  # one INFO line per Prefect API call otherwise
        logging.getLogger(noisy).setLevel(logging.WARNING)
    one_line_user_errors()  # a flow failing on bad input logs its message, not Prefect's traceback
    show_client_retries(args.verbose)  # a server outage that retries rode out shows in the log
    try:
        cfg = load_config(args.params)
        return run(args, cfg)
    except ConfigError as exc:
        print(f"percept: {exc}", file=sys.stderr)
        return 2
    except (FileNotFoundError, KeyError, ValueError, RuntimeError) as exc:
        print(f"percept {args.command}: error: {exc}", file=sys.stderr)
        return 1


def run(args: argparse.Namespace, cfg: Config) -> int:
    if getattr(args, "task", None):
        cfg.task(args.task)  # an unknown name stops here, before any flow or cluster starts
    if cfg.s3.endpoint_url or cfg.s3.region:
        from pipelines.services.s3 import export_endpoint

        export_endpoint(cfg.s3)
    return VERBS[args.command](args, cfg) or 0


# One function per verb; each imports its stage or tool when called, so `percept tasks` never
# loads torch, Ray or MLflow. A verb returns its exit status, or None for 0.


def _acquire(args, cfg):
    from pipelines.stages.acquire import acquire

    acquire(cfg)


def _ingest(args, cfg):
    from pipelines.stages.ingest import ingest_flow

    ingest_flow(cfg)


def _shard(args, cfg):
    from pipelines.services.engine import data_engine
    from pipelines.stages.shard import shard_flow

    with data_engine(cfg):  # one Ray for every task's flow (each joins it), not one each
        for name in cfg.task_names if args.all else [args.task]:
            shard_flow(name, cfg)


def _train(args, cfg):
    from pipelines.stages.train import job_server, submit_job, train

    if job_server(cfg):
        submit_job(args.task, cfg, Path(args.params))
    else:
        train(args.task, cfg)


def _tune(args, cfg):
    from pipelines.search.report import summary_lines
    from pipelines.search.tune import tune_flow

    outcome, changed = tune_flow(args.task, str(args.params), apply=args.apply)
    print("\n".join(summary_lines(outcome)))
    if changed is None:
        print(f"`percept tune --task {args.task} --apply` writes these settings into {args.params}")
    else:
        print(f"wrote {', '.join(changed) or 'nothing (the file already holds them)'} into {args.params}; "
              "`dvc repro` trains, evaluates and promotes the task through the gate")


def _evaluate(args, cfg):
    import json

    from pipelines.common.paths import Paths
    from pipelines.stages import evaluate

    reports = evaluate.run(args.task, args.model, cfg, Paths(), images=args.images, out=args.out, any_task=args.any_task)
    if args.json:
        if args.images:  # the folder's report, with its reports at each evaluation level inside
            main, *levels = reports.values()
            only = {**main, **({"levels": {r["image_set"]: r for r in levels}} if levels else {})}
        else:
            only = {"task": args.task, "model": args.model, "sets": reports}
        print(json.dumps(only))


def _register(args, cfg):
    from pipelines.stages.register import register

    register(args.task, cfg)


def _promote(args, cfg):
    from pipelines.stages.promote import promote_flow

    record = promote_flow(args.task, cfg, version=args.version, force=args.force)
    print(record["line"])
    return 1 if record.get("failed") else 0


def _retrain(args, cfg):
    from pipelines.services.retrain import retrain_flow

    summary = retrain_flow(str(args.params), force=args.force, push=cfg.retrain.push and not args.no_push)
    print(f"retrain: {summary['status']}; data changed for: {', '.join(summary['changed']) or 'none'}")


def _schedule(args, cfg):
    from pipelines.services.retrain import serve

    serve(cfg, str(args.params))


def _repro(args, cfg):
    from pipelines.services.repro import repro

    return repro(args.dvc_args, cfg)


def _remote(args, cfg):
    from pipelines.services.remote import configure_dvc_remote

    url = configure_dvc_remote(cfg)
    print(f"DVC remote: {url} (in .dvc/config.local)" if url else "DVC remote: .dvc/config's default (s3.bucket is not set)")


def _apply(args, cfg):
    from pipelines.use.apply import run_cli

    return run_cli(args, cfg)


def _compare(args, cfg):
    from pipelines.stages.compare import run_cli

    return run_cli(args, cfg)


def _export(args, cfg):
    from pipelines.use.export import run_cli

    return run_cli(args, cfg)


def _tasks(args, cfg):
    from training.tasks import TASKS

    print("configured in params.yaml (* = trained by `dvc repro`):")
    for name in cfg.task_names:
        entry = cfg.task(name).entry
        mark = "*" if name in cfg.train.tasks else " "
        print(f"{mark} {name:14s} {entry.name:10s} {entry.description}")
    unused = [t for t in TASKS.values() if all(cfg.task(n).entry is not t for n in cfg.task_names)]
    if unused:
        print("registered, not configured:")
        for t in unused:
            print(f"  {t.name:14s} {t.name:10s} {t.description}")


VERBS: dict[str, Callable[[argparse.Namespace, Config], int | None]] = {
    "acquire": _acquire, "ingest": _ingest, "shard": _shard, "train": _train, "tune": _tune, "evaluate": _evaluate,
    "register": _register, "promote": _promote, "retrain": _retrain, "schedule": _schedule, "repro": _repro,
    "remote": _remote, "apply": _apply, "compare": _compare, "export": _export, "tasks": _tasks,
}


def entry() -> None:
    """The ``percept`` command: ``main``, then exit without the interpreter's final collection.

    A stage's process ends holding torch, MLflow and Prefect: collecting their objects at exit
    took 0.9 s of a register stage's 4.4 (0.1 s with them frozen), and ``dvc repro`` starts about
    fifty such processes. Atexit handlers and thread joins still run; only the sweep is skipped.
    """
    try:
        code = main()
    finally:
        gc.freeze()
    sys.exit(code)


if __name__ == "__main__":
    entry()
