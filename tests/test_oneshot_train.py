"""Supernet training (sandwich rule, checkpoints, cache), the oneshot settings, and sub-network scoring.

Real training on real data (the tiny one-shot space: Fashion-MNIST at 16x16), real files, a real
process killed with SIGKILL mid-training and run again.
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from mfsearch.errors import InputError
from mfsearch.evaluation.strategies import OneShotSettings, oneshot_settings, parse_oneshot
from mfsearch.evaluation.train import proxy_data, recalibrate_bn
from mfsearch.oneshot.score import score, score_data
from mfsearch.oneshot.skeleton import random_config
from mfsearch.oneshot.train import CHECKPOINT, subnets_of_step, supernet_key, train_supernet
from mfsearch.space import load_space

ROOT = Path(__file__).resolve().parents[1]
SPACE = ROOT / "spaces" / "tiny_oneshot.yaml"
KILL_TIMEOUT_S = 120


def space_file(tmp_path: Path, **sections) -> Path:
    """A copy of the tiny one-shot space with some sections changed (merged one level)."""
    data = yaml.safe_load(SPACE.read_text())
    for k, v in sections.items():
        data[k] = {**data[k], **v} if isinstance(v, dict) and isinstance(data.get(k), dict) else v
    p = tmp_path / "tiny_oneshot.yaml"
    p.write_text(yaml.safe_dump(data, sort_keys=False))
    return p


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """The tiny one-shot supernet trained once for this module (2 epochs)."""
    cache = tmp_path_factory.mktemp("supernet")
    space = load_space(SPACE)
    reports = []
    run = train_supernet(space, cache, report=lambda e, m: reports.append((e, m)))
    return space, cache, run, reports


def test_training_reports_every_epoch_and_writes_one_checkpoint(trained):
    space, cache, run, reports = trained
    settings = oneshot_settings(space)
    assert [e for e, _ in reports] == list(range(1, settings.epochs + 1))
    assert run.trained_epochs == settings.epochs and run.resumed_from is None
    assert run.path == cache / supernet_key(space, settings) / CHECKPOINT
    assert sorted(p.name for p in run.path.parent.iterdir()) == [CHECKPOINT]  # no temporary file left
    first, last = reports[0][1], reports[-1][1]
    assert np.isfinite(first["train_loss"]) and last["train_loss"] < first["train_loss"]
    assert last["distill_loss"] < first["distill_loss"]


def test_a_second_call_with_the_same_key_trains_nothing(trained):
    space, cache, run, _ = trained
    mtime = run.path.stat().st_mtime_ns
    again = train_supernet(space, cache, report=lambda e, m: pytest.fail("trained again"))
    assert again.trained_epochs == 0 and again.key == run.key and again.resumed_from is None
    assert run.path.stat().st_mtime_ns == mtime
    for (k, a), b in zip(run.supernet.state_dict().items(), again.supernet.state_dict().values()):
        assert torch.equal(a, b), k


def test_the_key_follows_the_architecture_the_training_and_the_evaluation(tmp_path):
    base = load_space(SPACE)
    key = supernet_key(base, oneshot_settings(base))
    assert supernet_key(load_space(SPACE), oneshot_settings(base)) == key  # stable
    changed = [
        load_space(space_file(tmp_path, space={"head": {"choice": [64, 96]}})),
        load_space(space_file(tmp_path, evaluation={"lr": 0.02})),
        load_space(space_file(tmp_path, oneshot={"subnets": 1})),
    ]
    assert len({key, *(supernet_key(s, oneshot_settings(s)) for s in changed)}) == 4
    # scoring settings do not change the trained weights: same key
    scoring = load_space(space_file(tmp_path, oneshot={"val_images": 64, "recalibration_batches": 1}))
    assert supernet_key(scoring, oneshot_settings(scoring)) == key


def test_the_sandwich_is_seeded_by_seed_and_step(trained):
    space, _, run, _ = trained
    net = run.supernet
    a = subnets_of_step(net, space, 0, 7, 3)
    assert a == subnets_of_step(net, space, 0, 7, 3)
    assert a[0] == net.largest and a[1] == net.smallest and len(a) == 5
    assert a[2:] != subnets_of_step(net, space, 0, 8, 3)[2:]
    assert a[2:] != subnets_of_step(net, space, 1, 7, 3)[2:]


@pytest.mark.parametrize("damage, message", [
    ("key", "the checkpoint of another supernet (key 'feedfacefeedface'"),
    ("shape", "tensor shapes do not match this space's supernet (tokens: (2, 32) stored, (3, 32) expected)"),
    ("garbage", "not a readable supernet checkpoint"),
])
def test_a_checkpoint_of_another_supernet_is_refused_with_one_line(trained, tmp_path, damage, message):
    space, _, run, _ = trained
    target = tmp_path / run.key / CHECKPOINT
    target.parent.mkdir()
    if damage == "garbage":
        target.write_bytes(b"not a checkpoint")
    else:
        ck = torch.load(run.path, weights_only=True)
        if damage == "key":
            ck["key"] = "feedfacefeedface"
        else:
            ck["model"]["tokens"] = ck["model"]["tokens"][:2]
        torch.save(ck, target)
    with pytest.raises(InputError) as e:
        train_supernet(space, tmp_path)
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(f"{target}: ") and message in msg


def _train_command(space: Path, cache: Path) -> list[str]:
    code = ("import sys; from mfsearch.space import load_space; from mfsearch.oneshot.train import train_supernet; "
            "r = train_supernet(load_space(sys.argv[1]), sys.argv[2], "
            "report=lambda e, m: print('epoch', e, flush=True)); "
            "print('done trained', r.trained_epochs, 'resumed', r.resumed_from, flush=True)")
    return [sys.executable, "-c", code, str(space), str(cache)]


def test_killed_mid_training_resumes_from_the_checkpoint_and_ends_with_the_same_weights(trained, tmp_path):
    """SIGKILL during epoch 2; the same command resumes at epoch 1 and ends bitwise where an uninterrupted run does."""
    space, _, reference, _ = trained
    cache = tmp_path / "cache"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.Popen(_train_command(SPACE, cache), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env, cwd=ROOT)
    try:
        ready, _, _ = select.select([proc.stdout], [], [], KILL_TIMEOUT_S)  # the first epoch's checkpoint is written
        assert ready, f"no epoch finished in {KILL_TIMEOUT_S} s"
        line = proc.stdout.readline()
        assert line.strip() == "epoch 1", (line, proc.stderr.read() if proc.poll() is not None else "")
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait(timeout=KILL_TIMEOUT_S) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=KILL_TIMEOUT_S)
        proc.stdout.close()
        proc.stderr.close()
    ck = torch.load(cache / reference.key / CHECKPOINT, weights_only=True)
    assert ck["epoch"] == 1
    t0 = time.monotonic()
    done = subprocess.run(_train_command(SPACE, cache), capture_output=True, text=True, env=env, cwd=ROOT,
                          timeout=KILL_TIMEOUT_S)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[:2] == ["epoch 2", "done trained 1 resumed 1"], (done.stdout, time.monotonic() - t0)
    final = torch.load(cache / reference.key / CHECKPOINT, weights_only=True)
    assert final["epoch"] == 2
    for k, v in reference.supernet.state_dict().items():
        assert torch.equal(final["model"][k], v), k


def test_settings_parse_and_bad_values_are_one_line_naming_the_field(tmp_path):
    assert parse_oneshot(None) == OneShotSettings()
    s = oneshot_settings(load_space(SPACE))
    assert (s.epochs, s.subnets, s.lr, s.recalibration_batches, s.val_images) == (2, 2, None, 2, 128)
    for bad, rule in [({"epochs": 0}, "oneshot.epochs: must be in [1, 10000], got 0"),
                      ({"subnets": "two"}, "oneshot.subnets: must be an integer, got 'two'"),
                      ({"lr": -1}, "oneshot.lr: must be a number"),
                      ({"warmup": 1}, "oneshot.warmup: unknown key; known keys are epochs, lr")]:
        p = space_file(tmp_path, oneshot=bad)
        with pytest.raises(InputError) as e:
            load_space(p)
        assert "\n" not in str(e.value) and str(e.value).startswith(f"{p}:") and rule in str(e.value), str(e.value)


def test_scores_are_deterministic_and_equal_the_extracted_model_after_the_same_recalibration(trained):
    space, _, run, _ = trained
    net = run.supernet
    settings = oneshot_settings(space)
    data = proxy_data(space.evaluation)
    sd = score_data(data, settings)
    assert len(sd.calibration) == settings.recalibration_batches and sd.val_images == settings.val_images
    rng = np.random.default_rng(0)
    cfgs = [net.largest, net.smallest, *(random_config(space, rng, net.num_classes) for _ in range(2))]
    first = [score(net, c, sd) for c in cfgs]
    assert [score(net, c, sd) for c in reversed(cfgs)] == first[::-1]  # no state carries over between scores
    assert len(set(first)) > 1 and all(20.0 < a <= 100.0 for a in first)  # trained: far above chance (10%)
    for cfg, acc in zip(cfgs, first):
        model = net.extract(cfg)  # carries the statistics of the last recalibration: redo them the stand-alone way
        data.train.set_epoch(0)
        recalibrate_bn(model, data.train, settings.recalibration_batches)
        model.eval()
        with torch.inference_mode():
            correct = sum(int((model(x).argmax(1) == y).sum()) for x, y in zip(sd.images, sd.labels))
        assert abs(100.0 * correct / sd.val_images - acc) <= 100.0 / sd.val_images, cfg.summary()
