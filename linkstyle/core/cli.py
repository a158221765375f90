"""The stage scripts' shell: pinned arithmetic, one error policy, signals, params sections.

Importing this module pins the CPU arithmetic (`linkstyle.core.runtime.pin_arithmetic`),
so a stage script imports it before numpy, pandas or torch.

Policy: bad user input (params, files, checkpoints, masks) ends in one line
`error: <file or param>: <what is wrong and the fix>` and exit status 2; programming
errors stay exceptions with their traceback. Ctrl-C exits 130 and SIGTERM 143, after
the temp files of unfinished outputs are removed (`linkstyle.core.io.atomic_path`),
so `dvc repro` sees a failed stage, never a half-written output.
"""

from __future__ import annotations

# First, before anything loads numpy or torch: their maths libraries read the pins as they load.
from linkstyle.core import runtime

runtime.pin_arithmetic()

import functools  # noqa: E402
import inspect  # noqa: E402
import signal  # noqa: E402
import sys  # noqa: E402
import typing  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Callable, TypeVar  # noqa: E402

import click  # noqa: E402
import typer  # noqa: E402

from linkstyle.core.config import from_params  # noqa: E402
from linkstyle.core.errors import UserError  # noqa: E402
from linkstyle.core.io import check_writable, disk_error, read_params  # noqa: E402

T = TypeVar("T")


class Terminated(BaseException):
    """SIGTERM, raised in the main thread so that `finally` blocks and context managers run."""


def _on_sigterm(signum, frame):  # noqa: ARG001 - the signal module's signature
    raise Terminated()


def _exception_families() -> tuple[tuple[type, ...], tuple[type, ...]]:
    """(usage errors, aborts) of click and of the copy of click that newer typer vendors.

    typer >= 0.2x parses the command line with its own `typer._click`, whose exceptions are
    not click's: catching click's alone lets a missing or unknown option end in a traceback.
    Either module may be absent or moved in another version, hence the guarded imports.
    """
    usage: list[type] = [click.ClickException]
    aborts: list[type] = [click.exceptions.Abort]
    try:
        from typer._click.exceptions import ClickException as TyperClickException
        usage.append(TyperClickException)
    except ImportError:
        pass
    try:
        from typer.exceptions import Abort as TyperAbort
        aborts.append(TyperAbort)
    except ImportError:
        pass
    return tuple(usage), tuple(aborts)


USAGE_ERRORS, ABORTS = _exception_families()

# Under `dvc repro` the stage's previous outputs are gone before it runs (DVC removes them),
# so "nothing of this run was written" is all an interrupted stage can promise.
_NOTHING_WRITTEN = ("nothing of this run was written (under dvc repro the stage's previous outputs were "
                    "removed before it ran: run dvc repro again)")
INTERRUPTED = f"error: interrupted; {_NOTHING_WRITTEN}"
TERMINATED = f"error: terminated (SIGTERM); {_NOTHING_WRITTEN}"


def _placeholder(fn: Callable, name: str | None) -> str:
    """`<file>` for a path option of `fn`, `<value>` otherwise: what to type after the option."""
    try:
        hint = typing.get_type_hints(fn).get(name or "")
    except Exception:  # an annotation that does not resolve: the generic word is fine
        hint = None
    return "<file>" if hint is not None and isinstance(hint, type) and issubclass(hint, Path) else "<value>"


def usage_line(e: Exception, fn: Callable) -> str:
    """One line `error: <option>: <what is wrong and the fix>` for a command-line usage error."""
    param = getattr(e, "param", None)
    opts = [o for o in getattr(param, "opts", None) or () if o.startswith("--")]
    option = opts[0] if opts else getattr(param, "name", None)
    name = type(e).__name__
    if name == "MissingParameter" and option:
        return f"error: {option}: missing option; pass {option} {_placeholder(fn, getattr(param, 'name', None))}"
    if name == "NoSuchOption":
        possible = sorted(getattr(e, "possibilities", None) or ())
        hint = f"did you mean {' or '.join(possible)}?" if possible else "see --help for the options"
        return f"error: {getattr(e, 'option_name', '?')}: no such option; {hint}"
    if option and getattr(e, "message", None):  # a bad value: '--per-class abc'
        return f"error: {option}: {e.message}; see --help"
    message = " ".join(e.format_message().split()) if hasattr(e, "format_message") else str(e)
    return f"error: {message}; see --help"


# By the scripts' convention an output option's help says "to write", "folder for" (a folder
# of figures) or "for dvc plots"; inputs name the stage that writes them. tests/core/test_cli.py
# holds every stage's options to it against dvc.yaml's outs.
_OUTPUT_HELP = ("to write", "folder for", "for dvc plots")


def output_options(fn: Callable) -> list[str]:
    """The names of `fn`'s options that are outputs, by their help text."""
    out = []
    for name, param in inspect.signature(fn).parameters.items():
        help_text = getattr(param.default, "help", None) or ""
        if any(h in help_text for h in _OUTPUT_HELP):
            out.append(name)
    return out


def _checking_outputs_first(fn: Callable) -> Callable:
    """`fn`, but the locations of its outputs are checked for writability before it runs."""
    outputs = output_options(fn)

    @functools.wraps(fn)
    def checked(**kwargs):
        check_writable([Path(kwargs[n]) for n in outputs if kwargs.get(n) is not None])
        return fn(**kwargs)

    return checked


def run(fn: Callable) -> None:
    """Run `fn` as a typer command under the error policy above; never returns."""
    runtime.check_pinned()  # a stage that loaded numpy or torch before this module computes unpinned
    app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
    app.command()(_checking_outputs_first(fn))
    signal.signal(signal.SIGTERM, _on_sigterm)
    # Also where SIGINT arrives ignored (background jobs of a non-interactive shell):
    # an explicit `kill -INT` or timeout -s INT must stop the stage, not be dropped.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        code = app(standalone_mode=False)
        if code == 130:  # typer turns KeyboardInterrupt into Exit(130), returned in this mode
            print(INTERRUPTED, file=sys.stderr)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        code = 2
    except (KeyboardInterrupt, *ABORTS):
        print(INTERRUPTED, file=sys.stderr)
        code = 130
    except Terminated:
        print(TERMINATED, file=sys.stderr)
        code = 143
    except USAGE_ERRORS as e:  # a missing or unknown option, a value of the wrong type: bad input
        print(usage_line(e, fn), file=sys.stderr)
        code = 2
    except OSError as e:
        err = disk_error(getattr(e, "filename", None) or "output", e)
        if err is None:
            raise
        print(f"error: {err}", file=sys.stderr)
        code = 2
    sys.exit(code if isinstance(code, int) else 0)


def raw_sections(params: Path, names: tuple[str, ...]) -> dict:
    """Several params sections as plain mappings, to show them (the report), not to configure."""
    return {name: read_params(params, name) for name in names}


def section(params: Path, name: str, cls: type[T]) -> T:
    """The params.yaml section `name` (dotted for nested ones) as the frozen dataclass `cls`."""
    return from_params(cls, read_params(params, name), name, source=str(params))
