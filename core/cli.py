"""Command line: `python -m core train | list | show | stop | resume | experiment | sweep |
workshop`."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections.abc import Callable, Collection
from pathlib import Path
from typing import Any, NoReturn

from core.config import FIELDS, PRESETS, ConfigError, RunConfig, build_config
from core.experiments.registry import ALIASES, EXPERIMENTS
from core.experiments.sweep import CONFIRM_ABOVE
from core.models.model_source import ModelError
from core.runtime.failures import ErrorKind
from core.runtime.slots import MAX_RUNS_ENV
from core.runtime.store import RUNS_DIR_ENV, RunStore, RunWriter

EXIT_BAD_INPUT = 2
# Set per run by the experiment (init_from: a chained arm starts from its own earlier run).
EXPERIMENT_OWN_FIELDS = ("recipe", "seed", "threads", "init_from")


class _Parser(argparse.ArgumentParser):
    """argparse, except that a usage mistake is one line like every other error here."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_BAD_INPUT, f"error: {message} (see {self.prog} --help)\n")


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


class _Switch(argparse.BooleanOptionalAction):
    """--x sets a bool field to True and --no-x to False. argparse's own action reads every
    flag that starts with --no- as False, so for the field no_eval `--no-eval` kept the
    evaluations on."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: object, option_string: str | None = None) -> None:
        setattr(namespace, self.dest, option_string == self.option_strings[0])


def _add_config_flags(parser: argparse.ArgumentParser, skip: Collection[str] = (),
                      defaults: Callable[[str], str] | None = None) -> None:
    """One flag per RunConfig field, documented with the field's own help text and the value
    used without the flag (`defaults(name)` where a command's runs do not use RunConfig's)."""
    for f in dataclasses.fields(RunConfig):
        if f.name in skip:
            continue
        used = defaults(f.name) if defaults is not None else repr(f.default)
        help_text = f"{f.metadata['help']} (default: {used})"
        if f.type in ("bool", bool):
            parser.add_argument(_flag(f.name), dest=f.name, default=None, help=help_text,
                                action=_Switch)
        elif f.name == "pass_k":
            parser.add_argument(_flag(f.name), dest=f.name, default=None, metavar="K,K,...",
                                type=lambda s: tuple(int(k) for k in s.split(",") if k),
                                help=help_text)
        else:
            kind = {"int": int, "float": float, "str": str}[str(f.type)]
            parser.add_argument(_flag(f.name), dest=f.name, type=kind, default=None,
                                help=help_text)


def _runs_dir_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--runs-dir", type=Path, default=None,
                        help=f"Run store folder (default: ${RUNS_DIR_ENV} or ./runs).")


def _backend_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--backend", choices=("local", "ray"), default="local",
                        help="local: this machine's queue; ray: a Ray cluster (pip install "
                        "ray), each run one task holding max(1, threads) CPUs (default: local).")
    parser.add_argument("--ray-address", default=None,
                        help="The Ray cluster to use (default: $RAY_ADDRESS, else a local Ray "
                        "started for this command).")


def _per_experiment(value: Callable[[Any], str]) -> str:
    """One value if every experiment shares it, else `name: value` for each."""
    values = {e.name: value(e) for e in EXPERIMENTS.values()}
    if len(set(values.values())) == 1:
        return next(iter(values.values()))
    return "; ".join(f"{name}: {v}" for name, v in values.items())


def _experiment_default(field: str) -> str:
    """The value an experiment's runs use for `field` when no flag is given."""
    def used(e: Any) -> str:
        values = {**e.base_values(), "task": e.task, "recipe": e.recipes[0]}
        return repr(getattr(build_config(**values), field))

    return _per_experiment(used)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m core", description="Calibration Lab engine. Recipes, "
                     "confidence signals and metrics: docs/science.md.")
    sub = parser.add_subparsers(dest="command", required=True)
    train = sub.add_parser("train", help="train one run; prints its id on the last line")
    train.add_argument("--preset", choices=None, default=None,
                       help=f"Start from a preset ({', '.join(PRESETS)}); flags override it.")
    _add_config_flags(train)
    _runs_dir_flag(train)
    listing = sub.add_parser("list", help="list runs")
    listing.add_argument("--json", action="store_true", help="print JSON")
    _runs_dir_flag(listing)
    show = sub.add_parser("show", help="show one run")
    show.add_argument("run_id")
    show.add_argument("--json", action="store_true", help="print the whole run as JSON")
    _runs_dir_flag(show)
    stop = sub.add_parser("stop", help="stop a queued or running run after its current step")
    stop.add_argument("run_id")
    _runs_dir_flag(stop)
    resume = sub.add_parser(
        "resume", help="continue a stopped or failed run from its last checkpoint",
        description="Continue a stopped or failed run, as the same run, from its last "
        "checkpoint (the checkpoint_every setting); metrics logged after the checkpoint are "
        "redone. Trains in this process, like train; prints the run id last.")
    resume.add_argument("run_id")
    _runs_dir_flag(resume)
    experiment = sub.add_parser(
        "experiment", help="train a named experiment's recipes x seeds and write a report",
        description="Train one run per (recipe, seed) with one shared set of settings (the "
        "experiment's; a setting flag overrides it for every run), through the same queue "
        "as the app's runs, then write report.html, summary.csv and summary.json. Prints the "
        "output folder. Experiments: " + "; ".join(
            f"{e.name}: {', '.join(e.arms)} x seeds {','.join(map(str, e.seeds))} on task "
            f"{e.task}, preset {e.preset}" for e in EXPERIMENTS.values())
        + ". " + "; ".join(f"{a} is another name for {n}" for a, n in ALIASES.items())
        + ". The defaults below are the values its runs use.")
    experiment.add_argument("name", choices=[*EXPERIMENTS, *ALIASES], help="which experiment")
    experiment.add_argument("--seeds", default=None, metavar="S,S,...",
                            help="Seeds, comma-separated (default: the experiment's, "
                            + _per_experiment(lambda e: ",".join(map(str, e.seeds))) + ").")
    experiment.add_argument("--recipes", default=None, metavar="R,R,...",
                            help="Recipes, comma-separated (default: the experiment's, "
                            + _per_experiment(lambda e: ",".join(e.arms)) + ").")
    experiment.add_argument(
        "--workers", type=int, default=None,
        help="How many of the experiment's runs may be queued or training at once (default: "
        "all of them). The shared queue still caps how many train at once across the app, "
        f"the CLI and experiments (${MAX_RUNS_ENV}, default one per CPU core); each run gets "
        "cores ÷ min(workers, cap) threads.")
    experiment.add_argument("--out", type=Path, default=None,
                            help="Output folder (default: runs/experiments/NAME-TASK-TIME).")
    _add_config_flags(experiment, skip=EXPERIMENT_OWN_FIELDS, defaults=_experiment_default)
    _runs_dir_flag(experiment)
    _backend_flags(experiment)
    sweep = sub.add_parser(
        "sweep", help="train every combination of a grid of settings x seeds; write a report",
        description="Train one run per combination of the --grid values and seed, through "
        "the same launch path as an experiment, then write report.html, summary.csv and "
        "summary.json. Every combination is checked before anything starts. Runs are "
        "ordinary runs tagged with the sweep's tag. Prints the output folder.")
    sweep.add_argument("--grid", action="append", default=[], metavar="FIELD=V1,V2,...",
                       help="A setting and its values (repeatable; any setting flag below, "
                       "values written as that flag takes them; true/false for on/off ones).")
    sweep.add_argument("--seeds", default="0", metavar="S,S,...",
                       help="Seeds, comma-separated (default: 0).")
    sweep.add_argument("--preset", default=None,
                       help=f"Start from a preset ({', '.join(PRESETS)}); flags override it.")
    sweep.add_argument("--yes", action="store_true",
                       help=f"Run a grid of more than {CONFIRM_ABOVE} runs.")
    sweep.add_argument("--tag", default=None,
                       help="Tag on every run of the sweep (default: sweep-FIELDS-TIME).")
    sweep.add_argument("--workers", type=int, default=None,
                       help="How many of the sweep's runs may be launched at once (default: "
                       "all; the local queue or Ray's CPU accounting still caps training).")
    sweep.add_argument("--out", type=Path, default=None,
                       help="Output folder (default: runs/sweeps/TAG).")
    sweep.add_argument("--plan", type=Path, default=None, help=argparse.SUPPRESS)  # the app's
    _backend_flags(sweep)
    _add_config_flags(sweep, skip=("seed",))
    _runs_dir_flag(sweep)
    _add_workshop(sub)
    execute = sub.add_parser("_execute", help=argparse.SUPPRESS)
    execute.add_argument("run_dir", type=Path)
    warm = sub.add_parser("_warm", help=argparse.SUPPRESS)  # core.runtime.warm.start_server
    warm.add_argument("--dir", type=Path, required=True)
    warm.add_argument("--key", required=True)
    repeated = sub.add_parser("_consistency", help=argparse.SUPPRESS)  # runner.start_consistency
    repeated.add_argument("--target", action="append", required=True, metavar="start|end:DIR")
    repeated.add_argument("--out", type=Path, required=True)
    repeated.add_argument("--questions", type=int, required=True)
    repeated.add_argument("--repetitions", type=int, required=True)
    repeated.add_argument("--temperatures", required=True, metavar="T,T,...")
    repeated.add_argument("--threads", type=int, default=1)
    return parser


def _fail(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return EXIT_BAD_INPUT


def cmd_train(args: argparse.Namespace) -> int:
    from core.data.task_data import pin_task
    from core.runtime.runner import preflight

    overrides: dict[str, Any] = {name: getattr(args, name) for name in FIELDS}
    store = RunStore(args.runs_dir)
    try:
        config = build_config(args.preset, **overrides)
        preflight(config, store.root)
        config = pin_task(config, store.root)  # a task file is copied beside the runs
    except (ConfigError, ModelError, ValueError) as e:
        return _fail(str(e))
    writer = store.create(config)
    print(f"run {writer.run_id} started in {writer.path}", file=sys.stderr)
    return _train_here(config, writer)


def _train_here(config: RunConfig, writer: RunWriter) -> int:
    from core.runtime.runner import execute

    status = execute(config, writer)
    print(f"run ended: {status}", file=sys.stderr)
    print(writer.run_id)
    return 0 if status in ("finished", "stopped") else 1


def cmd_resume(args: argparse.Namespace) -> int:
    from core.runtime.runner import ResumeError, reopen

    try:
        writer, config = reopen(args.run_id, args.runs_dir)
    except KeyError as e:
        return _fail(str(e.args[0]))
    except (ResumeError, ConfigError, ModelError, ValueError) as e:
        return _fail(str(e))
    print(f"run {writer.run_id} continues in {writer.path}", file=sys.stderr)
    return _train_here(config, writer)


def cmd_execute(args: argparse.Namespace) -> int:
    return execute_dir(args.run_dir)


def execute_dir(run_dir: Path) -> int:
    """Entry point of a background run whose folder `launch` (or a resume) already made, in
    a fresh process or one forked from a warm server."""
    from core.runtime.runner import execute

    writer = RunWriter(run_dir)
    writer.claim()
    try:
        config = RunConfig.from_dict(json.loads((run_dir / "config.json").read_text()))
    except (OSError, ValueError, TypeError) as e:  # edited or damaged since the launch
        writer.update_status(status="failed", error=f"config.json is unusable: {e}",
                             error_kind=ErrorKind.CONFIG)
        return 1
    execute(config, writer)
    return 0


def cmd_warm(args: argparse.Namespace) -> int:
    """A warm server (core.runtime.warm), started by the runner when a run needs one."""
    from core.runtime import warm
    from core.runtime.runner import record_end

    return warm.serve(args.dir, args.key, execute_dir, record_end)


def cmd_list(args: argparse.Namespace) -> int:
    runs = RunStore(args.runs_dir).list()
    if args.json:
        print(json.dumps([{"id": r.id, "status": r.status, "recipe": r.config.get("recipe"),
                           "seed": r.config.get("seed"), "step": r.step,
                           "total_steps": r.total_steps, "error": r.error} for r in runs]))
        return 0
    for r in runs:
        print(f"{r.id}  {r.status:<8}  {r.step}/{r.total_steps}  {r.config.get('recipe', '?')}"
              + (f"  {r.error}" if r.error else ""))
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    try:
        record = RunStore(args.runs_dir).load(args.run_id)
    except KeyError as e:
        return _fail(str(e.args[0]))
    if args.json:
        print(json.dumps(record.to_dict()))
        return 0
    print(f"{record.id}: {record.status}, step {record.step}/{record.total_steps}")
    if record.error:
        print(f"error: {record.error}")
    for e in record.evals:
        ver = e["calibration"]["verbalized"]
        print(f"  eval @ {e['step']:>4}: accuracy {e['accuracy']:.3f}  greedy "
              f"{e['greedy_accuracy']:.3f}  pass@k {e['pass_at_k']}  verbalized ECE "
              f"{ver['ece']}  AUROC {ver['auroc']}")
    return 0


def cmd_stop(args: argparse.Namespace) -> int:
    from core.runtime.runner import stop

    try:
        stopped = stop(args.run_id, args.runs_dir)
    except KeyError as e:
        return _fail(str(e.args[0]))
    if not stopped:
        return _fail(f"run {args.run_id} is not queued or running")
    print(f"asked run {args.run_id} to stop")
    return 0


def cmd_experiment(args: argparse.Namespace) -> int:
    from core.experiments.orchestrator import run_experiment

    overrides = {name: getattr(args, name) for name in FIELDS
                 if name not in EXPERIMENT_OWN_FIELDS and name != "task"}
    try:
        seeds = ([int(s) for s in args.seeds.split(",") if s.strip()]
                 if args.seeds is not None else None)
    except ValueError:
        return _fail(f"--seeds takes comma-separated integers like 0,1,2, got {args.seeds!r}")
    if args.workers is not None and args.workers < 1:
        return _fail(f"--workers must be >= 1, got {args.workers}")
    try:
        recipes = ([r.strip() for r in args.recipes.split(",") if r.strip()]
                   if args.recipes else None)
        result = run_experiment(args.name, task=args.task, seeds=seeds, recipes=recipes,
                                workers=args.workers, out=args.out, runs_dir=args.runs_dir,
                                overrides=overrides, backend=args.backend,
                                ray_address=args.ray_address)
    except (ConfigError, ModelError, ValueError) as e:
        return _fail(str(e))
    for t in result.summary["targets"]:
        print(f"  {t['status']:<7} {t['title']}", file=sys.stderr)
    print(f"report: {result.out / 'report.html'}", file=sys.stderr)
    print(result.out)
    if result.interrupted:
        return 130
    return 1 if result.failed else 0


def _add_workshop(sub: Any) -> None:
    ws = sub.add_parser("workshop", help="participant codes and the HTTPS server of a workshop")
    action = ws.add_subparsers(dest="action", required=True)
    make = action.add_parser("codes", help="make N participant codes (and the host's code the "
                             "first time) and print them as a sheet to hand out")
    make.add_argument("count", type=int)
    make.add_argument("--names", type=Path, default=None,
                      help="a text file, one display name per line (default: Participant N)")
    action.add_parser("list", help="list the codes' ids, names and state (never the codes)")
    revoke = action.add_parser("revoke", help="revoke one code, by id or name: its session "
                               "is signed out at its next action")
    revoke.add_argument("who")
    serve = action.add_parser("serve", help="serve the app to the room over HTTPS (make "
                              "workshop): the host's certificate, else a self-signed one")
    serve.add_argument("--port", type=int, default=8501)
    serve.add_argument("--cert", type=Path, default=None, help="PEM certificate (with --key)")
    serve.add_argument("--key", type=Path, default=None, help="PEM private key (with --cert)")
    for p in action.choices.values():
        _runs_dir_flag(p)


def cmd_workshop(args: argparse.Namespace) -> int:
    from core.runtime import codes, serve, workshop

    root = args.runs_dir
    if args.action == "codes":
        if args.count < 1:
            return _fail("give how many codes to make, 1 or more")
        names = Path(args.names).read_text().splitlines() if args.names else []
        names = [n for n in map(workshop.clean_name, names) if n][:args.count]
        names += [f"Participant {i}" for i in range(len(names) + 1, args.count + 1)]
        book = codes.load(root)
        if book is None or not any(c.role == codes.HOST for c in book.live()):
            host = workshop.add_codes(["host"], codes.HOST, root)
            print(codes.sheet(host, "The host's code (keep it: it opens the Host page)"))
            print()
        print(codes.sheet(workshop.add_codes(names, codes.PARTICIPANT, root)))
    elif args.action == "list":
        book = codes.load(root)
        for c in book.codes if book else ():
            print(f"{c.id}\t{c.role}\t{'live' if c.live else 'revoked'}\t{c.name}")
    elif args.action == "revoke":
        try:
            print(f"revoked {workshop.revoke_code(args.who, root).id}")
        except KeyError as e:
            return _fail(str(e.args[0]))
    else:
        try:
            return serve.serve(args.port, args.cert, args.key, root)
        except serve.ServeError as e:
            return _fail(str(e))
    return 0



class _GridValueError(ValueError):
    pass


class _ValueParser(_Parser):
    """The setting flags alone, to read a grid value exactly as its flag would."""

    def error(self, message: str) -> NoReturn:
        raise _GridValueError(message)


def parse_grid(items: list[str]) -> dict[str, list[Any]]:
    """`FIELD=V1,V2` items as {field: [values]}, each value read by the field's own flag.
    Raises ConfigError naming the item; names are checked by the sweep's plan."""
    flags = _ValueParser(prog="grid", add_help=False)
    _add_config_flags(flags)
    grid: dict[str, list[Any]] = {}
    for item in items:
        name, sep, raw = item.partition("=")
        name = name.strip().replace("-", "_")
        if not sep or not name:
            raise ConfigError(f"--grid {item!r}: write FIELD=V1,V2,...")
        if name in grid:
            raise ConfigError(f"--grid {name} is given twice: put all its values in one "
                              f"--grid {name}=V1,V2")
        if name not in FIELDS:
            raise ConfigError(f"--grid {item!r}: unknown field {name!r} (see python -m core "
                              "train --help for the settings)")
        values = []
        for raw_value in (v.strip() for v in raw.split(",")):
            if not raw_value:
                continue
            if FIELDS[name].type in ("bool", bool):
                switch = {"true": "", "on": "", "false": "no-", "off": "no-"}.get(
                    raw_value.lower())
                if switch is None:
                    raise ConfigError(f"--grid {name}={raw_value}: {name} takes true or false")
                argv = ["--" + switch + name.replace("_", "-")]
            else:
                argv = [_flag(name), raw_value]
            try:
                values.append(getattr(flags.parse_args(argv), name))
            except _GridValueError as e:
                raise ConfigError(f"--grid {name}={raw_value}: {e}") from None
        grid[name] = values
    return grid


def cmd_sweep(args: argparse.Namespace) -> int:
    from core.experiments.sweep import plan_sweep, run_sweep

    fixed = {name: getattr(args, name) for name in FIELDS if name != "seed"}
    try:
        seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    except ValueError:
        return _fail(f"--seeds takes comma-separated integers like 0,1,2, got {args.seeds!r}")
    if args.workers is not None and args.workers < 1:
        return _fail(f"--workers must be >= 1, got {args.workers}")
    try:
        if args.plan is not None:  # written by the app (core.api.launch_sweep)
            saved = json.loads(args.plan.read_text())
            plan = plan_sweep(saved["grid"], saved["seeds"], None, saved["base"])
        else:
            grid = parse_grid(args.grid)
            plan = plan_sweep(grid, seeds, args.preset, {k: v for k, v in fixed.items()
                                                          if k not in grid})
        if len(plan.jobs) > CONFIRM_ABOVE and not args.yes:
            return _fail(f"the grid makes {len(plan.jobs)} runs (more than "
                         f"{CONFIRM_ABOVE}): add --yes to run them all")
        result = run_sweep(plan, args.backend, ray_address=args.ray_address, out=args.out,
                           runs_dir=args.runs_dir, tag=args.tag, workers=args.workers)
    except (ConfigError, ModelError, ValueError) as e:
        return _fail(str(e))
    print(f"report: {result.out / 'report.html'}", file=sys.stderr)
    print(result.out)
    if result.interrupted:
        return 130
    return 1 if result.failed else 0


def cmd_consistency(args: argparse.Namespace) -> int:
    """Entry point of a background consistency measurement (core.engine.consistency)."""
    from core.engine.consistency import Plan, Target, measure

    targets = []
    for spec in args.target:
        when, _, folder = spec.partition(":")
        if when not in ("start", "end") or not folder:
            return _fail(f"--target {spec!r}: give start:RUN_DIR or end:RUN_DIR")
        targets.append(Target(when, Path(folder)))
    plan = Plan(args.questions, args.repetitions,
                tuple(float(t) for t in args.temperatures.split(",")))
    measure(targets, plan, args.out, args.threads)
    return 0


COMMANDS = {"train": cmd_train, "list": cmd_list, "show": cmd_show, "stop": cmd_stop,
            "resume": cmd_resume, "experiment": cmd_experiment, "workshop": cmd_workshop,
            "sweep": cmd_sweep,
            "_execute": cmd_execute, "_warm": cmd_warm, "_consistency": cmd_consistency}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return COMMANDS[args.command](args)
