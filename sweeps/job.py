"""One run as a submitit job: the entry script in a child process, stopped and requeued on
the time-limit signal."""
import os
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time

import submitit

from .state import now, outcome_path, write_json

def exit_message(returncode, last_line):
    if returncode < 0:
        return f'killed by {signal.Signals(-returncode).name}'
    return last_line or f'exit status {returncode}'


class RunFailed(RuntimeError):
    pass


class RunJob(submitit.helpers.Checkpointable):
    """One run as a submitit job: the entry script as a child process with the same python.

    The child's stdout goes straight to the job's log; its stderr is copied there line by line
    and its last line kept for the error. The child ignores submitit's time-limit signal
    (SIGUSR2, sent to the whole job SIGNAL_DELAY seconds before the limit); on it submitit
    calls checkpoint(), which stops the child with SIGTERM (the engine saves that exact batch)
    and requeues this same job, which resumes with --resume auto. SIGTERM and SIGINT reaching
    this process (preemption, Ctrl-C, scancel) are passed on to the child.
    """

    def __init__(self, run, root, env=None, cwd=None, stop_timeout_s=60):
        self.argv, self.name, self.folder = run['argv'], run['name'], run['folder']
        self.outcome = outcome_path(root, run['name'])
        self.env, self.cwd = dict(env or {}), cwd or os.getcwd()
        self.stop_timeout_s = stop_timeout_s
        self._proc = self._started = self._last = self._tee = None

    def __getstate__(self):
        state = dict(self.__dict__)
        state['_proc'] = state['_started'] = state['_last'] = state['_tee'] = None
        return state

    def _record(self, state, returncode, message, started):
        write_json(self.outcome, {
            'state': state, 'returncode': returncode, 'message': message,
            'host': socket.gethostname(), 'started': started[0], 'started_ts': started[1],
            'ended': now(), 'ended_ts': time.time()})

    def __call__(self):
        self._started = started = (now(), time.time())
        print(f'sweep: {self.name}: {shlex.join(self.argv)}', flush=True)
        preempt = getattr(signal, 'SIG' + os.environ.get('SUBMITIT_PREEMPT_SIGNAL', 'USR2'))
        self._proc = subprocess.Popen(
            self.argv, cwd=self.cwd, env={**os.environ, **self.env}, stderr=subprocess.PIPE,
            text=True, errors='replace', preexec_fn=lambda: signal.signal(preempt, signal.SIG_IGN))
        self._last = last = ['']
        self._tee = tee = threading.Thread(target=copy_lines, daemon=True,
                                           args=(self._proc.stderr, sys.stderr, last))
        tee.start()
        # submitit ignores SIGTERM in the job; pass it on so that a preemption's SIGTERM
        # stops the run with a checkpoint even where it is not sent to the child directly.
        main = threading.current_thread() is threading.main_thread()
        previous = signal.signal(signal.SIGTERM, self._forward) if main else None
        try:
            # Poll rather than wait(): checkpoint() runs in a signal handler on this thread
            # and must be able to reap the child itself.
            while self._proc.poll() is None:
                time.sleep(0.2)
        except KeyboardInterrupt:
            self._proc.send_signal(signal.SIGINT)   # the engine saves and exits
            self._wait_child()
            raise
        finally:
            if main:
                signal.signal(signal.SIGTERM, previous)
        tee.join(timeout=10)
        code = self._proc.returncode
        stopped = {128 + signal.SIGTERM, 128 + signal.SIGINT, -signal.SIGTERM, -signal.SIGINT}
        state = 'done' if code == 0 else 'preempted' if code in stopped else 'failed'
        message = '' if code == 0 else exit_message(code, last[0])
        self._record(state, code, message, started)
        if code != 0:
            raise RunFailed(f'{self.name}: exit {code}: {message}')
        return {'name': self.name, 'folder': self.folder}

    def _forward(self, signum, frame):
        if self._proc is not None and self._proc.poll() is None:
            self._proc.send_signal(signum)

    def _wait_child(self):
        deadline = time.time() + self.stop_timeout_s
        while self._proc.poll() is None and time.time() < deadline:
            time.sleep(0.2)

    def checkpoint(self, *args, **kwargs):
        """Preempted or near the time limit: stop the run so it saves, then requeue it."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.send_signal(signal.SIGTERM)
            self._wait_child()
            self._tee.join(timeout=10)  # the child's last lines reach the log before requeueing
            code = self._proc.returncode
            how = (f'did not stop within {self.stop_timeout_s}s' if code is None
                   else exit_message(code, self._last[0]))
            self._record('preempted', code, f'stopped to be requeued (time limit or '
                         f'preemption): {how}', self._started)
        fresh = RunJob.__new__(RunJob)
        fresh.__dict__.update(self.__getstate__())
        return submitit.helpers.DelayedSubmission(fresh)


def copy_lines(source, sink, last):
    for line in source:
        sink.write(line)
        sink.flush()
        if line.strip():
            last[0] = line.strip()
