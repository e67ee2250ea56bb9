"""Preemption: SIGTERM (what schedulers send before killing) saves ``last.ckpt`` and exits with code 143.

Lightning finishes the running step when SIGTERM arrives and stops;
:class:`hrseg.callbacks.LastCheckpoint` then writes ``last.ckpt`` with the loader position, so
``--ckpt_path last`` continues bit-identically.
"""

from __future__ import annotations

import re
import signal
import time

import pytest
import torch
from test_resume import TOTAL_STEPS, _final_state, _finish, _fit, _step

from hrseg.commands.lightning import SIGTERM_EXIT_CODE


@pytest.mark.slow
def test_sigterm_saves_a_loadable_checkpoint_and_resume_is_exact(tmp_path, uninterrupted_fit):
    root = tmp_path / "term"
    proc = _fit(root, "--last_checkpoint.every_n_train_steps=5")
    last = root / "lightning_logs" / "version_0" / "checkpoints" / "last.ckpt"
    while proc.poll() is None and _step(last) < 5:
        time.sleep(0.01)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == SIGTERM_EXIT_CODE, out[-4000:]
    match = re.search(r"SIGTERM: training stopped at step (\d+); checkpoint: (\S+)", out)
    assert match, out[-4000:]
    stopped = int(match.group(1))
    assert 5 <= stopped < TOTAL_STEPS
    ckpt = torch.load(match.group(2), map_location="cpu", weights_only=True)  # loadable, whole
    assert ckpt["global_step"] == stopped and match.group(2) == str(last.resolve())
    assert ckpt["loops"]["fit_loop"]["state_dict"]["combined_loader"]  # the loader position is in it

    resumed = _finish(_fit(root, "--ckpt_path=last"))
    assert "Resuming from" in resumed
    # the reference run saves every step, this one every 5: the saves leave the training as it is
    expected, got = _final_state(uninterrupted_fit, 0), _final_state(root, 1)
    differing = [k for k, v in expected.items() if not torch.equal(got[k], v)]
    assert not differing, f"stopped at step {stopped}: {len(differing)} tensors differ"
