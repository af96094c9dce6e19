"""Which input a poster should become: centre crop, padded whole poster or whole poster stretched to 2:3.

    python benchmarks/crop_vs_whole.py [--backbone efficientnet_lite0] [--stages] [--stretch-sizes 256x160 288x192]

For each resize policy (stretch: the default tall input, 320x224 for a 224 backbone), with and
without test-time flip, extracts pooled features of the shared
dataset's labelled posters, splits them with ``make_split(labels, poster_groups(...), seed=0)``,
fits one logistic regression per genre (balanced class weights, C picked on validation) on the
training side, and prints validation and test macro ROC-AUC over the genres with at least 10 test
positives, beside each policy's extraction time. ``--stages`` adds the pooled outputs of the last
stages concatenated (mid-level texture and colour) for the best plain policy.

Features are cached (in the usual cache folder, or --cache), so a rerun only refits; extraction
times measured on a cold cache are kept in that folder and shown again. Skips with a message where
the shared dataset is absent. Timings on a loaded machine are noisy.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
C_GRID = (0.00001, 0.00003, 0.0001, 0.0003)
MIN_TEST_POSITIVES = 10
POLICIES = ("center_crop", "pad", "stretch")


def shared_dataset() -> Path:
    default = ROOT.parent / "shared" / "datasets" / "movie-posters"
    return Path(os.environ.get("POSTERGENRE_SHARED_DATASET", default)).resolve()


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backbone", default="efficientnet_lite0")
    parser.add_argument("--policies", nargs="+", choices=POLICIES, default=list(POLICIES))
    parser.add_argument("--no-flip", action="store_true", help="skip the flip variants")
    parser.add_argument(
        "--stretch-sizes", nargs="*", default=[], metavar="HxW", help="more stretch input sizes to try, e.g. 288x192"
    )
    parser.add_argument("--stages", action="store_true", help="also concatenate the last stages' pooled features")
    parser.add_argument("--cache", type=Path, help="cache folder (default: the usual one)")
    return parser.parse_args()


def load_data(data: Path):
    """Labelled posters, their genres (as select_genres keeps them) and the seed-0 grouped split."""
    from postergenre.data.dataset import load_dataset
    from postergenre.data.duplicates import poster_groups
    from postergenre.data.genres import select_genres
    from postergenre.data.images import scan_images
    from postergenre.data.splits import make_split

    dataset = load_dataset(data)
    labels = dataset.labels.loc[dataset.ids]
    records = scan_images(dataset.image_paths, progress=False)
    split = make_split(labels, poster_groups(dataset.ids, records), seed=0)
    genres = select_genres(labels).kept
    return dataset.image_paths, labels[genres], split


def timed_extract(paths, backbone, preprocessing, flip, cache, times: dict, key: str):
    """Features and the seconds their extraction took on a cold cache (remembered across runs)."""
    from postergenre.features import extract_features

    start = time.perf_counter()
    features = extract_features(paths, backbone, preprocessing=preprocessing, flip=flip, cache_dir=cache)
    seconds = time.perf_counter() - start
    if features.spec["n_computed"] == len(features):
        times[key] = seconds
    elif features.spec["n_computed"] and key in times:
        times[key] = None  # partly cached: neither figure is a cold-cache time
    return features, times.get(key)


def macro_auc(features, labels, split, C: float, side: str) -> tuple[float, int]:
    """Macro ROC-AUC on ``side`` over genres with enough positives there, of per-genre logistic regressions."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.preprocessing import StandardScaler

    train_ids = split.index[split["split"] == "train"]
    eval_ids = split.index[split["split"] == side]
    scaler = StandardScaler().fit(features.select(train_ids))
    x_train, x_eval = scaler.transform(features.select(train_ids)), scaler.transform(features.select(eval_ids))
    test_counts = labels.loc[split.index[split["split"] == "test"]].sum()
    aucs = []
    for genre in labels.columns[test_counts.to_numpy() >= MIN_TEST_POSITIVES]:
        y_train, y_true = labels.loc[train_ids, genre].to_numpy(), labels.loc[eval_ids, genre].to_numpy()
        model = LogisticRegression(C=C, class_weight="balanced", max_iter=2000).fit(x_train, y_train)
        aucs.append(roc_auc_score(y_true, model.decision_function(x_eval)))
    return float(np.mean(aucs)), len(aucs)


def evaluate(features, labels, split) -> dict:
    """Validation AUC for each C; test AUC at the best."""
    validation = {C: macro_auc(features, labels, split, C, "validation")[0] for C in C_GRID}
    best = max(validation, key=validation.get)
    test, n_genres = macro_auc(features, labels, split, best, "test")
    return {"C": best, "validation": validation[best], "test": test, "genres": n_genres}


class StageConcat:
    """Builds a backbone whose pooled output concatenates the last ``n`` stages' pooled maps."""

    def __init__(self, n: int):
        self.n = n

    def __call__(self, name, *, pretrained=True, weights=None):
        import torch
        from torch import nn

        from postergenre.models.backbones import create_backbone

        base = create_backbone(name.split("+")[0], pretrained=pretrained, weights=weights)
        keep = [stage for stage, _ in base.stages()][-self.n :]

        class Concat(nn.Module):
            def __init__(self):
                super().__init__()
                self.base, self.name, self.preprocessing = base, name, base.preprocessing
                with torch.no_grad():
                    self.num_features = self(torch.zeros(1, 3, 64, 64)).shape[1]

            def forward(self, x):
                pooled = []
                for stage_name, stage in self.base.stages():
                    x = stage(x)
                    if stage_name in keep:
                        pooled.append(x.mean(dim=(2, 3)))
                return torch.cat(pooled, dim=1)

        return Concat().eval()


def print_row(label: str, result: dict, seconds: float | None, n_posters: int) -> None:
    speed = f"{seconds:7.0f} s {n_posters / seconds:6.1f} img/s" if seconds else "      (cached, no cold time)"
    print(
        f"{label:34s} C={result['C']:<5} val {result['validation']:.4f}  test {result['test']:.4f}  "
        f"({result['genres']} genres)  {speed}",
        flush=True,
    )


def extract_all(configs, paths, backbone, cache, times, times_path) -> dict:
    """Features per config label, extracted first (so that evaluation never competes with a timing)."""
    features = {}
    for label, pre, flip in configs:
        features[label], _ = timed_extract(paths, backbone, pre, flip, cache, times, label)
        times_path.parent.mkdir(parents=True, exist_ok=True)
        times_path.write_text(json.dumps(times, indent=1))
    return features


def cold_seconds(times: dict, label: str) -> float | None:
    """A config's cold extraction time; a flip config's is its mirror pass plus its plain pass."""
    if not label.endswith(" + flip"):
        return times.get(label)
    mirror, plain = times.get(label), times.get(label.removesuffix(" + flip"))
    return mirror + plain if mirror and plain else None


def stage_features(paths, backbone, pre, cache, times) -> dict:
    """Pooled outputs of the last three stages concatenated, and of the last two (a column subset)."""
    from postergenre.features import FeatureSet
    from postergenre.features import extract as extract_module

    extract_module._build_backbone = StageConcat(3)
    label = f"{pre.resize} last 3 stages"
    three, _ = timed_extract(paths, f"{backbone}+last3", pre, False, cache, times, label)
    last_two = three.spec["num_features"] - 192 if backbone == "efficientnet_lite0" else None
    result = {f"{label} ({three.spec['num_features']})": three}
    if last_two:  # EfficientNet-Lite0: stage6 has 192 channels, stage7 320, head 1280
        values = np.asarray(three.values)[:, 192:]
        result[f"{pre.resize} last 2 stages ({last_two})"] = FeatureSet(three.ids, values, three.failed, three.spec)
    return result


def main() -> int:
    args = parse_args()
    data = shared_dataset()
    if not (data / "train.csv").is_file():
        print(f"skipped: the shared dataset is absent (looked in {data}); set POSTERGENRE_SHARED_DATASET")
        return 0
    from postergenre.features import cache_dir, default_preprocessing

    cache = args.cache or cache_dir()
    times_path = cache / "benchmarks" / f"crop_vs_whole-{args.backbone}.json"
    times = json.loads(times_path.read_text()) if times_path.exists() else {}
    paths, labels, split = load_data(data)
    paths = {id_: paths[id_] for id_ in labels.index}
    print(f"{args.backbone}: {len(paths)} labelled posters, {os.cpu_count()} CPUs; split seed 0", flush=True)

    configs = []
    for flip in [False] if args.no_flip else [False, True]:
        for policy in args.policies:
            pre = default_preprocessing(args.backbone, resize=policy)
            configs.append((f"{policy} {pre.input_size[0]}x{pre.input_size[1]}{' + flip' if flip else ''}", pre, flip))
    for size in args.stretch_sizes:
        height, width = (int(v) for v in size.split("x"))
        pre = default_preprocessing(args.backbone, resize="stretch").with_policy("stretch", (height, width))
        configs.append((f"stretch {height}x{width}", pre, False))
    features = extract_all(configs, paths, args.backbone, cache, times, times_path)

    results = {}
    for label, values in features.items():
        results[label] = evaluate(values, labels, split)
        print_row(label, results[label], cold_seconds(times, label), len(paths))

    if args.stages:
        best = max((k for k in results if "flip" not in k), key=lambda k: results[k]["validation"])
        pre = default_preprocessing(args.backbone, resize=best.split()[0])
        for label, values in stage_features(paths, args.backbone, pre, cache, times).items():
            print_row(label, evaluate(values, labels, split), times.get(f"{pre.resize} last 3 stages"), len(paths))
        times_path.write_text(json.dumps(times, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
