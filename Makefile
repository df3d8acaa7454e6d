# glide-edu: set-up, the book in JupyterLab, and the test run. Everything lives in ./.venv;
# nothing is installed or registered outside it.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# Optional extras on top of dev: `make venv EXTRAS=book` also installs the book's Sphinx stack (`make book`
# installs it by itself when it is missing).
EXTRAS ?=
BOOK_STAMP := $(VENV)/.installed-book
# JupyterLab reads app-wide setting overrides from <env>/share/jupyter/lab/settings/overrides.json.
OVERRIDES := $(VENV)/share/jupyter/lab/settings/overrides.json
# The server's contents manager: jupytext's, handing chapters over with the kernel's language_info so that
# opening one does not mark it modified (glide_edu/book/lab.py).
SERVER_CONFIG := $(VENV)/etc/jupyter/jupyter_server_config.json
# Jupyter refuses to run as root without this flag (containers, CI).
ALLOW_ROOT := $(if $(filter 0,$(shell id -u)),--allow-root)

# libgomp's idle threads spin before sleeping; on a 2-core machine with anything else running that makes every
# 2-thread torch step several times slower (benchmarks/omp_spin.py, docs/benchmarks.md). A short spin costs ~5 %
# idle. Exported to every recipe (tests, chapter kernels, JupyterLab's kernels) unless already set.
export GOMP_SPINCOUNT ?= 1000

# Extra arguments, e.g. `make test PYTEST_ARGS='-x chapters/01_forward_process.md'`.
PYTEST_ARGS ?=
LAB_ARGS ?=

.PHONY: venv setup lab test lint student figures book wheelhouse clean distclean

venv setup: $(STAMP) $(OVERRIDES) $(SERVER_CONFIG) $(if $(filter book,$(EXTRAS)),$(BOOK_STAMP))

# A room without internet: `make wheelhouse` (on a machine with PyPI) collects every wheel, glide-edu's and the
# build tools' included, into wheelhouse/ (about 450 MB); copy the project folder with it, then
# `make venv WHEELHOUSE=wheelhouse` (or make test / make lab) installs from it with no network at all.
WHEELHOUSE ?=
PIP_FROM := $(if $(WHEELHOUSE),--no-index --find-links $(WHEELHOUSE))


# (Re)installs when pyproject.toml or constraints.txt change; otherwise instant.
# constraints.txt pins torch to a CPU build: an unpinned torch resolves to a multi-GB CUDA build.
# It is used only when the venv has no torch yet, so a torch the user installed is kept.
# rfc3987-syntax (pulled in by the Jupyter stack) adds ~3 s to every process importing nbformat,
# i.e. to every chapter test; nothing needs it at run time, so it is removed.
$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	if $(PY) -c 'import importlib.util, sys; sys.exit(importlib.util.find_spec("torch") is None)'; then \
		echo "torch already installed in $(VENV): keeping it"; \
		$(PY) -m pip install $(PIP_FROM) -e '.[dev]'; \
	else \
		$(PY) -m pip install $(PIP_FROM) -c constraints.txt -e '.[dev]'; \
	fi
	# CLIP's BPE vocabulary ships inside open-clip-torch; only that data file is read (sha256-checked),
	# so the package is installed without its dependencies (its torchvision would not match the CPU torch).
	$(PY) -m pip install $(PIP_FROM) --no-deps 'open-clip-torch>=2.0,<4'
	if $(PY) -m pip show -q rfc3987-syntax 2>/dev/null; then $(PY) -m pip uninstall -y rfc3987-syntax; fi
	touch $@

# Open .md chapters as notebooks (jupytext's viewer) and turn off the "Jupyter news" prompt.
# The `book` extra (Sphinx, MyST-NB, sphinx-book-theme): reinstalled when pyproject.toml or constraints.txt change.
$(BOOK_STAMP): $(STAMP)
	$(PY) -m pip install $(PIP_FROM) -c constraints.txt -e '.[dev,book]'
	if $(PY) -m pip show -q rfc3987-syntax 2>/dev/null; then $(PY) -m pip uninstall -y rfc3987-syntax; fi
	touch $@

$(OVERRIDES): tools/jupyterlab-overrides.json $(STAMP)
	mkdir -p $(dir $@)
	cp tools/jupyterlab-overrides.json $@

$(SERVER_CONFIG): tools/jupyter-server-config.json $(STAMP)
	mkdir -p $(dir $@)
	cp tools/jupyter-server-config.json $@

lab: venv
	$(VENV)/bin/jupyter lab --ServerApp.root_dir=. --LabApp.default_url=/lab/tree/chapters $(ALLOW_ROOT) $(LAB_ARGS)

# Unit tests and every chapter (see conftest.py). pytest's exit code 5 means nothing was collected:
# that is a broken set-up, never a pass.
test: venv
	@command -v chromium >/dev/null || command -v chromium-browser >/dev/null || \
		echo "make test: no Chromium, so the browser tests are skipped; install it with: sudo apt-get install chromium"
	@$(PY) -m pytest $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test: pytest collected no tests (exit 5): failing" >&2; exit 1; fi; \
	exit $$rc

# The student edition: every exercise's solution cell replaced by its stub (made from the chapters, never edited).
student: venv
	$(PY) -m glide_edu.book student --out student/chapters

# Each chapter's key figure (the cell tagged key-figure) as PNG and SVG for slides, in build/figures/.
figures: venv
	$(PY) -m glide_edu.book figures --out build/figures

# The executed chapters as a static HTML book in build/book/html that works offline (file://, no CDN): every
# chapter is executed (fast profile unless GLIDE_EDU_PROFILE is set; a cell error fails the build), MathJax and
# the widget manager are vendored once from the npm registry (needs npm), the API reference comes from the
# docstrings. BOOK_CHAPTERS='1 5' builds only those chapters; BOOK_ARGS='--incremental' re-executes only
# chapters whose text changed. See tools/bookbuild.py.
BOOK_CHAPTERS ?=
BOOK_ARGS ?=
book: $(BOOK_STAMP)
	GLIDE_EDU_PROFILE=$${GLIDE_EDU_PROFILE:-fast} BOOK_CHAPTERS='$(BOOK_CHAPTERS)' $(PY) tools/bookbuild.py $(BOOK_ARGS)

wheelhouse: venv
	$(PY) -m pip wheel -w wheelhouse -c constraints.txt '.[dev]'
	$(PY) -m pip download -d wheelhouse --no-deps 'open-clip-torch>=2.0,<4'
	$(PY) -m pip download -d wheelhouse 'setuptools>=68' wheel pip
	@echo "wheelhouse/ is ready: copy the project with it and run make venv WHEELHOUSE=wheelhouse offline"

lint: venv
	$(VENV)/bin/ruff check .

clean:
	rm -rf .pytest_cache .ruff_cache .hypothesis build student *.egg-info
	find . -path ./$(VENV) -prune -o -type d \( -name __pycache__ -o -name .ipynb_checkpoints \) \
		-prune -exec rm -rf {} +

distclean: clean
	rm -rf $(VENV)
