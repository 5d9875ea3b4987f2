"""A job's data are the data the run was resolved with: a worker in the driver's process
takes the resolved dataset and players, one in another process loads them and checks their
content digest against the run's."""

import pytest

from diffattr.config import RunConfig
from diffattr.data import Players, load_dataset
from diffattr.data.digest import dataset_digest
from diffattr.errors import DiffattrError
from diffattr.runner import job
from diffattr.runner.job import JobContext, Worker, offer_resolved

DATA = {"data": {"name": "digits", "limit_per_class": 3}}


def _ctx(tmp_path, digest):
    cfg = RunConfig().with_overrides(**DATA)
    return JobContext(
        config=cfg.to_dict(),
        full_dir=str(tmp_path / "full"),
        null_dir=str(tmp_path / "null"),
        work_dir=str(tmp_path / "work"),
        cache_dir=str(tmp_path / "cache"),
        data_digest=digest,
    ), cfg


@pytest.fixture(autouse=True)
def _clean_offers():
    job._RESOLVED.clear()
    yield
    job._RESOLVED.clear()


def test_a_worker_in_the_driver_takes_the_resolved_data(tmp_path):
    cfg = RunConfig().with_overrides(**DATA)
    ds = load_dataset(cfg.data)
    players = Players.from_dataset(ds, cfg.data.players)
    digest = dataset_digest(ds)
    offer_resolved(digest, ds, players)
    ctx, _ = _ctx(tmp_path, digest)
    got_ds, got_players = Worker(ctx).dataset
    assert got_ds is ds and got_players is players


def test_a_worker_elsewhere_loads_the_data_and_checks_their_digest(tmp_path):
    cfg = RunConfig().with_overrides(**DATA)
    digest = dataset_digest(load_dataset(cfg.data))
    ctx, _ = _ctx(tmp_path, digest)
    ds, players = Worker(ctx).dataset
    assert dataset_digest(ds) == digest and len(players) == 10


def test_a_worker_refuses_data_that_changed_after_the_run_was_resolved(tmp_path):
    ctx, _ = _ctx(tmp_path, "0123456789abcdef")
    with pytest.raises(DiffattrError, match="data changed after the run was resolved"):
        _ = Worker(ctx).dataset


def test_an_offer_for_other_data_is_not_taken(tmp_path):
    cfg = RunConfig().with_overrides(**DATA)
    ds = load_dataset(cfg.data)
    offer_resolved("ffffffffffffffff", ds, Players.from_dataset(ds, cfg.data.players))
    ctx, _ = _ctx(tmp_path, dataset_digest(ds))
    got, _ = Worker(ctx).dataset
    assert got is not ds
