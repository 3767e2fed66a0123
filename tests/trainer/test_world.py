"""Horovod starts only for a world of several processes (world.py): the size a launcher set."""

from __future__ import annotations

import pytest

from scalelab_trainer import world

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("env", "size"),
    [
        ({}, 1),
        ({"HOROVOD_SIZE": "2"}, 2),
        ({"OMPI_COMM_WORLD_SIZE": "4"}, 4),
        ({"PMI_SIZE": "3"}, 3),
        ({"OMPI_COMM_WORLD_SIZE": "1"}, 1),
        ({"HOROVOD_SIZE": ""}, 1),
    ],
)
def test_the_launchers_world_size_decides(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], size: int
) -> None:
    for name in world.SIZE_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert world.launched_size() == size


def test_a_process_alone_is_rank_0_of_1_and_has_no_collectives() -> None:
    assert (world.rank(), world.size(), world.local_rank()) == (0, 1, 0)
    with pytest.raises(RuntimeError, match="runs alone"):
        world.hvd()
