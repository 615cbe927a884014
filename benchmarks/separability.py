"""Is there signal to learn? A second, independent method beside the study's CNN (BENCHMARKS.md section 3):
patient-grouped 5-fold cross-validated ROC-AUC of a plain scikit-learn pipeline (pixels at 32 px ->
standardize -> PCA(50) -> logistic regression) on two folders of images.

    python benchmarks/separability.py ../shared/data/nih-64/abnormal ../shared/data/nih-64/normal

NIH file names are PATIENT_FOLLOWUP.png, so the patient is the part before the first underscore; images
from one patient stay in one fold. If this pipeline and the study's CNN both sit near AUC 0.5, the task
at this size and count has no signal they can use, and no augmentation verdict can come out of it.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image
from sklearn.decomposition import PCA
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GroupKFold, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

EXT = {".png", ".jpg", ".jpeg"}


def load(folder: Path, label: int) -> tuple[list[np.ndarray], list[int], list[str]]:
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in EXT)
    x = [np.asarray(Image.open(p).convert("L").resize((32, 32)), np.float32).ravel() / 255 for p in files]
    return x, [label] * len(files), [p.stem.split("_")[0] for p in files]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("positive", type=Path)
    ap.add_argument("negative", type=Path)
    a = ap.parse_args()
    xp, yp, gp = load(a.positive, 1)
    xn, yn, gn = load(a.negative, 0)
    x, y, g = np.array(xp + xn), np.array(yp + yn), np.array(gp + gn)
    print(f"{len(xp)} positive, {len(xn)} negative images, {len(set(g))} patients")
    for c in (0.01, 0.1, 1.0):
        model = make_pipeline(StandardScaler(), PCA(50, random_state=0), LogisticRegression(C=c, max_iter=2000))
        auc = cross_val_score(model, x, y, groups=g, cv=GroupKFold(5), scoring="roc_auc")
        print(f"C={c:<5g} ROC-AUC per fold {np.round(auc, 3).tolist()}  mean {auc.mean():.3f}")


if __name__ == "__main__":
    main()
