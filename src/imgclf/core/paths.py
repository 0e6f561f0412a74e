"""Where each stage reads and writes, relative to the repository root (the working directory).

These are the paths that `dvc.yaml` declares; keep the two in step.
"""

from pathlib import Path

RAW_DIR = Path("data/raw")
RAW_MANIFEST = RAW_DIR / "manifest.csv"
CLEAN_DIR = Path("data/clean")
CLEAN_MANIFEST = CLEAN_DIR / "manifest.csv"
SPLIT_DIR = Path("data/split")
SPLIT_FILES = {name: SPLIT_DIR / f"{name}.csv" for name in ("train", "val", "test")}
SPLIT_COLUMNS = ("path", "label", "class", "group")  # of each split file, written by label
MODEL_PATH = Path("models/model.pt")
ONNX_PATH = Path("models/model.onnx")
METRICS_DIR = Path("metrics")
CLEAN_METRICS = METRICS_DIR / "clean.json"
SPLIT_METRICS = METRICS_DIR / "split.json"
SPLIT_PER_CLASS = METRICS_DIR / "split_per_class.csv"
TRAIN_LOG_DIR = METRICS_DIR / "train"
EVALUATE_METRICS = METRICS_DIR / "evaluate.json"
EXPORT_METRICS = METRICS_DIR / "export.json"
PREDICTIONS = METRICS_DIR / "predictions.csv"
PER_CLASS_REPORT = METRICS_DIR / "per_class.csv"
CONFUSED_PAIRS = METRICS_DIR / "confused_pairs.csv"
CONFUSION_PNG = METRICS_DIR / "confusion.png"
MISTAKES_PNG = METRICS_DIR / "mistakes.png"
# The resolved class list travels with the data: each stage copies it into its output folder.
RAW_CLASSES = RAW_DIR / "classes.csv"
CLEAN_CLASSES = CLEAN_DIR / "classes.csv"
SPLIT_CLASSES = SPLIT_DIR / "classes.csv"
# The audit's ranking (written by audit; read by label for audit.auto_reject and by the review
# page), and what curation changed in the split (written by label, read by evaluate).
AUDIT_DIR = Path("data/audit")
SUSPECTS = AUDIT_DIR / "suspects.csv"
AUDIT_METRICS = METRICS_DIR / "audit.json"
SPLIT_CURATION = SPLIT_DIR / "curation.csv"
