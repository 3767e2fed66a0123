"""The operator's settings: defaults without an environment, SCALELAB_* variables converted by
pydantic-settings, and a message naming the variable when one does not convert."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from scalelab.api import Execution
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


def test_the_default_queue_is_read_checked_and_unset_when_empty(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert Config().default_queue_name is None
    monkeypatch.setenv("SCALELAB_DEFAULT_QUEUE_NAME", "team-a.gpu")
    assert Config.from_env().default_queue_name == "team-a.gpu"
    monkeypatch.setenv("SCALELAB_DEFAULT_QUEUE_NAME", "")
    assert Config.from_env().default_queue_name is None
    # Checked as queueName is: a LocalQueue name that is also a label value.
    for bad in ("Team_A", "q" * 64):
        monkeypatch.setenv("SCALELAB_DEFAULT_QUEUE_NAME", bad)
        with pytest.raises(ValidationError, match="default_queue_name"):
            Config.from_env()
    assert main(["operator"]) == 1
    assert "SCALELAB_DEFAULT_QUEUE_NAME='" + "q" * 64 + "': must be a Kueue LocalQueue name" in (
        capsys.readouterr().err
    )


def test_trials_are_not_disrupted_unless_the_admin_says_false(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert Config().do_not_disrupt_trials is True
    assert Config.from_env().do_not_disrupt_trials is True
    monkeypatch.setenv("SCALELAB_DO_NOT_DISRUPT_TRIALS", "false")
    assert Config.from_env().do_not_disrupt_trials is False
    monkeypatch.setenv("SCALELAB_DO_NOT_DISRUPT_TRIALS", "")
    assert Config.from_env().do_not_disrupt_trials is True
    monkeypatch.setenv("SCALELAB_DO_NOT_DISRUPT_TRIALS", "sometimes")
    with pytest.raises(ValidationError, match="do_not_disrupt_trials"):
        Config.from_env()


def test_a_trials_local_queue_is_the_specs_queue_name_else_the_operators_default() -> None:
    named, unnamed = Execution(queue_name="mine"), Execution()
    assert Config().local_queue(unnamed) is None
    assert Config().local_queue(named) == "mine"
    assert Config(default_queue_name="team").local_queue(unnamed) == "team"
    assert Config(default_queue_name="team").local_queue(named) == "mine"
    assert unnamed.queue_name is None
