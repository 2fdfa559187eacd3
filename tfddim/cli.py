"""The ``tfddim`` command: parses flags and calls a pipeline; no logic of its own.

TensorFlow is imported only once the flags are parsed, so ``--help`` is
instant, and quietly: unless ``--debug`` or ``TF_CPP_MIN_LOG_LEVEL`` is set, TF's
C++ start-up lines, the Python ``tensorflow``/``absl``/``tf2onnx`` loggers'
warnings and library deprecation warnings are hidden; progress, results and
paths are printed by the pipelines and stay.

User errors (a bad value, a missing or unreadable file, an unwritable output
folder, a damaged export) print one line, ``tfddim CMD: error: ...``, and exit
with status 2; ``--debug`` (before or after the subcommand) shows the traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import sys
import tempfile
import warnings

# The exceptions that carry a message for the user (json's decode error is a ValueError; the pipelines turn a
# damaged export's TensorFlow/ONNX Runtime load errors into ValueErrors naming the file). Anything else is a bug
# and keeps its traceback.
USER_ERRORS = (ValueError, json.JSONDecodeError, FileNotFoundError, FileExistsError, PermissionError)


class _Parser(argparse.ArgumentParser):
    """argparse with a one-line error (``tfddim sample: error: argument --seed: ...``) instead of usage + error."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _int_list(text: str) -> tuple:
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values:
        raise argparse.ArgumentTypeError("expected at least one integer")
    return values


def _float_list(text: str) -> tuple:
    try:
        values = tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None
    if not values or min(values) < 0:
        raise argparse.ArgumentTypeError(f"expected one or more numbers >= 0, got {text!r}")
    return values


def _int_at_least(minimum: int, what: str):
    """An argparse type: an integer >= ``minimum``, the error saying ``what`` was expected."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{what}, got {value}")
        return value

    return parse


_seed = _int_at_least(0, "a seed must be an integer >= 0")
_positive_int = _int_at_least(1, "expected a positive integer")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="tfddim",
        description="Denoising diffusion models and fast DDIM sampling in TensorFlow.",
        epilog="User errors print one line and exit with status 2; --debug (here or after the subcommand) "
               "shows the traceback and TensorFlow's logs.",
    )
    parser.add_argument("--debug", action="store_true",
                        help="show tracebacks of user errors and TensorFlow/absl/tf2onnx logs (hidden by default)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    demo = sub.add_parser(
        "demo",
        help="sample the analytic 2-D mixture with DDIM/DDPM at several step counts",
        description=(
            "Run DDIM (eta=0 and 1) and DDPM on an analytic Gaussian mixture (exact epsilon), "
            "print a table of the sliced Wasserstein distance per number of steps, and write "
            "table.md, table.csv and samples.png to --out."
        ),
    )
    demo.add_argument("--out", default="runs/demo", help="output folder (default: runs/demo)")
    demo.add_argument("--num-samples", type=_positive_int, default=10000, help="samples per method and step count")
    demo.add_argument("--steps", type=_int_list, default=(5, 10, 20, 50, 100, 1000), help="step counts, e.g. 5,10,20")
    demo.add_argument("--num-timesteps", type=_positive_int, default=1000, help="T of the schedule")
    demo.add_argument("--schedule", default="linear", help="linear, cosine, quad or sigmoid")
    demo.add_argument("--spacing", default="uniform", help="uniform, quad, linspace, trailing, logsnr, karras, time_quadratic, ddimN or a,b,c")
    demo.add_argument("--seed", type=_seed, default=0)
    demo.set_defaults(func=_run_demo)

    train = sub.add_parser(
        "train",
        help="train a diffusion model from a config (resumes after an interruption)",
        description=(
            "Train the model a config describes with Keras fit. Configs are JSON files in pipelines/configs "
            "(digits, digits_conditional, mixture2d, mnist_base, mnist_sr, mnist_ldm, mnist_pixel, cifar10, "
            "imagenet64_adm, ...) or a path. Running the same "
            "command again after an interruption continues from the last completed epoch."
        ),
    )
    _run_folder_arguments(train, "a shipped config name or a path to a JSON config")
    train.set_defaults(func=_run_train)

    export = sub.add_parser(
        "export",
        help="export a training run as a TF Serving SavedModel",
        description="Write saved_models/NAME/VERSION/ (TF Serving layout) with the whole sampling loop in the graph.",
    )
    export.add_argument("run_dir", help="a finished run folder, e.g. runs/digits")
    export.add_argument("--name", required=True, help="model name: the folder under --base-dir")
    export.add_argument("--version", type=_positive_int, default=1, help="integer version folder (default 1)")
    export.add_argument("--base-dir", default="saved_models", help="where models live (default: saved_models)")
    export.add_argument("--overwrite", action="store_true", help="replace an existing version")
    export.add_argument("--onnx", action="store_true",
                        help="also write ONNX graphs (sample_with_noise, sample_ode, sample_ddpm, sample_trajectory, "
                             "encode, edit_with_noise, inpaint_with_noise) to VERSION/onnx/, checked in ONNX Runtime")
    export.add_argument("--xla", action="store_true",
                        help="compile the network with XLA inside the SavedModel (TF Serving on CPU: "
                             "--xla_cpu_compilation_enabled=true); outputs equal the uncompiled export's to float rounding")
    export.add_argument("--classifier-run", default=None, metavar="DIR",
                        help="bundle this noise-aware classifier run: sampling uses classifier guidance (labels, guidance_scale)")
    export.add_argument("--cascade-base", default=None, metavar="DIR",
                        help="export a two-stage cascade: this run is the base stage and RUN_DIR (a super-resolution "
                             "run) the upsampler, in one graph (serving_default: x_T, x_T_upsample, num_steps, "
                             "num_steps_upsample, eta, seed -> x_0, x_0_low)")
    export.add_argument("--upsample-strength", type=float, default=None, metavar="S",
                        help="a super-resolution run: sample from the bilinear upsampling of low_res noised to SDEdit "
                             "strength S in (0, 1] instead of from pure noise (default 1)")
    export.set_defaults(func=_run_export)

    sample = sub.add_parser(
        "sample",
        help="sample an exported model (SavedModel or ONNX) to a PNG grid (and .npz)",
        description="Draw samples from an exported model with DDIM (eta=0) or stochastic DDIM/DDPM (eta>0).",
    )
    sample.add_argument("--model", default=None,
                        help="an exported version folder (default: the shipped saved_models/digits/1)")
    sample.add_argument("--backend", choices=("tf", "onnx"), default="tf",
                        help="tf: the SavedModel through TensorFlow; onnx: its ONNX graphs through ONNX Runtime")
    sample.add_argument("--n", type=_positive_int, default=64, help="number of samples")
    sample.add_argument("--steps", type=_positive_int, default=50, help="sampling steps S")
    sample.add_argument("--eta", type=float, default=0.0, help="DDIM eta in [0, 1] (1 = DDPM)")
    sample.add_argument("--method", choices=("auto", "ddim", "ddpm", "dpmpp_2m", "dpmpp_3m", "unipc"), default="auto",
                        help="the solver: auto (the recommended one for --steps; DDIM when --eta > 0), ddim, "
                             "ddpm (improved DDPM's strided sampler, --variance), or a deterministic higher-order "
                             "solver dpmpp_2m, dpmpp_3m, unipc")
    sample.add_argument("--variance", choices=("fixed_small", "fixed_large", "learned_range"), default="fixed_small",
                        help="--method ddpm's variance: fixed_small (beta tilde), fixed_large (beta), learned_range "
                             "(a learned-variance model)")
    sample.add_argument("--spacing", default="auto",
                        choices=("auto", "uniform", "linspace", "trailing", "quad", "logsnr", "karras", "time_quadratic"),
                        help="the timestep spacing of a deterministic solver (auto: the recommended one; "
                             "eta > 0 uses the export's own)")
    sample.add_argument("--seed", type=_seed, default=0,
                        help="x_T and the eta > 0 noise: sample i depends only on (seed, i), not on --batch-size or --backend")
    sample.add_argument("--labels", type=_int_list, default=None, help="class labels, cycled over the samples, e.g. 0,1,2")
    sample.add_argument("--guidance-scale", type=float, default=1.0, help="classifier-free guidance scale w")
    sample.add_argument("--out", default="runs/samples/samples.png",
                        help="output PNG, its folder created; checked writable before sampling (default: runs/samples/samples.png)")
    sample.add_argument("--npz", action="store_true", help="also write the samples as .npz")
    sample.add_argument("--batch-size", type=_positive_int, default=256, help="samples per graph call")
    sample.add_argument("--low-res", default=None, metavar="LOW.png",
                        help="a super-resolution model's low-res image (its h x w), used for every sample")
    sample.set_defaults(func=_run_sample)

    for kind, summary, description in (
        ("edit", "SDEdit one PNG with an exported model: noise it to --strength and sample it back",
         "Noise IN.png to the level --strength in (0, 1] picks (1 = pure noise) and sample it back with DDIM "
         "(SDEdit). Writes one PNG row: the input, then --n results (seeds --seed, --seed+1, ...)."),
        ("inpaint", "inpaint one PNG with an exported model: keep the mask's white pixels, generate the black ones",
         "Sample the pixels of IN.png where MASK.png is black (0) and keep those where it is white (255). Writes "
         "one PNG row: the input, then --n results (seeds --seed, --seed+1, ...)."),
    ):
        editing = sub.add_parser(kind, help=summary, description=description)
        editing.add_argument("--model", required=True, help="an exported version folder, e.g. saved_models/digits/1")
        editing.add_argument("--input", required=True, metavar="IN.png",
                             help="one image of the model's H x W (grey for 1 channel, RGB for 3)")
        if kind == "edit":
            editing.add_argument("--strength", type=float, required=True,
                                 help="how far to noise the input, in (0, 1] (1 = start from pure noise)")
        else:
            editing.add_argument("--mask", required=True, metavar="MASK.png",
                                 help="same size as --input: white (255) = keep, black (0) = generate")
        editing.add_argument("--steps", type=_positive_int, required=True,
                             help="DDIM steps S of the whole schedule (an edit runs those below --strength)")
        editing.add_argument("--eta", type=float, default=0.0, help="DDIM eta in [0, 1] (1 = DDPM)")
        editing.add_argument("--seed", type=_seed, default=0, help="result i uses seed + i")
        editing.add_argument("--n", type=_positive_int, default=1, help="number of results (default 1)")
        editing.add_argument("--backend", choices=("tf", "onnx"), default="tf",
                             help="tf: the SavedModel (noise drawn in the graph); onnx: its ONNX graphs (noise drawn "
                                  "with numpy: other results than tf for the same seed)")
        editing.add_argument("--low-res", default=None, metavar="LOW.png",
                             help="a super-resolution model's low-res image (its h x w)")
        editing.add_argument("--label", type=int, default=None, help="the class of a class-conditional model")
        editing.add_argument("--guidance-scale", type=float, default=1.0, help="classifier(-free) guidance scale")
        editing.add_argument("--out", required=True, metavar="OUT.png",
                             help="output PNG, its folder created; checked writable before the model runs")
        editing.set_defaults(func=_run_edit)

    pipeline = sub.add_parser(
        "pipeline",
        help="the main job (make demo): train digits -> export SavedModel + ONNX -> sample both -> evaluate -> report",
        description=(
            "Train the digits config for a fixed budget (resumes if interrupted, skips if finished), export it "
            "as a SavedModel and ONNX, sample through TensorFlow and ONNX Runtime, evaluate a reduced "
            "S x eta grid with the noise floor, figures and NLL, and write RUNS/NAME/report.md."
        ),
    )
    pipeline.add_argument("--runs-dir", default="runs", help="parent of the run folder (default: runs)")
    pipeline.add_argument("--name", default="digits_demo", help="run name (default: digits_demo)")
    pipeline.add_argument("--epochs", type=_positive_int, default=25, help="training epochs of 200 steps (default 25)")
    pipeline.add_argument("--num-samples", type=_positive_int, default=300, help="samples per evaluated cell")
    pipeline.add_argument("--nll-images", type=int, default=100, help="test images for the NLL bound (0: skip)")
    pipeline.add_argument("--seed", type=_seed, default=0)
    pipeline.set_defaults(func=_run_pipeline)

    evaluate = sub.add_parser(
        "evaluate",
        help="the DDIM steps x eta study, figures and NLL of a training run -> RUN_DIR/report.md",
        description=(
            "Sample a finished run on the S x eta grid (DDIM Table 1, plus strided DDPM for learned-variance "
            "networks), score every cell with FID, KID, precision/recall and the Inception-Score analogue against "
            "half of the real training data (the other half gives the noise floor), draw the consistency, "
            "interpolation, reconstruction and trajectory figures, compute the NLL bound, and write report.md."
        ),
    )
    evaluate.add_argument("run_dir", help="a finished run folder, e.g. runs/digits")
    evaluate.add_argument("--num-samples", type=_positive_int, default=None,
                          help="samples per cell (default: the size of a reference half)")
    evaluate.add_argument("--steps", type=_int_list, default=(10, 20, 50, 100, 1000), help="step counts S")
    evaluate.add_argument("--etas", default="0,0.2,0.5,1,sigma_hat", help="DDIM etas, numbers in [0, 1] or sigma_hat")
    evaluate.add_argument("--features", default="auto", choices=("auto", "digits", "inception", "raw"),
                          help="feature network (auto: digits classifier for digits, raw for 2-D data, else inception)")
    evaluate.add_argument("--inception-weights", default=None, metavar="PATH",
                          help="InceptionV3 no-top weights file (.h5) for --features inception")
    evaluate.add_argument("--classifier", default=None, metavar="DIR",
                          help="digits classifier folder (default: the shipped saved_models/digits_classifier)")
    evaluate.add_argument("--nll-images", type=int, default=300, help="test images for the NLL bound (0: skip)")
    evaluate.add_argument("--no-figures", action="store_true", help="skip the figures")
    evaluate.add_argument("--batch-size", type=_positive_int, default=500, help="samples per graph call")
    evaluate.add_argument("--seed", type=_seed, default=0)
    evaluate.add_argument("--out", default=None, help="output folder (default: RUN_DIR)")
    evaluate.add_argument("--guidance-sweep", action="store_true",
                          help="instead of the study: sweep classifier(-free) guidance scales -> RUN_DIR/guidance.md")
    evaluate.add_argument("--classifier-run", default=None, metavar="DIR",
                          help="a noise-aware classifier run (tfddim train-classifier --config digits_classifier) for classifier guidance")
    evaluate.add_argument("--classifier-scales", type=_float_list, default=(0.0, 0.5, 1.0, 2.0, 4.0, 8.0),
                          help="classifier guidance scales s")
    evaluate.add_argument("--free-scales", type=_float_list, default=(0.0, 1.0, 2.0, 4.0),
                          help="classifier-free guidance scales w")
    evaluate.add_argument("--guidance-steps", type=_positive_int, default=50, help="DDIM steps of the sweep")
    evaluate.set_defaults(func=_run_evaluate)

    autoencoder = sub.add_parser(
        "train-autoencoder",
        help="train latent diffusion's autoencoder (the first stage) from a config, e.g. mnist_vae",
        description=(
            "Train a KL-regularised Autoencoder with Keras fit (run folder, resume, strategies, as tfddim train). "
            "metadata.json gets the latent shape, the latent scale factor 1/std(z) and the reconstruction metrics; "
            "a latent diffusion config names the run folder in diffusion.autoencoder."
        ),
    )
    _run_folder_arguments(autoencoder, "an Autoencoder config name or path, e.g. mnist_vae")
    autoencoder.set_defaults(func=_run_train_autoencoder)

    classifier = sub.add_parser(
        "train-classifier",
        help="train a classifier: the noise-aware guidance classifier (--config) or the digits evaluation classifier",
        description=(
            "With --config (e.g. digits_classifier): train a noise-aware NoisyClassifier on q_sample-noised images "
            "for classifier guidance, like `tfddim train` (run folder, resume, strategies; held-out accuracy by t "
            "in metadata.json). Without --config: train the small CNN whose penultimate layer gives the digits' "
            "evaluation features (saved_models/digits_classifier)."
        ),
    )
    classifier.add_argument("--config", default=None, help="a NoisyClassifier config, e.g. digits_classifier")
    classifier.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                            help="override a config value (with --config)")
    classifier.add_argument("--runs-dir", default="runs", help="parent folder of run folders (with --config)")
    classifier.add_argument("--overwrite", action="store_true", help="delete an existing run of the same name first")
    classifier.add_argument("--out", default=None,
                            help="output folder (evaluation classifier; default saved_models/digits_classifier, with "
                                 "--source mnist saved_models/mnist_classifier or saved_models/mnist<S>_classifier)")
    classifier.add_argument("--source", choices=("digits", "mnist"), default="digits",
                            help="evaluation classifier data: the 8x8 digits, or the MNIST train split (4,000 digits; "
                                 "tested on the 1,000 held out)")
    classifier.add_argument("--image-size", type=_positive_int, default=None,
                            help="with --source mnist: the image side, a divisor of 28 that is >= 4 (default 28; "
                                 "14 scores the cascade's base stage)")
    classifier.add_argument("--epochs", type=_positive_int, default=None, help="training epochs (default: the pipeline's)")
    classifier.add_argument("--batch-size", type=_positive_int, default=64)
    classifier.add_argument("--seed", type=_seed, default=0)
    classifier.set_defaults(func=_run_train_classifier)
    for subparser in sub.choices.values():  # also accepted after the subcommand; SUPPRESS keeps a global --debug
        subparser.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                               help="show tracebacks and TensorFlow's logs")
    return parser


def _run_folder_arguments(parser, config_help: str) -> None:
    """``--config``, ``--set``, ``--runs-dir`` and ``--overwrite``: the flags of a command that trains into a run folder."""
    parser.add_argument("--config", required=True, help=config_help)
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value, e.g. --set train.epochs=3 (repeatable; values are JSON)")
    parser.add_argument("--runs-dir", default="runs", help="parent folder of run folders (default: runs)")
    parser.add_argument("--overwrite", action="store_true", help="delete an existing run folder of the same name first")


def _writable_dir(path: str, flag: str) -> None:
    """Create ``path`` and check that files can be written in it, before any work whose result goes there."""
    try:
        os.makedirs(path, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as e:
        raise PermissionError(f"{flag} {path}: cannot write there ({e.strerror or e})") from None


def _given(**kwargs) -> dict:
    """The flags the user gave (not None): a flag whose default is "the pipeline's" leaves the config's default."""
    return {k: v for k, v in kwargs.items() if v is not None}


def _run_pipeline(args) -> int:
    _writable_dir(args.runs_dir, "--runs-dir")
    from tfddim.pipelines import full

    full.run(full.PipelineConfig(runs_dir=args.runs_dir, name=args.name, epochs=args.epochs,
                                 num_samples=args.num_samples, nll_images=args.nll_images, seed=args.seed))
    return 0


def _run_evaluate(args) -> int:
    from tfddim.pipelines import evaluate, guidance

    if args.guidance_sweep:
        guidance.run(guidance.GuidanceConfig(
            run_dir=args.run_dir, classifier_run=args.classifier_run, classifier_scales=args.classifier_scales,
            free_scales=args.free_scales, steps=args.guidance_steps, seed=args.seed, eval_classifier=args.classifier,
            batch_size=args.batch_size, out=args.out, **_given(num_samples=args.num_samples)))
        return 0
    from tfddim.evaluation.study import parse_etas

    evaluate.run(evaluate.EvaluateConfig(
        run_dir=args.run_dir, num_samples=args.num_samples, steps=args.steps, etas=parse_etas(args.etas),
        features=args.features, inception_weights=args.inception_weights, batch_size=args.batch_size, seed=args.seed,
        nll_images=args.nll_images, figures=not args.no_figures, out=args.out, **_given(classifier=args.classifier)))
    return 0


def _run_train_classifier(args) -> int:
    from tfddim.pipelines import train_classifier

    if args.config is not None:
        _writable_dir(args.runs_dir, "--runs-dir")
        train_classifier.run_noisy(args.config, args.overrides, runs_dir=args.runs_dir, overwrite=args.overwrite)
        return 0
    train_classifier.run(train_classifier.ClassifierConfig(batch_size=args.batch_size, seed=args.seed, source=args.source,
                                                           **_given(out_dir=args.out, epochs=args.epochs,
                                                                    image_size=args.image_size)))
    return 0


def _run_train_autoencoder(args) -> int:
    from tfddim.pipelines import train_autoencoder

    cfg = train_autoencoder.load(args.config, args.overrides)
    _writable_dir(args.runs_dir, "--runs-dir")
    train_autoencoder.run(cfg, runs_dir=args.runs_dir, overwrite=args.overwrite)
    return 0


def _run_demo(args) -> int:
    from tfddim.pipelines import demo

    demo.run(demo.DemoConfig(out_dir=args.out, num_samples=args.num_samples, steps=args.steps,
                             num_timesteps=args.num_timesteps, schedule=args.schedule, spacing=args.spacing,
                             seed=args.seed))
    return 0


def _run_train(args) -> int:
    from tfddim.pipelines import config, train

    cfg = config.load(args.config, args.overrides)
    _writable_dir(args.runs_dir, "--runs-dir")
    train.run(cfg, runs_dir=args.runs_dir, overwrite=args.overwrite)
    return 0


def _run_export(args) -> int:
    _writable_dir(args.base_dir, "--base-dir")
    from tfddim.pipelines import export

    export.run(export.ExportConfig(run_dir=args.run_dir, name=args.name, version=args.version, base_dir=args.base_dir,
                                   overwrite=args.overwrite, onnx=args.onnx, classifier_run=args.classifier_run,
                                   xla=args.xla, cascade_base_run=args.cascade_base,
                                   upsample_strength=args.upsample_strength))
    return 0


def _run_sample(args) -> int:
    from tfddim.pipelines import sample

    sample.run(sample.SampleConfig(model=args.model, n=args.n, steps=args.steps, eta=args.eta, seed=args.seed,
                                   labels=args.labels, guidance_scale=args.guidance_scale, out=args.out, npz=args.npz,
                                   batch_size=args.batch_size, backend=args.backend, method=args.method,
                                   spacing=args.spacing, variance=args.variance, low_res=args.low_res))
    return 0


def _run_edit(args) -> int:
    from tfddim.pipelines import edit

    edit.run(edit.EditConfig(kind=args.command, model=args.model, input=args.input, out=args.out, steps=args.steps,
                             strength=getattr(args, "strength", None), mask=getattr(args, "mask", None), eta=args.eta,
                             seed=args.seed, n=args.n, backend=args.backend, low_res=args.low_res, label=args.label,
                             guidance_scale=args.guidance_scale))
    return 0


# What TensorFlow's C++ runtime writes to stderr while it is imported, before absl logging is initialised
# (TF_CPP_MIN_LOG_LEVEL does not reach these): "WARNING: All log messages before absl::InitializeLog() ...",
# then I/W lines such as "I0000 00:00:1.2 123 port.cc:153] oneDNN custom operations are on ...".
_IMPORT_NOISE = re.compile(r"^(WARNING: All log messages before absl::InitializeLog\(\)|[IW]\d{4} \d\d:\d\d:[\d.]+ +\d+ \S+:\d+\] )")


def _quiet_logs(command: str) -> None:
    """Hide the logs a user does not need (see the module docstring); called before TensorFlow is imported.

    A ``TF_CPP_MIN_LOG_LEVEL`` the user set is kept, and then nothing is hidden from the import. Hiding
    the CUDA devices would also silence ``failed call to cuInit`` on a machine without a GPU, but log
    level 3 already does, without touching device placement.
    """
    for name in ("tensorflow", "absl", "tf2onnx"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", category=FutureWarning)
    if command in ("export", "sample", "edit", "inpaint", "pipeline"):  # the commands that may run ONNX Runtime
        try:
            import onnxruntime

            onnxruntime.set_default_logger_severity(3)  # its graph optimiser's warnings ("Removing initializer ...")
        except ImportError:
            pass
    if "TF_CPP_MIN_LOG_LEVEL" in os.environ:
        return
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    if "tensorflow" not in sys.modules:
        _import_filtered("tensorflow")


def _import_filtered(module: str) -> None:
    """Import ``module`` with file descriptor 2 captured; write back what is not start-up noise."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no usable stderr descriptor: import as is
        __import__(module)
        return
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 2)
        try:
            __import__(module)
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            text = capture.read().decode("utf-8", "replace")
            kept = [line for line in text.splitlines() if line.strip() and not _IMPORT_NOISE.match(line)]
            if kept:
                sys.stderr.write("\n".join(kept) + "\n")


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    debug = getattr(args, "debug", False)
    if not debug:
        _quiet_logs(args.command)
    try:
        return args.func(args)
    except USER_ERRORS as e:
        if debug:
            raise
        message = " ".join(str(e).split()) or type(e).__name__  # one line, whatever the exception's layout
        parser.exit(2, f"tfddim {args.command}: error: {message}\n")


if __name__ == "__main__":
    sys.exit(main())
