"""keras-eff (Keras 3) side by side with TF-MOT 0.8.1 (tf_keras): same models, initial weights, data order, epochs.

    make bench                              # sets up .venv-tfmot/ when missing, then the full run
    python -m benchmarks.tfmot              # the full run (needs .venv-tfmot/, see benchmarks/requirements-tfmot.txt)
    python -m benchmarks.tfmot --quick      # a smoke run of a few minutes

For each architecture (one description, ``benchmarks/tfmot_common.py``, built in Keras 3 and in tf_keras) and each
seed, this process makes the initial weights in Keras 3, trains them in float for ``pre_epochs`` and saves them;
then two workers, each in its own process and environment, start every technique from those weights and train it on
the same images in the same order (written per seed and epoch to a data file, fit with ``shuffle=False``):

- float fine-tuning (then int8 by post-training quantization: the reference), QAT int8,
- pruning to 50 % and 80 % with PolynomialDecay (uniform; keras-eff also with its log-proportional distribution),
- 16 clusters (k-means++), and
- prune-preserving QAT (from the 50 % model) and cluster-preserving QAT (from the 16-cluster model).

This process then measures every int8 file the same way: accuracy with LiteRT on the same test slice, size and gzip
size, int8 kernel sparsity and distinct values per channel, and latency with the same interpreter settings, all
files interleaved in each round. Training time is each worker's interleaved ratio of technique to float training
blocks in its own framework. Three seeds give a mean and a spread (max − min) for each row.
"""

from __future__ import annotations

import argparse
import gzip
import os
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np

from benchmarks import tfmot_common as common
from tflite_export.files import atomic_savefig

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
TFMOT_PYTHON = ROOT / ".venv-tfmot" / "bin" / "python"

FULL = dict(
    models=("small_cnn", "ds_cnn"),
    width=16,
    n_train=10000,
    n_test=3000,
    seeds=(0, 1, 2),
    pre_epochs=3,
    tune_epochs=2,
    qat_epochs=1,
    timing_steps=32,
    timing_repeats=5,
    latency_rounds=7,
    latency_runs=100,
)
QUICK = dict(
    models=("small_cnn",),
    width=8,
    n_train=1024,
    n_test=500,
    seeds=(0, 1),
    pre_epochs=1,
    tune_epochs=1,
    qat_epochs=1,
    timing_steps=4,
    timing_repeats=2,
    latency_rounds=3,
    latency_runs=30,
)
HPARAMS = dict(batch_size=64, lr_pre=1e-3, lr_tune=1e-3, lr_qat=3e-4, representative=256, calibration=1024)
TFMOT_TECHNIQUES = tuple(t for t in common.TECHNIQUES if not t.endswith("_log"))
# keras-eff row -> the TF-MOT row it is held against (the log distribution against TF-MOT's uniform)
COUNTERPART = {t: t[:7] if t.endswith("_log") else t for t in common.TECHNIQUES}
LABELS = {
    "float": "float (int8 by PTQ)",
    "qat": "QAT int8",
    "prune50": "prune 50 %",
    "prune80": "prune 80 %",
    "prune50_log": "prune 50 %, log distribution",
    "prune80_log": "prune 80 %, log distribution",
    "cluster16": "16 clusters",
    "pqat": "prune 50 % → prune-preserving QAT",
    "cqat": "16 clusters → cluster-preserving QAT",
}


def _run_worker(framework, job_path, log_path):
    python = str(TFMOT_PYTHON) if framework == "tfmot" else sys.executable
    module = "benchmarks.tfmot_worker" if framework == "tfmot" else "benchmarks.keras_eff_worker"
    env = {k: v for k, v in os.environ.items() if k not in ("TF_USE_LEGACY_KERAS", "PYTHONPATH")}
    env["TF_CPP_MIN_LOG_LEVEL"] = "3"
    t0 = time.perf_counter()
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            [python, "-m", module, str(job_path)],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for line in proc.stdout:
            log.write(line)
            if line.startswith("["):  # the workers' own progress lines; Keras' are in the log
                print("   ", line.rstrip(), flush=True)
        rc = proc.wait()
    if rc:
        tail = Path(log_path).read_text().splitlines()[-25:]
        raise RuntimeError(f"the {framework} worker failed (exit {rc}); log {log_path}:\n" + "\n".join(tail))
    return time.perf_counter() - t0


def _pretrain(spec, seed, data_path, hp, cfg, work, reuse=False):
    """Initial weights made in Keras 3, trained in float for pre_epochs over the seed's order; saved by layer name."""
    import keras

    path = work / f"pretrained_{spec['name']}_s{seed}.npz"
    acc_path = work / f"pretrained_{spec['name']}_s{seed}.json"
    if reuse and path.exists() and acc_path.exists():  # the workers already ran from these very weights
        return path, common.read_json(acc_path)["accuracy"]
    keras.utils.set_random_seed(seed)
    model = common.build(spec, keras)
    common.save_weights(model, work / f"init_{spec['name']}_s{seed}.npz")
    data = common.read_data(data_path, seed)
    model.compile(
        optimizer=keras.optimizers.Adam(hp["lr_pre"]),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    x, y = common.epochs_of(data, 0, cfg["pre_epochs"])
    model.fit(x, y, batch_size=hp["batch_size"], epochs=1, shuffle=False, verbose=0)
    acc = common.accuracy(model.predict(data["x_test"], batch_size=500, verbose=0), data["y_test"])
    common.save_weights(model, path)
    common.write_json(acc_path, {"accuracy": acc})
    return path, acc


def _measure(results, work, data_path, cfg):
    """Every int8 file measured here, the same way: LiteRT accuracy, sizes, kernels, interleaved latency."""
    import tflite_export as te
    from keras_eff.clustering import clustering_report

    data = common.read_data(data_path, 0)
    xt, yt = data["x_test"], data["y_test"]
    files, measured = {}, {}
    for res in results:
        for row in res["rows"]:
            blob = (work / row["tflite"]).read_bytes()
            files[row["tflite"]] = blob
            report = clustering_report(blob)
            measured[row["tflite"]] = {
                "int8_acc": common.accuracy(te.TFLiteModel(blob).predict(xt), yt),
                "bytes": len(blob),
                "gzip_bytes": len(gzip.compress(blob, 9)),
                "int8_sparsity": report.sparsity,
                "max_distinct_per_channel": report.max_distinct_per_channel,
                "float_islands": len(te.find_float_islands(blob)),
            }
    print(
        f"latency: {len(files)} int8 files, {cfg['latency_rounds']} interleaved rounds of {cfg['latency_runs']} "
        f"runs (LiteRT, batch 1, one thread, XNNPACK)",
        flush=True,
    )
    latency = te.compare_latency(files, rounds=cfg["latency_rounds"], runs=cfg["latency_runs"])
    for name, lat in latency.items():
        measured[name]["latency_us"] = lat["median_us"]
    return measured


def _stats(values):
    v = np.asarray(values, float)
    return {"mean": float(v.mean()), "spread": float(v.max() - v.min()), "values": v.tolist()}


def _aggregate(results, measured):
    groups = {}
    for res in results:
        for row in res["rows"]:
            key = (res["arch"], row["technique"], res["framework"])
            groups.setdefault(key, []).append({**row, **measured[row["tflite"]]})
    rows = []
    for arch, technique, framework in sorted(groups, key=lambda k: (k[0], common.TECHNIQUES.index(k[1]), k[2])):
        g = groups[(arch, technique, framework)]
        stat = {
            m: _stats([r[m] for r in g])
            for m in (
                "keras_acc",
                "int8_acc",
                "bytes",
                "gzip_bytes",
                "latency_us",
                "int8_sparsity",
                "max_distinct_per_channel",
            )
        }
        stat["train_ratio"] = _stats([r["timing"]["ratio"] for r in g])
        rows.append(
            {
                "model": arch,
                "technique": LABELS[technique],
                "key": technique,
                "framework": "keras-eff" if framework == "keras-eff" else "TF-MOT",
                "seeds": len(g),
                "keras acc %": 100 * stat["keras_acc"]["mean"],
                "int8 acc %": 100 * stat["int8_acc"]["mean"],
                "int8 spread": 100 * stat["int8_acc"]["spread"],
                "int8 KB": stat["bytes"]["mean"] / 1024,
                "gzip KB": stat["gzip_bytes"]["mean"] / 1024,
                "latency µs": stat["latency_us"]["mean"],
                "train ×float": stat["train_ratio"]["mean"],
                "int8 sparsity": stat["int8_sparsity"]["mean"],
                "max values/channel": int(stat["max_distinct_per_channel"]["values"][0])
                if len(set(stat["max_distinct_per_channel"]["values"])) == 1
                else stat["max_distinct_per_channel"]["mean"],
                "float islands": int(sum(r["float_islands"] for r in g)),
                "stats": stat,
            }
        )
    return rows


def _verdicts(rows):
    """keras-eff's int8 accuracy against TF-MOT's on every row, allowed the larger of the two seed spreads."""
    tf = {(r["model"], r["key"]): r for r in rows if r["framework"] == "TF-MOT"}
    out = []
    for r in rows:
        if r["framework"] != "keras-eff" or (r["model"], COUNTERPART[r["key"]]) not in tf:
            continue
        t = tf[(r["model"], COUNTERPART[r["key"]])]
        allowed = max(r["int8 spread"], t["int8 spread"])
        delta = r["int8 acc %"] - t["int8 acc %"]
        out.append(
            {
                "model": r["model"],
                "keras-eff row": r["technique"],
                "TF-MOT row": t["technique"],
                "keras-eff int8 %": r["int8 acc %"],
                "TF-MOT int8 %": t["int8 acc %"],
                "Δ pt": delta,
                "allowed pt": -allowed,
                "ok": "yes" if delta >= -allowed else "NO",
                "gzip ratio": r["gzip KB"] / t["gzip KB"],
                "train ×float ratio": r["train ×float"] / t["train ×float"],
            }
        )
    return out


def _plot(rows, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = sorted({r["model"] for r in rows})
    fig, axes = plt.subplots(1, len(models), figsize=(6 * len(models), 4), squeeze=False)
    for ax, model in zip(axes[0], models):
        keys = [t for t in common.TECHNIQUES if any(r["model"] == model and r["key"] == t for r in rows)]
        for j, (framework, color) in enumerate((("keras-eff", "tab:blue"), ("TF-MOT", "tab:orange"))):
            for i, key in enumerate(keys):
                r = next(
                    (r for r in rows if r["model"] == model and r["key"] == key and r["framework"] == framework), None
                )
                if r is None:
                    continue
                v = np.asarray(r["stats"]["int8_acc"]["values"]) * 100
                ax.bar(i + (j - 0.5) * 0.38, v.mean(), 0.38, color=color, label=framework if i == 0 else None)
                ax.errorbar(
                    i + (j - 0.5) * 0.38,
                    v.mean(),
                    yerr=[[v.mean() - v.min()], [v.max() - v.mean()]],
                    color="black",
                    capsize=2,
                    lw=1,
                )
        lo = min(r["int8 acc %"] for r in rows if r["model"] == model)
        ax.set_ylim(max(0, lo - 8), None)
        ax.set_xticks(range(len(keys)), keys, rotation=35, ha="right")
        ax.set_ylabel("int8 TFLite test accuracy (%)")
        ax.set_title(f"{model}: mean, bars = min..max over seeds")
        ax.legend(loc="lower left")
    fig.tight_layout()
    atomic_savefig(fig, path, dpi=120)
    plt.close(fig)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run of a few minutes on a small slice")
    parser.add_argument("--models", nargs="+", choices=sorted(common.ARCHITECTURES), help="architectures to run")
    parser.add_argument("--seeds", nargs="+", type=int, help="seeds (three by default)")
    parser.add_argument("--n-train", type=int, help="training images (a slice of Fashion-MNIST's 60,000)")
    parser.add_argument("--n-test", type=int, help="test images")
    parser.add_argument(
        "--epochs",
        type=int,
        nargs=3,
        metavar=("PRE", "TUNE", "QAT"),
        help="float pre-training, technique and preserving-QAT epochs",
    )
    parser.add_argument("--work", type=Path, help="folder for the data, weights, jobs, logs and int8 files")
    parser.add_argument("--reuse", action="store_true", help="skip a worker whose result file is already there")
    args = parser.parse_args(argv)
    cfg = dict(QUICK if args.quick else FULL)
    for key, value in (
        ("models", args.models),
        ("seeds", args.seeds),
        ("n_train", args.n_train),
        ("n_test", args.n_test),
    ):
        if value is not None:
            cfg[key] = tuple(value) if isinstance(value, list) else value
    if args.epochs:
        cfg["pre_epochs"], cfg["tune_epochs"], cfg["qat_epochs"] = args.epochs
    if not TFMOT_PYTHON.exists():
        raise SystemExit(
            f"{TFMOT_PYTHON} is missing: run `make bench`, which creates .venv-tfmot/ from "
            f"benchmarks/requirements-tfmot.txt (TF-MOT 0.8.1 needs tf_keras, in its own environment)"
        )
    stem = "tfmot_quick" if args.quick else "tfmot"
    work = (args.work or ROOT / "artifacts" / stem).resolve()
    work.mkdir(parents=True, exist_ok=True)
    hp = {
        **HPARAMS,
        **{k: cfg[k] for k in ("pre_epochs", "tune_epochs", "qat_epochs", "timing_steps", "timing_repeats")},
    }
    t_start = time.time()

    from keras_eff.datasets import fashion_mnist_float

    (x, y), (xt, yt) = fashion_mnist_float(n_train=cfg["n_train"], n_test=cfg["n_test"])
    n_epochs = cfg["pre_epochs"] + cfg["tune_epochs"] + cfg["qat_epochs"]
    orders = {
        s: np.stack([np.random.default_rng([s, e]).permutation(len(x)) for e in range(n_epochs)]) for s in cfg["seeds"]
    }
    # one data file per seed set: a run with other seeds in the same folder must not replace the orders a running
    # worker is about to read (the orders themselves depend only on the seed and the epoch)
    data_path = work / f"data_s{'-'.join(map(str, cfg['seeds']))}.npz"
    common.write_data(data_path, x, y, xt, yt, orders)
    print(
        f"keras-eff vs TF-MOT: {', '.join(cfg['models'])} (width {cfg['width']}), {len(x):,} training / "
        f"{len(xt):,} test images, seeds {list(cfg['seeds'])}, epochs: {cfg['pre_epochs']} float + "
        f"{cfg['tune_epochs']} per technique + {cfg['qat_epochs']} preserving QAT; work folder {work}",
        flush=True,
    )

    results, pretrained, worker_s = [], {}, {"keras-eff": 0.0, "tfmot": 0.0}
    runs = [(si, seed, ai, arch) for si, seed in enumerate(cfg["seeds"]) for ai, arch in enumerate(cfg["models"])]
    for si, seed, ai, arch in runs:  # seeds outer: every model of a seed before the next seed
        spec = common.ARCHITECTURES[arch](cfg["width"])
        weights, acc = _pretrain(spec, seed, data_path, hp, cfg, work, args.reuse)
        pretrained[f"{spec['name']}_s{seed}"] = acc
        print(f"[{spec['name']} seed {seed}] pre-trained float {acc:.4f} ({time.time() - t_start:.0f} s)", flush=True)
        frameworks = ("keras-eff", "tfmot") if (si + ai) % 2 == 0 else ("tfmot", "keras-eff")  # who goes first
        for framework in frameworks:
            result_path = work / f"result_{framework}_{spec['name']}_s{seed}.json"
            if not (args.reuse and result_path.exists()):
                job = {
                    "framework": framework,
                    "seed": seed,
                    "arch": spec,
                    "hparams": hp,
                    "data": str(data_path),
                    "weights": str(weights),
                    "out_dir": str(work),
                    "techniques": list(common.TECHNIQUES if framework == "keras-eff" else TFMOT_TECHNIQUES),
                }
                job_path = work / f"job_{framework}_{spec['name']}_s{seed}.json"
                common.write_json(job_path, job)
                worker_s[framework] += _run_worker(
                    framework, job_path, work / f"log_{framework}_{spec['name']}_s{seed}.txt"
                )
            results.append(common.read_json(result_path))
        print(f"[{spec['name']} seed {seed}] done ({time.time() - t_start:.0f} s)", flush=True)

    measured = _measure(results, work, data_path, cfg)
    rows = _aggregate(results, measured)
    verdicts = _verdicts(rows)
    versions = {fw: next(r["versions"] for r in results if r["framework"] == fw) for fw in ("keras-eff", "tfmot")}
    columns = [
        "model",
        "technique",
        "framework",
        "keras acc %",
        "int8 acc %",
        "int8 spread",
        "int8 KB",
        "gzip KB",
        "latency µs",
        "train ×float",
        "int8 sparsity",
        "max values/channel",
    ]
    vcols = [
        "model",
        "keras-eff row",
        "TF-MOT row",
        "keras-eff int8 %",
        "TF-MOT int8 %",
        "Δ pt",
        "allowed pt",
        "ok",
        "gzip ratio",
        "train ×float ratio",
    ]
    from keras_eff.reporting import markdown_table, write_results

    verdict_md = markdown_table(verdicts, vcols)
    all_ok = all(v["ok"] == "yes" for v in verdicts)
    islands = sum(r["float islands"] for r in rows)
    tv = versions["tfmot"]
    notes = (
        f"Architectures from one description (`benchmarks/tfmot_common.py`), built in Keras 3 and in tf_keras; "
        f"width {cfg['width']}. Fashion-MNIST: the first {len(x):,} training and {len(xt):,} test images. Per seed "
        f"({', '.join(map(str, cfg['seeds']))}): initial weights made in Keras 3 and trained "
        f"{cfg['pre_epochs']} float epochs (Adam 1e-3); every row starts from those weights in both frameworks and "
        f"trains {cfg['tune_epochs']} epochs (prune-/cluster-preserving QAT: {cfg['qat_epochs']} more epoch(s) from "
        f"the 50 % / 16-cluster model) over the same image order (one permutation per seed and epoch, fit with "
        f"shuffle=False), batch {hp['batch_size']}, Adam with cosine decay to 5 % from {hp['lr_tune']:g} "
        f"(QAT rows {hp['lr_qat']:g}). Pruning: PolynomialDecay 0 → target over the first half of the steps "
        f"(power 3), masks every 1/8 epoch, end_step on that grid; every conv and dense kernel in both frameworks "
        f"(depthwise kernels stay dense: TF-MOT 0.8.1 does not prune them, keras-eff by default neither). "
        f"Clustering: 16 clusters, k-means++, every conv and dense kernel, weights re-assigned to their nearest "
        f"centroid every step (TF-MOT always; keras-eff reassign_every=1). "
        f"keras-eff QAT: calibrate on {hp['calibration']} images, FreezeRanges at 3/4 of the steps "
        f"(BatchNorm statistics live, as in TF-MOT); TF-MOT QAT as its guide (quantize_model, no calibration). int8: "
        f"TFLiteConverter, full int8 with int8 input and output; float rows by post-training quantization with the "
        f"same {hp['representative']} training images on both sides, QAT rows from their fake-quant ranges. Every "
        f"int8 file measured in this process alike: accuracy with the LiteRT interpreter on the test slice; "
        f"latency batch 1, one thread, XNNPACK, all {len(measured)} files interleaved, {cfg['latency_rounds']} "
        f"rounds of {cfg['latency_runs']} runs (median). 'train ×float': training-block time of the technique over "
        f"float training in the same framework, {cfg['timing_repeats']} interleaved ABBA repeats of "
        f"{cfg['timing_steps']} steps after a warm-up (median). Values are means over the seeds; 'int8 spread' is "
        f"max − min of the int8 accuracy over the seeds. 'int8 sparsity' and 'max values/channel' are read from "
        f"the int8 kernels in the file. Float islands in the int8 files: {islands}.\n\n"
        f"## keras-eff against TF-MOT, row by row\n\nDone when keras-eff's int8 accuracy ≥ TF-MOT's − the larger "
        f"of the two seed spreads on every row (the log-distribution rows against TF-MOT's uniform rows); "
        f"'gzip ratio' and 'train ×float ratio' are keras-eff over TF-MOT.\n\n{verdict_md}\n"
        f"All rows within: {'yes' if all_ok else 'NO'}.\n\n"
        f"Pre-trained float accuracy (Keras 3, before any technique): "
        + ", ".join(f"{k} {100 * v:.2f} %" for k, v in pretrained.items())
        + f".\n\nTF-MOT side: tensorflow {tv['tensorflow']}, tf-keras {tv['tf-keras']}, "
        f"tensorflow-model-optimization {tv['tensorflow-model-optimization']} (own venv, "
        f"benchmarks/requirements-tfmot.txt). Wall time {time.time() - t_start:.0f} s "
        f"(workers: keras-eff {worker_s['keras-eff']:.0f} s, TF-MOT {worker_s['tfmot']:.0f} s)"
        f"{' (--quick)' if args.quick else ''}."
    )
    RESULTS.mkdir(exist_ok=True)
    public = [{k: v for k, v in r.items() if k != "stats"} for r in rows]
    table = write_results(
        RESULTS / stem,
        "keras-eff vs TF-MOT on Fashion-MNIST (same models, weights, data order, epochs)",
        public,
        columns,
        notes,
        extra={
            "config": {k: list(v) if isinstance(v, tuple) else v for k, v in cfg.items()},
            "hparams": hp,
            "verdicts": verdicts,
            "all_rows_within": all_ok,
            "tfmot_versions": tv,
            "stats": {f"{r['model']}/{r['key']}/{r['framework']}": r["stats"] for r in rows},
            "per_seed": results,
            "measured": measured,
            "pretrained_acc": pretrained,
        },
    )
    _plot(rows, RESULTS / f"{stem}.png")
    print(table)
    print(verdict_md)
    print(f"All rows within the seed spread: {'yes' if all_ok else 'NO'}")
    return rows, verdicts


if __name__ == "__main__":
    main()
