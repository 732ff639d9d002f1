"""NNHandler under torch.distributed: two CPU processes over gloo, started as torchrun would.

Each test runs one job of `tests.stateful.dist_jobs` in two processes and compares what the
ranks return with each other and with the same run in this process. The jobs group several
checks, since starting the processes costs more than the checks.
"""

from __future__ import annotations

import functools
import os

import pytest
import torch

from tests._distributed import run_ranks
from tests.stateful import dist_jobs
from tests._models import classification_data

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


@functools.lru_cache(maxsize=None)
def one_process(accumulate: int = 1):
    """The same training in one process on the same global batches (2 x 8 samples)."""
    h = dist_jobs.smooth_handler(16, use_distributed=False)
    h.train(2, gradient_accumulation_steps=accumulate, progress_bar=False)
    return h


def assert_close_weights(got: dict, want: dict) -> None:
    assert got.keys() == want.keys()
    for k in want:
        torch.testing.assert_close(got[k], want[k], rtol=1e-5, atol=1e-6, msg=k)


@pytest.mark.timeout(120)
def test_ddp_matches_one_process_writes_on_rank0_and_gathers_predictions(tmp_path):
    ranks = run_ranks("tests.stateful.dist_jobs:train_equivalence", tmp_path)
    r0, r1 = (r.data for r in ranks)
    # Replicas stay bitwise identical, with and without accumulation (a short last window).
    for key in ("plain", "accumulated"):
        assert all(torch.equal(r0[key][k], r1[key][k]) for k in r0[key])
    # ...and equal one process on the same global batches; so do the epoch losses and metrics.
    for key, accumulate in (("plain", 1), ("accumulated", dist_jobs.K_SHORT)):
        ref = one_process(accumulate)
        assert_close_weights(r0[key], dist_jobs.weights(ref))
        want = dist_jobs.history(ref)
        for name, values in r0[f"{key}_history"].items():
            assert values == r1[f"{key}_history"][name]
            assert values == pytest.approx(want[name], rel=1e-6, abs=1e-7), name
    assert (r0["model"], r0["module"]) == ("DistributedDataParallel", "Smooth")

    # Only rank 0 writes files and logs.
    written = {r: sorted(os.listdir(tmp_path / f"r{r}")) if (tmp_path / f"r{r}").exists() else [] for r in (0, 1)}
    assert written[0] == ["auto", "best.pth", "log.csv", "nnh.log", "tb"] and written[1] == []
    assert (tmp_path / "r0" / "log.csv").read_text().count("\n") == 3  # header + 2 epochs
    assert "Epoch 2/2" in (tmp_path / "r0" / "nnh.log").read_text()
    assert (r0["logger_is_none"], r1["logger_is_none"]) == (False, True)
    assert "Epoch 2/2" in ranks[0].stderr and "Epoch" not in ranks[1].stderr  # the tqdm bars

    # predict: every sample once, in dataset order, in the loader's batches, on rank 0 only.
    x = classification_data(45).tensors[0]
    ref = one_process()
    want = ref.predict(torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x), batch_size=10))
    assert r1["predict"] is None
    assert [t.shape[0] for t in r0["predict"]] == [10, 10, 10, 10, 5]
    torch.testing.assert_close(torch.cat(r0["predict"]), torch.cat(want), rtol=1e-5, atol=1e-6)

    # The utilities, inside a process group.
    assert (r0["ranks"], r1["ranks"]) == ((0, 0, 2, True), (1, 1, 2, True))
    assert r0["mean"] == r1["mean"] == pytest.approx({"a": (1 * 1 + 2 * 2) / 3, "b": (0 * 1 + 10 * 2) / 3})
    assert r0["gathered"] == [{"rank": 0}, {"rank": 1}] and r1["gathered"] is None
    assert r0["on_rank"] == ("done", True) and r1["on_rank"] == (None, True)
    assert r0["failure"] == "OSError: disk full"
    assert r1["failure"] == "RuntimeError: rank 0 failed, so this rank stops too: OSError: disk full"


@pytest.mark.timeout(120)
def test_decisions_taken_on_one_rank_are_taken_by_all(tmp_path):
    from nnh import NNHandler
    from tests._models import build_handler

    single = build_handler()
    single.train(1, progress_bar=False)
    single.save(tmp_path / "single.pth")
    r0, r1 = (r.data for r in run_ranks("tests.stateful.dist_jobs:decisions", tmp_path))

    # NaN on rank 1 only (its gradients finite): the update is skipped on both ranks.
    assert r0["nan"]["steps"] == r1["nan"]["steps"] == 3  # 4 batches, one skipped
    assert all(torch.equal(r0["nan"]["weights"][k], r1["nan"]["weights"][k]) for k in r0["nan"]["weights"])
    assert r0["nan"]["loss"] == r1["nan"]["loss"] and r0["nan"]["loss"][0] == r0["nan"]["loss"][0]
    assert len(r0["nan"]["warnings"]) == 1 and "batch 2" in r0["nan"]["warnings"][0]
    assert r1["nan"]["warnings"] == []  # warnings are rank 0's

    # A stop set on one rank stops both at the same epoch, or the same batch.
    assert r0["stop"] == r1["stop"]
    assert r0["stop"]["epoch_end"] == (2, 8)
    # Set after batch 0 of epoch 1: agreed at the next exchange (the job exchanges at every
    # window), after batch 1; the epoch ends there (it counts as done, as in one process).
    assert r0["stop"]["batch"] == (2, 4 + 2)
    assert r0["stop"]["early"] == 2

    # SIGTERM to rank 1 only: both stopped at the same batch, and the resumed run is exact.
    assert r0["preempted"] == r1["preempted"] and r0["preempted"]["epoch"] == 1
    ckpt = torch.load(tmp_path / "pre.pth", weights_only=True)
    assert ckpt["resume"]["batches_done"] == r0["preempted"]["steps"] - 3 and ckpt["resume"]["world_size"] == 2
    for r in (r0, r1):
        res = r["resume"]
        assert res["epoch"] == dist_jobs.TOTAL and res["got_history"] == res["ref_history"]
        assert all(torch.equal(res["got"][k], res["ref"][k]) for k in res["ref"])
        assert all(torch.equal(res["got_ema"][k], res["ref_ema"][k]) for k in res["ref_ema"])
    assert all(torch.equal(r0["resume"]["got"][k], r1["resume"]["got"][k]) for k in r0["resume"]["got"])

    # Saved under DDP (rank 0 wrote it): loads in one process with the same state.
    loaded = NNHandler.load(tmp_path / "final.pth")
    assert type(loaded.model).__name__ == "MLP"
    assert all(torch.equal(v, r0["final"]["weights"][k]) for k, v in dist_jobs.weights(loaded).items())
    assert dist_jobs.history(loaded) == r0["final"]["history"]
    assert torch.equal(torch.get_rng_state(), r0["final"]["rng"])
    saved_state = r0["final"]["optimizer"]["state"]
    for i, st in loaded.optimizer.state_dict()["state"].items():
        assert all(torch.equal(v, saved_state[i][k]) for k, v in st.items())
    loaded.set_train_loader(classification_data(96), batch_size=16)
    loaded.set_val_loader(classification_data(32, seed=1), batch_size=16)
    loaded.train(1, progress_bar=False)
    assert loaded.epoch == dist_jobs.TOTAL + 1

    # freeze_module after construction: the frozen layer stays, the replicas agree.
    assert r0["frozen"]["unchanged"] and r1["frozen"]["unchanged"]
    assert all(torch.equal(v, r1["frozen"]["weights"][k]) for k, v in r0["frozen"]["weights"].items())

    # Saved by one process: loads under DDP on both ranks.
    for r in (r0, r1):
        assert r["single"]["model"] == "DistributedDataParallel" and r["single"]["epoch"] == 1
        assert all(torch.equal(v, single.module.state_dict()[k]) for k, v in r["single"]["weights"].items())


@pytest.mark.timeout(60)
def test_a_rank_that_raises_ends_the_job_within_the_timeout(tmp_path):
    r0, r1 = run_ranks("tests.stateful.dist_jobs:one_rank_raises", tmp_path, check=False, timeout=45)
    assert r1.returncode == 3  # rank 1 raised, then stayed silent until rank 0 had given up
    raised_at = float((tmp_path / "rank1_raised_at").read_text())
    # Rank 0 failed (it did not hang), on the timeout of the collective it was waiting in.
    assert r0.data is not None and "timed out" in r0.data["error"].lower()
    waited = r0.data["failed_at"] - raised_at
    assert waited < dist_jobs.TIMEOUT_S + 6.0, f"rank 0 gave up {waited:.1f} s after rank 1 raised"


@pytest.mark.timeout(120)
def test_fsdp_trains_as_ddp_and_its_checkpoints_reshard(tmp_path):
    from nnh import NNHandler

    single = dist_jobs.smooth_handler(16, use_distributed=False)
    single.train(1, **dist_jobs.FSDP_KW)
    single.save(tmp_path / "single.pth")
    r0, r1 = (r.data for r in run_ranks("tests.stateful.dist_jobs:fsdp", tmp_path))
    for r in (r0, r1):
        # Sharded training reaches DDP's weights (accumulation with a short last window,
        # global-norm clipping, EMA), with bf16 autocast too.
        assert r["module"] == "FSDPSmooth"
        assert_close_weights(r["fsdp"], r["ddp"])
        for name, values in r["histories"][1].items():
            assert values == pytest.approx(r["histories"][0][name], rel=1e-6), name
        for k, v in r["bf16"][1].items():
            torch.testing.assert_close(v, r["bf16"][0][k], rtol=1e-3, atol=1e-4)
        # Saved as shards by 2, loaded by 2: training continues exactly.
        a, b, module = r["continued"]
        assert module == "FSDPSmooth" and all(torch.equal(a[k], b[k]) for k in a)
    assert all(torch.equal(r0["fsdp"][k], r1["fsdp"][k]) for k in r0["fsdp"])

    # 2 -> 1: the folder loads in one process, whole tensors.
    loaded = NNHandler.load(tmp_path / "fsdp_ckpt")
    saved = r0["saved"]
    assert type(loaded.model).__name__ == "Smooth" and loaded.epoch == 2
    assert all(torch.equal(v, saved["weights"][k]) for k, v in dist_jobs.weights(loaded).items())
    assert all(torch.equal(v, saved["moments"][k]) for k, v in dist_jobs.optimizer_moments(loaded).items())
    assert all(torch.equal(v, saved["ema"][k]) for k, v in loaded.train_state["ema"].items())
    assert dist_jobs.history(loaded) == saved["history"]

    # 1 -> 2: a one-process file sharded on loading; training on matches one process.
    single.train(1, **dist_jobs.FSDP_KW)
    for r in (r0, r1):
        got = r["from_single"]
        assert got["module"] == "FSDPSmooth"
        saved_single = torch.load(tmp_path / "single.pth", weights_only=True)
        assert all(torch.equal(v, saved_single["model_state_dict"][k]) for k, v in got["weights"].items())
        assert all(torch.equal(v, saved_single["train_state"]["ema"][k]) for k, v in got["ema"].items())
        assert_close_weights(got["continued"], dist_jobs.weights(single))

    # nnh.func on DTensor shards.
    shards = r0["shards"]
    assert shards["norm"][0] == pytest.approx(shards["norm"][1], rel=1e-6)
    assert_close_weights(*shards["clipped"])
    assert shards["gated"] == {"SGD": (True, True), "AdamW": (True, True)}
    for r in (r0, r1):
        assert r["shards"]["inf_in_one_shard"] == {"stepped": False, "step": 0, "unchanged": True}
        message, untouched = r["freeze"]
        assert "freeze them in the model's __init__" in message and untouched  # refused before any change
