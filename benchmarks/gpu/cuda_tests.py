"""Part 1 of the GPU suite: the `cuda` tests (`pytest -m cuda`), run in this process, every outcome written to
`cuda_tests.json`. In the smoke run they are the CPU rehearsal (`LMINDEXER_CUDA_TESTS_ON_CPU=1`: the same tests on
device "cpu")."""

from __future__ import annotations

import os
from pathlib import Path

from suite_common import PartContext

REPO_ROOT = Path(__file__).resolve().parents[2]
# Every file that holds `cuda` tests. Only these are collected: other test files import packages the GPU machine
# lacks (datasets, evaluate, faiss), and `-m cuda` would still import them.
CUDA_TEST_FILES = ["tests/test_cuda.py", "tests/test_hub.py"]


class OutcomeRecorder:
    """A pytest plugin that writes each test's outcome, duration and failure text to the part's result file."""

    def __init__(self, results):
        self.results = results

    def pytest_runtest_logreport(self, report):
        failed_setup = report.when == "setup" and not report.passed
        if report.when != "call" and not failed_setup:
            return
        entry = {"test": report.nodeid, "outcome": report.outcome, "seconds": round(report.duration, 3)}
        if report.skipped and isinstance(report.longrepr, tuple):
            entry["reason"] = str(report.longrepr[2])
        elif report.failed:
            entry["error"] = str(report.longrepr)[-3000:]
        self.results.append("tests", entry)


def run(context: PartContext) -> None:
    import pytest

    results = context.result_file()
    if context.smoke:
        os.environ["LMINDEXER_CUDA_TESTS_ON_CPU"] = "1"
    results.set("files", CUDA_TEST_FILES)
    results.set("tests", [])
    os.chdir(REPO_ROOT)
    exit_code = pytest.main(
        ["-m", "cuda", "-q", "-p", "no:cacheprovider", *CUDA_TEST_FILES], plugins=[OutcomeRecorder(results)]
    )
    outcomes = [entry["outcome"] for entry in results.data["tests"]]
    results.set("counts", {name: outcomes.count(name) for name in ("passed", "failed", "skipped")})
    results.set("pytest_exit_code", int(exit_code))
    if int(exit_code) != 0:
        raise RuntimeError(f"pytest -m cuda exited with {int(exit_code)}: {outcomes.count('failed')} test(s) failed.")
    results.set("status", "ok")
