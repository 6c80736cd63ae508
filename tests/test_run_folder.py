"""The output folder's layout: which folders are checkpoints, what an interrupted save leaves and how it is
cleaned, and what --overwrite removes. No torch: the folders are made by hand."""

from __future__ import annotations

from pathlib import Path

from minibert.run_folder import STATE_FILE, RunFolder, is_checkpoint, list_checkpoints


def checkpoint(run: RunFolder, step: int, complete: bool = True) -> Path:
    path = run.checkpoint(step)
    path.mkdir(parents=True)
    (path / "model.safetensors").write_bytes(b"weights")
    if complete:  # the trainer writes its state last
        (path / STATE_FILE).write_bytes(b"state")
    return path


def test_checkpoints_are_complete_folders_by_step_not_by_name(tmp_path):
    run = RunFolder(tmp_path)
    assert run.checkpoints() == [] and RunFolder(tmp_path / "missing").checkpoints() == []
    for step in (10, 9, 100):
        checkpoint(run, step)
    checkpoint(run, 11, complete=False)
    (tmp_path / "checkpoint-x").mkdir()
    (tmp_path / "checkpoint-12").write_text("a file")
    assert run.checkpoints() == list_checkpoints(tmp_path) == [run.checkpoint(s) for s in (9, 10, 100)]
    assert is_checkpoint(run.checkpoint(9)) and not is_checkpoint(run.checkpoint(11))
    run.prune_checkpoints(2)
    assert run.checkpoints() == [run.checkpoint(10), run.checkpoint(100)]
    assert run.checkpoint(11).is_dir()  # no trainer state, no checkpoint: neither counted nor removed


def test_clean_partial_removes_tmp_folders_and_puts_back_a_best_being_replaced(tmp_path):
    run = RunFolder(tmp_path)
    run.tmp("checkpoint-4").mkdir()
    run.tmp("best").mkdir()
    run.old("best").mkdir()
    (run.old("best") / "model.safetensors").write_bytes(b"the best so far")
    assert sorted(p.name for p in run.clean_partial()) == [".tmp-best", ".tmp-checkpoint-4"]
    assert (run.best / "model.safetensors").read_bytes() == b"the best so far" and not run.old("best").exists()
    run.old("best").mkdir()  # renamed away, and the new best/ was moved in: the old one is dropped
    assert run.clean_partial() == [] and not run.old("best").exists() and run.best.is_dir()


def test_clear_removes_what_a_new_run_would_not_replace(tmp_path):
    run = RunFolder(tmp_path)
    assert not run.holds_model()
    checkpoint(run, 2)
    assert run.has_checkpoints() and run.holds_model()
    for folder in (run.best, run.tmp("checkpoint-4"), run.old("best"), run.tensorboard):
        folder.mkdir()
    for f in (run.metrics, run.curves, tmp_path / "config.json", run.train_args, run.model_card, tmp_path / "mine.txt"):
        f.write_text("x")
    run.clear()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["README.md", "config.json", "mine.txt", "train_args.json"]
    assert run.holds_model() and not run.has_checkpoints()  # the final model: the new run's save replaces it


def test_lock_is_the_folders_and_reentrant(tmp_path):
    run = RunFolder(tmp_path / "out")
    with run.lock():
        assert (run.path / ".minibert.lock").is_file()
        with RunFolder(tmp_path / "out").lock():
            pass
        assert (run.path / ".minibert.lock").is_file()
    assert not run.path.exists()  # made for the run, removed again as it wrote nothing
