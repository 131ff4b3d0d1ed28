"""runstate.runtime.retain_freed_memory: the memory that freed tensors leave is reused in place, not
taken again as fresh pages (counted as the process's minor page faults; nothing is timed)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from testkit import REPO_ROOT

# A small TAda2D's inference forward, repeated: print whether the settings took and the page
# faults of one forward once the first two have run.
PROGRAM = """
import resource, torch
from runstate.runtime import retain_freed_memory
took = retain_freed_memory()
from backbone.build import build_model
model = build_model("tada2d", 18, {"label": 10}, width=32).eval()
clip = torch.randn(1, 3, 8, 112, 112)
with torch.inference_mode():
    model(clip), model(clip)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(3):
        model(clip)
print(took, (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) // 3)
"""


def faults_per_forward(environment: dict[str, str]) -> tuple[bool, int]:
    result = subprocess.run([sys.executable, "-c", PROGRAM], capture_output=True, text=True, check=True,
                            cwd=REPO_ROOT, env={**os.environ, "PYTHONPATH": str(REPO_ROOT), **environment})
    took, faults = result.stdout.split()
    return took == "True", int(faults)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc settings")
def test_freed_tensor_memory_is_reused_instead_of_faulted_in_again():
    took, faults = faults_per_forward({})
    assert took
    assert faults < 1000  # measured 0: every activation lands in memory an earlier pass freed
    # An explicit malloc setting in the environment wins: nothing is changed, and glibc's defaults
    # hand freed activations back to the OS, so each forward faults them in again, 4 KB at a time.
    took, faults = faults_per_forward({"MALLOC_TOP_PAD_": str(128 << 10)})
    assert not took
    assert faults > 5000  # measured 16,700
