"""The real `kaggle` CLI, run as a subprocess, against the local stand-in of the Kaggle API."""
import csv
import io
import json
import subprocess
import sys

from tests.kaggle_standin import kaggle_standin

KERNEL = "tester/dog-breed-identification-kernel"
COMPETITION = "dog-breed-identification"


def kaggle(api, *args):
    """Run `python -m kaggle ARGS` with the stand-in's environment."""
    return subprocess.run([sys.executable, "-m", "kaggle", *args], env=api.env,
                          capture_output=True, text=True, timeout=120)


def test_kernels_push_sends_the_metadata_and_code(tmp_path):
    folder = tmp_path / "kernel"
    folder.mkdir()
    (folder / "run.py").write_text("print('hello dogs')\n")
    (folder / "kernel-metadata.json").write_text(json.dumps({
        "id": KERNEL, "title": "Dog Breed Identification Kernel", "code_file": "run.py",
        "language": "python", "kernel_type": "script", "is_private": True,
        "enable_gpu": True, "enable_tpu": False, "enable_internet": False,
        "dataset_sources": ["tester/imagenet-weights"], "competition_sources": [COMPETITION],
        "kernel_sources": [], "model_sources": [], "machine_shape": "NvidiaTeslaT4",
    }))
    with kaggle_standin(tmp_path / "home") as api:
        result = kaggle(api, "kernels", "push", "-p", str(folder))

    assert result.returncode == 0, result.stderr
    assert "Kernel version 1 successfully pushed." in result.stdout
    assert [name for name, _ in api.calls] == ["SaveKernel"]
    pushed = api.pushed
    assert pushed["slug"] == KERNEL
    assert pushed["newTitle"] == "Dog Breed Identification Kernel"
    assert pushed["text"] == "print('hello dogs')\n"
    assert (pushed["language"], pushed["kernelType"]) == ("python", "script")
    assert (pushed["isPrivate"], pushed["enableGpu"], pushed["enableInternet"]) == (True, True, False)
    assert pushed["datasetDataSources"] == ["tester/imagenet-weights"]
    assert pushed["competitionDataSources"] == [COMPETITION]
    assert pushed.get("kernelDataSources", []) == []  # empty lists are left out of the body
    assert pushed["machineShape"] == "NvidiaTeslaT4"


def test_kernels_status_reports_the_configured_status(tmp_path):
    with kaggle_standin(tmp_path / "home") as api:
        api.statuses = ["running"]
        running = kaggle(api, "kernels", "status", KERNEL)
        api.statuses, api.failure_message = ["error"], "CUDA out of memory"
        failed = kaggle(api, "kernels", "status", KERNEL)

    assert running.returncode == 0, running.stderr
    assert running.stdout == f'{KERNEL} has status "KernelWorkerStatus.RUNNING"\n'
    assert failed.returncode == 0, failed.stderr
    assert failed.stdout == (f'{KERNEL} has status "KernelWorkerStatus.ERROR"\n'
                             'Failure message: "CUDA out of memory"\n')
    assert api.calls[0] == ("GetKernelSessionStatus",
                            {"userName": "tester", "kernelSlug": "dog-breed-identification-kernel"})


def test_kernels_output_downloads_the_configured_files(tmp_path):
    files = {"submission.csv": b"id,affenpinscher\nabc,0.5\n", "metrics.json": b'{"log_loss": 0.31}'}
    with kaggle_standin(tmp_path / "home") as api:
        api.output_files = files
        result = kaggle(api, "kernels", "output", KERNEL, "-p", str(tmp_path / "out"))

    assert result.returncode == 0, result.stderr
    assert f"Output file downloaded to {tmp_path / 'out' / 'submission.csv'}" in result.stdout
    assert {p.name: p.read_bytes() for p in (tmp_path / "out").iterdir()} == files
    assert [name for name, _ in api.calls] == ["ListKernelSessionOutput"]


def test_competitions_submit_uploads_the_file_and_message(tmp_path):
    submission = tmp_path / "submission.csv"
    submission.write_bytes(b"id,affenpinscher\nabc,0.5\n")
    with kaggle_standin(tmp_path / "home") as api:
        result = kaggle(api, "competitions", "submit", "-c", COMPETITION,
                        "-f", str(submission), "-m", "resnet50 heads, seed 1")

    assert result.returncode == 0, result.stderr
    assert f"Successfully submitted to {COMPETITION}" in result.stdout
    assert api.uploads == [("submission.csv", b"id,affenpinscher\nabc,0.5\n")]
    assert api.submitted_messages == ["resnet50 heads, seed 1"]
    assert [name for name, _ in api.calls] == ["StartSubmissionUpload", "CreateSubmission",
                                               "GetSubmissionLimits"]
    assert api.submissions[0]["description"] == "resnet50 heads, seed 1"


def test_competitions_submissions_lists_the_configured_submissions_as_csv(tmp_path):
    with kaggle_standin(tmp_path / "home") as api:
        api.submissions = [
            {"ref": 42, "fileName": "submission.csv", "date": "2024-05-01T10:20:30.000Z",
             "description": "resnet50 heads, seed 1", "status": "complete",
             "publicScore": "0.25", "privateScore": "0.26"},
            {"ref": 41, "fileName": "submission.csv", "date": "2024-04-30T08:00:00.000Z",
             "description": "first try", "status": "pending"},
        ]
        result = kaggle(api, "competitions", "submissions", "-c", COMPETITION, "--csv")

    assert result.returncode == 0, result.stderr
    rows = list(csv.reader(io.StringIO(result.stdout)))
    assert rows == [
        ["ref", "fileName", "date", "description", "status", "publicScore", "privateScore"],
        ["42", "submission.csv", "2024-05-01 10:20:30", "resnet50 heads, seed 1",
         "SubmissionStatus.COMPLETE", "0.25", "0.26"],
        ["41", "submission.csv", "2024-04-30 08:00:00", "first try", "SubmissionStatus.PENDING", "", ""],
    ]
    assert api.calls[0][0] == "ListSubmissions"
    assert api.calls[0][1]["competitionName"] == COMPETITION


def test_unknown_endpoints_answer_404_and_are_recorded(tmp_path):
    with kaggle_standin(tmp_path / "home") as api:
        result = kaggle(api, "kernels", "list", "--mine")

    assert result.returncode == 1
    assert "no such endpoint" in result.stderr
    assert [name for name, _ in api.calls] == ["ListKernels"]
