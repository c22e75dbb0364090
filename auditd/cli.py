"""``sensor-auditd``: thin click commands over the library; no logic lives here.

Exit status: 0 success, 2 bad usage or configuration (one line naming file, key, problem),
1 any other failure.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import replace
from functools import wraps
from pathlib import Path
from typing import IO, Any, TypeVar

import click

from auditd import __version__, logs
from auditd.adapters.config.catalog import load_catalog
from auditd.adapters.config.daemon import default_config, load_daemon_config
from auditd.adapters.sources.export_mappings import load_mapping, sensor_units_with
from auditd.adapters.sources.export_times import parse_offset
from auditd.adapters.sources.exports import device_and_path
from auditd.adapters.store import Store
from auditd.app.daemon import START_WITHOUT_CONFIG, Daemon, bounds_from, limits_from
from auditd.app.importer import import_file
from auditd.app.replay import Replayer
from auditd.errors import AuditdError, ConfigError, InputError, UsageError
from auditd.model import iso
from auditd.sim import evaluate as ev
from auditd.sim import simulate as sim
from auditd.sim.demo import run_demo
from auditd.sim.live import publish
from auditd.sim.scenario import default_scenario, load_scenario
from auditd.views import alerts as alert_view
from auditd.views import inventory
from auditd.views import quarantine as quarantine_view
from auditd.views import report as rep
from auditd.views import status as status_view
from auditd.views.alerts import parse_until

F = TypeVar("F", bound=Callable[..., Any])


def _errors_to_exit(func: F) -> F:
    """Turn the errors we raise on purpose into one line on stderr and their exit status."""

    @wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except AuditdError as exc:
            click.echo(f"sensor-auditd: error: {exc}", err=True)
            sys.exit(exc.exit_status)

    return wrapper  # type: ignore[return-value]


CONFIG_OPTION = click.option(
    "--config", "config_path", type=click.Path(dir_okay=False, path_type=Path),
    help="Daemon configuration (TOML).")


def store_option(help_text: str = "The daemon's SQLite store (default: store.path of "
                 "--config, or of the default configuration).") -> Callable[[F], F]:
    """``--store DB`` (alias ``--db``): every command that takes a store spells it both
    ways, so a habit formed on one command works on the others."""
    return click.option("--store", "--db", "store_path",
                        type=click.Path(dir_okay=False, path_type=Path), help=help_text)


STORE_OPTION = store_option()


def _load(config_path: Path | None, profiles: Path | None = None,
          references: Path | None = None) -> tuple[Any, Any]:
    cfg = load_daemon_config(config_path) if config_path else default_config()
    if profiles is not None:
        cfg = replace(cfg, profiles_dir=profiles)
    if references is not None:
        cfg = replace(cfg, references_dir=references)
    return cfg, load_catalog(cfg)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="sensor-auditd")
def main() -> None:
    """Sensor calibration audit daemon for edge and IoT fleets."""


@main.command("check-config")
@CONFIG_OPTION
@click.option("--profiles", type=click.Path(file_okay=False, path_type=Path))
@click.option("--references", type=click.Path(file_okay=False, path_type=Path))
@_errors_to_exit
def check_config(config_path: Path | None, profiles: Path | None,
                 references: Path | None) -> None:
    """Validate the configuration, profiles and references without connecting."""
    cfg, catalog = _load(config_path, profiles, references)
    click.echo(f"ok: site {cfg.site}, gateway {cfg.gateway}, broker {cfg.broker.host}:"
               f"{cfg.broker.port}, {len(catalog.profiles)} profiles "
               f"({', '.join(sorted(catalog.profiles))}), {len(catalog.references)} references")


@main.command()
@CONFIG_OPTION
@_errors_to_exit
def run(config_path: Path | None) -> None:
    """Run the daemon: ingest over MQTT, audit on schedule, publish findings (needs --config)."""
    if config_path is None:
        raise UsageError(START_WITHOUT_CONFIG, "--config")
    cfg, catalog = _load(config_path)
    logs.configure(cfg.log.level, cfg.log.format)
    sys.exit(Daemon(cfg, catalog).run())


@main.command()
@CONFIG_OPTION
@STORE_OPTION
@click.option("--json", "as_json", is_flag=True, help="One JSON object instead of text.")
@_errors_to_exit
def status(config_path: Path | None, store_path: Path | None, as_json: bool) -> None:
    """The daemon's state at a glance, read (read-only) from its store."""

    with _open_store(config_path, store_path, writes=False) as store:
        report = status_view.gather(store, time.time())
    click.echo(json.dumps(status_view.as_json(report), indent=2) if as_json
               else status_view.render(report, time.time()))


@main.command()
@click.argument("recording", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--profiles", type=click.Path(file_okay=False, path_type=Path),
              help="Directory of device profiles (default: the config's).")
@click.option("--references", type=click.Path(file_okay=False, path_type=Path),
              help="Directory of reference entries (default: the config's).")
@click.option("--out", "out_path", type=click.Path(dir_okay=False, path_type=Path),
              required=True, help="Findings, one JSON object a line.")
@click.option("--summary", "summary_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Write the run's summary (JSON) here as well as to stdout.")
@store_option("Keep the replay's SQLite store here (default: a temporary file; never the "
              "config's store.path, which is a daemon's).")
@click.option("--tickets", "tickets_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Write the ticket requests the alerts raise here, one JSON a line.")
@CONFIG_OPTION
@_errors_to_exit
def replay(recording: Path, profiles: Path | None, references: Path | None, out_path: Path,
           summary_path: Path | None, store_path: Path | None,
           config_path: Path | None, tickets_path: Path | None = None) -> None:
    """Run a recorded JSON Lines file through the live pipeline, offline."""
    logs.configure("warning", "auto", stream=sys.stderr)
    cfg, catalog = _load(config_path, profiles, references)
    with ExitStack() as stack:
        out = stack.enter_context(_open_for_writing(out_path, "--out"))
        summary_file = (stack.enter_context(_open_for_writing(summary_path, "--summary"))
                        if summary_path else None)
        if tickets_path is not None:
            _open_for_writing(tickets_path, "--tickets").close()
        tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="sensor-auditd-replay-"))
        store = stack.enter_context(Store(store_path or Path(tmp) / "replay.db",
                                          synchronous="normal", bounds=bounds_from(cfg)))
        summary = Replayer(cfg, catalog, store, limits_from(cfg), out,
                           tickets_out=tickets_path).run(recording)
        text = json.dumps(summary, indent=2)
        if summary_file is not None:
            summary_file.write(text + "\n")
    click.echo(text)


@main.command()
@click.option("--scenario", "scenario_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Scenario (TOML, or JSON by suffix); default: the built-in demo fleet.")
@click.option("--seed", type=int, help="Override the scenario's seed.")
@click.option("--out", "out_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Write a replay file (JSON Lines) here.")
@click.option("--truth", "truth_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Write what was injected (JSON) here, for `evaluate`.")
@click.option("--references-out", type=click.Path(file_okay=False, path_type=Path),
              help="Write reference entries for the scenario's sites the catalog lacks.")
@click.option("--mqtt", "broker", help="Publish live to HOST:PORT instead of writing a file.")
@click.option("--speed", type=float, default=600.0, show_default=True,
              help="Live: simulated seconds per wall second (the fleet ends at now).")
@click.option("--profiles", type=click.Path(file_okay=False, path_type=Path))
@click.option("--references", type=click.Path(file_okay=False, path_type=Path))
@CONFIG_OPTION
@_errors_to_exit
def simulate(scenario_path: Path | None, seed: int | None, out_path: Path | None,
             truth_path: Path | None, references_out: Path | None, broker: str | None,
             speed: float, profiles: Path | None, references: Path | None,
             config_path: Path | None) -> None:
    """Generate a synthetic fleet with known faults: a replay file or live MQTT, plus truth."""
    if (out_path is None) == (broker is None):
        raise UsageError("give exactly one of --out FILE or --mqtt HOST:PORT", "--out/--mqtt")
    cfg, catalog = _load(config_path, profiles, references)
    scenario = load_scenario(scenario_path) if scenario_path else default_scenario()
    if seed is not None:
        scenario = replace(scenario, seed=seed)
    result = sim.generate(scenario, catalog)
    if references_out is not None:
        sim.write_references(result, references_out)
    if out_path is not None:
        sim.write_recording(result, out_path, truth_path)
        click.echo(f"wrote {out_path} ({len(result.messages)} messages, "
                   f"{len(result.truth['faults'])} faults)")
        return
    publish(result, broker or "", speed, truth_path, cfg)


@main.command()
@click.option("--truth", "truth_path", required=True,
              type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--findings", "findings_path", required=True,
              type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--out", "out_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Also write the scores as JSON here.")
@_errors_to_exit
def evaluate(truth_path: Path, findings_path: Path, out_path: Path | None) -> None:
    """Score findings against a simulation's truth: recall, precision, onset, false alarms."""
    scores = ev.score(ev.load_truth(truth_path), ev.load_findings(findings_path))
    if out_path is not None:
        with _open_for_writing(out_path, "--out") as handle:
            handle.write(json.dumps(scores, indent=2) + "\n")
    click.echo(ev.render(scores))


@main.command()
@click.option("--fleets", "fleet_count", type=click.IntRange(1, 1000), default=60,
              show_default=True, help="How many fleets (the first N of the seed's matrix).")
@click.option("--jobs", type=click.IntRange(1, 64), default=1, show_default=True,
              help="Fleets replayed at once (one process each).")
@click.option("--seed", type=int, default=1, show_default=True,
              help="The matrix's seed: each fleet's own seed is seed x 1000 + its index.")
@click.option("--out", "out_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Also write the distribution and every fleet's scores (JSON) here.")
@click.option("--only", multiple=True,
              help="Run only the fleet of this name (or index, as 07) again; repeatable.")
@click.option("--hours", "max_hours", type=click.FloatRange(2, 96),
              help="Cut every fleet to at most this many hours (a quick look while "
                   "developing; not the matrix's figures).")
@click.option("--no-user-forms", "fallback_forms", is_flag=True,
              help="Write the fleets' profiles in forms older releases accept (a reference "
                   "model with tolerance tables, quantity \"dimensionless\" for \"[]\").")
@click.option("--quiet", is_flag=True, help="No line per fleet while it runs.")
@_errors_to_exit
def matrix(fleet_count: int, jobs: int, seed: int, out_path: Path | None,
           only: tuple[str, ...], max_hours: float | None, fallback_forms: bool,
           quiet: bool) -> None:
    """Replay many varied fleets through the live pipeline and report the distribution of
    finding precision/recall, cause@1, onset error and alert precision."""
    from auditd.sim import matrix as mx

    logs.configure("warning", "auto", stream=sys.stderr)
    options = mx.MatrixOptions(fleets=fleet_count, seed=seed, jobs=jobs,
                               user_forms=not fallback_forms, only=only,
                               max_hours=max_hours)

    def progress(score: Any) -> None:
        if not quiet:
            click.echo(mx.render_fleet(score.as_json()), err=True)

    result = mx.run_matrix(options, progress)
    if out_path is not None:
        with _open_for_writing(out_path, "--out") as handle:
            handle.write(json.dumps(result, indent=1) + "\n")
    click.echo(mx.render(result))


@main.group()
def realdata() -> None:
    """Real co-location data (../shared/data) through the live path, beside what the data
    themselves say."""


_REALDATA_OPTIONS = [
    click.option("--out", "out_path", type=click.Path(dir_okay=False, path_type=Path),
                 help="Also write the result (JSON) here."),
    click.option("--no-user-forms", "fallback_forms", is_flag=True,
                 help="Profiles in forms older releases accept (a reference model with "
                      "tolerance tables, quantity \"dimensionless\" for \"[]\")."),
]


def _realdata_options(func: F) -> F:
    for option in reversed(_REALDATA_OPTIONS):
        func = option(func)
    return func


@realdata.command("epa")
@click.argument("directory", required=False, type=click.Path(file_okay=False, path_type=Path))
@click.option("--audit-interval", default="1h", show_default=True,
              help="How often the replay audits (the daemon's default: hourly).")
@_realdata_options
@_errors_to_exit
def realdata_epa(directory: Path | None, audit_interval: str, out_path: Path | None,
                 fallback_forms: bool) -> None:
    """The EPA sensortoolkit month live (24 h windows, EPA targets) beside `colocate`."""
    from auditd.sim import realdata as rd

    logs.configure("warning", "auto", stream=sys.stderr)
    path = directory if directory is not None else rd.default_path("epa")
    result = rd.run_epa(path, user_forms=not fallback_forms, audit_interval=audit_interval)
    _write_result(result, out_path)
    click.echo(rd.render_epa(result))


@realdata.command("uci")
@click.argument("file", required=False, type=click.Path(dir_okay=False, path_type=Path))
@_realdata_options
@_errors_to_exit
def realdata_uci(file: Path | None, out_path: Path | None, fallback_forms: bool) -> None:
    """The UCI Air Quality year: a four-week calibration audited daily over 7-day windows."""
    from auditd.sim import realdata as rd

    logs.configure("warning", "auto", stream=sys.stderr)
    path = file if file is not None else rd.default_path("uci")
    result = rd.run_uci(path, user_forms=not fallback_forms)
    _write_result(result, out_path)
    click.echo(rd.render_uci(result))


def _write_result(result: dict[str, Any], out_path: Path | None) -> None:
    if out_path is not None:
        with _open_for_writing(out_path, "--out") as handle:
            handle.write(json.dumps(result, indent=1) + "\n")


JSON_OPTION = click.option("--json", "as_json", is_flag=True, help="JSON for scripts.")


def _store_path(config_path: Path | None, store_path: Path | None) -> Path:
    """``--store``, else the store.path of ``--config`` (or of the default configuration)."""
    return store_path or (load_daemon_config(config_path) if config_path
                          else default_config()).store.path


def _open_store(config_path: Path | None, db_path: Path | None, *,
                writes: bool = True) -> Store:
    """The store; a missing one is a usage error, not a new empty database created by
    mistake. ``writes=False`` for the commands that only look (``status``, ``devices``,
    ``history``, ``findings``): read-only, so looking never migrates or writes a live
    daemon's file."""
    path = _store_path(config_path, db_path)
    if not path.is_file():
        problem = ("no database here (has the daemon, or a replay with --store, run with this "
                   "configuration?)")
        if db_path:
            raise InputError(str(path), "--store", problem)
        raise ConfigError(str(path), "store.path", problem)
    return Store(path, read_only=True) if not writes else Store(path)


@main.command()
@CONFIG_OPTION
@STORE_OPTION
@JSON_OPTION
@_errors_to_exit
def devices(config_path: Path | None, store_path: Path | None, as_json: bool) -> None:
    """List devices: model, firmware, install and calibration dates, last seen, open findings."""
    _, catalog = _load(config_path)
    with _open_store(config_path, store_path, writes=False) as store:
        rows = inventory.read_devices(store, catalog)
    click.echo(json.dumps(inventory.as_json(rows), indent=2) if as_json
               else inventory.format_devices(rows))


@main.command()
@click.option("--device", help="Only this device (an fnmatch glob: th-north-*).")
@click.option("--reason", help="Only this rejection reason (docs/operations.md lists them).")
@click.option("--limit", type=click.IntRange(1), default=50, show_default=True,
              help="At most this many lines, most recently seen first.")
@CONFIG_OPTION
@STORE_OPTION
@JSON_OPTION
@_errors_to_exit
def quarantine(device: str | None, reason: str | None, limit: int, config_path: Path | None,
               store_path: Path | None, as_json: bool) -> None:
    """What was refused: reason, device, topic, first and last seen, count, a sample."""
    quarantine_view.check_reason(reason)
    with _open_store(config_path, store_path, writes=False) as store:
        groups = store.quarantine.groups(device=device, reason=reason, limit=limit)
    click.echo(json.dumps(quarantine_view.as_json(groups), indent=2, ensure_ascii=False)
               if as_json else quarantine_view.table(groups), nl=as_json)


@main.command()
@click.argument("device")
@CONFIG_OPTION
@STORE_OPTION
@JSON_OPTION
@_errors_to_exit
def history(device: str, config_path: Path | None, store_path: Path | None,
            as_json: bool) -> None:
    """One device's timeline: metadata versions, events and changes of verdict, in order."""
    with _open_store(config_path, store_path, writes=False) as store:
        entries = inventory.read_timeline(store, device)
    if not entries:
        raise UsageError(f"no history for device {device!r}", "DEVICE")
    click.echo(json.dumps(inventory.as_json(entries), indent=2) if as_json
               else inventory.format_timeline(entries))


@main.command("import")
@click.argument("exports", nargs=-1, required=True)
@store_option("The SQLite store to import into (default: store.path of --config; one of "
              "the two is needed).")
@click.option("--site", help="Site of the imported devices (default: the config's).")
@click.option("--mapping", "mapping_paths", multiple=True,
              type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Export mapping (TOML), tried before the shipped ones; repeatable.")
@click.option("--profiles", type=click.Path(file_okay=False, path_type=Path),
              help="Device profiles: canonical units of sensors they name.")
@CONFIG_OPTION
@_errors_to_exit
def import_(exports: tuple[str, ...], store_path: Path | None, site: str | None,
            mapping_paths: tuple[Path, ...], profiles: Path | None,
            config_path: Path | None) -> None:
    """Import instrument or agency exports (ID=PATH or PATH) into the store."""

    if store_path is None and config_path is None:
        raise UsageError("name the store to import into: --store DB, or --config FILE for "
                         "its store.path", "--store")
    cfg = load_daemon_config(config_path) if config_path else default_config()
    mappings = [load_mapping(p) for p in mapping_paths]
    units = sensor_units_with(profiles)
    summaries = []
    with Store(store_path or cfg.store.path) as store:
        for arg in exports:
            device, path = device_and_path(arg)
            outcome = import_file(store, path, device, site or cfg.site, time.time(),
                                  mappings=mappings, sensor_units=units)
            summaries.append(outcome.to_json())
    click.echo(json.dumps({"imports": summaries}, indent=2, ensure_ascii=False))


@main.command()
@click.argument("sensor_exports", nargs=-1)
@click.option("--reference", required=True,
              help="Reference export (ID=PATH or PATH); with --from-store, its device id.")
@click.option("--out", "out_path", type=click.Path(dir_okay=False, path_type=Path),
              required=True, help="RESULT.json.")
@click.option("--html", "html_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Also write the co-location section of the calibration report (HTML; "
                   "needs the 'report' extra: matplotlib).")
@click.option("--profiles", type=click.Path(file_okay=False, path_type=Path),
              help="Device profiles: canonical units and [colocation] targets they set.")
@click.option("--mapping", "mapping_paths", multiple=True,
              type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Export mapping (TOML), tried before the shipped ones; repeatable.")
@store_option("The store to read from (--from-store) or to record --apply in.")
@click.option("--from-store", is_flag=True,
              help="Evaluate devices in the store: SENSOR_EXPORTs are device ids.")
@click.option("--site", help="Site of the devices (default: the config's).")
@click.option("--day-offset", default="UTC", show_default=True,
              help="24-hour days in UTC, or in local standard time given as +HH:MM/-HH:MM.")
@click.option("--train-fraction", type=click.FloatRange(0.05, 0.95), default=0.5,
              show_default=True, help="Share of the period a correction is fit on.")
@click.option("--humidity-term", is_flag=True,
              help="Fit the correction with a humidity term (the EPA's PM2.5 form).")
@click.option("--correct", "correct", multiple=True,
              help="Sensor to fit a correction for (default: each with 1-hour targets).")
@click.option("--apply", "apply_", is_flag=True,
              help="Record each correction that helped as a calibration event in --store.")
@CONFIG_OPTION
@_errors_to_exit
def colocate(sensor_exports: tuple[str, ...], reference: str, out_path: Path,
             html_path: Path | None, profiles: Path | None, mapping_paths: tuple[Path, ...],
             store_path: Path | None, from_store: bool, site: str | None, day_offset: str,
             train_fraction: float, humidity_term: bool, correct: tuple[str, ...],
             apply_: bool, config_path: Path | None) -> None:
    """Judge co-located units against a reference monitor (EPA performance targets)."""
    # Imported here, not at the top: co-location's arithmetic needs the calibration core
    # (scipy), which nothing else the command line starts may load (a daemon pays for it
    # on its first audit only).
    from auditd.adapters.config.targets import targets_with
    from auditd.app import colocate as co

    cfg = load_daemon_config(config_path) if config_path else default_config()
    site = site or cfg.site
    if html_path is not None:
        from auditd.views.colocation import require_matplotlib  # imports co-location

        require_matplotlib()
    if (from_store or apply_) and store_path is None:
        raise UsageError("--from-store and --apply need --store DB", "--store")
    if not from_store and not sensor_exports:
        raise UsageError("name at least one unit's export", "SENSOR_EXPORT")
    options = co.Options(site=site, day_origin_s=-parse_offset(day_offset, "--day-offset"),
                         train_fraction=train_fraction, humidity_term=humidity_term,
                         correct=correct or None)
    targets = targets_with(profiles)
    with ExitStack() as stack:
        out = stack.enter_context(_open_for_writing(out_path, "--out"))
        html = stack.enter_context(_open_for_writing(html_path, "--html")) if html_path else None
        store = stack.enter_context(Store(store_path)) if store_path else None
        if from_store:
            assert store is not None
            sources = co.sources_from_store(store, site, reference, sensor_exports)
        else:
            sources = co.sources_from_files(
                reference, sensor_exports, mappings=[load_mapping(p) for p in mapping_paths],
                sensor_units=sensor_units_with(profiles))
        result = co.run(sources, targets, options)
        body = dict(result.result)
        if apply_:
            assert store is not None
            events, skipped = co.calibration_events(result, site, time.time())
            co.record_events(store, events)
            body["applied"] = [{"device": e.device, **e.data} for e in events]
            body["not_applied"] = skipped
        out.write(json.dumps(body, indent=2, ensure_ascii=False) + "\n")
        if html is not None:
            from auditd.views.colocation import render  # matplotlib: only with --html

            html.write(render(result))
    click.echo(co.summary_table(result))


@main.command()
@store_option("The daemon's or a replay's SQLite store (default: store.path of --config).")
@click.option("--html", "html_path", type=click.Path(dir_okay=False, path_type=Path),
              help="One self-contained HTML page with plots (needs the [report] extra).")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--csv", "csv_path", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--profiles", type=click.Path(file_okay=False, path_type=Path))
@click.option("--references", type=click.Path(file_okay=False, path_type=Path))
@CONFIG_OPTION
@_errors_to_exit
def report(store_path: Path | None, html_path: Path | None, json_path: Path | None,
           csv_path: Path | None, profiles: Path | None, references: Path | None,
           config_path: Path | None) -> None:
    """The calibration report of a store: fleet summary, then every failing stream."""
    if not (html_path or json_path or csv_path):
        raise UsageError("name at least one output", "--html/--json/--csv")
    logs.configure("warning", "auto", stream=sys.stderr)
    _, catalog = _load(config_path, profiles, references)
    for path, option in ((html_path, "--html"), (json_path, "--json"), (csv_path, "--csv")):
        if path is not None:
            _open_for_writing(path, option).close()
    with _open_store(config_path, store_path) as store:
        data = rep.collect(store, catalog, source=str(store.path))
    rep.write(data, html_path=html_path, json_path=json_path, csv_path=csv_path)
    click.echo(rep.summary_line(data)
               + "".join(f"; wrote {p}" for p in (html_path, json_path, csv_path) if p))


@main.command()
@click.option("--broker", help="Use this broker (HOST:PORT) instead of a private mosquitto.")
@click.option("--seconds", type=float, default=60.0, show_default=True,
              help="About how long the fleet takes to publish.")
@click.option("--days", type=float, default=1.5, show_default=True,
              help="How much of the fleet's life those seconds cover.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path),
              default=Path("sensor-auditd-demo"), show_default=True,
              help="Where the store, the daemon's log, the truth and the report go.")
@click.option("--profiles", type=click.Path(file_okay=False, path_type=Path))
@click.option("--references", type=click.Path(file_okay=False, path_type=Path))
@_errors_to_exit
def demo(broker: str | None, seconds: float, days: float, out_dir: Path,
         profiles: Path | None, references: Path | None) -> None:
    """A simulated fleet, live, through the real daemon: failing streams and a report."""
    if seconds <= 0 or days <= 0:
        raise UsageError("must be positive", "--seconds/--days")
    try:
        status = run_demo(out_dir=out_dir, broker=broker, seconds=seconds, days=days,
                          profiles=profiles, references=references, echo=click.echo)
    except KeyboardInterrupt:
        click.echo("\ninterrupted", err=True)
        status = 130
    sys.exit(status)


def _open_for_writing(path: Path, option: str) -> IO[str]:
    """Open an output before the work starts, so a bad path fails fast with exit 2."""
    try:
        return path.open("w", encoding="utf-8")
    except OSError as exc:
        raise InputError(str(path), option, exc.strerror or str(exc)) from exc


# --------------------------------------------------------------------------- alerts

@main.command()
@CONFIG_OPTION
@STORE_OPTION
@click.option("--json", "as_json", is_flag=True, help="One JSON array, members nested.")
@_errors_to_exit
def findings(config_path: Path | None, store_path: Path | None, as_json: bool) -> None:
    """Open alerts: most severe first, grouped alerts with their members."""

    with _open_store(config_path, store_path, writes=False) as store:
        now = time.time()
        alerts, silences = store.alerts.select(), store.alerts.silences(active_at=now)
        if as_json:
            click.echo(json.dumps(alert_view.as_json(alerts, silences, now), indent=2))
        else:
            click.echo(alert_view.table(alerts, silences, now, store.tickets.counts()),
                       nl=False)


@main.command()
@click.argument("alert_ids", nargs=-1, required=True)
@click.option("--by", help="Who takes it (shown in `findings`).")
@click.option("--note", help="Free text kept with the alert.")
@CONFIG_OPTION
@STORE_OPTION
@_errors_to_exit
def ack(alert_ids: tuple[str, ...], by: str | None, note: str | None,
        config_path: Path | None, store_path: Path | None) -> None:
    """Acknowledge open alerts by id (a unique prefix such as sa-1f2e3d4c is enough)."""

    with _open_store(config_path, store_path) as store:
        for prefix in alert_ids:
            hits = store.alerts.find(prefix)
            if len(hits) != 1:
                raise UsageError(f"{prefix}: {'no alert' if not hits else 'ambiguous'} "
                                 f"({len(hits)} alerts match)")
            done = store.alerts.acknowledge(hits[0].id, at=time.time(), by=by, note=note)
            click.echo(f"{hits[0].id}: {'acknowledged' if done else 'not open, unchanged'}")


@main.group(invoke_without_command=True)
@click.option("--device", help="Device id or fnmatch glob (th-north-*).")
@click.option("--sensor", help="Only this sensor (default: every sensor of the device).")
@click.option("--until", "until_text", help="End, RFC 3339 (2026-12-01T08:00:00Z).")
@click.option("--for", "for_text", help="Or a duration from now (8h, 2d).")
@click.option("--reason", help="Why (shown in `silence list`).")
@click.option("--by", help="Who.")
@CONFIG_OPTION
@STORE_OPTION
@click.pass_context
@_errors_to_exit
def silence(ctx: click.Context, device: str | None, sensor: str | None,
            until_text: str | None, for_text: str | None, reason: str | None, by: str | None,
            config_path: Path | None, store_path: Path | None) -> None:
    """Hold back tickets for a device's alerts until a time (`list`, `expire ID`)."""

    ctx.ensure_object(dict)
    ctx.obj.update(config_path=config_path, store_path=store_path)
    if ctx.invoked_subcommand is not None:
        return
    if device is None or (until_text is None) == (for_text is None):
        raise UsageError("silence needs --device and one of --until or --for "
                         "(or a subcommand: list, expire)")
    now = time.time()
    try:
        until = parse_until(until_text, for_text, now)
    except ValueError as exc:
        raise UsageError(f"--until/--for: {exc}") from None
    with _open_store(config_path, store_path) as store:
        ident = store.alerts.add_silence(device, sensor, until, at=now, by=by, reason=reason)
    click.echo(f"silence {ident}: {device} {sensor or '(all sensors)'} until "
               f"{iso(until) or ''}")


def _group_store(ctx: click.Context, config_path: Path | None, store_path: Path | None, *,
                 writes: bool = True) -> Store:
    """A subcommand's own --config/--store, else those given before it."""
    return _open_store(config_path or ctx.obj.get("config_path"),
                       store_path or ctx.obj.get("store_path"), writes=writes)


@silence.command("list")
@click.option("--all", "show_all", is_flag=True, help="Expired silences too.")
@CONFIG_OPTION
@STORE_OPTION
@click.pass_context
@_errors_to_exit
def silence_list(ctx: click.Context, show_all: bool, config_path: Path | None,
                 store_path: Path | None) -> None:
    """Silences still active (all of them with --all)."""

    now = time.time()
    with _group_store(ctx, config_path, store_path, writes=False) as store:
        silences = store.alerts.silences(active_at=None if show_all else now)
        click.echo(alert_view.silence_table(silences, now), nl=False)


@silence.command("expire")
@click.argument("silence_id", type=int)
@CONFIG_OPTION
@STORE_OPTION
@click.pass_context
@_errors_to_exit
def silence_expire(ctx: click.Context, silence_id: int, config_path: Path | None,
                   store_path: Path | None) -> None:
    """End a silence now."""
    with _group_store(ctx, config_path, store_path) as store:
        done = store.alerts.expire_silence(silence_id, at=time.time())
    click.echo(f"silence {silence_id}: {'expired' if done else 'not active, unchanged'}")


@main.command()
@click.option("--retry-dead", is_flag=True, help="Queue dead-lettered deliveries again.")
@click.option("--json", "as_json", is_flag=True)
@CONFIG_OPTION
@STORE_OPTION
@_errors_to_exit
def tickets(retry_dead: bool, as_json: bool, config_path: Path | None,
            store_path: Path | None) -> None:
    """Ticket deliveries by sink and state, and the dead-lettered ones."""
    with _open_store(config_path, store_path, writes=retry_dead) as store:
        if retry_dead:
            click.echo(f"{store.tickets.retry_dead(at=time.time())} deliveries queued again")
        counts, dead = store.tickets.counts(), store.tickets.dead_letters()
    if as_json:
        click.echo(json.dumps({"sinks": counts, "dead": [d.to_json() for d in dead]}, indent=2))
        return
    for sink, states in sorted(counts.items()):
        click.echo(f"{sink}: " + ", ".join(f"{n} {state}" for state, n in sorted(states.items())))
    for item in dead:
        click.echo(f"dead: {item.sink} {item.idempotency_key} after {item.attempts} "
                   f"attempts: {item.error}")
    if not counts:
        click.echo("No ticket deliveries.")


# --------------------------------------------------------------------------- fleet

DSN_OPTION = click.option(
    "--dsn", envvar="SENSOR_AUDITD_DSN", required=True, metavar="DSN",
    help="The fleet's PostgreSQL: postgresql://user@host:port/db (or SENSOR_AUDITD_DSN).")


def _fleet_module(name: str) -> Any:
    """``auditd.fleet.{name}``, imported on use: psycopg is the optional ``fleet`` extra,
    and a gateway's ``sensor-auditd`` must start without it."""
    import importlib

    try:
        return importlib.import_module(f"auditd.fleet.{name}")
    except ModuleNotFoundError as exc:
        if exc.name and exc.name.split(".")[0] in ("psycopg", "psycopg_pool"):
            raise UsageError("the fleet commands need PostgreSQL's client: "
                             "pip install 'sensor-auditd[fleet]'", "fleet") from None
        raise


def _fleet_app() -> Any:
    """``auditd.fleet.app``: import, report, status."""
    return _fleet_module("app")


@main.group()
def fleet() -> None:
    """The fleet service: all gateways in PostgreSQL (docs/fleet.md)."""


@fleet.command("import")
@click.argument("stores", nargs=-1, required=True, metavar="[NAME=]STORE.db...")
@DSN_OPTION
@_errors_to_exit
def fleet_import(stores: tuple[str, ...], dsn: str) -> None:
    """Load gateway stores (what `run` and `replay --store` write); NAME is the gateway's
    name (default: the file's stem). Importing a store twice changes nothing."""
    app = _fleet_app()
    from auditd.fleet.adapters.gateway_store import GatewayFile

    sources = [GatewayFile.from_argument(text) for text in stores]
    with app.FleetStore.open(dsn) as store:
        result = app.import_stores(store, sources)
    click.echo(json.dumps(result.to_json(), indent=2))


@fleet.command("report")
@DSN_OPTION
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Write the report (JSON) here.")
@click.option("--html", "html_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Write the report as a web page with plots here.")
@click.option("--profiles", type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Device profiles: tolerances and calibration intervals per model.")
@click.option("--correction", type=click.Choice(["holm", "bh"]), default="holm",
              show_default=True, help="Multiple-comparison correction of the cohort tests.")
@click.option("--alpha", type=click.FloatRange(0.0, 1.0, min_open=True), default=0.05,
              show_default=True, help="Significance after the correction.")
@click.option("--horizon", "horizon_days", type=click.FloatRange(0.0), default=30.0,
              show_default=True, help="List devices due within this many days.")
@_errors_to_exit
def fleet_report(dsn: str, json_path: Path | None, html_path: Path | None,
                 profiles: Path | None, correction: str, alpha: float,
                 horizon_days: float) -> None:
    """Cohorts failing across sites, reference health, drift per model, the due list."""
    app = _fleet_app()
    from auditd.fleet.analysis.report import ReportOptions
    from auditd.fleet.views.report import report_json, report_text

    outputs = [(_open_for_writing(p, opt), p) for p, opt in
               ((json_path, "--json"), (html_path, "--html")) if p is not None]
    with ExitStack() as stack:
        for handle, _ in outputs:
            stack.enter_context(handle)
        with app.FleetStore.open(dsn) as store:
            report = app.fleet_report(store, time.time(), profiles, ReportOptions(
                alpha, "bh" if correction == "bh" else "holm", horizon_days))
        for handle, path in outputs:
            if path == json_path:
                handle.write(json.dumps(report_json(report), indent=2, ensure_ascii=False)
                             + "\n")
            else:
                from auditd.fleet.views.html import report_html
                handle.write(report_html(report))
    click.echo(report_text(report))


@fleet.command("status")
@DSN_OPTION
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@_errors_to_exit
def fleet_status(dsn: str, as_json: bool) -> None:
    """Gateways and when each was last heard from, the replicas and their backlog."""
    app = _fleet_app()
    from auditd.fleet.views.status import status_json, status_text

    with app.FleetStore.open(dsn) as store:
        status = app.fleet_status(store)
    now = time.time()
    click.echo(json.dumps(status_json(status, now), indent=2) if as_json
               else status_text(status, now))


@fleet.command("run")
@click.option("--config", "config_path", required=True,
              type=click.Path(dir_okay=False, path_type=Path),
              help="The fleet's configuration (TOML, examples/fleet.toml).")
@click.option("--replica", help="This replica's name (default: the host name); it makes the "
              "MQTT client id, so keep it stable across restarts (the systemd instance).")
@_errors_to_exit
def fleet_run(config_path: Path, replica: str | None) -> None:
    """Consume the gateways' upstream topics into the fleet's database (one replica)."""
    sys.exit(_fleet_module("live").run_replica(config_path, replica))


if __name__ == "__main__":
    main()
