"""Files that are never half-written and folders one process at a time: atomic writes, file locks, sha256.

Every file the package writes -- a downloaded corpus, a checkpoint, a results JSON -- goes to a temporary
`.NAME.*.part` file beside its destination and is renamed into place once complete, so a reader (or a run
killed at any instant) sees the old file or the new one, never a mixture.  Introduced in chapter 6.
"""
import hashlib
import os
import tempfile
from pathlib import Path

__all__ = ["WriteError", "sha256_of", "try_lock", "wait_lock", "remove_stale_parts", "write_atomically", "write_bytes"]

try:
    import fcntl  # file locks (Linux, macOS); Windows has no fcntl, and there nothing is locked
except ImportError:
    fcntl = None


class WriteError(OSError):
    """A file that could not be written (a full disk, a file-size limit, a folder made read-only): the message names
    the file and the reason, and the file is as it was before.  Chapter 6."""


def sha256_of(path, chunk_size=1 << 20):
    """Hex sha256 of a file, read in chunks.  Chapter 6."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(chunk_size), b""):
            digest.update(chunk)
    return digest.hexdigest()


def try_lock(f):
    """Lock the open file `f` for this process, without waiting; True if we hold the lock now.

    The operating system drops the lock when the file is closed or the process ends, however it ends (kill -9
    included), so a lock never outlives its holder.  Where there are no file locks (Windows) it returns True.
    Chapter 6."""
    if fcntl is None:
        return True
    try:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:  # another open file holds it
        return False
    return True


def wait_lock(f):
    """Lock the open file `f` for this process, waiting as long as another process holds it (its lock goes when
    it ends, however it ends).  Chapter 3."""
    if fcntl is not None:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)


def remove_stale_parts(folder, name="*"):
    """Delete the temporary `.NAME.*.part` files in `folder` that writers killed mid-write left behind.

    A writer holds a lock on its .part file while it writes (see `write_atomically`), so one we can lock has no
    writer any more.  Without file locks (Windows) nothing is deleted: a live writer's file cannot be told apart.
    Chapter 6."""
    if fcntl is None:
        return
    for part in Path(folder).glob(f".{name}.*.part"):
        try:
            with open(part, "rb") as f:
                if try_lock(f):
                    part.unlink(missing_ok=True)
        except FileNotFoundError:  # its writer finished in the meantime and renamed it
            continue


def write_atomically(dest, write, check=None):
    """Call write(file) on a temporary file beside `dest`, then check(temporary path) if given, then rename it in.

    On any error the temporary file is removed, so `dest` is either complete (and checked), or as it was.  A
    temporary file left by a writer that was killed is removed by the next write to `dest`.  Chapter 6."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_parts(dest.parent, dest.name)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            try_lock(f)  # held until the file is closed: marks the .part file as in use
            write(f)
            f.flush()
            if check is not None:
                check(tmp)
        os.replace(tmp, dest)  # atomic on POSIX and Windows: readers see the old state or the new file
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return dest


def write_bytes(dest, data):
    """Write `data` (bytes) to `dest` with `write_atomically`; WriteError names the file when the system refuses
    (no space left on the device, ...).  Chapter 6."""
    try:
        return write_atomically(dest, lambda f: f.write(data))
    except OSError as error:
        failure = WriteError(f"could not write {dest}: {error.strerror or error}")
        failure.errno = error.errno
        raise failure from None
