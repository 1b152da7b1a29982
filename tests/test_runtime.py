import subprocess
import sys

import torch

from e2urec.runtime import auto_threads, available_cores, set_threads


def test_threads_are_set_as_asked_and_recorded_by_torch():
    before = torch.get_num_threads()
    other = 2 if before == 1 else 1  # a count torch does not have yet
    try:
        assert set_threads(other) == other and torch.get_num_threads() == other
    finally:
        torch.set_num_threads(before)


def test_auto_leaves_a_core_to_a_busy_neighbour():
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        import time

        time.sleep(0.3)
        assert 1 <= auto_threads() <= max(1, available_cores() - 1)
    finally:
        busy.kill()
        busy.wait()
