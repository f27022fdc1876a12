"""Drives a command on a pseudo-terminal, as a person at a terminal would use it.

    pty_session.py STEPS_JSON PROGRAM [ARG...]

STEPS_JSON is a list of steps, done in order:
  {"expect": "text"}   wait (up to 60 s) until the program has printed `text`
  {"send": "text"}     type `text` (end a line with "\\r", as the Enter key does)
  {"signal": "TERM"}   send the program a signal (SIGTERM here)

Prints everything the program printed, then `exit N` with its exit status. Exits non-zero,
with what was seen so far, when an expected text does not come.
"""

import json
import os
import pty
import select
import signal
import sys
import time

steps = json.loads(sys.argv[1])
argv = sys.argv[2:]
pid, fd = pty.fork()
if pid == 0:
    os.execv(argv[0], argv)

seen = b""  # printed and not yet matched
transcript = b""


def read(timeout):
    """Reads what is there within `timeout` seconds; False at the end of the output."""
    global seen, transcript
    ready, _, _ = select.select([fd], [], [], timeout)
    if not ready:
        return True
    try:
        chunk = os.read(fd, 4096)
    except OSError:  # EIO: the program closed the terminal
        return False
    if not chunk:
        return False
    seen += chunk
    transcript += chunk
    return True


for step in steps:
    if "expect" in step:
        token = step["expect"].encode()
        while token not in seen:
            before = len(transcript)
            if not read(60) or len(transcript) == before:
                sys.stdout.write(transcript.decode(errors="replace"))
                sys.exit("\nwaited for %r; the program printed the above" % step["expect"])
        seen = seen.partition(token)[2]
    elif "send" in step:
        os.write(fd, step["send"].encode())
    elif "signal" in step:
        os.kill(pid, getattr(signal, "SIG" + step["signal"]))

# The rest, until the program ends (two minutes at most, then it is killed).
deadline = time.monotonic() + 120
while time.monotonic() < deadline and read(1):
    pass
if time.monotonic() >= deadline:
    os.kill(pid, signal.SIGKILL)
_, status = os.waitpid(pid, 0)
sys.stdout.write(transcript.decode(errors="replace"))
print("\nexit", os.waitstatus_to_exitcode(status))
