"""``postergenre filters RUN|BACKBONE``: filters, feature maps and activation maximisation."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "filters",
        help="look inside a network: filters, a poster's feature maps, inputs that excite a channel or genre",
        description="Look inside a run's backbone, or a registered backbone by name. With no option: the first "
        "layer's filters as a grid (or the first convolution of --layer). With --image: the feature maps the "
        "poster produces at --layer (the 16 strongest channels). With --channel C or --genre G: an input "
        "synthesised by gradient ascent from noise (jitter, blur, L2 penalty) to excite channel C of --layer, or "
        "genre G's logit (a run only). --list-layers prints the names usable as --layer.",
    )
    parser.add_argument(
        "subject",
        metavar="RUN|BACKBONE",
        help="a run folder, or a registered backbone name (the backbone alone, without genres)",
    )
    parser.add_argument("--layer", metavar="L", help="layer name (see --list-layers); default: the last conv stage")
    what = parser.add_mutually_exclusive_group()
    what.add_argument("--image", metavar="IMAGE", type=Path, help="show the feature maps this poster produces")
    what.add_argument("--channel", metavar="C", type=int, help="synthesise an input exciting channel C of --layer")
    what.add_argument("--genre", metavar="G", help="synthesise an input raising genre G's logit (a run only)")
    what.add_argument("--list-layers", action="store_true", help="print the layer names usable as --layer")
    parser.add_argument("--steps", metavar="N", type=int, default=64, help="gradient ascent steps (default: 64)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the starting noise and the jitter (default: 0)")
    parser.add_argument(
        "--weights",
        metavar="FILE|URL",
        help="weights for a backbone given by name (resnet50v2 and vgg16 ship none); ignored for a run",
    )
    parser.add_argument("--out", metavar="FILE", type=Path, help="picture to write (default: a name in ./)")
    parser.set_defaults(run=run)
    return parser


def run(args: argparse.Namespace) -> int:
    from postergenre.explain.choices import prefer_passive_threads

    prefer_passive_threads()  # before torch is imported
    from postergenre.explain.choices import freeze_imported_objects, load_subject

    if args.steps < 1:
        from postergenre.errors import PosterGenreError

        raise PosterGenreError(f"--steps must be at least 1, got {args.steps}")
    subject = load_subject(args.subject, args.weights)  # imports torch
    freeze_imported_objects()
    if args.list_layers:
        return list_layers(subject)
    if args.image is not None:
        return show_feature_maps(subject, args)
    if args.channel is not None or args.genre is not None:
        return synthesise(subject, args)
    return show_filters(subject, args)


def list_layers(subject) -> int:
    from postergenre.explain.filters import layer_names, resolve_layer

    backbone = subject.backbone
    for name in layer_names(backbone):
        module = resolve_layer(backbone, name)
        note = "  <- Grad-CAM layer (last conv stage)" if name == backbone.gradcam_layer else ""
        indent = "  " if "." in name else ""
        print(f"{indent}{name}  {type(module).__name__}{note}")
    return 0


def show_filters(subject, args: argparse.Namespace) -> int:
    from postergenre.explain import render
    from postergenre.explain.choices import check_out, default_out
    from postergenre.explain.filters import filter_grid

    out = check_out(args.out or default_out(subject.label, args.layer or "first", "filters"))
    grid = filter_grid(subject.backbone, args.layer)
    render.save(grid.image, out)
    print(f"{grid.n_tiles} filters of {grid.source} ({subject.label})")
    print(f"wrote {out}")
    return 0


def show_feature_maps(subject, args: argparse.Namespace) -> int:
    import torch

    from postergenre.explain import render
    from postergenre.explain.choices import check_out, default_out, open_poster
    from postergenre.explain.filters import feature_map_grid, feature_maps

    layer = args.layer or subject.backbone.gradcam_layer
    out = check_out(args.out or default_out(args.image.stem, layer, "maps"))
    image = open_poster(args.image)
    x = torch.from_numpy(subject.preprocessing(image)).unsqueeze(0)

    maps = feature_maps(subject.backbone, layer, x)
    grid = feature_map_grid(maps)
    render.save(grid.image, out)
    print(f"{layer}: {maps.shape[0]} channels of {maps.shape[1]}x{maps.shape[2]}; strongest by mean activation:")
    print("  " + ", ".join(grid.labels))
    print(f"wrote {out}")
    return 0


def synthesise(subject, args: argparse.Namespace) -> int:
    from postergenre.explain import activation_max as am
    from postergenre.explain import render
    from postergenre.explain.choices import check_out, default_out

    model, objective, target = _objective(subject, args)
    name = target.replace(" ", "_").replace("'", "")
    out = check_out(args.out or default_out(subject.label, name, "maximised"))
    settings = am.AscentSettings(steps=args.steps, seed=args.seed)

    result = am.maximise(model, objective, subject.preprocessing, target=target, settings=settings)
    render.save(result.image, out)
    print(f"{target}: activation {result.start:.4g} at the start, {result.end:.4g} after {args.steps} steps")
    print(f"wrote {out}")
    return 0


def _objective(subject, args: argparse.Namespace):
    from postergenre.errors import PosterGenreError
    from postergenre.explain import activation_max as am
    from postergenre.explain.choices import genre_indices
    from postergenre.explain.filters import resolve_layer

    if args.genre is not None:
        if subject.classifier is None:
            raise PosterGenreError(
                f"--genre needs a run folder: backbone {subject.label} alone has no genres; use --channel C instead"
            )
        if args.layer:
            raise PosterGenreError("--genre maximises the genre's logit at the head; leave out --layer")
        index = genre_indices(subject.classifier.genres, [args.genre])[0]
        genre = subject.classifier.genres[index]
        return subject.classifier, am.genre_objective(subject.classifier, index), f"genre {genre} logit"
    layer = args.layer or subject.backbone.gradcam_layer
    resolve_layer(subject.backbone, layer)  # an unknown name fails here, listing the valid ones
    objective = am.channel_objective(subject.backbone, layer, args.channel)
    return subject.backbone, objective, f"channel {args.channel} of {layer}"
