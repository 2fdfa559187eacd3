"""The version folders of ``saved_models/<name>/``: crash-safe install, recovery after a kill, stale temporaries.

Crash safety: a model server polling ``base_dir`` sees a version folder only when it is a complete
export, and with ``overwrite`` at every instant either the complete old one or the complete new one.
The export is written to ``.tmp-<version>-<pid>-*`` and checked; then

- a new version: one ``rename`` to ``<version>``;
- replacing one, where the file system can (Linux ``renameat2`` ``RENAME_EXCHANGE``: ext4, xfs,
  btrfs, tmpfs): the two folders are swapped in one atomic step, then the old one is deleted;
- elsewhere, three steps: 1. rename ``<version>`` to ``.old-<version>-<pid>``, 2. rename the new
  one to ``<version>``, 3. delete the old one. Between 1 and 2 the version is briefly absent
  (a server keeps serving what it loaded), never partial.

Folders whose names are not integers are invisible to TF Serving. Every export first recovers
what killed ones left (:func:`recover`): a ``.tmp-*`` or ``.old-*`` folder whose process is gone is
deleted, except an ``.old-<version>-*`` beside a missing or incomplete (no ``saved_model.pb``)
``<version>``, which is renamed back to ``<version>`` (a kill between steps 1 and 2).
"""

from __future__ import annotations

import errno
import os
import re
import shutil

from tfddim.export import layout

__all__ = ["complete", "recover", "install"]

# Hidden names in base_dir (TF Serving loads only folders named by an integer, so it never sees them):
#   .tmp-<version>-<pid>-<random>   an export being written by process <pid>
#   .old-<version>-<pid>            the version an overwrite by <pid> has moved aside
_TMP_NAME = re.compile(r"^\.tmp-(\d+)-(\d+)-")
_OLD_NAME = re.compile(r"^\.old-(\d+)-(\d+)$")


def _process_gone(pid: int) -> bool:
    """Whether no process ``pid`` exists (one we may not signal still exists)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:  # PermissionError: another user's live process
        return False
    return False


def complete(version_dir: str) -> bool:
    return os.path.isfile(layout.ExportLayout(version_dir).saved_model_pb)


def recover(base_dir: str, version: int) -> None:
    """Finish or undo what killed exports left in ``base_dir`` (see the module docstring).

    A leftover is stale when its process is gone, or when it is this process's own for ``version``
    (an earlier export of it here failed without cleaning up; one process exports a version at a time).
    Stale temporary folders are deleted. A stale ``.old-<v>-<pid>`` is deleted when ``<v>`` is a complete
    export (the new one was in place), and renamed back to ``<v>`` when ``<v>`` is missing or has no
    ``saved_model.pb`` (the kill came between moving the old one aside and moving the new one in).
    """
    if not os.path.isdir(base_dir):
        return
    me = os.getpid()

    def stale(v: str, pid: str) -> bool:
        return (int(pid) == me and int(v) == version) or (int(pid) != me and _process_gone(int(pid)))

    for entry in sorted(os.listdir(base_dir)):
        path = os.path.join(base_dir, entry)
        old, tmp = _OLD_NAME.match(entry), _TMP_NAME.match(entry)
        if old and stale(*old.groups()):
            final = os.path.join(base_dir, str(int(old.group(1))))
            if complete(final):
                shutil.rmtree(path, ignore_errors=True)
                continue
            if os.path.lexists(final):  # a partial folder (a kill inside an old-style rmtree): the old export wins
                shutil.rmtree(final)
            os.rename(path, final)
            print(f"tfddim export: restored {final} from {entry}, left by an interrupted --overwrite")
        elif tmp and stale(*tmp.groups()):
            shutil.rmtree(path, ignore_errors=True)


def _exchange(a: str, b: str) -> bool:
    """Swap two paths in one atomic step (Linux ``renameat2(RENAME_EXCHANGE)``); False where unsupported."""
    import ctypes

    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (AttributeError, OSError):  # not Linux, or a libc before glibc 2.28
        return False
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.EPERM):  # the file system cannot exchange
        return False
    raise OSError(err, os.strerror(err), b)


def install(tmp: str, final: str, base_dir: str, version: int) -> None:
    """Move the finished export ``tmp`` to ``final``, replacing a complete old version crash-safely."""
    if not os.path.lexists(final):
        os.rename(tmp, final)
        return
    if _exchange(tmp, final):  # final is the new export in one step; tmp now holds the old one
        shutil.rmtree(tmp, ignore_errors=True)
        return
    old = os.path.join(base_dir, f".old-{version}-{os.getpid()}")
    os.rename(final, old)  # 1. the old export aside (under a name a model server ignores)
    try:
        os.rename(tmp, final)  # 2. the new one in
    except BaseException:
        try:
            os.rename(old, final)
        except OSError:
            pass  # left for _recover on the next export
        raise
    shutil.rmtree(old, ignore_errors=True)  # 3. the old one gone
