"""Files written whole or not at all, by any process, without importing torch.

Each writer writes a temporary name of its own, flushes it to disk and renames it over the
target, so a crash at any moment leaves either the previous complete file or the new one; a
failed write removes its temporary file and keeps the previous one.
"""
import json
import os
import secrets

from .errors import UserError

TMP_SUFFIX = '.tmp'


def temporary_name(path):
    """PATH.<pid>-<random>.tmp: unique to one writer, so two writers (two processes, or two
    hosts sharing a filesystem) never write into the same temporary file."""
    return f'{path}.{os.getpid()}-{secrets.token_hex(4)}{TMP_SUFFIX}'


def is_temporary(name, of):
    """Whether file NAME is a temporary file of a writer of file OF (both base names)."""
    return name.startswith(of + '.') and name.endswith(TMP_SUFFIX)


def _fsync_folder(folder):
    """Make a rename durable. Only durability is at stake: some network filesystems refuse
    to fsync a folder, and the file is complete either way, so errors are ignored."""
    try:
        fd = os.open(folder or '.', os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:
        pass


def _reason(error):
    """The OSError behind a failure, if any (torch's zip writer turns ENOSPC from the file's
    write() into 'RuntimeError: unexpected pos ...', keeping the OSError as its context)."""
    seen = error
    while seen is not None and not isinstance(seen, OSError):
        seen = seen.__cause__ or seen.__context__
    if seen is not None:
        return seen.strerror or str(seen)
    return ' '.join(str(error).split())[:200] or type(error).__name__


def write_atomic(path, write):
    """Write PATH through a temporary file of its own, flushed to disk and renamed over PATH.
    On any failure the temporary file is removed and PATH keeps its previous content; a
    failure to write (full disk, quota, I/O error, torch's zip writer) is a UserError."""
    write_all_atomic([(path, write)])


def write_all_atomic(writes):
    """write_atomic for each (path, write) of WRITES, all or none: every temporary file is
    written first, then they are renamed in order. A failure to write any of them (a full
    disk) leaves every PATH as it was, so files that must agree (a checkpoint and the logs of
    its epochs) never disagree after one."""
    written, renamed = [], []
    try:
        for path, write in writes:
            tmp = temporary_name(path)
            written.append((tmp, path))
            with open(tmp, 'xb') as f:
                write(f)
                f.flush()
                os.fsync(f.fileno())
        for tmp, path in written:
            os.replace(tmp, path)
            renamed.append(path)
    except BaseException as e:
        for tmp, _ in written:
            try:
                os.remove(tmp)
            except OSError:
                pass
        if isinstance(e, (OSError, RuntimeError)):
            # a rename that fails after others (rare: the data is on disk by then) breaks the
            # all-or-none: say which files are new
            kept = ('the previous file there is untouched' if not renamed else
                    f'{", ".join(renamed)} already hold(s) the new content')
            raise UserError(f'could not write {path}: {_reason(e)}; {kept}') from None
        raise
    for folder in sorted({os.path.dirname(path) for _, path in written}):
        _fsync_folder(folder)


def write_text_atomic(path, text):
    write_atomic(path, lambda f: f.write(text.encode()))


def write_json_atomic(path, data, indent=2):
    write_text_atomic(path, json.dumps(data, indent=indent) + '\n')
