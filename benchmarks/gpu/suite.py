"""The GPU suite: CUDA tests and every GPU figure, in parts that each run in their own process under their own time
limit, so that one slow or broken part cannot eat the others. Run it through `run.sh` (which makes the package
importable first):

    bash benchmarks/gpu/run.sh --out "$OUT"           # on a GPU: the whole suite, 7 minutes at most (the limits)
    bash benchmarks/gpu/run.sh --smoke                # on a CPU: the same code at toy sizes, under a minute

Parts (one JSON each in the output folder, then `summary.md`): `cuda_tests` (pytest -m cuda), `trie_steps` (the trie
processor per step inside `generate`), `decoding` (the Beauty test set and the paper's product-search load) and
`training` (indexer and recommender steps per second). Every JSON records the device, torch, CUDA and transformers
versions and the command. A part writes its JSON after every figure, so one stopped at its limit keeps what it got.

On a GPU each part is a fresh Python process (`--launcher subprocess`): CUDA cannot be used in a process forked from
one where CUDA was initialised, and that is not under our control once torch is imported. The CPU smoke run forks
the parts from one process that has imported everything once (`--launcher fork`), which saves the 5 to 8 seconds
that each import of torch and transformers costs on a small CPU machine.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent
PARTS = ("cuda_tests", "trie_steps", "decoding", "training")
# Seconds per part on one H100 (limits, not expectations; the whole stays under 8 minutes with start-up), and in
# the smoke run.
GPU_LIMITS = {"cuda_tests": 80, "trie_steps": 130, "decoding": 110, "training": 90}
SMOKE_LIMITS = {"cuda_tests": 45, "trie_steps": 30, "decoding": 30, "training": 30}
MARGIN_S = 5  # a part stops starting new measurements this long before its limit


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--smoke", action="store_true", help="CPU, toy sizes, output in a fresh temporary folder.")
    parser.add_argument("--out", help="Output folder (default: benchmarks/gpu, or a temporary folder with --smoke).")
    parser.add_argument("--parts", default=",".join(PARTS), help=f"Comma-separated subset of {', '.join(PARTS)}.")
    parser.add_argument(
        "--limit",
        action="append",
        default=[],
        metavar="PART=SECONDS",
        help="Time limit of one part, e.g. --limit decoding=200 (repeatable).",
    )
    parser.add_argument(
        "--rec_model", help="A trained causal recommender folder for `decoding` (random weights if unset)."
    )
    parser.add_argument(
        "--search_model", help="A trained seq2seq retriever folder for `decoding` (random T5-base if unset)."
    )
    parser.add_argument("--launcher", choices=("fork", "subprocess"), help="How parts are started (see above).")
    parser.add_argument("--part", choices=PARTS, help=argparse.SUPPRESS)  # internal: run one part in this process
    parser.add_argument("--seconds", type=float, help=argparse.SUPPRESS)  # internal: that part's limit
    args = parser.parse_args(argv)
    args.parts = [part.strip() for part in args.parts.split(",") if part.strip()]
    unknown = [part for part in args.parts if part not in PARTS]
    if unknown:
        parser.error(f"unknown part(s) {unknown}; the parts are {', '.join(PARTS)}")
    args.limits = dict(SMOKE_LIMITS if args.smoke else GPU_LIMITS)
    for item in args.limit:
        name, _, seconds = item.partition("=")
        if name not in PARTS or not seconds.replace(".", "", 1).isdigit():
            parser.error(f"--limit {item}: expected PART=SECONDS with PART one of {', '.join(PARTS)}")
        args.limits[name] = float(seconds)
    args.launcher = args.launcher or ("fork" if args.smoke else "subprocess")
    committed = HERE.resolve()
    if args.out is None:
        args.out = tempfile.mkdtemp(prefix="lmindexer-gpu-smoke-") if args.smoke else str(committed)
    if args.smoke and Path(args.out).resolve() == committed:
        parser.error(
            "--smoke writes toy figures: give an --out other than benchmarks/gpu, whose JSON files are the GPU's"
        )
    for name in ("rec_model", "search_model"):
        folder = getattr(args, name)
        if folder and not (Path(folder) / "config.json").is_file():
            parser.error(f"--{name} {folder}: not a model folder (no config.json)")
    return args


def command_line(argv: list[str]) -> str:
    return os.environ.get("GPU_SUITE_COMMAND") or "python benchmarks/gpu/suite.py " + " ".join(argv)


# ------------------------------------------------------------------------------------------------- one part
def run_part(name: str, args: argparse.Namespace, command: str, seconds: float) -> int:
    """Run part `name` in this process; a failure is written into its JSON. Returns the exit code."""
    from suite_common import PartContext

    context = PartContext(
        name=name,
        out_dir=Path(args.out),
        smoke=args.smoke,
        command=command,
        deadline=time.monotonic() + seconds - MARGIN_S,
        rec_model=args.rec_model,
        search_model=args.search_model,
    )
    try:
        importlib.import_module(name).run(context)
        return 0
    except Exception as error:  # noqa: BLE001 - any failure of a part is written to its JSON, then the part ends
        path = Path(args.out) / f"{name}.json"
        data = json.loads(path.read_text()) if path.is_file() else {"group": name, "command": command}
        data.update(status="failed", error=f"{type(error).__name__}: {error}", traceback=traceback.format_exc()[-4000:])
        path.write_text(json.dumps(data, indent=2) + "\n")
        print(f"{name}: failed: {type(error).__name__}: {error}", file=sys.stderr, flush=True)
        return 1


def launch(name: str, args: argparse.Namespace, command: str, argv: list[str]) -> tuple[int | None, float]:
    """Start part `name` in its own process and wait up to its limit; returns (exit code or None on timeout, seconds)."""
    limit = args.limits[name]
    start = time.monotonic()
    if args.launcher == "fork":
        import multiprocessing

        process = multiprocessing.get_context("fork").Process(
            target=lambda: sys.exit(run_part(name, args, command, limit)), name=name
        )
        process.start()
        process.join(limit)
        if process.is_alive():
            process.kill()
            process.join()
            return None, time.monotonic() - start
        return process.exitcode, time.monotonic() - start
    child = subprocess.Popen(
        [sys.executable, str(HERE / "suite.py"), *argv, "--out", args.out, "--part", name, "--seconds", str(limit)],
        start_new_session=True,
        env=dict(os.environ, GPU_SUITE_COMMAND=command),
    )
    try:
        return child.wait(timeout=limit), time.monotonic() - start
    except subprocess.TimeoutExpired:
        os.killpg(child.pid, signal.SIGKILL)
        child.wait()
        return None, time.monotonic() - start


def settle(name: str, args: argparse.Namespace, command: str, exit_code: int | None, seconds: float) -> dict:
    """The part's JSON with the runner's verdict added: status, wall seconds, time limit."""
    path = Path(args.out) / f"{name}.json"
    data = json.loads(path.read_text()) if path.is_file() else {"group": name, "command": command}
    if exit_code is None:
        data.update(status="timeout", error=f"stopped at its time limit of {args.limits[name]:g} s")
    elif exit_code != 0:
        data["status"] = "failed"
        data.setdefault("error", f"the part's process exited with {exit_code}")
    elif data.get("status") != "ok":
        data.update(status="failed", error=data.get("error", "the part ended without finishing"))
    data.update(wall_s=round(seconds, 1), time_limit_s=args.limits[name])
    path.write_text(json.dumps(data, indent=2) + "\n")
    print(f"== {name}: {data['status']} in {seconds:.1f} s (limit {args.limits[name]:g} s)", flush=True)
    return data


def cuda_visible() -> bool:
    probe = subprocess.run(
        [sys.executable, "-c", "import torch; print(torch.cuda.is_available())"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    return probe.stdout.strip() == "True"


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse(argv)
    command = command_line(argv)
    if args.part:  # a child of the subprocess launcher
        return run_part(args.part, args, command, args.seconds or args.limits[args.part])
    Path(args.out).mkdir(parents=True, exist_ok=True)
    if not args.smoke and not cuda_visible():
        print(
            "No CUDA device is visible: run the suite on a GPU machine, or rehearse it here with --smoke.",
            file=sys.stderr,
        )
        return 2
    if args.launcher == "fork":  # import once, before forking (never touching CUDA here)
        for module in ("lmindexer", "pytest", "lmindexer.trainers.downstream.causal_recommender", *args.parts):
            importlib.import_module(module)
    started = time.monotonic()
    verdicts = {}
    for name in args.parts:
        exit_code, seconds = launch(name, args, command, argv)
        verdicts[name] = settle(name, args, command, exit_code, seconds)
    from summary import write_summary

    summary_path = write_summary(Path(args.out), verdicts, command, time.monotonic() - started, args.smoke)
    failed = [name for name, data in verdicts.items() if data["status"] != "ok"]
    print(
        f"wrote {args.out} ({summary_path.name}); {len(verdicts) - len(failed)} of {len(verdicts)} parts ok"
        + (f", not ok: {', '.join(failed)}" if failed else ""),
        flush=True,
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
