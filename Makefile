# Two commands on a fresh machine (see README):
#   make demo   - set up, run the workflow on the embedded demo, write the report
#   make test   - set up, run the whole test suite
# Both are idempotent: a second run does no work that is already done.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# Debian packages the demo needs, and those the tests add (installed when run as root).
APT_PACKAGES := cp2k
TEST_APT_PACKAGES := chromium

.PHONY: demo test install system profiles report clean help

help:
	@echo "make demo   - run the workflow on the embedded demo experiment"
	@echo "make test   - run the test suite"

$(BIN)/python:
	@$(PYTHON) -c 'import ensurepip' 2>/dev/null || $(MAKE) --no-print-directory system APT_PACKAGES="python3-venv"
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e ".[workflow,test]"
	@touch $(STAMP)

system:
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing system packages:$$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	  else \
	    echo "missing system packages:$$missing -- run: sudo apt-get install$$missing" >&2; exit 1; \
	  fi; \
	fi

profiles: $(STAMP)
	@$(BIN)/latticegenome install-profiles

# Numba compiles the refinement kernels once per installation (and again when
# they change): here, rather than inside the first image analysis.
$(VENV)/.kernels: src/latticegenome/columns/_kernels.py $(STAMP)
	@$(BIN)/python -c "from latticegenome.columns._kernels import warm_up; warm_up()"
	@touch $@

install: system $(STAMP) profiles $(VENV)/.kernels

demo/facility/STO_BTO_superlattice/superlattice_011.tif: | $(STAMP)
	$(BIN)/latticegenome simulate demo/facility/STO_BTO_superlattice

demo/facility/heating_series/series.tif: | $(STAMP)
	$(BIN)/latticegenome simulate demo/facility/heating_series --series 12 --size 256

demo: install demo/facility/STO_BTO_superlattice/superlattice_011.tif demo/facility/heating_series/series.tif
	@# a lock left by a killed Snakemake is removed (never one of a run still going)
	@$(BIN)/python -m latticegenome.resume
	$(BIN)/snakemake --profile local
	@if [ ! -f results/report.html ] || [ -n "$$(find results data -newer results/report.html -type f ! -path '*/logs/*' ! -path '*/benchmarks/*' ! -path '*/package/*' ! -name published.json 2>/dev/null | head -n 1)" ]; then \
	  $(BIN)/snakemake --profile local --report results/report.html; \
	fi
	$(BIN)/snakemake --profile local publish_all
	@echo ""
	@echo "Results: results/<experiment>/ (statistics.h5, classes.csv, layers.csv, images.tsv, rejected.tsv, figures/)"
	@echo "Series:  results/demo_series/ (dynamics.tsv, dynamics/<file>.h5 and .csv, figures/series/)"
	@echo "Package: results/<experiment>/package/ (with ro-crate-metadata.json), published to demo/publication/"
	@echo "Report:  $(CURDIR)/results/report.html"

test: install
	@$(MAKE) --no-print-directory system APT_PACKAGES="$(TEST_APT_PACKAGES)" || \
	  echo "(tests that need them are skipped, each with its reason)"
	$(BIN)/python -m pytest

clean:
	rm -rf results data demo .snakemake
