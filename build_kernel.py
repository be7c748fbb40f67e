"""Build the one-file offline Kaggle kernels from kaggle_src.

    python build_kernel.py                          # writes kernels/dog-breed-xception-inception/ and dog-breed-heads/
    python build_kernel.py --set image_size=331     # a leaderboard experiment is a build setting

It builds and nothing else: leaderboard.py builds through it, then pushes.

The kernel keeps kaggle_src's modules as real modules: each module's source sits in the file as a
string and a small importer registers it under its own name, so module semantics hold and
tracebacks name kaggle_src/<module>.py and the line. Same sources and settings, same bytes.
"""
import argparse
import ast
import hashlib
import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from kaggle_src.backbones import BACKBONES
from kaggle_src.config import make_config, parse_value
from kaggle_src.errors import InputError

REPO = Path(__file__).resolve().parent
PACKAGE = REPO / "kaggle_src"
COMPETITION = "dog-breed-identification"
MACHINE_SHAPE = "NvidiaTeslaT4"  # Kaggle's "GPU T4 x2"
NO_USER = "USER"  # the id's owner when no Kaggle user is known at build time
# Modules in the order a reader meets them: errors and settings, then the stages as they run, then the driver.
READING_ORDER = ["__init__", "errors", "config", "backbones", "find_inputs", "load_images", "extract_features",
                 "feature_cache", "train_heads", "pseudo_labels", "train_logistic", "predict", "ensembles",
                 "write_outputs", "report", "pictures", "pipeline"]
ALLOWED_IMPORTS = {"keras", "tensorflow", "numpy", "pandas", "cv2", "joblib", "tqdm", "sklearn", "matplotlib"}


@dataclass(frozen=True)
class Kernel:
    """One of the kernels built from kaggle_src: what Kaggle calls it, what it does, what it runs on."""

    slug: str
    title: str  # slugifies to `slug`
    summary: str  # the header's first paragraph, with {folds}, {views} and {backbones} filled in
    gpu: bool
    settings: dict  # baked in beneath the user's --set values
    usage: str  # the header's lines on running it here and on Kaggle


KERNELS = {
    "full": Kernel(
        "dog-breed-xception-inception", "Dog Breed Xception Inception",
        "Finds the competition and the ImageNet weights under /kaggle/input, loads every image as uint8,\n"
        "extracts the features of each image and of its horizontal flip with {backbones} on the GPU,\n"
        "saves them (features.npz) for heads-only kernels, trains {folds}-fold x {views}-view dropout +\n"
        "softmax heads, and writes the ensemble with the best out-of-fold log loss to\n"
        "/kaggle/working/submission.csv, with the cross-validated scores in metrics.json and report.md.",
        gpu=True, settings={},
        usage="Run here, from the repo's root:\n"
              "    python kernels/dog-breed-xception-inception/kernel.py --input-root input_stub --output-dir working --dry-run\n"
              "On Kaggle:  no arguments: /kaggle/input -> /kaggle/working, the real weights.",
    ),
    "heads": Kernel(
        "dog-breed-heads", "Dog Breed Heads",
        "Reads the features that the dog-breed-xception-inception kernel saved (its output, attached as\n"
        "an input), checks them against the competition, trains {folds}-fold x {views}-view dropout +\n"
        "softmax heads on the CPU, and writes the ensemble with the best out-of-fold log loss to\n"
        "/kaggle/working/submission.csv, with the cross-validated scores in metrics.json and report.md.",
        gpu=False, settings={"features": "/kaggle/input"},
        usage="Run here, from the repo's root, after the full kernel's dry run wrote working/:\n"
              "    python kernels/dog-breed-heads/kernel.py --input-root input_stub --output-dir heads --dry-run --features working\n"
              "On Kaggle:  no arguments: /kaggle/input (the full kernel's output attached) -> /kaggle/working.",
    ),
}
SLUG = KERNELS["full"].slug
KERNEL_TEMPLATE = '''"""Dog Breed Identification by transfer learning: one offline Kaggle kernel.

{summary}

Built by build_kernel.py from the kaggle_src package; edit the package, not this file.
    source commit:   {commit}
    sources sha256:  {digest}
    build settings:  {settings_text}
    configuration:   {config_text}
{usage}
"""
import importlib.abc
import importlib.util
import linecache
import sys

BUILD_SETTINGS = {settings!r}  # Config values chosen at build time; command-line flags still win
BUILD = {build!r}

# The kaggle_src package, one module per string; each string starts after the newline that follows r\'\'\'.
SOURCES = {{}}
{sources}

class SourceImporter(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Imports SOURCES as real modules, registering their lines so tracebacks show them."""

    def find_spec(self, name, path=None, target=None):
        if name in SOURCES:
            return importlib.util.spec_from_loader(name, self, is_package=name == "kaggle_src")
        return None

    def create_module(self, spec):
        return None

    def exec_module(self, module):
        name = module.__name__
        filename = "kaggle_src/__init__.py" if name == "kaggle_src" else name.replace(".", "/") + ".py"
        source = SOURCES[name][1:]
        linecache.cache[filename] = (len(source), None, source.splitlines(keepends=True), filename)
        exec(compile(source, filename, "exec"), module.__dict__)


sys.meta_path.insert(0, SourceImporter())

if __name__ == "__main__":
    from kaggle_src.pipeline import main

    exit_code = main(settings=BUILD_SETTINGS, build=BUILD)
    if exit_code:  # a clean run returns normally: no SystemExit for a notebook to show
        sys.exit(exit_code)
'''


def git(*args):
    """Output of a git command in the repo, or '' where git or the repo is missing."""
    try:
        return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return ""


def source_commit():
    """The last commit that changed what goes into the kernel, marked when those files have uncommitted changes.

    Not HEAD: committing the built kernel must not make it stale.
    """
    paths = ["kaggle_src", "build_kernel.py"]
    commit = git("log", "-1", "--format=%h", "--", *paths) or "unknown"
    dirty = git("status", "--porcelain", "--", *paths)
    return f"{commit} + uncommitted changes" if dirty else commit


def package_sources():
    """{module name: source} for kaggle_src in reading order, without __main__ (the kernel is its own entry)."""
    sources = {}
    paths = [path for path in PACKAGE.glob("*.py") if path.stem != "__main__"]
    rank = {stem: index for index, stem in enumerate(READING_ORDER)}
    for path in sorted(paths, key=lambda path: (rank.get(path.stem, len(rank)), path.stem)):
        name = "kaggle_src" if path.stem == "__init__" else f"kaggle_src.{path.stem}"
        text = path.read_text()
        check_module(path, text)
        sources[name] = text
    return sources


def check_module(path, text):
    """Refuse a module the kernel cannot carry: one that imports beyond Kaggle's image or breaks the string."""
    if "'''" in text:
        raise InputError(f"{path}: contains ''' and cannot be embedded; use \"\"\" instead")
    for node in ast.walk(ast.parse(text, str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            names = [node.module]
        else:
            continue
        for name in names:
            top = name.split(".")[0]
            if top not in ALLOWED_IMPORTS and top not in sys.stdlib_module_names:
                raise InputError(f"{path}: imports {name}, which Kaggle's image may lack; allowed: {sorted(ALLOWED_IMPORTS)}")


def parse_settings(pairs):
    """--set key=value pairs -> {field: typed value}, each checked against Config (the whole Config too)."""
    settings = {}
    for pair in pairs:
        key, separator, value = pair.partition("=")
        if not separator:
            raise InputError(f"--set {pair!r}: expected key=value")
        settings[key.strip()] = parse_value(key.strip(), value)
    make_config(**settings)
    return dict(sorted(settings.items()))


def kernel_text(kernel, settings):
    """The kernel file's text: header, build settings, the package's sources, the importer and the entry call."""
    sources = package_sources()
    digest = hashlib.sha256("".join(f"{name}\n{text}" for name, text in sources.items()).encode()).hexdigest()
    settings = dict(sorted({**kernel.settings, **settings}.items()))
    config = make_config(**settings)
    commit = source_commit()
    blocks = "\n".join(
        f"# ---- {name.replace('.', '/')}{'/__init__' if name == 'kaggle_src' else ''}.py ----\n"
        f"SOURCES[{name!r}] = r'''\n{text}'''\n"
        for name, text in sources.items()
    )
    return KERNEL_TEMPLATE.format(
        summary=kernel.summary.format(folds=config.n_folds, views=len(config.views), backbones=" + ".join(config.backbones)),
        usage=kernel.usage,
        commit=commit,
        digest=digest,
        settings_text=", ".join(f"{key}={value!r}" for key, value in settings.items()) or "none (the defaults)",
        config_text=_wrap(", ".join(f"{key}={value!r}" for key, value in config.as_dict().items()), indent=21),
        settings=settings,
        build={"commit": commit, "sources_sha256": digest, "settings": settings},
        sources=blocks,
    )


def kernel_metadata(kernel, user, config, public=False):
    """What `kaggle kernels push` reads: the full kernel on T4 x2 with the weights datasets attached;
    the heads kernel on CPU with the full kernel's output attached instead."""
    unknown = [name for name, dataset in config.weights_datasets.items() if not dataset]
    if kernel.gpu and unknown:
        raise InputError(f"backbone {unknown[0]}: no known Kaggle dataset holds {BACKBONES[unknown[0]].weights_file}; "
                         "--set weights_dataset=OWNER/SLUG names one that holds every backbone's weights")
    datasets = sorted(set(config.weights_datasets.values()))
    return {
        "id": f"{user or NO_USER}/{kernel.slug}",
        "title": kernel.title,
        "code_file": "kernel.py",
        "language": "python",
        "kernel_type": "script",
        "is_private": not public,
        "enable_gpu": kernel.gpu,
        "enable_tpu": False,
        "enable_internet": False,
        "dataset_sources": datasets if kernel.gpu else [],
        "competition_sources": [COMPETITION],
        "kernel_sources": [] if kernel.gpu else [f"{user or NO_USER}/{SLUG}"],
        "model_sources": [],
        **({"machine_shape": MACHINE_SHAPE} if kernel.gpu else {}),
    }


def build(settings, user=None, public=False, out=REPO / "kernels"):
    """Write <out>/<slug>/kernel.py and kernel-metadata.json for every kernel, once all are made; return {name: folder}."""
    files = {
        name: (kernel_text(kernel, settings), kernel_metadata(kernel, user, make_config(**{**kernel.settings, **settings}), public))
        for name, kernel in KERNELS.items()
    }
    folders = {}
    for name, (text, metadata) in files.items():
        folder = folders[name] = Path(out) / KERNELS[name].slug
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "kernel.py").write_text(text)
        (folder / "kernel-metadata.json").write_text(json.dumps(metadata, indent=2) + "\n")
    return folders


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    parser.add_argument("--set", dest="settings", action="append", default=[], metavar="KEY=VALUE",
                        help="a Config value baked into the kernel (repeatable), e.g. --set image_size=331")
    parser.add_argument("--user", help="the kernels' owner in kernel-metadata.json (default: USER, a placeholder; "
                                       "leaderboard.py --push fills in the user the kaggle CLI is signed in as)")
    parser.add_argument("--public", action="store_true", help="make the kernel public (default: private)")
    parser.add_argument("--out", type=Path, default=REPO / "kernels", help="where the kernel folders go (default: kernels)")
    args = parser.parse_args(argv)
    try:
        for folder in build(parse_settings(args.settings), args.user, args.public, args.out).values():
            print(f"built {folder}/kernel.py ({(folder / 'kernel.py').stat().st_size:,} bytes), source commit {source_commit()}")
    except (InputError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


def _wrap(text, indent, width=100):
    """Wrap a long comma-separated line for the header."""
    lines, line = [], ""
    for part in text.split(", "):
        if line and len(line) + len(part) + 2 > width - indent:
            lines.append(line + ",")
            line = part
        else:
            line = f"{line}, {part}" if line else part
    lines.append(line)
    return ("\n" + " " * indent).join(lines)


if __name__ == "__main__":
    sys.exit(main())
