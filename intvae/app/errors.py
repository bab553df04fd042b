"""The app's error types and how they reach the user.

An error caused by the command line, the config or the environment (a refused value, a missing
file, data that cannot be had, a config node whose constructor refuses its values) is printed
as one line, ``error: <key>: <what is wrong>``, and
the program exits with status 1 (``HYDRA_FULL_ERROR=1``: the traceback instead). These are
intvae's own error types only (``USER_ERRORS``): anything else, such as a ``ValueError`` raised
inside torch or Lightning during training, keeps its traceback.
"""

import contextlib
import functools
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator

from hydra.errors import ConfigCompositionException, InstantiationException
from omegaconf.errors import OmegaConfBaseException

from intvae.checks import ParameterError
from intvae.data.errors import DataError


class ConfigError(ParameterError):
    """A configuration value or file the app refuses; the message names the key."""


class NonFiniteError(RuntimeError):
    """Training stopped on a non-finite loss, gradient or checkpoint (``NonFiniteGuard``)."""


class NothingTrainedError(NonFiniteError):
    """Every update of a run was skipped as non-finite: the run failed."""


class Terminated(BaseException):  # noqa: N818 (like KeyboardInterrupt, not an error)
    """The process received SIGTERM (what ``kill``, ``timeout`` and Slurm send): the run records
    ``interrupted`` and the program exits with 143 (128 + SIGTERM), as a killed one would."""

    exit_code = 128 + signal.SIGTERM


@contextlib.contextmanager
def sigterm_raises() -> Iterator[None]:
    """Within the block, SIGTERM raises ``Terminated`` (on the main thread; elsewhere nothing
    changes). Lightning adds its own SIGTERM handler during ``fit`` and ``test`` and keeps
    calling the one found here."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        raise Terminated(f"received signal {signum} (SIGTERM)")

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


USER_ERRORS = (ParameterError, DataError, NonFiniteError, ConfigCompositionException,
               OmegaConfBaseException)
"""intvae's own errors and the config errors of Hydra and OmegaConf (a bad override)."""


def is_user_error(error: BaseException) -> bool:
    """Whether ``error`` is reported in one line: one of ``USER_ERRORS``, or a Hydra
    instantiation error, i.e. the constructor of a config node (intvae's, torch's or
    Lightning's, such as the ``Trainer``) refusing the values the config gave it."""
    return isinstance(error, (*USER_ERRORS, InstantiationException))


def describe(error: BaseException) -> str:
    """A one-line message for ``error``: for a Hydra instantiation error, the config key that
    failed and its innermost cause (``bound.interval: delta=0 is invalid: ...``)."""
    key = None
    while isinstance(error, InstantiationException) and error.__cause__ is not None:
        key = key or _full_key(str(error))
        error = error.__cause__
    message = " ".join(line.strip() for line in str(error).splitlines() if line.strip())
    return f"{key}: {message}" if key else message


def _full_key(message: str) -> str | None:
    for line in message.splitlines():
        if line.startswith("full_key: "):
            return line.removeprefix("full_key: ").strip()
    return None


def one_line_errors(app: Callable) -> Callable:
    """Wrap an app's entry point: a user error (``is_user_error``) ends the program with status 1
    and one line on stderr (unless ``HYDRA_FULL_ERROR=1``); every other error propagates with
    its traceback."""

    @functools.wraps(app)
    def run(*args, **kwargs):
        try:
            return app(*args, **kwargs)
        except Exception as error:
            if not is_user_error(error) or os.environ.get("HYDRA_FULL_ERROR") == "1":
                raise
            print(f"error: {describe(error)}", file=sys.stderr)
            sys.exit(1)

    return run
