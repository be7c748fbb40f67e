"""build_kernel.py: the one-file kernel, its metadata, determinism, staleness, and running it offline."""
import ast
import json
import os
import re
import shutil
import subprocess
import sys
from types import SimpleNamespace

import pandas as pd
import pytest

import build_kernel
from build_kernel import KERNELS, SLUG, build, main
from kaggle_src.config import InputError
from make_stub import COMPETITION
from tests.conftest import QUICK, REPO, UNREADABLE, warnings_in

COMMITTED = REPO / "kernels" / SLUG


def read(folders):
    """The bytes of every built kernel's two files."""
    return {(folder.name, name): (folder / name).read_bytes() for folder in folders for name in ("kernel.py", "kernel-metadata.json")}


def test_committed_kernel_is_fresh(tmp_path):
    """Fails when kaggle_src or build_kernel.py changed without `python build_kernel.py` and a commit of kernels/."""
    owner = json.loads((COMMITTED / "kernel-metadata.json").read_text())["id"].split("/")[0]
    user = None if owner == build_kernel.NO_USER else owner
    public = not json.loads((COMMITTED / "kernel-metadata.json").read_text())["is_private"]
    committed = [REPO / "kernels" / kernel.slug for kernel in KERNELS.values()]
    assert read(build(_committed_settings(), user, public, tmp_path).values()) == read(committed), (
        "kernels/ is stale: run `python build_kernel.py` and commit kernels/"
    )


def _committed_settings():
    line = next(line for line in (COMMITTED / "kernel.py").read_text().splitlines() if line.startswith("BUILD_SETTINGS = "))
    return ast.literal_eval(line.split(" = ", 1)[1].split("  #")[0])


def test_build_is_deterministic(tmp_path):
    first = read(build({"image_size": 331}, "someone", False, tmp_path / "a").values())
    second = read(build({"image_size": 331}, "someone", False, tmp_path / "b").values())
    assert first == second


def test_settings_are_checked_and_baked_into_the_file_and_header(tmp_path, capsys):
    assert main(["--set", "image_size=331", "--set", "flips=false", "--out", str(tmp_path)]) == 0
    text = (tmp_path / SLUG / "kernel.py").read_text()
    assert "BUILD_SETTINGS = {'flips': False, 'image_size': 331}" in text
    assert "build settings:  flips=False, image_size=331" in text
    assert "image_size=331" in text.split('"""')[1]  # the header's configuration line
    assert main(["--set", "imagesize=331", "--out", str(tmp_path)]) == 2
    assert "config key 'imagesize'" in capsys.readouterr().err
    assert main(["--set", "n_folds=many", "--out", str(tmp_path)]) == 2
    assert "n_folds='many': expected an integer" in capsys.readouterr().err
    assert main(["--set", "n_folds=1", "--out", str(tmp_path)]) == 2
    assert "n_folds=1: expected at least 2" in capsys.readouterr().err


def test_header_says_what_and_how_it_was_built():
    header = (COMMITTED / "kernel.py").read_text().split('"""')[1]
    assert header.startswith("Dog Breed Identification by transfer learning")
    assert "source commit:" in header and "sources sha256:" in header and "configuration:" in header


def test_metadata(tmp_path, monkeypatch):
    monkeypatch.delenv("KAGGLE_USERNAME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    folders = build({}, None, False, tmp_path)
    metadata = json.loads((folders["full"] / "kernel-metadata.json").read_text())
    assert metadata == {
        "id": f"USER/{SLUG}",
        "title": "Dog Breed Xception Inception",
        "code_file": "kernel.py",
        "language": "python",
        "kernel_type": "script",
        "is_private": True,
        "enable_gpu": True,
        "enable_tpu": False,
        "enable_internet": False,
        "dataset_sources": ["gaborfodor/keras-pretrained-models"],
        "competition_sources": ["dog-breed-identification"],
        "kernel_sources": [],
        "model_sources": [],
        "machine_shape": "NvidiaTeslaT4",
    }
    assert metadata["title"].lower().replace(" ", "-") == SLUG
    heads = json.loads((folders["heads"] / "kernel-metadata.json").read_text())
    assert heads == {
        **{key: value for key, value in metadata.items() if key != "machine_shape"},
        "id": "USER/dog-breed-heads", "title": "Dog Breed Heads", "enable_gpu": False, "dataset_sources": [],
        "kernel_sources": [f"USER/{SLUG}"],
    }
    assert heads["title"].lower().replace(" ", "-") == "dog-breed-heads"
    assert "BUILD_SETTINGS = {'features': '/kaggle/input'}" in (folders["heads"] / "kernel.py").read_text()
    other = json.loads(
        (build({"weights_dataset": "me/weights"}, "me", True, tmp_path)["full"] / "kernel-metadata.json").read_text()
    )
    assert (other["id"], other["is_private"], other["dataset_sources"]) == (f"me/{SLUG}", False, ["me/weights"])
    mixed = build({"backbones": ("xception", "nasnet_large")}, "me", False, tmp_path)["full"]
    assert json.loads((mixed / "kernel-metadata.json").read_text())["dataset_sources"] == ["gaborfodor/keras-pretrained-models"]


def test_a_backbone_without_a_known_weights_dataset_needs_one_named(tmp_path, capsys):
    assert main(["--set", "backbones=xception,convnext_base", "--out", str(tmp_path)]) == 2
    assert capsys.readouterr().err == (
        "error: backbone convnext_base: no known Kaggle dataset holds convnext_base_notop.h5; "
        "--set weights_dataset=OWNER/SLUG names one that holds every backbone's weights\n"
    )
    assert not (tmp_path / SLUG).exists()  # nothing written
    assert main(["--set", "backbones=xception,convnext_base", "--set", "weights_dataset=me/w", "--out", str(tmp_path)]) == 0


def test_a_build_owns_the_kernel_by_flag_or_placeholder_and_only_pushes_sign_in(tmp_path, monkeypatch):
    monkeypatch.setenv("KAGGLE_USERNAME", "from_env")
    assert main(["--out", str(tmp_path / "plain")]) == 0
    assert json.loads((tmp_path / "plain" / SLUG / "kernel-metadata.json").read_text())["id"] == f"USER/{SLUG}"
    assert main(["--out", str(tmp_path / "mine"), "--user", "me"]) == 0
    assert json.loads((tmp_path / "mine" / SLUG / "kernel-metadata.json").read_text())["id"] == f"me/{SLUG}"
    for step in ("--push", "--status"):  # the loop, pushing included, is leaderboard.py's
        with pytest.raises(SystemExit):
            main(["--out", str(tmp_path), step])


def test_no_two_modules_import_each_other():
    """Each import, at the top or inside a function, of one of the repo's modules by another: no module reaches
    itself through them (leaderboard.py builds through build_kernel.py, never the other way round)."""
    paths = [*REPO.glob("*.py"), *REPO.glob("kaggle_src/*.py"), *REPO.glob("tools/*.py"), *REPO.glob("benchmarks/*.py")]
    names = {".".join(path.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__"): path for path in paths}
    imports = {}
    for name, path in names.items():
        package = name if path.stem == "__init__" else name.rpartition(".")[0]
        imported = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                imported |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom):
                module = ".".join(filter(None, [package if node.level else "", node.module or ""]))
                imported |= {module, *(f"{module}.{alias.name}" for alias in node.names)}
        imports[name] = (imported & set(names)) - {name}
    for name in names:
        reached, frontier = set(), set(imports[name])
        while frontier:
            reached |= frontier
            frontier = set().union(*(imports[module] for module in frontier)) - reached
        assert name not in reached, f"{name} imports itself through {sorted(reached)}"


@pytest.mark.parametrize("kernel", KERNELS)
def test_the_headers_run_here_command_works_from_the_repo_root(kernel):
    """Every path in the committed header's command resolves from the repo's root, where it says to run it: the
    kernel file, an input root holding the competition, and (heads) the folder the full kernel's command writes."""
    from kaggle_src.config import make_config
    from kaggle_src.find_inputs import find_inputs

    def run_here(slug):
        lines = (REPO / "kernels" / slug / "kernel.py").read_text().split('"""')[1].splitlines()
        index = next(index for index, line in enumerate(lines) if line.startswith("Run here"))
        assert "from the repo's root" in lines[index]
        python, script, *arguments = lines[index + 1].split()
        flags = {flag: value for flag, value in zip(arguments, arguments[1:] + [""]) if flag.startswith("--")}
        return python, script, flags

    python, script, flags = run_here(KERNELS[kernel].slug)
    assert (python, script) == ("python", f"kernels/{KERNELS[kernel].slug}/kernel.py")
    assert "--dry-run" in flags
    find_inputs(REPO / flags["--input-root"], make_config(dry_run=True))
    if kernel == "heads":
        assert flags["--features"] == run_here(SLUG)[2]["--output-dir"]


def test_modules_that_kaggle_cannot_run_are_refused(tmp_path):
    with pytest.raises(InputError, match="imports requests"):
        build_kernel.check_module(tmp_path / "m.py", "import requests\n")
    with pytest.raises(InputError, match="contains '''"):
        build_kernel.check_module(tmp_path / "m.py", "x = '''a'''\n")
    build_kernel.check_module(tmp_path / "m.py", "import json\nfrom .config import Config\nimport keras\n")


def run_kernel_offline(kernel, arguments, cwd):
    """Run the kernel with network access refused (and in a fresh network namespace where allowed)."""
    log = cwd / "network.log"
    command = [sys.executable, str(REPO / "tests" / "offline.py"), str(log), str(kernel), *arguments]
    unshare = shutil.which("unshare")
    if unshare and subprocess.run([unshare, "-n", "true"], capture_output=True).returncode == 0:
        command = [unshare, "-n", *command]
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=600)
    return result, (log.read_text() if log.exists() else "")


@pytest.fixture(scope="module")
def working_tree_kernel(tmp_path_factory):
    """The kernel built from the working tree's kaggle_src, which the committed one may lag behind."""
    return build({}, None, False, tmp_path_factory.mktemp("kernel"))["full"] / "kernel.py"


@pytest.fixture(scope="module")
def kernel_run(working_tree_kernel, damaged_stub, tmp_path_factory):
    """working_tree_kernel, alone in its folder and offline, over damaged_stub with QUICK, once: (the finished
    process, what the network log caught, the output folder). damaged_run is the package's run of the same."""
    root, _ = damaged_stub
    folder = tmp_path_factory.mktemp("kernel_run")
    arguments = ["--input-root", str(root), "--output-dir", str(folder / "out"), *QUICK]
    result, network = run_kernel_offline(working_tree_kernel, arguments, folder)
    return SimpleNamespace(result=result, network=network, output_dir=folder / "out")


def test_kernel_runs_alone_offline_and_equals_the_package(kernel_run, working_tree_kernel, damaged_run):
    """The kernel file with no repo beside it and the network refused: damaged_run's submission and metrics, and a
    log a competitor can read."""
    assert kernel_run.result.returncode == 0, kernel_run.result.stderr[-3000:]
    assert kernel_run.network == ""
    assert_the_log_reads_well(kernel_run.result)
    ours, theirs = kernel_run.output_dir, damaged_run.output_dir
    assert (ours / "submission.csv").read_bytes() == (theirs / "submission.csv").read_bytes()
    kernel_metrics = json.loads((ours / "metrics.json").read_text())
    package_metrics = json.loads((theirs / "metrics.json").read_text())
    assert kernel_metrics.pop("build")["sources_sha256"] in working_tree_kernel.read_text()
    for metrics in (kernel_metrics, package_metrics):
        del metrics["seconds"], metrics["summary"]  # the summary ends with the wall time
    assert kernel_metrics == package_metrics


def assert_the_log_reads_well(result):
    """What a competitor reads in Kaggle's log (stdout and stderr, no terminal): a bar with a rate and an ETA
    for each long stage, ending where it ends (nothing runs into it), views named as metrics.json names them."""
    bars = [segment for segment in re.split(r"[\r\n]+", result.stderr) if "%|" in segment]
    for stage in ("extract train (", "extract test (", "train 10 heads", "fit logistic regressions"):
        last = [bar for bar in bars if bar.startswith(stage)][-1]
        assert re.search(r"\| \d+/\d+ \[[\d:]+<[\d:]+, +[\d.]+(?:\w+/s|s/\w+)(?:, [^\]]*)?\]$", last), last
    assert all(bar.rstrip().endswith("]") for bar in bars), bars
    assert "fold 0 original: " in result.stdout and "fold 0 flipped: " in result.stdout
    assert "view 0" not in result.stdout + result.stderr


def test_kernel_over_damaged_images_warns_as_the_package_does(kernel_run, damaged_run):
    assert damaged_run.code == 0
    assert len(warnings_in(damaged_run.stderr)) == 2 * len(UNREADABLE) + 1  # each split's unreadable images, one label
    assert warnings_in(kernel_run.result.stderr) == warnings_in(damaged_run.stderr)


@pytest.mark.parametrize("case", ["id with two breeds", "weights missing"])
def test_kernel_stops_on_bad_input_with_one_line_and_exit_2(case, working_tree_kernel, small_stub, tmp_path):
    root = tmp_path / "input"
    shutil.copytree(small_stub, root)
    labels_csv = root / COMPETITION / "labels.csv"
    labels = pd.read_csv(labels_csv, dtype=str)
    if case == "id with two breeds":
        other = next(breed for breed in labels["breed"] if breed != labels["breed"][0])
        pd.concat([labels, labels.iloc[[0]].assign(breed=other)]).to_csv(labels_csv, index=False)
        flags = QUICK
        expected = f"{labels_csv}: id {labels['id'][0]!r} appears with different breeds ({labels['breed'][0]}, {other})"
    else:
        flags = []
        expected = (
            f"weights file xception_weights_tf_dim_ordering_tf_kernels_notop.h5 not found under {root}; "
            "attach the Kaggle dataset gaborfodor/keras-pretrained-models (or use --dry-run)"
        )
    arguments = ["--input-root", str(root), "--output-dir", str(tmp_path / "out"), *flags]
    result, network = run_kernel_offline(working_tree_kernel, arguments, tmp_path)
    assert (result.returncode, result.stderr, network) == (2, f"error: {expected}\n", "")
    assert not (tmp_path / "out" / "submission.csv").exists()


def test_the_kernel_puts_keras_on_tensorflow_and_gpu_memory_growth_on_before_either_is_imported(tmp_path):
    """Kaggle's image ships JAX and PyTorch too; without memory growth TensorFlow takes the whole GPU at first use."""
    kernel = shutil.copy(COMMITTED / "kernel.py", tmp_path / "kernel.py")
    probe = (
        "import os, runpy\n"
        f"runpy.run_path({str(kernel)!r}, run_name='not_main')\n"
        "import kaggle_src.pipeline, keras\n"
        "print(keras.backend.backend(), os.environ['TF_FORCE_GPU_ALLOW_GROWTH'])\n"
    )
    env = {key: value for key, value in os.environ.items() if key != "TF_FORCE_GPU_ALLOW_GROWTH"}
    result = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, capture_output=True, text=True,
                            env={**env, "KERAS_BACKEND": "jax"})
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split() == ["tensorflow", "true"]


def test_a_traceback_names_the_module_and_shows_its_line(tmp_path):
    kernel = shutil.copy(COMMITTED / "kernel.py", tmp_path / "kernel.py")
    probe = (
        "import runpy, traceback\n"
        f"runpy.run_path({str(kernel)!r}, run_name='not_main')\n"
        "from kaggle_src.write_outputs import validate_submission\n"
        "try:\n    validate_submission(None, [], [])\n"
        "except AttributeError:\n    print(traceback.format_exc())\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    assert 'File "kaggle_src/write_outputs.py", line' in result.stdout
    assert 'if list(submission.columns) != ["id", *classes]:' in result.stdout


@pytest.mark.skipif(not os.environ.get("COMPAT_PYTHON"), reason="set COMPAT_PYTHON to a Python with requirements-compat.txt")
def test_kernel_runs_with_the_oldest_supported_versions(small_stub, tmp_path):
    """.ci/run sets COMPAT_PYTHON to a virtualenv holding exactly requirements-compat.txt."""
    versions = subprocess.run(
        [os.environ["COMPAT_PYTHON"], "-c", "import tensorflow, keras, numpy, sklearn; "
         "print(tensorflow.__version__, keras.__version__, numpy.__version__, sklearn.__version__)"],
        capture_output=True, text=True, check=True,
    ).stdout.split()
    assert [version.rsplit(".", 1)[0] for version in versions] == ["2.17", "3.5", "1.26", "1.2"]
    kernel = shutil.copy(COMMITTED / "kernel.py", tmp_path / "kernel.py")
    output = tmp_path / "out"
    flags = [*QUICK, "--backbones", "xception,inception_v3"]  # the kernel's default pair, not QUICK's small backbone
    result = subprocess.run(
        [os.environ["COMPAT_PYTHON"], str(kernel), "--input-root", str(small_stub), "--output-dir", str(output), *flags],
        cwd=tmp_path, capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    sample = pd.read_csv(small_stub / "dog-breed-identification" / "sample_submission.csv")
    submission = pd.read_csv(output / "submission.csv")
    assert list(submission.columns) == list(sample.columns) and submission["id"].tolist() == sample["id"].tolist()
    metrics = json.loads((output / "metrics.json").read_text())
    assert metrics["oof"]["ensemble"]["log_loss"] < 0.5 * metrics["chance_log_loss"]
