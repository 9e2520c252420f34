"""A run's records on disk: their names, how they are read, status.json. No torch, no plots.

The engine writes a run folder; report.py and sweep.py read it (sweep.py without importing
torch). Everything the three share about those files is here, beside utils/atomic.py (how
every file is written: a temporary file, then a rename) and utils/runlock.py (one writer per
folder).

    checkpoint.pth.tar   the run's state, every epoch (and at a preemption)
    model_best.pth.tar   the state of the best epoch of member 1 (selected on the test set)
    args.json            the run's flags, its id and seed
    status.json          running, done, preempted, diverged or failed; the epochs saved
    summary.csv          one row per epoch: every metric (for programs)
    log.txt              the original's tab-separated accuracies (for people)
    curves.png           accuracy and loss curves
    tensorboard/         TensorBoard events, with --tensorboard
    previous-*/          an earlier run's files moved aside by --overwrite or --rewind
"""
import csv
import json
import os
import socket
from datetime import datetime, timezone

from .atomic import write_json_atomic
from .errors import UserError

CHECKPOINT, BEST = 'checkpoint.pth.tar', 'model_best.pth.tar'
ARGS, STATUS, SUMMARY, LOG, PLOT = 'args.json', 'status.json', 'summary.csv', 'log.txt', 'curves.png'
TENSORBOARD = 'tensorboard'
PREVIOUS = 'previous-'
RUN_ID = 'run_id'   # the key of the run's id in args.json, status.json and every checkpoint
STATES = ('running', 'done', 'preempted', 'diverged', 'failed')   # status.json's states


def read_json_record(path):
    """A JSON record (args.json, status.json, a sweep's files) as a dict, or None when it is
    missing, unreadable or not an object."""
    try:
        with open(path) as f:
            value = json.load(f)
    except (OSError, ValueError, RecursionError):  # RecursionError: absurdly nested JSON
        return None
    return value if isinstance(value, dict) else None


def read_summary_rows(path):
    """summary.csv as rows of text ({column: value}), also as a spreadsheet program saves it
    again (a byte-order mark, CRLF line ends, quoted fields, rows of empty cells); raises
    OSError, csv.Error or UnicodeDecodeError. Checking the values is the reader's: the report
    refuses what it cannot use, sweep.py is lenient."""
    with open(path, newline='', encoding='utf-8-sig') as f:
        return [row for row in csv.DictReader(f)
                if any(value not in ('', None) for value in row.values())]


def write_status(folder, state, epoch, epochs, message='', run_id=None):
    """status.json: one of STATES, the epochs saved and the run's id. sweep.py --status and
    report.py read it; a live run also holds the folder's lock. Only 'running' must be
    written: a status that cannot be recorded at the end of a run (a full disk) must not hide
    the error that ended it."""
    status = {'state': state, 'epoch': epoch, 'epochs': epochs, 'message': message,
              RUN_ID: run_id, 'host': socket.gethostname(), 'pid': os.getpid(),
              'updated': datetime.now(timezone.utc).isoformat(timespec='seconds')}
    try:
        write_json_atomic(os.path.join(folder, STATUS), status)
    except UserError:
        if state == 'running':
            raise
