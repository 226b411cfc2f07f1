"""Fixtures shared by the test files, and the hypothesis profile."""

import pytest
from hypothesis import settings

# Property tests check correctness, not speed: hypothesis's default 200 ms deadline per example failed
# test_geometry on a loaded 2-core machine (one example took 350 ms while other jobs ran), so no deadline.
settings.register_profile("navgym", deadline=None)
settings.load_profile("navgym")


@pytest.fixture(scope="module")
def one_torch_thread():
    """One torch thread for the test (the machine is shared; two threads per process oversubscribe it)."""
    torch = pytest.importorskip("torch")
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session", autouse=True)
def checkout_left_clean():
    """The suite writes only to temporary folders: `git status --porcelain` (tracked changes and new files not
    ignored) is the same after the session as before it; checked where the tests run from a git checkout."""
    import subprocess
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]

    def status():
        try:
            r = subprocess.run(["git", "status", "--porcelain", "--untracked-files=all"], cwd=root,
                               capture_output=True, text=True, timeout=60)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return set(r.stdout.splitlines()) if r.returncode == 0 else None

    before = status()
    yield
    after = status()
    if before is not None and after is not None:
        assert after <= before, f"the test suite changed the checkout: {sorted(after - before)}"
