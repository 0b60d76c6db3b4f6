"""Start and stop `python -m megasnow.serve` as a child process on a free local port: for tests, benchmarks and the
quickstart (any code that needs a real server for a while)."""
import os
import re
import signal
import subprocess
import sys
import threading

READY = re.compile(r"ready on (http://\S+/v1)")


class ServerProcess:
    """A megasnow.serve child process; a context manager that stops it on exit.

    model: checkpoint or HF folder; flags: extra command-line flags (e.g. '--max-num-seqs', '4');
    startup_timeout: seconds to wait for the ready line (the model loads first); env, cwd: the child's environment
    and working folder (a relative `model` is read from cwd). `base_url` ends with /v1.
    `stdout_lines` / `stderr_lines` hold the child's output; `stop()` returns its exit status.
    """

    def __init__(self, model, *flags, host="127.0.0.1", port=0, startup_timeout=180.0, env=None, cwd=None):
        self.cmd = [sys.executable, "-m", "megasnow.serve", os.fspath(model), "--host", host, "--port", str(port),
                    *[str(f) for f in flags]]
        self.startup_timeout, self.env, self.cwd = startup_timeout, env, cwd
        self.proc, self.base_url = None, None
        self.stdout_lines, self.stderr_lines = [], []
        self._ready = threading.Event()
        self._readers = []

    def _read(self, stream, lines, watch):
        for line in stream:
            lines.append(line.rstrip("\n"))
            if watch and self.base_url is None:
                m = READY.search(line)
                if m:
                    self.base_url = m.group(1)
                    self._ready.set()
        self._ready.set()  # the child exited (or closed its output): stop waiting

    def start(self):
        self.proc = subprocess.Popen(self.cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     env=self.env, cwd=self.cwd, bufsize=1)
        for stream, lines, watch in ((self.proc.stdout, self.stdout_lines, True),
                                     (self.proc.stderr, self.stderr_lines, False)):
            reader = threading.Thread(target=self._read, args=(stream, lines, watch), daemon=True)
            reader.start()
            self._readers.append(reader)
        if not self._ready.wait(self.startup_timeout) or self.base_url is None:
            self.kill()
            raise RuntimeError(f"megasnow.serve did not become ready within {self.startup_timeout:.0f} s "
                               f"(exit {self.proc.returncode}); stderr:\n" + "\n".join(self.stderr_lines[-20:]))
        return self

    @property
    def port(self):
        return int(self.base_url.rsplit(":", 1)[1].split("/")[0])

    def stop(self, sig=signal.SIGINT, timeout=30.0):
        """Send `sig` (SIGINT: graceful, exit 130; SIGTERM: graceful, exit 0) unless the child already exited, wait,
        kill after `timeout`; then let the readers take the child's last lines. Returns the exit status."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        for reader in self._readers:  # let them take the last lines
            reader.join(5)
        return self.proc.returncode

    def kill(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
        return False
