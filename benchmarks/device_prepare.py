"""What the device machine cannot fetch, made here: `bash benchmarks/device_study.sh --prepare` runs these steps.

    python benchmarks/device_prepare.py wheels      # .whl/: open_clip_torch, ftfy, wcwidth for Python 3.12 x86-64
    python benchmarks/device_prepare.py data        # .devdata/: eval.device_data.write_device_data
    python benchmarks/device_prepare.py pyav        # .whl/ gets PyAV too when the device run imports it
    python benchmarks/device_prepare.py size        # the travelling size; fails above the 64 MiB limit

The device has Python 3.12 with torch, timm, huggingface_hub, safetensors and the rest of the core (its
package list is DEVICE_PACKAGES), but not open_clip_torch (the CLIP teacher), its ftfy and ftfy's
wcwidth, nor PyAV; nothing can be downloaded there. Each wheel is the version installed here (what the
tests ran), and each of its requirements must be on the device or carried. The project itself travels
as the working tree, on PYTHONPATH.
"""
from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

from smile_synth.errors import UserError

REPO = Path(__file__).resolve().parents[1]
WHEELS = REPO / ".whl"
DEVDATA = REPO / ".devdata"
LIMIT_MIB = 64                          # the device tool's limit on what travels
CARRIED = ("open_clip_torch", "ftfy", "wcwidth")
PYAV = "av"
DEVICE_PYTHON = "3.12"
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64",
             "manylinux1_x86_64")
# modules the device run imports (`compare --protocol gpu` and its study; bench_device, whose data_wait rows
# run `pretrain`, whose data path is training.data); PyAV travels when one of them needs it
DEVICE_MODULES = ("smile_synth.app.cli", "eval.compare", "eval.gpu_study", "eval.device_eval", "eval.device_data",
                  "training.trainer", "training.data")
# the device image's Python packages, as the device notes list them (read on such a machine, 2026-11-17)
DEVICE_PACKAGES = frozenset("""
absl-py accelerate aiofiles aiohappyeyeballs aiohttp aiosignal annotated-doc anyio attrs botorch build certifi
charset-normalizer chex click cloudpickle cmake colorama contourpy coverage cuda-bindings cuda-core
cuda-pathfinder cuda-toolkit cupy-cuda13x cycler cython diffrax e3nn einops equinox etils execnet filelock
flatbuffers flax fonttools formulaic frozenlist fsspec gpytorch grpcio h11 h5py hf-xet httpcore httpx
huggingface-hub humanize hypothesis idna imageio iniconfig interface-meta jax jax-cuda13-pjrt
jax-cuda13-plugin jaxlib jaxtyping jinja2 joblib kiwisolver lazy-loader lightning lightning-utilities
linear-operator lineax llvmlite lxml markdown markdown-it-py markupsafe matplotlib mdurl meson ml-dtypes
mpi4py mpmath msgpack multidict multipledispatch mypy-extensions nanobind narwhals networkx ninja numba
numba-cuda numpy numpyro nvidia-cublas nvidia-cuda-cupti nvidia-cuda-nvrtc nvidia-cuda-runtime
nvidia-cudnn-cu13 nvidia-cufft nvidia-cufile nvidia-curand nvidia-cusolver nvidia-cusparse
nvidia-cusparselt-cu13 nvidia-ml-py nvidia-nccl-cu13 nvidia-nvjitlink nvidia-nvshmem-cu13 nvidia-nvtx onnx
onnx-ir onnxruntime onnxscript opencv-python-headless optax opt-einsum opt-einsum-fx optimistix
orbax-checkpoint packaging pandas pathspec patsy peft pillow pip pluggy portalocker prometheus-client
propcache protobuf psutil pyarrow pybind11 py-cpuinfo pygments pyparsing pyproject-hooks pyre-extensions
pytest pytest-benchmark pytest-cov pytest-mock pytest-timeout pytest-xdist python-dateutil pytorch-lightning
pyyaml regex requests rich sacrebleu safetensors scikit-build-core scikit-image scikit-learn scipy seaborn
sentencepiece sentence-transformers setuptools shellingham simplejson six sortedcontainers statsmodels sympy
tabulate tensorboard tensorboard-data-server tensorstore threadpoolctl tifffile tiktoken timm tokenizers
toolz torch torchaudio torchdiffeq torch-geometric torchmetrics torchvision tqdm transformers treescope triton
typer typing-extensions typing-inspect urllib3 uvloop wadler-lindig werkzeug wheel wrapt xarray xxhash yarl
zipp
""".split())
# how the device's requirement markers evaluate (Python 3.12 on x86-64 Linux, no extras)
DEVICE_MARKERS = {"python_version": DEVICE_PYTHON, "python_full_version": f"{DEVICE_PYTHON}.3",
                  "sys_platform": "linux", "platform_system": "Linux", "platform_machine": "x86_64", "os_name": "posix",
                  "implementation_name": "cpython", "platform_python_implementation": "CPython", "extra": ""}


def canonical(name: str) -> str:
    from packaging.utils import canonicalize_name
    return canonicalize_name(name)


def download(names: list[str], folder: Path) -> None:
    """pip-download each NAME==(version installed here) as a Python 3.12 x86-64 wheel into `folder`."""
    pins = []
    for name in names:
        try:
            pins.append(f"{name}=={importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            raise UserError(f"{name} is not installed here: install the project with its extras "
                            '(pip install -e ".[test,hf,scenes]") and run --prepare again') from None
    folder.mkdir(exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:", "--python-version",
           DEVICE_PYTHON, "--implementation", "cp", *(a for p in PLATFORMS for a in ("--platform", p)), "-d",
           str(folder), *pins]
    if subprocess.run(cmd).returncode:
        raise UserError(f"pip download {' '.join(pins)} failed (see pip's message above); is the network up?")


def wheel_requirements(wheel: Path) -> list[str]:
    """The Requires-Dist entries of a wheel's METADATA."""
    with zipfile.ZipFile(wheel) as z:
        meta = next((n for n in z.namelist() if n.endswith(".dist-info/METADATA")), None)
        if meta is None:
            raise UserError(f"{wheel.name} has no .dist-info/METADATA: not a wheel; delete it and run --prepare again")
        text = z.read(meta).decode("utf-8", "replace")
    return [line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("Requires-Dist:")]


def wheel_name(wheel: Path) -> str:
    return canonical(wheel.name.split("-")[0])


def missing_on_device(wheels: list[Path], device: frozenset[str] = DEVICE_PACKAGES) -> list[str]:
    """'wheel needs NAME' for each requirement (markers evaluated for the device, extras skipped) that is
    neither on the device nor among the carried wheels. Versions are not compared: the device list has none."""
    from packaging.requirements import Requirement
    have = {canonical(n) for n in device} | {wheel_name(w) for w in wheels}
    missing = []
    for wheel in wheels:
        for spec in wheel_requirements(wheel):
            req = Requirement(spec)
            if req.marker is not None and not req.marker.evaluate(DEVICE_MARKERS):
                continue
            if canonical(req.name) not in have:
                missing.append(f"{wheel.name} needs {req.name}")
    return missing


def check_wheels(folder: Path) -> list[Path]:
    """The carried wheels, one version of each (two stop the device's install), all needs met there."""
    wheels = sorted(folder.glob("*.whl"))
    names = [wheel_name(w) for w in wheels]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise UserError(f"{folder} holds two versions of {', '.join(twice)}: delete {folder} and run --prepare again")
    missing = missing_on_device(wheels)
    if missing:
        raise UserError(f"not on the device and not carried: {'; '.join(missing)}; "
                        f"add them to CARRIED in {Path(__file__).name}")
    return wheels


def av_needed() -> list[str]:
    """The DEVICE_MODULES (those that exist) whose import fails without PyAV, each tried in a fresh process."""
    block = "import sys; sys.modules['av'] = None; import "
    present = [m for m in DEVICE_MODULES if importlib.util.find_spec(m) is not None]
    return [m for m in present
            if subprocess.run([sys.executable, "-c", block + m], cwd=REPO, capture_output=True).returncode]


def tree_files(repo: Path) -> list[Path]:
    """Files that travel without being carried: tracked and untracked-not-ignored (git ls-files), and shared/."""
    out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=repo,
                         capture_output=True, check=True).stdout.decode()
    files = [repo / p for p in dict.fromkeys(out.split("\0")) if p]
    return files + [p for p in (repo / "shared").rglob("*")] if (repo / "shared").is_dir() else files


def size_of(paths) -> int:
    """Bytes of the regular files among `paths` (links count as links: they travel as links)."""
    return sum(p.lstat().st_size for p in paths if p.is_file() and not p.is_symlink())


def travelling_sizes(repo: Path = REPO, carried: tuple[str, ...] = (".whl", ".devdata")) -> dict[str, int]:
    """Bytes per part of what a device call with these carried folders sends."""
    sizes = {"working tree": size_of(tree_files(repo))}
    for name in carried:
        sizes[name] = size_of((repo / name).rglob("*"))
    return sizes


def mib(n: int) -> str:
    return f"{n / 2 ** 20:.1f} MiB"


# ---- the steps --------------------------------------------------------------------------------

def step_wheels() -> None:
    shutil.rmtree(WHEELS, ignore_errors=True)       # from scratch: an old version or an unneeded PyAV would travel too
    download(list(CARRIED), WHEELS)
    wheels = check_wheels(WHEELS)
    print("carried wheels: " + ", ".join(f"{w.name} ({mib(w.stat().st_size)})" for w in wheels))


def step_data() -> None:
    if importlib.util.find_spec("eval.device_data") is None:
        raise UserError("eval/device_data.py is not in this tree yet: .devdata cannot be written")
    from eval.device_data import write_device_data
    from eval.gpu_study import GpuProtocol
    from training.models import student_config
    # the size the study reads: its preset's, as eval.gpu_study.prepare_data writes it
    root = write_device_data(DEVDATA, size=student_config(GpuProtocol.preset).size)
    print(f".devdata: {root} ({mib(size_of(Path(root).rglob('*')))})")


def step_pyav() -> None:
    """Carry PyAV when a module of the device run imports it and it fits under the limit."""
    needing = av_needed()
    if not needing:
        print("PyAV: not carried (nothing the device run imports needs it)")
        return
    download([PYAV], WHEELS)
    av_bytes = size_of(WHEELS.glob(f"{PYAV}-*.whl"))
    check_wheels(WHEELS)
    print(f"PyAV: carried ({mib(av_bytes)}), imported by {', '.join(needing)}")


def step_size() -> None:
    sizes = travelling_sizes()
    total = sum(sizes.values())
    parts = ", ".join(f"{k} {mib(v)}" for k, v in sizes.items())
    print(f"travels: {parts}; total {mib(total)} (limit {LIMIT_MIB} MiB)")
    if total > LIMIT_MIB * 2 ** 20:
        pyav = size_of(WHEELS.glob(f"{PYAV}-*.whl"))
        hint = f"; PyAV alone is {mib(pyav)} of .whl" if pyav else ""
        raise UserError(f"what travels is {mib(total)}, over the device's {LIMIT_MIB} MiB{hint}: "
                           "store .devdata smaller, or ignore big untracked files in .gitignore")


STEPS = {"wheels": step_wheels, "data": step_data, "pyav": step_pyav, "size": step_size}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("step", choices=list(STEPS))
    args = ap.parse_args()
    os.chdir(REPO)
    try:
        STEPS[args.step]()
    except UserError as e:
        print(f"Error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
