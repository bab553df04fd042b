"""The caches of the tools the apps load, kept inside intvae's cache folder.

``python -m intvae.train`` and ``python -m intvae.evaluate`` import this module before
anything else, so that a run writes nothing outside its output directory and intvae's cache
folder: the folder of the data cache (``intvae.data.cache.data_root()``: ``$INTVAE_DATA_DIR``,
else ``$XDG_CACHE_HOME/intvae``, else ``~/.cache/intvae``). Each variable below that is not
already set is pointed at a subfolder of it:

========================== ======================= ==============================================
variable                   subfolder               what goes there (where it went otherwise)
========================== ======================= ==============================================
``MPLCONFIGDIR``           ``matplotlib``          matplotlib's font list (``~/.cache/matplotlib``,
                                                   ``~/.config/matplotlib``)
``TORCHINDUCTOR_CACHE_DIR`` ``torchinductor``      ``torch.compile``'s kernels (``$TMPDIR/
                                                   torchinductor_<user>``, created by importing
                                                   Lightning even without compiling)
``TRITON_CACHE_DIR``       ``triton``              GPU kernels of ``torch.compile`` (``~/.triton``)
``WANDB_CACHE_DIR``        ``wandb``               wandb-core's debug logs and artifact cache
                                                   (``~/.cache/wandb``)
========================== ======================= ==============================================

A variable that is already set wins. ``data.root`` in the config moves the data but not these
caches (they are set before the config is read).
"""

import os

from intvae.data.cache import data_root

SUBFOLDERS = {
    "MPLCONFIGDIR": "matplotlib",
    "TORCHINDUCTOR_CACHE_DIR": "torchinductor",
    "TRITON_CACHE_DIR": "triton",
    "WANDB_CACHE_DIR": "wandb",
}


def keep_tool_caches_inside(root: str | os.PathLike[str] | None = None) -> dict[str, str]:
    """Point each unset variable of ``SUBFOLDERS`` at its subfolder of ``root`` (default:
    ``data_root()``); return the variables set."""
    base = data_root(root)
    chosen = {name: str(base / sub) for name, sub in SUBFOLDERS.items()
              if not os.environ.get(name)}
    os.environ.update(chosen)
    return chosen


keep_tool_caches_inside()
