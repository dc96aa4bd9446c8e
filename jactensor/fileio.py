"""Files are never half-written: write to a temporary name in the target's folder, then rename over it."""
import contextlib
import os
import signal
import tempfile

__all__ = ["atomic_write", "write_all"]


def _default_mode(path):
    """The permissions a plain open() would give (mkstemp's are 0600)."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)


def _temp_copy(folder, name, write):
    """A completed temporary file next to ``name`` in ``folder``, written by ``write(f)``; its path."""
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        _default_mode(tmp)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return tmp


def atomic_write(path, write):
    """Write ``path`` (exactly as given) with ``write(binary_file)``: the data goes to a temporary file in the
    same folder and is renamed over ``path`` only once complete, so an interruption or an error leaves the
    old file (or nothing) in place, never a half-written one. Returns the path."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    tmp = _temp_copy(folder, os.path.basename(path), write)
    try:
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return path


def write_all(folder, files):
    """Write several files ({name: bytes}) into ``folder`` all or none: every one goes to a temporary name
    first, then they are renamed into place with Ctrl-C held back for that moment."""
    tmps = {}
    try:
        for name, data in files.items():
            tmps[name] = _temp_copy(folder, name, lambda f, data=data: f.write(data))
        blocked = hasattr(signal, "pthread_sigmask")
        if blocked:
            signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
        try:
            for name, tmp in list(tmps.items()):
                os.replace(tmp, os.path.join(folder, name))
                del tmps[name]
        finally:
            if blocked:
                signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    finally:
        for tmp in tmps.values():
            with contextlib.suppress(OSError):
                os.unlink(tmp)
