# The few commands a user needs; each target is one line you can also type yourself.
PYTHON ?= python
export DVC_NO_ANALYTICS := 1

.PHONY: setup repro test bench report exp-show check-repro

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

# Columns `make exp-show` hides: every test figure but the headline ones, training's end-of-run values,
# the hashes of changed dependencies and the creation time. DVC matches these regexes from the start of
# each column name.
EXP_HIDE ?= Created|src/|stages/|configs/|data/|weights|models/|metrics/train/plots|metrics/test.json$$|iou_global|precision_|recall_|tumor_free_fpr|hd95_px_mean|box_iou_mean|localisation_hit_rate|dice_mean_ci95|tta$$|min_component_px|val_dice_mean|train\.loss|val\.|lr$$|step$$|best_val_dice

exp-show:  ## experiments side by side: the params that differ and the headline test figures
	dvc exp show --only-changed --drop '$(EXP_HIDE)' --keep 'dice_mean$$|dice_global|best_epoch'

check-repro:  ## reproduce from scratch and compare with the committed metrics
	$(PYTHON) -m brainseg.reproduction
