"""Bookkeeping shared by the PyTorch reference tests (torch_ref.py, torch_smear.py):
counted checks and the relative error they compare against a tolerance."""
import numpy as np

TINY = 1e-30


class Checks:
    """Counts passed and failed checks (a failure prints its reason) and keeps the worst
    error seen per kind, for the summary line."""

    def __init__(self):
        self.passed = 0
        self.failed = 0
        self.worst = {}

    def expect(self, ok, what):
        if ok:
            self.passed += 1
        else:
            self.failed += 1
            print(f"FAIL: {what}")

    def note(self, kind, err):
        self.worst[kind] = max(self.worst.get(kind, 0.0), err)


def rel_err(a, b):
    """||a - b|| / max(||b||, tiny), b the reference; in float64."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    return float(np.linalg.norm((a - b).ravel()) / max(float(np.linalg.norm(b.ravel())), TINY))
