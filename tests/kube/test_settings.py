"""The operator's settings: defaults without an environment, SCALELAB_* variables converted by
pydantic-settings, and a message naming the variable when one does not convert."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from scalelab.cli import main
from scalelab.kube.settings import Config

pytestmark = pytest.mark.unit


class WithFlag(Config):
    """Config plus a bool, as a future bool setting would be declared."""

    dry_run: bool = False


def test_config_alone_takes_only_defaults_and_arguments(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SCALELAB_STALL_SECONDS", "15")
    assert Config().stall_seconds == 900.0
    assert Config(stall_seconds=5).stall_seconds == 5.0


def test_from_env_converts_each_variable_and_ignores_empty_and_unknown_ones(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SCALELAB_STALL_SECONDS", "15")
    monkeypatch.setenv("SCALELAB_TRAINER_METRICS_PORT", "0")
    monkeypatch.setenv("SCALELAB_TRAINER_IMAGE", "")
    monkeypatch.setenv("SCALELAB_CACHE", "/somewhere")  # another tool's variable
    config = Config.from_env()
    assert (config.stall_seconds, config.trainer_metrics_port) == (15.0, 0)
    assert config.trainer_image == Config().trainer_image


@pytest.mark.parametrize(
    ("text", "value"),
    [("false", False), ("False", False), ("0", False), ("no", False), ("true", True), ("1", True)],
)
def test_a_bool_setting_reads_false_as_false(
    monkeypatch: pytest.MonkeyPatch, text: str, value: bool
) -> None:
    monkeypatch.setenv("SCALELAB_DRY_RUN", text)
    assert WithFlag.from_env().dry_run is value


def test_a_value_that_does_not_convert_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SCALELAB_METRICS_PORT", "eighty")
    with pytest.raises(ValidationError, match="metrics_port"):
        Config.from_env()
    monkeypatch.setenv("SCALELAB_METRICS_PORT", "70000")
    with pytest.raises(ValidationError, match="metrics_port"):
        Config.from_env()


def test_scalelab_operator_names_the_bad_variable_instead_of_a_traceback(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SCALELAB_STALL_SECONDS", "soon")
    assert main(["operator"]) == 1
    err = capsys.readouterr().err
    assert "SCALELAB_STALL_SECONDS='soon': Input should be a valid number" in err
