"""build_kernel.py's leaderboard loop, through the real kaggle CLI, against a local stand-in of the Kaggle API."""
import csv
import json

import pytest

import build_kernel
from build_kernel import SLUG, main
from tests.kaggle_standin import _SCRUBBED, kaggle_standin

KERNEL = f"tester/{SLUG}"


@pytest.fixture
def api(tmp_path, monkeypatch):
    with kaggle_standin(tmp_path / "home") as standin:
        for name in _SCRUBBED:
            monkeypatch.delenv(name, raising=False)
        for name, value in standin.env.items():
            monkeypatch.setenv(name, value)
        yield standin


def loop(tmp_path, *arguments):
    return main(["--out", str(tmp_path / "kernels"), "--experiments", str(tmp_path / "experiments.csv"), *arguments])


def log_rows(tmp_path):
    with (tmp_path / "experiments.csv").open(newline="") as file:
        return list(csv.DictReader(file))


def test_push_sends_the_built_kernel_offline_on_gpu(api, tmp_path, capsys):
    assert loop(tmp_path, "--push", "--set", "dropout=0.3") == 0
    assert "Kernel version 1 successfully pushed" in capsys.readouterr().out
    pushed = api.pushed
    assert pushed["text"] == (tmp_path / "kernels" / SLUG / "kernel.py").read_text()
    assert "BUILD_SETTINGS = {'dropout': 0.3}" in pushed["text"]
    assert pushed["slug"] == KERNEL
    assert (pushed["enableInternet"], pushed["enableGpu"], pushed["isPrivate"]) == (False, True, True)
    assert (pushed["language"], pushed["kernelType"], pushed["machineShape"]) == ("python", "script", "NvidiaTeslaT4")
    assert pushed["competitionDataSources"] == ["dog-breed-identification"]
    assert pushed["datasetDataSources"] == ["gaborfodor/keras-pretrained-models"]
    [row] = log_rows(tmp_path)
    assert (row["action"], row["kernel"], row["commit"], json.loads(row["settings"])) == (
        "push", KERNEL, build_kernel.source_commit(), {"dropout": 0.3}
    )


def test_status_reports_the_kernels_state(api, tmp_path, capsys):
    api.kernel_status = "running"
    assert loop(tmp_path, "--status") == 0
    assert f'{KERNEL} has status "KernelWorkerStatus.RUNNING"' in capsys.readouterr().out
    assert ("GetKernelSessionStatus", {"userName": "tester", "kernelSlug": SLUG}) in api.calls


def test_output_then_submit_then_scores(api, tmp_path, capsys):
    metrics = {
        "oof": {"ensemble": {"log_loss": 0.23456}},
        "build": {"commit": "abc1234", "sources_sha256": "00", "settings": {"image_size": 331}},
    }
    api.output_files = {"submission.csv": b"id,akita\nx,1.0\n", "metrics.json": json.dumps(metrics).encode()}
    run = tmp_path / "run1"
    assert loop(tmp_path, "--output", str(run)) == 0
    assert (run / "submission.csv").read_bytes() == b"id,akita\nx,1.0\n"

    assert loop(tmp_path, "--submit", str(run)) == 0
    message = "abc1234 image_size=331 cv=0.2346"
    assert api.uploads == [("submission.csv", b"id,akita\nx,1.0\n")]
    assert api.submitted_messages == [message]
    [row] = log_rows(tmp_path)
    assert (row["action"], row["commit"], row["cv_log_loss"], row["message"], row["public_score"]) == (
        "submit", "abc1234", "0.23456", message, ""
    )

    api.submissions[0].update(status="COMPLETE", publicScore="0.24100", privateScore="0.23900")
    capsys.readouterr()
    assert loop(tmp_path, "--scores") == 0
    [row] = log_rows(tmp_path)
    assert (row["public_score"], row["private_score"]) == ("0.24100", "0.23900")
    assert "lb 0.24100" in capsys.readouterr().out


def test_a_failing_cli_call_is_one_line(api, tmp_path, capsys):
    assert loop(tmp_path, "--submit", str(tmp_path / "nowhere")) == 2
    assert capsys.readouterr().err.count("\n") == 1


def test_push_of_the_heads_kernel_runs_on_cpu_with_the_full_kernels_output(api, tmp_path):
    assert loop(tmp_path, "--kernel", "heads", "--push", "--set", "dropout=0.3") == 0
    pushed = api.pushed
    assert pushed["slug"] == "tester/dog-breed-heads"
    assert pushed["text"] == (tmp_path / "kernels" / "dog-breed-heads" / "kernel.py").read_text()
    assert "BUILD_SETTINGS = {'dropout': 0.3, 'features': '/kaggle/input'}" in pushed["text"]
    assert (pushed["enableGpu"], pushed["enableInternet"], pushed.get("datasetDataSources", [])) == (False, False, [])
    assert pushed["kernelDataSources"] == [KERNEL]
    assert log_rows(tmp_path)[0]["kernel"] == "tester/dog-breed-heads"
