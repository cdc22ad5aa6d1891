"""The command line's mistakes, found before JAX starts and worded for the user who typed them.

Each check raises `CommandLineError` with one line that names the flag or config field and what it
accepts; launch.py prints it as `effscale: error: ...` and exits with status 2 before anything
imports jax, compiles or writes to the workdir.
"""

from __future__ import annotations

import difflib
import importlib.util
import os
import re
from collections.abc import Sequence
from typing import Any

from absl import flags

from effscale import storage
from effscale.shard import CLAIM, resolve_shard

# Modes that write into the workdir (eval writes eval.json); status only reads it.
WRITING_MODES = frozenset({"train", "eval", "collect", "plot", "report"})
SWEEP_MODES = frozenset({"status", "collect", "plot", "report", "launch"})
_CONFIG_ARG = re.compile(r"-{1,2}config(?:=(.*))?")
_OVERRIDE_ARG = re.compile(r"-{1,2}(?:no)?config\.([^=]+)(?:=.*)?")
_CONFIG_FILE_ERROR = "Error whilst parsing config file:"  # ml_collections' wrapper around a config's own error


class CommandLineError(ValueError):
    """A mistake on the command line: a flag value, a config field or override, the workdir."""


def config_argument(argv: Sequence[str]) -> str | None:
    """The value given to --config ('file.py' or 'file.py:arg'), the last one if repeated; None if absent."""
    found = None
    for k, arg in enumerate(argv[1:], start=1):
        m = _CONFIG_ARG.fullmatch(arg)
        if m:
            found = m.group(1) if m.group(1) is not None else (argv[k + 1] if k + 1 < len(argv) else None)
    return found


def override_paths(argv: Sequence[str]) -> list[str]:
    """The dotted config paths of the --config.a.b=v overrides, in order."""
    return [m.group(1) for arg in argv[1:] if (m := _OVERRIDE_ARG.fullmatch(arg))]


def check_config_file(argument: str | None) -> None:
    """--config names a file that exists."""
    example = "e.g. --config configs/efficientnet.py:b0 (any file in configs/)"
    if not argument:
        raise CommandLineError(f"--config is missing: give a config file, {example}.")
    path = argument.split(":", 1)[0]
    if not os.path.isfile(path):
        what = "is a directory" if os.path.isdir(path) else "does not exist"
        raise CommandLineError(
            f"--config={argument}: the config file {path} {what}; give a Python config file, {example}."
        )


def unknown_field(config: Any, path: str) -> str | None:
    """Why the override `path` ('model.widht') names no field of `config`, or None when it does."""
    node, where = config, "config"
    for key in path.split("."):
        if not callable(getattr(node, "keys", None)):
            return f"{where} is a value, not a group of fields"
        fields = sorted(node.keys())
        if key not in fields:
            close = difflib.get_close_matches(key, fields, n=1)
            hint = f' Did you mean "{close[0]}"?' if close else ""
            return f"{where} has no field {key!r}.{hint} Its fields: {', '.join(fields)}."
        node, where = node[key], f"{where}.{key}"
    return None


def one_line(error: BaseException) -> str:
    """absl's or ml_collections' message as one line, with a config file's own error in place of its traceback."""
    text = str(error).strip()
    head = text.splitlines()[0] if text else type(error).__name__
    if head.endswith(_CONFIG_FILE_ERROR):
        head = head.removesuffix(_CONFIG_FILE_ERROR) + _root_message(error)
    return head.removeprefix("flag ")


def _root_message(error: BaseException) -> str:
    while (inner := error.__cause__ or error.__context__) is not None:
        error = inner
    message = error.args[0] if isinstance(error, KeyError) and error.args else str(error)
    return " ".join(line.strip() for line in str(message).splitlines() if line.strip())


def parse_flags(argv: Sequence[str], flag_values: flags.FlagValues) -> list[str]:
    """`flag_values(argv)` (absl's parse, which also loads the config file), its failures as CommandLineError."""
    argument = config_argument(argv)
    try:
        rest = flag_values(list(argv))
    except (flags.Error, AttributeError, KeyError, ValueError, OSError) as e:
        check_config_file(argument)
        raise CommandLineError(_explain(e, argument, override_paths(argv))) from None
    check_config_file(argument)
    return rest


def _explain(error: Exception, argument: str | None, paths: list[str]) -> str:
    if paths and argument and not isinstance(error, flags.Error):  # the config loaded; an override did not apply
        config = load_config(argument)
        for path in paths:
            problem = unknown_field(config, path)
            if problem:
                return f"--config.{path}: {problem}"
    return one_line(error)


def load_config(argument: str) -> Any:
    """get_config() of a config file 'file.py[:arg]', as ml_collections calls it (left unlocked)."""
    path, *arg = argument.split(":", 1)
    spec = importlib.util.spec_from_file_location("effscale_cli_config", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(*arg)


def check_command(
    extra_args: Sequence[str],
    mode: str,
    is_sweep: bool,
    shard: str | None,
    workdir: str,
    workdir_given: bool,
    launcher: str | None = None,
) -> None:
    """Everything about a parsed command line that can be judged without running anything."""
    if extra_args:
        raise CommandLineError(
            f"unexpected arguments: {' '.join(extra_args)}; every input is a flag (--config, --mode, --workdir, ...)."
        )
    if mode in SWEEP_MODES and not is_sweep:  # a single run's progress is its log, its result its result.json
        raise CommandLineError(
            f"--mode={mode} takes a sweep config (configs/sweeps/*.py), not a single run's; "
            "a single run's figures are in <workdir>/result.json (--mode=eval re-evaluates its checkpoint)."
        )
    check_launcher(mode, launcher)
    if shard:
        if not is_sweep:
            raise CommandLineError(f"--sweep_shard={shard} takes a sweep config (configs/sweeps/*.py).")
        try:
            if shard != CLAIM:  # 'auto' is resolved here too: a missing variable is an error before JAX starts
                resolve_shard(shard, os.environ)
        except ValueError as e:
            raise CommandLineError(str(e)) from None
    if mode != "info":
        flag = f"--workdir={workdir}" if workdir_given else f"the default workdir {workdir} (--workdir sets another)"
        # launch prints what to submit, often on a machine without the tasks' credentials: no bucket is asked.
        check_workdir(workdir, writes=mode in WRITING_MODES, flag=flag, reach=mode != "launch")


def check_launcher(mode: str, launcher: str | None) -> None:
    """--launcher names a known launcher with --mode=launch, and comes with no other mode."""
    from effscale.launchers import KINDS

    if mode == "launch" and launcher not in KINDS:
        given = f"--launcher={launcher}" if launcher else "--launcher is missing"
        raise CommandLineError(f"--mode=launch: {given}; give --launcher={'|'.join(KINDS)}.")
    if mode != "launch" and launcher:
        raise CommandLineError(f"--launcher={launcher} takes --mode=launch (it prints what to submit).")


def check_workdir(workdir: str, writes: bool, flag: str, reach: bool = True) -> None:
    """`workdir` is a directory or can become one, writable by this process when the mode writes into it.

    Permissions are asked with os.access, which answers for this process's user (root included:
    a read-only filesystem still says no). A gs://BUCKET/PATH is asked of its bucket instead when
    `reach` (effscale.storage.check_reachable: the settings, the bucket, the credentials; one request,
    no JAX); another scheme is refused.
    """
    try:
        if storage.is_object_store(storage.path(workdir, "--workdir")):
            if reach:
                storage.check_reachable(workdir, "--workdir")
            return
    except ValueError as e:
        raise CommandLineError(str(e)) from None
    path = os.path.abspath(workdir)
    if os.path.lexists(path) and not os.path.isdir(path):
        raise CommandLineError(f"{flag} is a file, not a directory: give a directory (a new one or an earlier run's).")
    existing = path
    while not os.path.lexists(existing):  # lexists is False, not an error, below a file or an unreadable directory
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise CommandLineError(f"{flag}: {existing} is a file, so no directory can be made in it; give another path.")
    if writes and not os.access(existing, os.W_OK | os.X_OK):
        raise CommandLineError(f"{flag}: {existing} is not writable by this user; give a directory you can write to.")
