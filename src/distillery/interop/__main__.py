"""`python -m distillery.interop import-buffers | export-buffers | import-synset`, from the repository root (or
--root): the command line of distillery.interop; bad input exits with the problem named, before any work."""
from __future__ import annotations

import argparse

from distillery.interop import export_buffers, import_buffers, import_synset


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m distillery.interop", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    importing = commands.add_parser("import-buffers", help="the authors' replay_buffer_<n>.pt files -> our experts")
    importing.add_argument("directory", help="the folder holding replay_buffer_0.pt, replay_buffer_1.pt, …")
    exporting = commands.add_parser("export-buffers", help="our experts -> replay_buffer_<n>.pt for distill.py")
    exporting.add_argument("out", help="the authors' --buffer_path; files go to <out>/<dataset>[_NO_ZCA]/<model>/")
    for sub in (importing, exporting):
        sub.add_argument("--dataset", required=True)
        sub.add_argument("--model", required=True, help="our architecture name, e.g. ConvNet")
        sub.add_argument("--recipe", required=True, help="our recipe the experts were trained with, e.g. sgd")
        sub.add_argument("--zca", action="store_true", help="the experts were trained on ZCA-whitened images")
    synset = commands.add_parser("import-synset", help="a released distilled set -> a synset a cell names "
                                                       "external:<name>")
    synset.add_argument("images", help="[N, C, H, W] float tensor (.pt) in the set's domain")
    synset.add_argument("--dataset", required=True)
    synset.add_argument("--name", required=True, help="the table cell's method becomes external:<name>")
    synset.add_argument("--labels", help="[N] class indices (.pt); default: IPC of class 0, then class 1, …")
    synset.add_argument("--lr", help="the learned lr: a number or a .pt tensor; default: the protocol's default_lr")
    synset.add_argument("--zca", action="store_true", help="the images are whitened by ZCA of the training split")
    synset.add_argument("--zca-images", help="the same images un-whitened by the authors (images_zca_<it>.pt): "
                                             "checked against our inverse ZCA")
    synset.add_argument("--model", help="the architecture it was distilled with (default: the dataset's default)")
    for sub in (importing, exporting, synset):
        sub.add_argument("--root", default=".", help="the workflow directory holding results/ (default: .)")
    args = parser.parse_args(argv)
    try:
        if args.command == "import-buffers":
            done = import_buffers(args.directory, args.dataset, args.model, args.recipe, args.zca, args.root)
        elif args.command == "export-buffers":
            done = export_buffers(args.out, args.dataset, args.model, args.recipe, args.zca, args.root)
        else:
            done = [import_synset(args.images, args.dataset, args.name, args.labels, args.lr, args.zca,
                                  args.zca_images, args.model, args.root)]
    except (OSError, ValueError) as error:
        parser.error(str(error))
    print("\n".join(map(str, done)))


if __name__ == "__main__":
    main()
