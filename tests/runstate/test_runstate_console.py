"""runstate.runtime's console: log lines reach stderr even while a decoding thread has silenced
file descriptor 2 for decord (data.video._quiet_stderr), as extraction with num_workers=0 does."""

from __future__ import annotations

import subprocess
import sys

from testkit import REPO_ROOT

PROGRAM = """
import logging, threading
from runstate.runtime import setup_logging
from data.video import _quiet_stderr
setup_logging()
silenced, done = threading.Event(), threading.Event()

def decoding():
    with _quiet_stderr():
        silenced.set()
        done.wait(10)

thread = threading.Thread(target=decoding)
thread.start()
silenced.wait(10)
logging.getLogger("extract").warning("video v1 failed: logged while the decoder is silenced")
done.set()
thread.join()
logging.getLogger("extract").warning("after the decoder")
"""


def test_log_lines_survive_a_decoder_silencing_stderr_in_another_thread():
    result = subprocess.run([sys.executable, "-c", PROGRAM], cwd=REPO_ROOT, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    assert "video v1 failed: logged while the decoder is silenced" in result.stderr
    assert "after the decoder" in result.stderr
