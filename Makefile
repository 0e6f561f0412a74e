# The README's commands. Each target sets the project up first (once; again when the
# requirements change), then runs with the virtual environment's tools on the PATH, because
# dvc.yaml's commands call `python`.
VENV  := .venv
STAMP := $(VENV)/.installed
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)

.PHONY: setup run test test-fast bench crimean gemstones exps

setup: $(STAMP)

$(STAMP): requirements.txt constraints.txt pyproject.toml scripts/setup.sh
	bash scripts/setup.sh
	touch $@

# The main job: the whole pipeline with params.yaml as it is (by default the shipped sample,
# offline, in about two minutes).
run: setup
	dvc repro

# The flagship recipes, as named experiments on top of params.yaml (README, "Recipes"). Each needs
# the internet for torchvision's ImageNet weights (and crimean for Yandex Images).
BIG_NETWORK := -S train.arch=mobilenet_v3_large -S train.pretrained=DEFAULT \
               -S train.image_size=224 -S train.epochs=10
CRIMEAN     := -S classes=data/classes/crimean_plants.csv -S scrape.source=yandex $(BIG_NETWORK)
# Your copy of the gemstone photos: a folder <root>/<gem>/<image> or a .zip (make gemstones
# FOLDER=~/Downloads/gemstones.zip); the path is made absolute for DVC's experiment workspaces.
FOLDER      ?= data/import
GEMSTONES   := -S classes=data/classes/gemstones.csv -S scrape.source=folder \
               -S scrape.folder=$(abspath $(FOLDER)) $(BIG_NETWORK)

crimean: setup
	dvc exp run -n crimean-plants $(CRIMEAN)

gemstones: setup
	dvc exp run -n gemstones $(GEMSTONES)

# Experiments side by side: what differs, and the figures people rank by (README, "Training").
exps: setup
	dvc exp show --only-changed \
	    --drop 'Created|.*/.*|lr|images_per_second|step|n_test|n_classes|(train|val)\.(loss|accuracy)'

# Every test: unit tests, and the slow ones (real DVC runs end to end, each stage run by
# tests/test_dvc_yaml.py, the S3 server's flows, every benchmark's smoke run).
test: setup
	pytest

# The tests not marked slow: every module's behaviour, real Chromium against the local fake web,
# real training of tiny models in process; no DVC pipeline runs, S3 server or benchmarks.
test-fast: setup
	pytest -m "not slow"

# Every benchmark on its real data (long: tens of minutes); figures go to docs/benchmarks.md.
bench: setup
	for script in benchmarks/bench_*.py; do python $$script || exit 1; done
