"""The benchmark scripts keep working: each runs at a tiny size and prints its figures.

Nothing here looks at the figures' values: speed is reported by the scripts, not asserted.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

TINY = {
    "commands": ["--members", "8", "--commands", "16", "--warmup", "2", "--concurrency", "2"],
    "member_query": ["--members", "4", "--requests", "20", "--warmup", "2", "--concurrency", "2"],
    "rebuild": ["--members", "20", "--no-warm", "--demo-members", "4", "--demo-days", "30"],
    "checkout": ["--members", "4", "--checkouts", "16", "--warmup", "2", "--concurrency", "2",
                 "--demo-members", "4", "--demo-days", "30"],
    "tracking": ["--shipments", "4", "--updates", "16", "--warmup", "2", "--concurrency", "2",
                 "--subscribers", "2", "--latency-updates", "4"],
    "registration": ["--registrations", "8", "--concurrency", "2", "--groups", "3",
                     "--warmup", "2"],
    "behaviour": ["--clients", "2", "--batches", "8", "--batch-size", "20", "--warmup", "2",
                  "--history", "1200", "--latency-calls", "10", "--latency-warmup", "2"],
    "edge": ["--hostile", "200", "--concurrency", "2", "--probes", "50", "--repeats", "2"],
    "fuzz": ["--requests", "40"],
    "spine": ["--members", "4", "--writes", "16"],
    "writes": ["--members", "8", "--commands", "16"],
}
EXPECTED = {
    "commands": ("http_commands_per_s", "direct_commands_per_s", "ratio_http_to_direct"),
    "member_query": ("graphql_requests_per_s", "bare_requests_per_s", "ratio_graphql_to_bare"),
    "rebuild": ("rebuild_events_per_s", "read_decode_events_per_s",
                "ratio_rebuild_to_read_decode",
                *(f"demo_{which}_{figure}" for which in ("member_profiles", "loyalty", "all")
                  for figure in ("rebuild_events_per_s", "read_decode_events_per_s"))),
    "checkout": ("http_checkouts_per_s", "direct_checkouts_per_s", "ratio_http_to_direct",
                 "loyalty_rebuild_events_per_s", "read_decode_events_per_s"),
    "tracking": ("http_updates_per_s", "direct_updates_per_s", "ratio_http_to_direct",
                 "notify_received", "notify_from_sent_p50_ms"),
    "registration": ("reserved_registrations_per_s", "baseline_registrations_per_s",
                     "ratio_reserved_to_baseline", "contended_winners"),
    "behaviour": ("http_events_per_s", "direct_events_per_s", "ratio_http_to_direct",
                  "member_command_before_p50_ms", "member_command_after_p50_ms",
                  "projection_events_per_s"),
    "edge": ("hostile_per_s", "healthz_probes", "healthz_p50_ms", "bomb_refused_p50_ms",
             "costly_refused_p50_ms", "bomb_parse_and_price_p50_ms"),
    "fuzz": ("requests", "requests_per_s"),
    "spine": ("statements_per_pass", "visible_1w_p50_ms", "visible_8w_p50_ms"),
    "writes": ("statements_per_command", "direct_1w_commands_per_s", "bare_1w_saves_per_s",
               "ratio_direct_to_bare_8w"),
}


@pytest.mark.parametrize("name", sorted(TINY))
def test_a_benchmark_prints_its_figures_beside_its_baseline(name: str, tmp_path: Path) -> None:
    database = tmp_path / "bench.db"
    result = subprocess.run(
        [sys.executable, "-m", f"tests.benchmarks.{name}", "--database-url",
         f"sqlite:///{database}", *TINY[name]],
        cwd=ROOT, capture_output=True, text=True, timeout=180, check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    assert figures["benchmark"] == name
    for key in EXPECTED[name]:
        assert figures[key] > 0, (key, figures)


def test_the_offline_recommender_benchmark_prints_every_model_beside_popularity() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "tests.benchmarks.recommend_offline", "--interactions", "3000",
         "--users", "100", "--items", "300"],
        cwd=ROOT, capture_output=True, text=True, timeout=180, check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    assert figures["benchmark"] == "recommend_offline"
    for model in ("popularity", "collaborative", "content", "hybrid"):
        assert figures[f"{model}_precision"] > 0, (model, figures)
