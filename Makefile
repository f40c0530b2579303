# The few commands a user needs; each target is one line you can also type yourself.
PYTHON ?= python
export DVC_NO_ANALYTICS := 1

.PHONY: setup repro test bench report check-repro

setup:  ## install the pinned stack and this package
	$(PYTHON) -m pip install -r requirements.txt

repro:  ## run the pipeline (only stages whose inputs changed)
	dvc repro

test:  ## the test suite, as CI runs it
	$(PYTHON) -m pytest -q

bench:  ## throughput and latency figures (print only)
	$(PYTHON) benchmarks/preprocess_throughput.py
	$(PYTHON) benchmarks/training_loader.py
	$(PYTHON) benchmarks/inference_latency.py

report:  ## metrics and params against main, and the plots as HTML in dvc_plots/
	dvc metrics diff main --md
	dvc params diff main --md
	dvc plots diff main -o dvc_plots

check-repro:  ## reproduce from scratch and compare with the committed metrics
	$(PYTHON) -m brainseg.reproduction
