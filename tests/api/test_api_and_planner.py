"""The API models, the validation messages and the planner, as pure functions."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from scalelab import api
from scalelab.names import MAX_TRIAL_NAME_LENGTH, launcher_name, trial_name, worker_pod_name
from scalelab.planner import plan, trainer_command, trainer_flags
from scalelab.validation import InvalidExperimentError, load_experiment, parse_experiment

pytestmark = pytest.mark.unit

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
DNS_1035 = r"^[a-z]([-a-z0-9]*[a-z0-9])?$"


def experiment(**spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "scalelab.dev/v1alpha1",
        "kind": "ScaleExperiment",
        "metadata": {"name": "demo"},
        "spec": spec,
    }


def problems(data: Any) -> list[str]:
    with pytest.raises(InvalidExperimentError) as caught:
        parse_experiment(data)
    return [p.render("x.yaml") for p in caught.value.problems]


def all_models() -> list[type[BaseModel]]:
    found: list[type[BaseModel]] = []
    for value in vars(api).values():
        if (
            isinstance(value, type)
            and issubclass(value, api.ApiModel)
            and value is not api.ApiModel
        ):
            found.append(value)
    return found


def test_every_api_field_has_a_description_and_a_camel_case_wire_name() -> None:
    for model in all_models():
        for name, field in model.model_fields.items():
            assert field.description, f"{model.__name__}.{name} has no description"
            wire = field.alias or name
            assert "_" not in wire, f"{model.__name__}.{name} is not camelCase: {wire}"


def test_optional_spec_fields_state_their_default_in_the_description() -> None:
    for model in (api.Workload, api.Sweep, api.Training, api.Resources, api.Execution):
        for name, field in model.model_fields.items():
            assert field.description is not None
            assert "Default" in field.description, f"{model.__name__}.{name}"


def test_the_design_example_defaults_are_the_model_defaults() -> None:
    spec = parse_experiment(experiment()).spec
    assert spec.training.learning_rate == 0.001
    assert spec.training.max_epochs == 1000
    assert spec.training.convergence.relative_tolerance == 0.001
    assert spec.training.shuffle is False
    assert spec.execution.max_gpus == 16
    dumped = parse_experiment(experiment()).model_dump(by_alias=True, mode="json")
    assert dumped["spec"]["execution"]["maxGPUs"] == 16
    assert dumped["spec"]["sweep"]["batchScope"] == "global"


def test_the_json_schema_is_structural_no_unions_of_objects_and_no_free_form_maps() -> None:
    schema = api.ScaleExperiment.model_json_schema(by_alias=True)
    maps: list[str] = []

    def walk(node: Any, path: str) -> None:
        if isinstance(node, dict):
            for key in ("anyOf", "oneOf"):
                objects = [o for o in node.get(key, []) if "$ref" in o or o.get("type") == "object"]
                assert len(objects) <= 1, f"union of objects at {path}"
            extra = node.get("additionalProperties")
            if isinstance(extra, dict) and not node.get(api.FREE_FORM_VALUES):
                assert extra.get("type") == "string", f"free-form map at {path}"
                maps.append(path)
            if node.get(api.FREE_FORM_VALUES):  # declared: values kept as written
                free.append(path)
            for key, value in node.items():
                walk(value, f"{path}/{key}")
        elif isinstance(node, list):
            for i, value in enumerate(node):
                walk(value, f"{path}[{i}]")

    free: list[str] = []
    walk(schema, "")
    assert any("Resources/properties/nodeSelector" in m for m in maps)
    assert [p.rsplit("/", 1)[-1] for p in free] == ["parameters"]


def test_a_negative_batch_size_names_the_file_the_field_and_the_value() -> None:
    found = problems(experiment(sweep={"batchSizes": [1, -4]}))
    assert found == ["x.yaml: spec.sweep.batchSizes[1]: must be a positive integer, got -4"]


def test_an_unknown_field_is_an_error_that_lists_the_allowed_fields() -> None:
    (message,) = problems(experiment(training={"learningrate": 0.1}))
    assert message.startswith("x.yaml: spec.training.learningrate: unknown field")
    assert "learningRate" in message


def test_an_unknown_enum_value_lists_the_allowed_values() -> None:
    (message,) = problems(experiment(training={"optimizer": "sdg"}))
    assert "spec.training.optimizer: must be one of" in message
    assert "'lamb'" in message
    assert message.endswith("got 'sdg'")


def test_every_problem_of_a_file_is_reported_at_once() -> None:
    found = problems(experiment(sweep={"batchSizes": [0], "gpus": ["two"]}, typo=1))
    assert len(found) == 3
    assert any("spec.typo: unknown field" in p for p in found)


def test_a_grid_where_no_point_can_run_is_invalid() -> None:
    (message,) = problems(experiment(sweep={"batchSizes": [3], "gpus": [2]}))
    assert "spec.sweep: no grid point can run" in message
    assert "not divisible" in message


def test_repeated_sweep_values_are_invalid() -> None:
    (message,) = problems(experiment(sweep={"batchSizes": [4, 8, 4]}))
    assert message == "x.yaml: spec.sweep.batchSizes: must not repeat values, got [4, 8, 4]"


def test_yaml_errors_carry_the_line(tmp_path: Path) -> None:
    file = tmp_path / "bad.yaml"
    file.write_text("metadata:\n  name: a\nspec: {sweep: [\n")
    with pytest.raises(InvalidExperimentError) as caught:
        load_experiment(file)
    (problem,) = caught.value.problems
    assert problem.path.startswith("line ")
    assert "invalid YAML" in problem.message


def test_the_planner_skips_points_that_cannot_run_with_a_reason() -> None:
    exp = parse_experiment(
        experiment(sweep={"batchSizes": [1, 3, 4], "gpus": [1, 2, 4]}, execution={"maxGPUs": 2})
    )
    trials = {(t.batch_size, t.gpus): t for t in plan(exp)}
    assert len(trials) == 9
    assert "over execution.maxGPUs=2" in trials[(4, 4)].reason
    assert "smaller than the 2 processes" in trials[(1, 2)].reason
    assert "not divisible by the 2 processes" in trials[(3, 2)].reason
    assert trials[(4, 2)].phase is api.TrialPhase.PENDING
    assert [t.skipped for t in plan(exp)].count(True) == 5


def test_per_process_batch_scope_multiplies_the_batch_by_the_process_count() -> None:
    exp = parse_experiment(
        experiment(sweep={"batchSizes": [8], "gpus": [1, 4], "batchScope": "perProcess"})
    )
    assert [t.batch_size for t in plan(exp)] == [8, 32]


def test_learning_rate_scaling_rules_resolve_per_global_batch() -> None:
    for rule, expected in (("none", 0.1), ("linear", 0.4), ("sqrt", 0.2)):
        exp = parse_experiment(
            experiment(
                sweep={"batchSizes": [64]},
                training={"learningRate": 0.1, "referenceBatchSize": 16, "lrScaling": rule},
                workload={"datasetSize": 64},
            )
        )
        (trial,) = plan(exp)
        assert math.isclose(trial.spec.learning_rate, expected)


def test_repeats_get_consecutive_seeds_and_distinct_names() -> None:
    exp = parse_experiment(experiment(sweep={"repeats": 3}, workload={"seed": 7}))
    trials = plan(exp)
    assert [t.spec.seed for t in trials] == [7, 8, 9]
    assert len({t.name for t in trials}) == 3


def test_trial_names_are_dns_1035_labels_that_leave_room_for_mpijob_pods() -> None:
    import re

    long_name = "a-very-long-experiment-name-" + "x" * 35
    names = {trial_name(long_name, b, g, r) for b in (1, 65536) for g in (1, 512) for r in (0, 99)}
    assert len(names) == 8
    for name in [*names, trial_name("1st", 1, 1)]:
        assert len(name) <= MAX_TRIAL_NAME_LENGTH
        assert re.match(DNS_1035, name), name
        assert len(worker_pod_name(name, 9999)) <= 63
        assert len(launcher_name(name)) + len("-abcde") <= 63
    assert trial_name(long_name, 1, 1) == trial_name(long_name, 1, 1)
    assert trial_name(long_name + "y", 1, 1) != trial_name(long_name + "z", 1, 1)


def test_the_trainer_command_carries_every_trial_field() -> None:
    exp = parse_experiment(
        experiment(
            sweep={"batchSizes": [50]},
            training={"targetLoss": 101.0, "shuffle": True, "warmupEpochs": 2},
        )
    )
    (trial,) = plan(exp)
    argv = trainer_command(trainer_flags(trial.spec, trial.name, metrics_port=9100))
    assert argv[:3] == ["python", "-m", "scalelab_trainer"]

    def value(flag: str) -> str:
        return argv[argv.index(flag) + 1]

    assert value("--trial") == trial.name
    assert value("--experiment") == "demo"
    assert value("--batch-size") == "50"
    assert value("--target-loss") == "101.0"
    assert value("--warmup-epochs") == "2.0"
    assert value("--metrics-port") == "9100"
    assert "--shuffle" in argv
    assert "--no-shuffle" not in argv


def test_the_image_defaults_to_null_and_never_reaches_the_trainer_or_the_local_executor(
    tmp_path: Path,
) -> None:
    from scalelab.local.executor import LocalRun

    plain = parse_experiment(experiment(sweep={"batchSizes": [50]}))
    pinned = parse_experiment(
        experiment(sweep={"batchSizes": [50]}, resources={"image": "reg/elsewhere:9"})
    )
    assert plain.spec.resources.image is None
    assert plain.spec.model_dump(by_alias=True, mode="json")["resources"]["image"] is None
    ((a,), (b,)) = plan(plain), plan(pinned)
    assert trainer_flags(a.spec, a.name) == trainer_flags(b.spec, b.name)
    # The local executor runs this machine's trainer: an image changes no trial's command, so
    # results of a run without one are reused by a run with one.
    runs = [LocalRun(x, tmp_path / str(i)) for i, x in enumerate((plain, pinned))]
    assert runs[0].results.trials[0].argv == runs[1].results.trials[0].argv
    assert "reg/elsewhere:9" not in " ".join(runs[1].results.trials[0].argv)


def test_every_example_is_a_valid_experiment() -> None:
    files = sorted(EXAMPLES.glob("*.yaml"))
    assert {f.name for f in files} >= {
        "lab1-gd-vs-sgd.yaml",
        "lab1-batch-size.yaml",
        "lab2-horovod.yaml",
        "lab3-large-batch.yaml",
        "lab3-adaptive.yaml",
        "gpu-throughput.yaml",
    }
    for file in files:
        exp = load_experiment(file)
        assert exp.metadata.name == file.stem


def test_a_model_with_a_dataset_it_cannot_train_on_is_invalid() -> None:
    (message,) = problems(experiment(workload={"model": "cnn", "dataset": "lab1-line"}))
    assert message == (
        "x.yaml: spec.workload.dataset: model cnn trains on synthetic-images, got 'lab1-line'"
    )


def test_scalelab_validate_prints_one_line_per_problem_and_exits_non_zero(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from scalelab.cli import main

    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "apiVersion: scalelab.dev/v1alpha1\nkind: ScaleExperiment\nmetadata: {name: bad}\n"
        "spec:\n  sweep: {batchSizes: [1, -4]}\n  trainig: {}\n"
    )
    broken = tmp_path / "broken.yaml"
    broken.write_text("metadata:\n  name: [\n")
    good = EXAMPLES / "lab1-gd-vs-sgd.yaml"
    assert main(["validate", str(good), str(bad), str(broken)]) == 1
    out, err = capsys.readouterr()
    assert f"{good}: ok (lab1-gd-vs-sgd: 2 trials, 0 skipped)" in out
    lines = err.splitlines()
    assert f"{bad}: spec.sweep.batchSizes[1]: must be a positive integer, got -4" in lines
    assert any(line.startswith(f"{bad}: spec.trainig: unknown field") for line in lines)
    assert any(line.startswith(f"{broken}: line ") and "invalid YAML" in line for line in lines)
    assert "Traceback" not in err
    assert main(["validate", str(good)]) == 0


def test_scalelab_plan_prints_skips_and_the_trainer_command(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from scalelab.cli import main

    file = tmp_path / "x.yaml"
    file.write_text("metadata: {name: grid}\nspec:\n  sweep: {batchSizes: [4, 6], gpus: [1, 4]}\n")
    assert main(["plan", str(file)]) == 0
    out = capsys.readouterr().out
    assert "grid-b6-g4" in out
    assert "Skipped (global batch 6 is not divisible by the 4 processes)" in out
    launch = "python -m scalelab_trainer.horovodrun -np 4 --gloo -H localhost:4"
    assert f"grid-b4-g4: {launch} python -m scalelab_trainer " in out
    assert main(["plan", str(file), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["phase"] for r in rows] == ["Pending", "Pending", "Pending", "Skipped"]


def test_a_trainer_result_is_read_once_through_the_typed_model_leniently() -> None:
    raw = {
        "phase": "Succeeded",
        "epochs": 3,
        "finalLoss": "not a number",
        "config": {"seed": 0},
        "curves": {"epochLoss": [1.0]},
        "warnings": ["slow mode"],
    }
    result = api.read_trial_result(raw)
    assert result is not None
    assert (result.phase, result.epochs, result.final_loss) == (api.TrialPhase.SUCCEEDED, 3, None)
    assert result.warnings == ["slow mode"]
    assert api.read_trial_result({"phase": "Exploded", "epochs": 3}) is None
    assert api.read_trial_result({"epochs": 3}) is None
    assert api.read_trial_result(None) is None


def test_a_custom_workload_needs_an_entry_point_and_only_it_may_have_one() -> None:
    custom = {"model": "custom", "dataset": "custom"}
    (message,) = problems(experiment(workload=custom))
    assert "spec.workload.entryPoint: required with model custom" in message
    (message,) = problems(experiment(workload={"entryPoint": "team.models:build"}))
    assert "allowed only there" in message
    ok = parse_experiment(experiment(workload={**custom, "entryPoint": "team.models:build"}))
    assert ok.spec.workload.entry_point == "team.models:build"


def test_entry_points_and_parameters_are_checked_with_the_field_named() -> None:
    custom = {"model": "custom", "dataset": "custom", "entryPoint": "team.models:build"}
    found = problems(
        experiment(
            workload={
                **custom,
                "entryPoint": "team/models.py",
                "parameters": {"depth": 3, "bad-name": 1, "nested": {"a": 1}},
            }
        )
    )
    text = "\n".join(found)
    assert "spec.workload.entryPoint: must match" in text
    assert "spec.workload.parameters: key 'bad-name'" in text
    assert "spec.workload.parameters.nested" in text
    values = {"i": 3, "f": 0.5, "s": "gelu", "b": True, "l": [1, 2.5, "x"]}
    ok = parse_experiment(experiment(workload={**custom, "parameters": values}))
    assert ok.spec.workload.parameters == values
    assert type(ok.spec.workload.parameters["b"]) is bool
    assert type(ok.spec.workload.parameters["i"]) is int
