"""`patron recommend train|evaluate|models|activate`: recommender versions."""

from __future__ import annotations

import json
from typing import Any

import click

from api.cli.common import database_option, runtime_for, settings_for
from api.cli.main import main
from domain.metadata import Role


@main.group()
def recommend() -> None:
    """Train, evaluate and switch recommender models."""


def _cli_meta(reason: str) -> Any:
    """An operator at the console acts as an admin, named after their login."""
    import getpass
    import uuid

    from domain.metadata import Channel, EventMetadata

    return EventMetadata(actor_id=f"cli:{getpass.getuser()}", actor_role=Role.ADMIN,
                         channel=Channel.SYSTEM, correlation_id=f"cli-{uuid.uuid4().hex}",
                         causation_id=None, request_id=uuid.uuid4().hex, reason=reason)


@recommend.command("train")
@database_option
@click.option("--reason", default="trained from the command line", show_default=True)
@click.option("--activate/--no-activate", default=True, show_default=True,
              help="Serve the new version at once.")
@click.option("--force", is_flag=True,
              help="Activate it even if it loses to the popularity baseline (with --reason).")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def recommend_train(database_url: str | None, reason: str, activate: bool, force: bool,
                    as_json: bool) -> None:
    """Train a model version on the read models as they are now (progress on stderr)."""
    runtime = runtime_for(settings_for(database_url))
    try:
        runtime.runner.run_once()  # train on everything recorded so far
        report = runtime.recommender.train(
            _cli_meta(reason), activate=activate, force=force,
            progress=lambda message: click.echo(f"  {message}", err=True))
    except Exception as error:
        raise click.ClickException(f"training failed: {error}") from None
    finally:
        runtime.close()
    if as_json:
        click.echo(json.dumps(report.as_dict()))
        return
    hybrid = report.metrics.get("hybrid") or {}
    baseline = report.metrics.get("popularity") or {}
    click.echo(f"version {report.version} ({'active' if report.activated else 'not active'}): "
               f"{report.interactions} interactions, {report.members} members, "
               f"{report.products} products, {report.seconds:.1f}s")
    if hybrid:
        k = report.metrics["k"]
        click.echo(f"  precision@{k} {hybrid['precision']:.4f} vs popularity "
                   f"{baseline.get('precision', 0):.4f}; recall@{k} {hybrid['recall']:.4f}; "
                   f"NDCG@{k} {hybrid['ndcg']:.4f}")
    if report.note:
        click.echo(f"  {report.note}")


@recommend.command("evaluate")
@database_option
@click.option("--ratings", type=click.Path(exists=True, dir_okay=False), default=None,
              help="A MovieLens u.data file (user, item, rating, timestamp; tab-separated).")
@click.option("--synthetic", is_flag=True,
              help="The built-in synthetic shop (100,000 interactions, planted tastes).")
@click.option("--k", default=10, show_default=True, type=click.IntRange(1, 100))
@click.option("--split", "split_kind", type=click.Choice(["random", "temporal"]),
              default="random", show_default=True)
@click.option("--seed", default=42, show_default=True, type=int)
@click.option("--relevance-threshold", type=float, default=None,
              help="Count only held-out interactions this strong as relevant (e.g. 4).")
@click.option("--items", "items_path", type=click.Path(exists=True, dir_okay=False),
              default=None,
              help="Item metadata for --ratings: a CSV/TSV with a header (item_id, title, "
                   "categories, brand, price, released) or MovieLens' u.item.")
@click.option("--diversity", type=click.FloatRange(0.0), default=None,
              help="Fix the served model's popularity penalty instead of choosing it on "
                   "validation.")
@click.option("--json", "as_json", is_flag=True, help="Print the figures as JSON.")
def recommend_evaluate(database_url: str | None, ratings: str | None, synthetic: bool, k: int,
                       split_kind: str, seed: int, relevance_threshold: float | None,
                       items_path: str | None, diversity: float | None,
                       as_json: bool) -> None:
    """Offline evaluation against the popularity baseline: the shop's own behaviour by
    default, a MovieLens file with --ratings (and item metadata with --items), or the
    synthetic shop with --synthetic. Precision and coverage are always reported
    together; "served" names the model the shop serves (the hybrid)."""
    from domain.recommendation.evaluation import default_models, evaluate
    from domain.recommendation.items import read_items
    from domain.recommendation.models import HybridModel

    if ratings and synthetic:
        raise click.UsageError("choose --ratings or --synthetic, not both")
    if items_path and not ratings:
        raise click.UsageError("--items describes the items of --ratings; give both")
    try:
        interactions, catalogue, source = _evaluation_data(database_url, ratings, synthetic)
        if items_path:
            catalogue = dict(read_items(items_path))
    except (OSError, ValueError) as error:
        raise click.ClickException(str(error)) from None
    if not interactions:
        raise click.ClickException(f"{source} holds no interactions to evaluate")
    served: list[HybridModel] = []

    def hybrid() -> HybridModel:
        served.append(HybridModel(diversity=diversity, k=k, seed=seed))
        return served[-1]

    models = {**default_models(catalogue or None), "hybrid": hybrid}
    report = evaluate(interactions, catalogue or None, models, k=k, split_kind=split_kind,
                      seed=seed, relevance_threshold=relevance_threshold,
                      progress=lambda message: click.echo(f"  {message}", err=True))
    tuning = served[-1].tuning if served else {}
    if as_json:
        click.echo(json.dumps({"source": source, "k": report.k, "split": report.split,
                               "seed": report.seed, "items": report.items,
                               "served": "hybrid", "served_tuning": tuning,
                               **{name: result.figures()
                                  for name, result in report.results.items()}}))
        return
    click.echo(f"{source}: {report.train_interactions} training and {report.test_interactions}"
               f" held-out interactions, {report.items} items; {report.split} split, seed "
               f"{report.seed}; novelty = {report.novelty_definition}")
    click.echo(report.table())
    if "skipped" in tuning:
        click.echo(f"served: hybrid, not tuned: {tuning['skipped']}")
    elif tuning:
        click.echo(f"served: hybrid, chosen on validation: weights {tuning['weights']}, "
                   f"EASE λ {tuning['ease_l2']}, diversity {tuning['diversity']}")


def _evaluation_data(database_url: str | None, ratings: str | None,
                     synthetic: bool) -> tuple[list[Any], dict[str, Any], str]:
    from domain.recommendation.interactions import derive_interactions
    from domain.recommendation.movielens import read_movielens
    from domain.recommendation.synthetic import generate

    if ratings:
        return read_movielens(ratings), {}, ratings
    if synthetic:
        data = generate()
        return list(data.interactions), dict(data.catalogue), "synthetic shop"
    from api.recommender import read_training_data

    settings = settings_for(database_url)
    runtime = runtime_for(settings)
    try:
        with runtime.sync_engine.connect() as conn:
            data = read_training_data(conn)
        now = runtime.clock.now()
    finally:
        runtime.close()
    interactions = derive_interactions(data.signals, now, settings.recommender_weights)
    return interactions, data.catalogue, settings.database.safe_url


@recommend.command("models")
@database_option
def recommend_models(database_url: str | None) -> None:
    """Every trained version, newest first, with its state and offline precision."""
    runtime = runtime_for(settings_for(database_url))
    try:
        versions = runtime.recommender.versions()
    finally:
        runtime.close()
    if not versions:
        click.echo("no model has been trained yet: run `patron recommend train`")
    for row in reversed(versions):
        precision = (row["metrics"] or {}).get("hybrid", {}).get("precision")
        shown = "-" if precision is None else f"{precision:.4f}"
        click.echo(f"v{row['version']:<4} {row['state']:<8} trained "
                   f"{row['trained_at']:%Y-%m-%d %H:%M} by {row['trained_by']}: "
                   f"{row['interactions']} interactions, precision {shown}")


@recommend.command("activate")
@click.argument("version", type=click.IntRange(1))
@click.option("--reason", required=True, help="Why (recorded for auditors).")
@click.option("--force", is_flag=True,
              help="Serve it even if it lost to the popularity baseline.")
@database_option
def recommend_activate(version: int, reason: str, force: bool, database_url: str | None) -> None:
    """Serve VERSION from now on (a newer one, or an older one to roll back)."""
    from domain.errors import DomainError

    runtime = runtime_for(settings_for(database_url))
    try:
        runtime.recommender.activate(version, _cli_meta(reason), force=force)
    except DomainError as error:
        raise click.ClickException(error.message) from None
    finally:
        runtime.close()
    click.echo(f"version {version} serves now")
