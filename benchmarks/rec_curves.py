"""Learning curves side by side: validation Recall@10 against training minutes, read from the JSON of
`run_rec_causal.sh` (`learning_curve`, validation users sampled by the preset) and of `bench_sasrec.py` (`curve`,
every user's validation item). Each cell is the last evaluation at or before that minute, so a reader sees who leads
at which budget. Prints a Markdown table.

    python benchmarks/rec_curves.py --minutes 2,5,10,15,20,30,40 \
        benchmarks/rec/causal_beauty_lmindexer.json benchmarks/rec/sasrec_beauty.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def curve_points(result: dict, metric: str) -> list[tuple[float, float]]:
    """(training seconds, validation metric) of every evaluation of a result file, in order."""
    if "learning_curve" in result:
        return [(entry["eval_train_seconds"], entry[f"eval_{metric}"]) for entry in result["learning_curve"]]
    if "curve" in result:
        return [(entry["seconds"], entry[f"valid_{metric}"]) for entry in result["curve"]]
    raise SystemExit("Neither `learning_curve` (run_rec_causal.sh) nor `curve` (bench_sasrec.py) in the file.")


def value_at(points: list[tuple[float, float]], seconds: float) -> str:
    reached = [value for when, value in points if when <= seconds]
    if not reached:
        return "-"
    # Past the run's end the curve stops: later cells repeat nothing.
    return f"{reached[-1]:.4f}" if seconds < points[-1][0] + 60 else "-"


def table(paths: list[str], minutes: list[float], metric: str) -> str:
    lines = [
        f"| model (validation {metric}) | " + " | ".join(f"{m:g} min" for m in minutes) + " | end |",
        "|:--|" + "--:|" * (len(minutes) + 1),
    ]
    for path in paths:
        result = json.loads(Path(path).read_text())
        points = curve_points(result, metric)
        name = Path(path).stem
        cells = [value_at(points, m * 60) for m in minutes]
        end = f"{points[-1][1]:.4f} at {points[-1][0] / 60:.0f} min"
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {end} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("files", nargs="+", help="Result JSON files of run_rec_causal.sh or bench_sasrec.py.")
    parser.add_argument("--minutes", default="2,5,10,15,20,30,40", help="Training minutes of the columns.")
    parser.add_argument("--metric", default="recall@10")
    args = parser.parse_args()
    print(table(args.files, [float(m) for m in args.minutes.split(",")], args.metric))


if __name__ == "__main__":
    main()
