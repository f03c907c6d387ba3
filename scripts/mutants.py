"""Mutation testing, one area at a time: `make mutants`, or `python scripts/mutants.py AREA...`.

For each area, mutmut puts small bugs into the area's modules, one at a time, and runs
the area's own tests (only those that reach the changed function) against each: a
mutant those tests pass is a promise no test holds. Each area runs in a copy of the
tree of its own, `mutants/<area>/` (mutmut writes its mutated copies under it; nothing
in the tree is edited), with at most `MUTANT_CHILDREN` (2) mutants at once.

`--again` runs only the mutants that survived an area's last run, or that no test
reached (after new tests).
Prints, per module, killed / checked and the survivors; in `mutants/<area>/`,
`mutmut show NAME` prints one survivor's change. Logging calls are not mutated: what a
log line says is not a promise a test can hold.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections import Counter, defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / "mutants"

#: area -> (modules mutated, the tests that hold their promises)
AREAS: dict[str, tuple[list[str], list[str]]] = {
    "retry": (["middleware/retry_policy.py"],
              ["tests/middleware/test_retry_policy.py", "tests/middleware/test_retry_promises.py"]),
    "idempotency": (["middleware/idempotency.py", "state/idempotency.py"],
                    ["tests/middleware/test_idempotency.py",
                     "tests/middleware/test_idempotency_paths.py",
                     "tests/state/test_idempotency_upgrade.py",
                     "tests/switchyard/runtime/test_enqueue.py", "tests/state/test_retention.py"]),
    "admission": (["middleware/admission.py", "state/lanes.py"],
                  ["tests/middleware/test_admission.py", "tests/middleware/test_concurrency.py",
                   "tests/state/test_lanes.py"]),
    "dead_letters": (["middleware/dead_letter.py", "state/dead_letters.py"],
                     ["tests/middleware/test_dead_letter.py", "tests/state/test_retention.py",
                      "tests/web/test_dead_letters_api.py", "tests/test_sentry.py"]),
    "history": (["middleware/history.py", "state/history.py"],
                ["tests/middleware/test_history.py", "tests/middleware/test_history_order.py",
                 "tests/state/test_retention.py", "tests/middleware/test_retry_promises.py"]),
    "metrics": (["middleware/metrics.py", "state/metrics.py"],
                ["tests/middleware/test_metrics.py", "tests/state/test_metrics.py",
                 "tests/state/test_dashboard_state.py", "tests/middleware/test_retry_promises.py"]),
    "http": (["integrations/http.py"], ["tests/integrations/test_http.py"]),
}
#: Packages and files a test run needs (copied into each area's tree).
TREE = ["actors", "integrations", "middleware", "processing", "state", "store", "switchyard",
        "web", "tests", "schedules.py", "pyproject.toml"]
#: Mutants run at once: the machine has 2 cores, shared.
MUTANT_CHILDREN = int(os.environ.get("MUTANT_CHILDREN", "2"))
#: Lines never mutated: log calls (their words are not behaviour).
SKIP_LINES = [r"^\s*logger\.\w+\(", r"^\s*(message\.message_id|reason\.get)"]
KILLED = ("killed", "timeout", "caught by type check")
#: The hooks and stores are the same on both brokers: mutants run on the Redis broker's
#: tests only (`MUTANT_BROKERS=all` runs the RabbitMQ ones too; twice as long).
BROKERS = [] if os.environ.get("MUTANT_BROKERS") == "all" else ["-k", "not rabbitmq"]


def config(modules: list[str], tests: list[str]) -> str:
    def array(items: list[str]) -> str:
        return "[" + ", ".join(f'"{item}"' for item in items) + "]"

    return (
        "\n[tool.mutmut]\n"
        f"source_paths = {array(sorted({m.split('/')[0] for m in modules}))}\n"
        f"only_mutate = {array(modules)}\n"
        f"do_not_mutate_patterns = {array([p.replace(chr(92), chr(92) * 2) for p in SKIP_LINES])}\n"
        f"also_copy = {array([t for t in TREE if t not in ('tests', 'pyproject.toml')])}\n"
        f"pytest_add_cli_args = {array(['-p', 'no:cacheprovider', '-q', '-x', *BROKERS])}\n"
        f"pytest_add_cli_args_test_selection = {array(tests)}\n"
    )


def prepare(area: str) -> Path:
    """A copy of the tree for `area`, its pyproject naming what to mutate and test."""
    modules, tests = AREAS[area]
    where = WORK / area
    where.mkdir(parents=True, exist_ok=True)
    for name in TREE:
        source, target = ROOT / name, where / name
        if source.is_dir():
            shutil.copytree(source, target, dirs_exist_ok=True,
                            ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(source, target)
    text = (ROOT / "pyproject.toml").read_text()
    text = re.sub(r"\n\[tool\.mutmut\][^\[]*", "\n", text)
    (where / "pyproject.toml").write_text(text + config(modules, tests))
    return where


def mutmut(where: Path, *args: str) -> subprocess.CompletedProcess[str]:
    command = [str(Path(sys.executable).with_name("mutmut")), *args]
    return subprocess.run(command, cwd=where, env={**os.environ, "CI": "true"},
                          capture_output=True, text=True, check=False)


def run(area: str, *, again: bool = False) -> dict[str, Counter[str]]:
    """Mutate `area` (`again`: only the mutants that survived its last run)."""
    where = prepare(area)
    print(f"== {area}: mutating {', '.join(AREAS[area][0])}", flush=True)
    names = survivors(where) if again else []
    done = mutmut(where, "run", "--max-children", str(MUTANT_CHILDREN), *names)
    if done.returncode != 0:
        print(done.stdout[-2000:], done.stderr[-2000:], sep="\n")
    results = mutmut(where, "results", "--all", "true").stdout
    scores: dict[str, Counter[str]] = defaultdict(Counter)
    for line in results.splitlines():
        name, _, status = line.strip().rpartition(": ")
        if not name:
            continue
        module = name.split(".x\u01c1")[0].split(".x_")[0]
        scores[module][status] += 1
        if status not in KILLED:
            print(f"   {status}: {name}")
    return scores


def survivors(where: Path) -> list[str]:
    """The mutants of the last run that no test killed: those that survived, and those no
    test reached then (a new test may reach them now)."""
    results = mutmut(where, "results").stdout
    return [name for name, _, status in (line.strip().rpartition(": ")
                                         for line in results.splitlines())
            if name and status in ("survived", "no tests")]


def report(scores: dict[str, Counter[str]]) -> None:
    for module, counts in sorted(scores.items()):
        checked = sum(n for status, n in counts.items() if status != "not checked")
        killed = sum(counts[status] for status in KILLED)
        share = 100 * killed / checked if checked else 0.0
        print(f"{module:32} {killed:4d} / {checked:4d} killed ({share:5.1f} %)  {dict(counts)}")


def main(areas: list[str]) -> int:
    if {"-h", "--help"} & set(areas):
        print(__doc__)
        for area, (modules, tests) in AREAS.items():
            print(f"{area:13} {', '.join(modules)}\n{'':13} tests: {', '.join(tests)}")
        return 0
    again = "--again" in areas
    areas = [a for a in areas if a != "--again"]
    unknown = [a for a in areas if a not in AREAS]
    if unknown:
        print(f"unknown area(s) {', '.join(unknown)}; areas: {', '.join(AREAS)}")
        return 2
    everything: dict[str, Counter[str]] = {}
    for area in areas or list(AREAS):
        scores = run(area, again=again)
        report(scores)
        everything.update(scores)
    print("== all areas")
    report(everything)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
