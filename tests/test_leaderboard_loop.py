"""leaderboard.py's loop through the real kaggle CLI, against a local stand-in of the Kaggle API that answers
as Kaggle does: refusals with exit code 0, sign-in by token, runs that queue, run and fail."""
import csv
import json
from types import SimpleNamespace

import cv2
import pytest

import build_kernel
import leaderboard
from build_kernel import SLUG
from tests.kaggle_standin import _SCRUBBED, kaggle_log, kaggle_standin

KERNEL = f"tester/{SLUG}"
METRICS = {
    "oof": {"ensemble": {"log_loss": 0.23456}},
    "build": {"commit": "abc1234", "sources_sha256": "00", "settings": {"image_size": 331}},
}
SUBMISSION = b"id,akita\nx,1.0\n"


@pytest.fixture
def api(tmp_path, monkeypatch):
    with kaggle_standin(tmp_path / "home") as standin:
        for name in _SCRUBBED:
            monkeypatch.delenv(name, raising=False)
        for name, value in standin.env.items():
            monkeypatch.setenv(name, value)
        yield standin


@pytest.fixture
def clock(monkeypatch):
    """leaderboard's clock, advanced by its sleeps instead of waiting them out; `clock.sleeps` lists them."""
    now = SimpleNamespace(value=0.0, sleeps=[])

    def sleep(seconds):
        now.sleeps.append(seconds)
        now.value += seconds

    monkeypatch.setattr(leaderboard, "time", SimpleNamespace(sleep=sleep, monotonic=lambda: now.value))
    return now


def loop(tmp_path, *arguments):
    return leaderboard.main(["--out", str(tmp_path / "kernels"), "--experiments", str(tmp_path / "experiments.csv"),
                             *arguments])


def log_rows(tmp_path):
    with (tmp_path / "experiments.csv").open(newline="") as file:
        return list(csv.DictReader(file))


def one_error_line(capsys):
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: "), err
    return err


def test_push_sends_the_built_kernel_offline_on_gpu(api, tmp_path, capsys):
    assert loop(tmp_path, "--push", "--set", "dropout=0.3") == 0
    assert f"pushed {KERNEL} version 1" in capsys.readouterr().out
    pushed = api.pushed
    assert pushed["text"] == (tmp_path / "kernels" / SLUG / "kernel.py").read_text()
    assert "BUILD_SETTINGS = {'dropout': 0.3}" in pushed["text"]
    assert pushed["slug"] == KERNEL
    assert (pushed["enableInternet"], pushed["enableGpu"], pushed["isPrivate"]) == (False, True, True)
    assert (pushed["language"], pushed["kernelType"], pushed["machineShape"]) == ("python", "script", "NvidiaTeslaT4")
    assert pushed["competitionDataSources"] == ["dog-breed-identification"]
    assert pushed["datasetDataSources"] == ["gaborfodor/keras-pretrained-models"]
    [row] = log_rows(tmp_path)
    assert (row["action"], row["kernel"], row["version"], row["commit"], json.loads(row["settings"])) == (
        "push", KERNEL, "1", build_kernel.source_commit(), {"dropout": 0.3}
    )


def test_a_push_kaggle_refuses_with_exit_0_fails_with_its_message_and_logs_nothing(api, tmp_path, capsys):
    api.push_error = "Notebook not found or not owned by you"
    assert loop(tmp_path, "--push") == 2
    assert "Kernel push error: Notebook not found or not owned by you" in one_error_line(capsys)
    assert not (tmp_path / "experiments.csv").exists()


def test_sources_kaggle_leaves_out_fail_the_push(api, tmp_path, capsys):
    api.invalid_sources = {"invalidCompetitionSources": ["dog-breed-identification"]}
    assert loop(tmp_path, "--push") == 2
    err = one_error_line(capsys)
    assert "not valid competition sources" in err and "['dog-breed-identification']" in err
    assert "accept the competition's rules" in err
    assert not (tmp_path / "experiments.csv").exists()


@pytest.mark.parametrize("where", ["KAGGLE_API_TOKEN", "~/.kaggle/access_token"])
def test_signed_in_by_token_the_kernel_is_pushed_under_the_users_name(where, api, tmp_path, monkeypatch):
    monkeypatch.delenv("KAGGLE_USERNAME")
    monkeypatch.delenv("KAGGLE_KEY")
    api.tokens = {"token-of-alice": "alice"}
    if where == "KAGGLE_API_TOKEN":
        monkeypatch.setenv("KAGGLE_API_TOKEN", "token-of-alice")
    else:
        (tmp_path / "home" / ".kaggle").mkdir()
        (tmp_path / "home" / ".kaggle" / "access_token").write_text("token-of-alice\n")
    assert loop(tmp_path, "--kernel", "heads", "--push") == 0
    assert api.pushed["slug"] == "alice/dog-breed-heads"
    assert api.pushed["kernelDataSources"] == [f"alice/{SLUG}"]
    assert log_rows(tmp_path)[0]["kernel"] == "alice/dog-breed-heads"


def test_without_credentials_one_line_says_how_to_sign_in_and_nothing_is_sent(api, tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("KAGGLE_USERNAME")
    monkeypatch.delenv("KAGGLE_KEY")
    assert loop(tmp_path, "--push") == 2
    err = one_error_line(capsys)
    assert "kaggle auth login" in err and "KAGGLE_API_TOKEN" in err and "KAGGLE_USERNAME" in err
    assert not [name for name, _ in api.calls if name == "SaveKernel"]
    assert not (tmp_path / "kernels").exists()


def test_status_reads_the_kernel_and_never_rebuilds_it(api, tmp_path, capsys):
    assert loop(tmp_path, "--push", "--set", "dropout=0.3") == 0
    built = {path: path.read_bytes() for path in (tmp_path / "kernels").rglob("*") if path.is_file()}
    api.statuses = ["running"]
    assert loop(tmp_path, "--status") == 0
    assert capsys.readouterr().out.endswith(f"{KERNEL}: running\n")
    assert {path: path.read_bytes() for path in (tmp_path / "kernels").rglob("*") if path.is_file()} == built
    assert ("GetKernelSessionStatus", {"userName": "tester", "kernelSlug": SLUG}) in api.calls


def test_wait_polls_with_backoff_and_prints_each_change(api, tmp_path, clock, capsys):
    api.statuses = ["queued", "running", "running", "running", "complete"]
    assert loop(tmp_path, "--wait") == 0
    assert capsys.readouterr().out == f"{KERNEL}: queued (0 s)\n{KERNEL}: running (10 s)\n{KERNEL}: complete (1 min 21 s)\n"
    assert clock.sleeps == [10, 15, 22.5, 33.75]


def test_wait_on_a_failed_run_shows_kaggles_message_and_the_logs_last_lines(api, tmp_path, clock, capsys):
    api.statuses = ["running", "error"]
    api.failure_message = "Your notebook tried to allocate more memory than is available."
    api.kernel_log = kaggle_log(*(f"line {index}" for index in range(30)), "ResourceExhaustedError: OOM")
    assert loop(tmp_path, "--wait") == 2
    captured = capsys.readouterr()
    assert captured.out.splitlines()[-leaderboard.LOG_LINES:] == [
        *(f"    line {index}" for index in range(11, 30)), "    ResourceExhaustedError: OOM"
    ]
    assert captured.err == (f"error: {KERNEL} ended error: Your notebook tried to allocate more memory than is "
                            "available.\n")


def test_logs_prints_the_runs_log_as_text(api, tmp_path, capsys):
    api.kernel_log = kaggle_log("loading images", "extracting features")
    assert loop(tmp_path, "--logs") == 0
    assert capsys.readouterr().out == "loading images\nextracting features\n"


def test_the_round_trip_in_one_command(api, tmp_path, clock, capsys):
    api.statuses = ["queued", "running", "complete"]
    api.output_files = {"submission.csv": SUBMISSION, "metrics.json": json.dumps(METRICS).encode()}
    run = tmp_path / "run1"
    assert loop(tmp_path, "--push", "--wait", "--output", str(run), "--submit", str(run)) == 0
    out = capsys.readouterr().out
    assert f"pushed {KERNEL} version 1" in out and f"{KERNEL}/1: complete" in out
    asked = [body.get("versionLabel") for name, body in api.calls if name in ("GetKernelSessionStatus",
                                                                              "ListKernelSessionOutput")]
    assert asked == ["v1"] * 4  # the pushed version's run, not an earlier one's
    assert (run / "submission.csv").read_bytes() == SUBMISSION
    message = "abc1234 image_size=331 cv=0.2346"
    assert (api.uploads, api.submitted_messages) == ([("submission.csv", SUBMISSION)], [message])
    push_row, submit_row = log_rows(tmp_path)
    assert (submit_row["action"], submit_row["commit"], submit_row["cv_log_loss"], submit_row["message"]) == (
        "submit", "abc1234", "0.23456", message
    )
    assert submit_row["ref"] == str(api.submissions[0]["ref"])

    # No score yet: no picture, one line saying so.
    assert loop(tmp_path, "--scores") == 0
    assert capsys.readouterr().err == (f"warning: {tmp_path / 'experiments.csv'}: no submission has a public score "
                                       "yet; experiments.png not drawn\n")
    assert not (tmp_path / "experiments.png").exists()

    # A second submission, of another CV score; both scored: experiments.png shows them.
    (run / "metrics.json").write_text(json.dumps({**METRICS, "oof": {"ensemble": {"log_loss": 0.2}}}))
    assert loop(tmp_path, "--submit", str(run)) == 0
    api.submissions[1].update(status="COMPLETE", publicScore="0.24100", privateScore="0.23900")
    api.submissions[0].update(status="COMPLETE", publicScore="0.22000", privateScore="0.21000")
    capsys.readouterr()
    assert loop(tmp_path, "--scores") == 0
    rows = log_rows(tmp_path)
    assert [(row["cv_log_loss"], row["public_score"], row["private_score"]) for row in rows[1:]] == [
        ("0.23456", "0.24100", "0.23900"), ("0.20000", "0.22000", "0.21000")
    ]
    out = capsys.readouterr().out
    assert "lb 0.24100" in out and "lb 0.22000" in out
    assert f"wrote {tmp_path / 'experiments.png'}: 2 submissions, 2 with a public score" in out
    picture = cv2.imread(str(tmp_path / "experiments.png"))
    assert picture.shape == (450, 1100, 3) and picture.std() > 10


def test_output_without_metrics_fails_and_names_what_came(api, tmp_path, capsys):
    api.output_files = {"features.npz": b"..."}
    api.kernel_log = kaggle_log("Traceback (most recent call last):")
    assert loop(tmp_path, "--output", str(tmp_path / "run1")) == 2
    err = one_error_line(capsys)
    assert "no metrics.json among its 2 files (dog-breed-xception-inception.log, features.npz)" in err


def test_a_refused_submission_fails_with_kaggles_message_and_logs_nothing(api, tmp_path, capsys):
    run = tmp_path / "run1"
    run.mkdir()
    (run / "submission.csv").write_bytes(SUBMISSION)
    (run / "metrics.json").write_text(json.dumps(METRICS))
    api.errors["CreateSubmission"] = (400, "Your team has used its daily Submission allowance (5) today")
    assert loop(tmp_path, "--submit", str(run)) == 2
    assert one_error_line(capsys) == ("error: kaggle competitions submit failed: Your team has used its daily "
                                      "Submission allowance (5) today\n")
    assert not (tmp_path / "experiments.csv").exists()


def test_submitting_a_folder_without_a_run_is_one_line(api, tmp_path, capsys):
    assert loop(tmp_path, "--submit", str(tmp_path / "nowhere")) == 2
    assert "metrics.json: missing" in one_error_line(capsys)
    assert not [name for name, _ in api.calls if name == "StartSubmissionUpload"]


def test_a_failing_cli_call_is_one_line(api, tmp_path, capsys):
    """The kaggle CLI makes the call, Kaggle fails it (a server error), and the CLI prints its words on several
    lines and exits non-zero: the loop stops with those words on one line."""
    api.errors["GetKernelSessionStatus"] = (500, "Internal error")
    assert loop(tmp_path, "--status") == 2
    assert ("GetKernelSessionStatus", {"userName": "tester", "kernelSlug": SLUG}) in api.calls  # the CLI called Kaggle
    assert one_error_line(capsys) == (
        "error: kaggle kernels status failed: Internal error This is a problem on Kaggle's side, not with your "
        "command. Please try again later.\n"
    )


def test_scores_fail_on_a_reply_that_is_not_a_list_of_submissions(api, tmp_path, capsys):
    api.errors["ListSubmissions"] = (500, "Internal error")
    (tmp_path / "experiments.csv").write_text(",".join(leaderboard.EXPERIMENT_FIELDS) + "\n")
    assert loop(tmp_path, "--scores") == 2
    assert "kaggle competitions submissions failed: Internal error" in one_error_line(capsys)


def test_scores_without_an_experiments_log_say_so_in_one_line(api, tmp_path, capsys):
    assert loop(tmp_path, "--scores") == 2
    assert "no experiments log yet" in one_error_line(capsys)
    assert not api.calls
