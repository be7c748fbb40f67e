"""The leaderboard loop through the real kaggle CLI: push, wait, status, logs, output, submit, scores.

    python leaderboard.py --push --set dropout=0.3       # build under the signed-in user, then push
    python leaderboard.py --push --wait --output run1 --submit run1   # the whole round trip
    python leaderboard.py --wait                          # poll until the kernel's run ends
    python leaderboard.py --status | --logs               # its state now | its log
    python leaderboard.py --output run1                   # download its outputs into run1/
    python leaderboard.py --submit run1                   # submit run1/submission.csv
    python leaderboard.py --scores                        # leaderboard scores into the experiments log
    python leaderboard.py --kernel heads ...              # the same for the heads-only kernel

Only a push builds (build_kernel.py builds alone). Every call reads what the CLI printed, not only its
exit code: kaggle 2.x exits 0 when Kaggle refuses a push ("Kernel push error: ...", or sources "not
valid" and left out), so anything short of Kaggle's own word of success is a failure, reported as one
line with Kaggle's message, and logs no row. Every push and submit appends a row to the experiments
log, and --scores fills in the leaderboard scores, so one table shows which change moved the score, and draws
experiments.png beside it: each submission's CV log loss against its public score.
"""
import argparse
import csv
import datetime
import importlib.util
import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import build_kernel
from build_kernel import KERNELS, REPO
from kaggle_src.errors import InputError, warn

COMPETITION = build_kernel.COMPETITION
EXPERIMENTS_LOG = REPO / "experiments.csv"
EXPERIMENT_FIELDS = ["time", "action", "kernel", "version", "commit", "settings", "cv_log_loss", "message", "ref",
                     "public_score", "private_score"]
SIGN_IN = ("not signed in to Kaggle: run `kaggle auth login`, or save an API token (kaggle.com/settings/api) in "
           "KAGGLE_API_TOKEN or ~/.kaggle/access_token; legacy keys: KAGGLE_USERNAME + KAGGLE_KEY or ~/.kaggle/kaggle.json")
FINISHED = {"COMPLETE": True, "ERROR": False, "CANCEL_REQUESTED": False, "CANCEL_ACKNOWLEDGED": False}
POLL_SECONDS = (10, 60, 1.5)  # --wait polls first after 10 s, each wait 1.5x the last, at most 60 s
MAX_WAIT_SECONDS = 13 * 3600  # a Kaggle session ends at 12 hours
LOG_LINES = 20  # lines of the kernel's log shown when its run failed


class KaggleError(InputError):
    """The kaggle CLI failed, or Kaggle refused or did not confirm what was asked: one line, Kaggle's words."""


def kaggle(*args):
    """Run the real kaggle CLI; return its stdout, or raise KaggleError with what it said when it failed."""
    if importlib.util.find_spec("kaggle"):  # the one installed beside this Python
        command = [sys.executable, "-m", "kaggle"]
    elif shutil.which("kaggle"):
        command = [shutil.which("kaggle")]
    else:
        raise KaggleError("the kaggle CLI is not installed: pip install kaggle")
    result = subprocess.run([*command, *args], capture_output=True, text=True)
    if result.returncode != 0:
        if "Authentication required" in result.stdout:
            raise KaggleError(SIGN_IN)
        raise KaggleError(f"kaggle {' '.join(args[:2])} failed: {_said(result.stderr or result.stdout)}")
    return result.stdout


def signed_in_user():
    """The user the kaggle CLI is signed in as (`kaggle config view`), whichever way it signed in."""
    match = re.search(r"^- username: (.+)$", kaggle("config", "view"), re.MULTILINE)
    if not match or match.group(1).strip() in ("", "None"):
        raise KaggleError(SIGN_IN)
    return match.group(1).strip()


def kernel_ref(kernel, user=None, version=None):
    """OWNER/SLUG (OWNER/SLUG/VERSION when `version` is known) of kernel `kernel` ("full" or "heads")."""
    ref = f"{user or signed_in_user()}/{KERNELS[kernel].slug}"
    return f"{ref}/{version}" if version else ref


def push(kernel, settings, user=None, public=False, out=REPO / "kernels", experiments=EXPERIMENTS_LOG):
    """Build every kernel under the signed-in user (or `user`), push kernel `kernel`, log it; return its version.

    The user is checked before anything is sent, so nothing is pushed under a placeholder owner.
    """
    user = user or signed_in_user()
    folder = build_kernel.build(settings, user, public, out)[kernel]
    owner = json.loads((folder / "kernel-metadata.json").read_text())["id"].split("/")[0]
    if owner != user:
        raise KaggleError(f"{folder}/kernel-metadata.json: owner {owner!r}, expected the signed-in user {user!r}")
    reply = kaggle("kernels", "push", "-p", str(folder))
    refused = [line for line in reply.splitlines() if "Kernel push error" in line or "are not valid" in line]
    pushed = re.search(r"^Kernel version (\d+) successfully pushed", reply, re.MULTILINE)
    if refused or not pushed:
        raise KaggleError(f"kaggle kernels push refused {user}/{KERNELS[kernel].slug}: "
                          f"{' '.join(refused) or _said(reply)}" + _rules_hint(refused))
    version = int(pushed.group(1))
    print(f"pushed {user}/{KERNELS[kernel].slug} version {version}")
    log_experiment(experiments, action="push", kernel=f"{user}/{KERNELS[kernel].slug}", version=version,
                   commit=build_kernel.source_commit(), settings=json.dumps(settings, sort_keys=True))
    return version


def status(ref):
    """(state, failure message or None) of the run of kernel `ref`, the state as Kaggle names it (e.g. RUNNING)."""
    reply = kaggle("kernels", "status", ref)
    match = re.search(r'has status "(?:KernelWorkerStatus\.)?(\w+)"', reply)
    if not match:
        raise KaggleError(f"kaggle kernels status {ref}: no status in the reply: {_said(reply)}")
    failure = re.search(r'^Failure message: "(.*)"$', reply, re.MULTILINE)
    return match.group(1).upper(), failure.group(1) if failure else None


def logs(ref):
    """The run's log as plain text: Kaggle keeps it as JSON events ({stream_name, time, data}); each event's data."""
    text = kaggle("kernels", "logs", ref)
    try:
        events = json.loads(text)
    except ValueError:
        return text
    if not isinstance(events, list):
        return text
    return "".join(str(event.get("data", "")) for event in events if isinstance(event, dict))


def wait(ref):
    """Poll the status of `ref` with backoff until its run ends, one line per change; raise unless it completed.

    On failure the error carries Kaggle's failure message, after the last LOG_LINES lines of the run's log.
    """
    started, delay, last = time.monotonic(), POLL_SECONDS[0], None
    while True:
        state, failure = status(ref)
        if state != last:
            print(f"{ref}: {state.lower()} ({_duration(time.monotonic() - started)})", flush=True)
            last = state
        if state in FINISHED:
            break
        if time.monotonic() - started > MAX_WAIT_SECONDS:
            raise KaggleError(f"{ref}: still {state.lower()} after {_duration(time.monotonic() - started)}; "
                              "stopped waiting")
        time.sleep(delay)
        delay = min(POLL_SECONDS[1], delay * POLL_SECONDS[2])
    if not FINISHED[state]:
        tail = logs(ref).rstrip("\n").splitlines()[-LOG_LINES:]
        if tail:
            print(f"last {len(tail)} lines of the log of {ref}:", *(f"    {line}" for line in tail), sep="\n")
        raise KaggleError(f"{ref} ended {state.lower()}: {failure or 'Kaggle gave no failure message'}")


def download_output(ref, directory):
    """Download the outputs of `ref` into `directory` (overwriting); raise unless metrics.json came with them."""
    directory = Path(directory)
    reply = kaggle("kernels", "output", ref, "-p", str(directory), "-o")
    downloaded = sorted(Path(path.strip()).name for path in re.findall(r"^(?:Output file|Kernel log) downloaded to (.+)$",
                                                                         reply, re.MULTILINE))
    if "metrics.json" not in downloaded:
        raise KaggleError(f"kaggle kernels output {ref}: no metrics.json among its {len(downloaded)} files "
                          f"({', '.join(downloaded) or 'none'}): did the run finish? (--status, --logs)")
    print(f"downloaded {len(downloaded)} files of {ref} into {directory}: {', '.join(downloaded)}")
    return downloaded


def submit(directory, kernel, experiments=EXPERIMENTS_LOG):
    """Submit `directory`/submission.csv with its run's commit, settings and CV score; log it; return the ref."""
    directory = Path(directory)
    metrics = _read_metrics(directory / "metrics.json")
    if metrics.get("smoke"):
        raise KaggleError(f"{directory}: a smoke run's outputs ({metrics['smoke']} images per breed): not submitted")
    submission = directory / "submission.csv"
    if not submission.is_file():
        raise KaggleError(f"{submission}: missing: nothing to submit")
    message = submission_message(metrics)
    reply = kaggle("competitions", "submit", "-c", COMPETITION, "-f", str(submission), "-m", message)
    ref = re.search(r"^Submission ref: (\d+)", reply, re.MULTILINE)
    if not ref and "Successfully submitted" not in reply:
        raise KaggleError(f"kaggle competitions submit refused {submission}: {_said(reply)}")
    ref = ref.group(1) if ref else ""
    print(f"submitted {submission} as {message!r}" + (f", ref {ref}" if ref else ""))
    build = metrics.get("build", {})
    log_experiment(experiments, action="submit", kernel=kernel, commit=build.get("commit", ""),
                   settings=json.dumps(build.get("settings", {}), sort_keys=True),
                   cv_log_loss=f"{metrics['oof']['ensemble']['log_loss']:.5f}", message=message, ref=ref)
    return ref


def submission_message(metrics):
    """`<commit> <build settings> cv=<out-of-fold log loss>`: what the submission's description says."""
    build = metrics.get("build", {})
    settings = ",".join(f"{key}={value}" for key, value in build.get("settings", {}).items()) or "defaults"
    return f"{build.get('commit', 'unbuilt')} {settings} cv={metrics['oof']['ensemble']['log_loss']:.4f}"


def submissions():
    """This user's submissions to the competition, as `kaggle competitions submissions --csv` lists them."""
    reply = kaggle("competitions", "submissions", "-c", COMPETITION, "--csv")
    if reply.strip() == "No submissions found":
        return []
    rows = list(csv.DictReader(reply.splitlines()))
    if not rows or not {"ref", "description", "publicScore"} <= set(rows[0]):
        raise KaggleError(f"kaggle competitions submissions: not a list of submissions: {_said(reply)}")
    return rows


def refresh_scores(log):
    """Fill in the leaderboard scores of the log's submissions (by ref, else by message); return the rows."""
    if not Path(log).is_file():
        raise KaggleError(f"{log}: no experiments log yet: --push or --submit writes it")
    listed = submissions()
    rows = read_log(log)
    for row in rows:
        if row["action"] == "submit" and not row["public_score"]:
            match = next((entry for entry in listed if (entry["ref"] == row["ref"] if row["ref"]
                                                        else entry["description"] == row["message"])), None)
            if match:
                row["public_score"], row["private_score"] = match.get("publicScore", ""), match.get("privateScore", "")
    _write_log(log, rows)
    return rows


def draw_scores(rows, log):
    """Draw experiments.png (the log's name, .png) beside the experiments `log` from its `rows`: each submission's
    CV log loss and public score; or say in one line that no submission has a public score yet."""
    from kaggle_src.pictures import draw_experiments  # here: matplotlib only for --scores

    picture = Path(log).with_suffix(".png")
    submissions = draw_experiments(rows, picture)
    if submissions:
        scored = sum(public is not None for _, _, public in submissions)
        print(f"wrote {picture}: {len(submissions)} submissions, {scored} with a public score")
    else:
        warn(f"{log}: no submission has a public score yet; {picture.name} not drawn")


def log_experiment(log, **row):
    """Append one row to the experiments log (CSV), creating it with its header."""
    rows = read_log(log) if Path(log).exists() else []
    time_now = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    _write_log(log, [*rows, {"time": time_now, **row}])


def read_log(log):
    """The experiments log's rows, each with every field of EXPERIMENT_FIELDS (a log from before a field was
    added reads it as empty)."""
    with Path(log).open(newline="") as file:
        return [{field: row.get(field) or "" for field in EXPERIMENT_FIELDS} for row in csv.DictReader(file)]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    parser.add_argument("--kernel", choices=sorted(KERNELS), default="full",
                        help="the kernel acted on (default: full; heads: the CPU kernel that trains heads on the "
                             "full kernel's saved features)")
    parser.add_argument("--push", action="store_true", help="build the kernels under the signed-in user, then push")
    parser.add_argument("--set", dest="settings", action="append", default=[], metavar="KEY=VALUE",
                        help="with --push: a Config value baked into the kernel (repeatable), e.g. --set image_size=331")
    parser.add_argument("--user", help="the kernels' owner (default: the user the kaggle CLI is signed in as)")
    parser.add_argument("--public", action="store_true", help="with --push: make the kernel public (default: private)")
    parser.add_argument("--out", type=Path, default=REPO / "kernels", help="with --push: where the kernels are built")
    parser.add_argument("--wait", action="store_true", help="poll the kernel's status until its run ends")
    parser.add_argument("--status", action="store_true", help="print the kernel's status")
    parser.add_argument("--logs", action="store_true", help="print the log of the kernel's last run")
    parser.add_argument("--output", type=Path, metavar="DIR", help="download the kernel's outputs into DIR")
    parser.add_argument("--submit", type=Path, metavar="DIR", help="submit DIR/submission.csv (after --output DIR)")
    parser.add_argument("--scores", action="store_true",
                        help="fill leaderboard scores into the experiments log and draw experiments.png beside it")
    parser.add_argument("--experiments", type=Path, default=EXPERIMENTS_LOG,
                        help="experiments log (default: experiments.csv)")
    args = parser.parse_args(argv)
    if not any((args.push, args.wait, args.status, args.logs, args.output, args.submit, args.scores)):
        parser.error("nothing to do: give --push, --wait, --status, --logs, --output, --submit or --scores")
    try:
        settings = build_kernel.parse_settings(args.settings)
        acts_on_kernel = any((args.push, args.wait, args.status, args.logs, args.output, args.submit))
        user = args.user or (signed_in_user() if acts_on_kernel else None)
        version = push(args.kernel, settings, user, args.public, args.out, args.experiments) if args.push else None
        ref = kernel_ref(args.kernel, user, version) if user else None
        if args.wait:
            wait(ref)
        if args.status:
            state, failure = status(ref)
            print(f"{ref}: {state.lower()}" + (f": {failure}" if failure else ""))
        if args.logs:
            print(logs(ref), end="")
        if args.output:
            download_output(ref, args.output)
        if args.submit:
            submit(args.submit, kernel_ref(args.kernel, user), args.experiments)
        if args.scores:
            rows = refresh_scores(args.experiments)
            for row in rows:
                print(f"{row['time']}  {row['action']:6}  {row['settings']:30}  cv {row['cv_log_loss'] or '-':8}  "
                      f"lb {row['public_score'] or '-'}")
            draw_scores(rows, args.experiments)
    except (InputError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


def _read_metrics(path):
    try:
        metrics = json.loads(Path(path).read_text())
        metrics["oof"]["ensemble"]["log_loss"]
    except OSError:
        raise KaggleError(f"{path}: missing: download a run's outputs first (--output DIR)") from None
    except (ValueError, KeyError, TypeError):
        raise KaggleError(f"{path}: not a run's metrics.json (no oof.ensemble.log_loss)") from None
    return metrics


def _write_log(log, rows):
    with Path(log).open("w", newline="") as file:
        writer = csv.DictWriter(file, EXPERIMENT_FIELDS)
        writer.writeheader()
        writer.writerows(rows)


def _rules_hint(refused):
    if any("competition sources" in line for line in refused):
        return f" (accept the competition's rules first: https://www.kaggle.com/c/{COMPETITION}/rules)"
    return ""


def _said(text, limit=400):
    """What the CLI said, on one line, without its progress bars."""
    lines = re.split(r"[\r\n]+", text or "")
    said = " ".join(line.strip() for line in lines if line.strip() and not re.search(r"\d+%\|", line)) or "no output"
    return said if len(said) <= limit else said[:limit] + " ..."


def _duration(seconds):
    minutes, seconds = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min" if hours else f"{minutes} min {seconds} s" if minutes else f"{seconds} s"


if __name__ == "__main__":
    sys.exit(main())
