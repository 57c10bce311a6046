"""The write-path figures in one run, on SQLite and PostgreSQL, each beside its baseline.

Runs `commands` (GraphQL vs direct), `checkout` (place + pay over GraphQL vs direct),
`spine` (commit → visible p50/p99, 1 and 8 writers) and `writes` (direct commands/s with
1/2/4/8 writers vs eventsourcing's bare save, statements per command), one after another
(never two at once), each on a fresh database, and prints a Markdown table to stderr and
every figure as one JSON object on stdout. Each benchmark catches up every projection
before its measured phase.

    python -m tests.benchmarks.write_path [--backends sqlite,postgres] [--size small|full]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent.parent

SIZES: dict[str, dict[str, list[str]]] = {
    "small": {
        "commands": ["--members", "100", "--commands", "400", "--warmup", "20"],
        "checkout": ["--members", "50", "--checkouts", "200", "--warmup", "10",
                     "--demo-members", "5", "--demo-days", "30"],
        "spine": ["--members", "50", "--writes", "200"],
        "writes": ["--members", "64", "--commands", "400"],
    },
    "full": {"commands": [], "checkout": [], "spine": [], "writes": []},
}

ROWS = [
    ("commands", "GraphQL commands/s (8 clients) : direct (8 threads)",
     "http_commands_per_s", "direct_commands_per_s", "ratio_http_to_direct"),
    ("checkout", "place + pay over GraphQL /s : direct (8 threads)",
     "http_checkouts_per_s", "direct_checkouts_per_s", "ratio_http_to_direct"),
    ("spine", "commit → visible p50 / p99 ms, 1 writer",
     "visible_1w_p50_ms", "visible_1w_p99_ms", None),
    ("spine", "commit → visible p50 / p99 ms, 8 writers",
     "visible_8w_p50_ms", "visible_8w_p99_ms", None),
    *[("writes", f"direct commands/s : bare save/s, {w} writer(s)",
       f"direct_{w}w_commands_per_s", f"bare_{w}w_saves_per_s", f"ratio_direct_to_bare_{w}w")
      for w in (1, 2, 4, 8)],
    ("writes", "statements per command", "statements_per_command", None, None),
    ("spine", "statements per runner pass (one event, 14 read models)",
     "statements_per_pass", None, None),
]


def run_one(name: str, backend: str, extra: list[str]) -> dict[str, Any]:
    argv = [sys.executable, "-m", f"tests.benchmarks.{name}", *extra]
    if backend == "postgres":
        argv.append("--postgres")
    print(f"running {name} on {backend} …", file=sys.stderr, flush=True)
    result = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        print(result.stderr[-3000:], file=sys.stderr)
        return {}
    return dict(json.loads(result.stdout.strip().splitlines()[-1]))


def cell(figures: dict[str, Any], first: str, second: str | None, ratio: str | None) -> str:
    if not figures:
        return "failed"
    text = str(figures.get(first))
    if second:
        text += f" : {figures.get(second)}" if ratio else f" / {figures.get(second)}"
    if ratio:
        text += f" ({figures.get(ratio)})"
    return text


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--backends", default="sqlite,postgres")
    parser.add_argument("--size", choices=sorted(SIZES), default="small")
    args = parser.parse_args(argv)
    backends = [b for b in args.backends.split(",") if b]
    results: dict[str, dict[str, dict[str, Any]]] = {b: {} for b in backends}
    for backend in backends:
        for name, extra in SIZES[args.size].items():
            results[backend][name] = run_one(name, backend, extra)
    lines = ["| figure | " + " | ".join(backends) + " |",
             "|---|" + "---|" * len(backends)]
    for name, label, first, second, ratio in ROWS:
        cells = [cell(results[b][name], first, second, ratio) for b in backends]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    print("\n".join(lines), file=sys.stderr)
    print(json.dumps({"benchmark": "write_path", **results}), flush=True)


if __name__ == "__main__":
    main()
