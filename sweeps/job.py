"""One job of a sweep as a submitit job: the entry script in a child process, stopped and
requeued on the time-limit signal. A job trains one run, or under --pack the runs of a pack
(sweeps/pack.py), whose outcome it records for each of them."""
import os
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time

import submitit

from .pack import runs_of
from .state import now, outcome_path, write_json

# exit statuses of a run stopped by a signal: the engine saved its exact batch first
STOPPED = {128 + signal.SIGTERM, 128 + signal.SIGINT, -signal.SIGTERM, -signal.SIGINT}


def exit_message(returncode, last_line):
    if returncode < 0:
        return f'killed by {signal.Signals(-returncode).name}'
    return last_line or f'exit status {returncode}'


def ending(returncode, last_line):
    """(state, message) of a run whose process exited with RETURNCODE."""
    if returncode == 0:
        return 'done', ''
    return ('preempted' if returncode in STOPPED else 'failed'), exit_message(returncode,
                                                                              last_line)


class RunJob(submitit.helpers.Checkpointable):
    """One run as a submitit job: the entry script as a child process with the same python.

    The child's stdout goes straight to the job's log; its stderr is copied there line by line
    and its last line kept for the error. The child ignores submitit's time-limit signal
    (SIGUSR2, sent to the whole job SIGNAL_DELAY seconds before the limit); on it submitit
    calls checkpoint(), which stops the child with SIGTERM (the engine saves that exact batch)
    and requeues this same job, which resumes with --resume auto, unless the run has ended by
    then. SIGTERM and SIGINT reaching this process (preemption, scancel, `scontrol requeue`,
    Ctrl-C) are passed on to the child. However the run ends, the job's own output ends with
    one line that says how (never a traceback), and the job exits with the run's status.
    """

    def __init__(self, run, root, env=None, cwd=None, stop_timeout_s=60):
        self.argv, self.name, self.folder = run['argv'], run['name'], run['folder']
        self.outcomes = [outcome_path(root, member['name']) for member in runs_of(run)]
        self.env, self.cwd = dict(env or {}), cwd or os.getcwd()
        self.stop_timeout_s = stop_timeout_s
        self._proc = self._started = self._last = self._tee = self._stop_sent = None

    def __getstate__(self):
        state = dict(self.__dict__)
        for name in ('_proc', '_started', '_last', '_tee', '_stop_sent'):
            state[name] = None
        return state

    def _record(self, state, returncode, message):
        record = {'state': state, 'returncode': returncode, 'message': message,
                  'host': socket.gethostname(), 'started': self._started[0],
                  'started_ts': self._started[1], 'ended': now(), 'ended_ts': time.time()}
        # a job pickled by an earlier sweep.py (requeued since) knows only its one outcome
        for path in self.outcomes if hasattr(self, 'outcomes') else [self.outcome]:
            write_json(path, record)

    def __call__(self):
        self._started = (now(), time.time())
        print(f'sweep: {self.name}: {shlex.join(self.argv)}', flush=True)
        preempt = getattr(signal, 'SIG' + os.environ.get('SUBMITIT_PREEMPT_SIGNAL', 'USR2'))

        def child_signals():
            signal.signal(preempt, signal.SIG_IGN)        # the job's to handle: checkpoint()
            signal.signal(signal.SIGINT, signal.SIG_DFL)  # ignored by a local job's controller
        self._proc = subprocess.Popen(
            self.argv, cwd=self.cwd, env={**os.environ, **self.env}, stderr=subprocess.PIPE,
            text=True, errors='replace', preexec_fn=child_signals)
        self._last, self._stop_sent = [''], False
        self._tee = threading.Thread(target=copy_lines, daemon=True,
                                     args=(self._proc.stderr, sys.stderr, self._last))
        self._tee.start()
        # submitit ignores SIGTERM in the job; pass it on so that a preemption's SIGTERM
        # stops the run with a checkpoint even where it is not sent to the child directly.
        main = threading.current_thread() is threading.main_thread()
        previous = {s: signal.signal(s, self._forward)
                    for s in (signal.SIGTERM, signal.SIGINT)} if main else {}
        try:
            # Poll rather than wait(): checkpoint() runs in a signal handler on this thread
            # and must be able to reap the child itself.
            while self._proc.poll() is None:
                time.sleep(0.2)
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
        self._tee.join(timeout=10)
        return self._end(self._proc.returncode)

    def _end(self, returncode):
        """Record how the run ended and say it in one line; a run that did not finish ends the
        job with its exit status (SystemExit: no traceback in the log)."""
        state, message = ending(returncode, self._last[0])
        self._record(state, returncode, message)
        said = {'done': 'done',
                'preempted': f'stopped ({message}); the run continues from its checkpoint when '
                             'the job is requeued or the sweep launched again',
                'failed': f'failed ({message})'}[state]
        print(f'sweep: {self.name}: {said}', file=sys.stderr, flush=True)
        if returncode != 0:
            raise SystemExit(returncode if returncode > 0 else 128 - returncode)
        return {'name': self.name, 'folder': self.folder}

    def _forward(self, signum, frame):
        """Pass the first stop signal on to the run, and no other: a later one (Ctrl-C
        reaches the run directly and then sweep.py's SIGTERM comes through the controller;
        sweep.py repeats its stop until every job has it) could reach a run that has saved
        and is exiting, its own handlers gone, and kill it."""
        if not self._stop_sent and self._proc is not None and self._proc.poll() is None:
            self._stop_sent = True
            self._proc.send_signal(signum)

    def _wait_child(self):
        deadline = time.time() + self.stop_timeout_s
        while self._proc.poll() is None and time.time() < deadline:
            time.sleep(0.2)

    def checkpoint(self, *args, **kwargs):
        """Near the time limit (or preempted with SIGUSR2): stop the run so it saves, then
        requeue this job. A run that has ended, or ends while being stopped, is not requeued:
        done or failed, the job ends as it would have without the signal."""
        if self._proc is not None:
            if self._proc.poll() is None:
                self._stop_sent = True
                self._proc.send_signal(signal.SIGTERM)
                self._wait_child()
                self._tee.join(timeout=10)  # its last lines reach the log before requeueing
            code = self._proc.returncode
            if code is not None and code not in STOPPED:
                self._end(code)
                raise SystemExit(0)  # done: end the job here, not requeued
            how = (f'did not stop within {self.stop_timeout_s}s' if code is None
                   else exit_message(code, self._last[0]))
            self._record('preempted', code, 'stopped to be requeued (time limit or '
                         f'preemption): {how}')
            print(f'sweep: {self.name}: stopped to be requeued ({how})', file=sys.stderr,
                  flush=True)
        fresh = RunJob.__new__(RunJob)
        fresh.__dict__.update(self.__getstate__())
        return submitit.helpers.DelayedSubmission(fresh)


def copy_lines(source, sink, last):
    for line in source:
        sink.write(line)
        sink.flush()
        if line.strip():
            last[0] = line.strip()
