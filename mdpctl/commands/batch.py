"""Push many requests through the fleet: one output per input, with a progress bar.

usage: mdpctl batch SERVICE INPUT ... -o DIR [--width N] [--height N] [--format F]
                    [--quality Q] [--mode M] [--set KEY=VALUE ...]
       mdpctl batch SERVICE --files-from LIST -o DIR [field options]
       mdpctl batch SERVICE --jsonl FILE [--name-field KEY] -o DIR [field options]
       [--redo] [--window N] [--retries N] [--timeout S] [--failures FILE] [--no-progress]

Image inputs (files, directories walked recursively, or the paths listed in a file, one
a line) become requests {"image": <the file's bytes>, ...the field options}; a directory's
tree is kept under DIR and each output is named after its input with the extension of
what came back (photos/a/b.jpg -> thumbs/a/b.webp).  In a directory, files whose name
is not an image's (.jpg .jpeg .png .webp .gif .tif .tiff .bmp) and hidden ones are
skipped, and the run says how many and why.  With --jsonl each line is one request (the
field options are set on every one; the line is taken as it is); outputs are named by
line number (000001.png ...) or by the line's --name-field value.  A --set VALUE that
starts with @ is a file's bytes (--set mark=@logo.png; @@ for a literal @).

Requests go through every broker at once with at most --window in flight.  A request
that failed for a fault (no reply in time, overloaded, expired, internal) is sent again
up to --retries times; a bad request is not.  Outputs are written to a temporary file and
renamed, so an interrupted run (Ctrl-C) keeps every finished output, and running the same
command again skips them and does only the rest (and an input changed since its output
was written).  The parameters (service and field options) are recorded in
DIR/.mdpctl-batch.json: a run with other parameters into a DIR that holds outputs is
refused, naming what changed, unless --redo makes every output again.  The end is a
summary: done, skipped,
failed by error code and where the list of failures was written (JSONL; default
DIR.failures.jsonl).  The bar (rate and time left) is shown when stderr is a terminal.

Exits 0 when every input has its output, 1 when some failed, 130 when interrupted.

examples:
  mdpctl batch thumbnail --width 256 --format webp photos/ -o thumbs/
  mdpctl batch ecard --jsonl cards.jsonl --name-field pSN -o cards/
  mdpctl batch watermark --set text='(c) DIPS' --files-from todo.txt -o marked/
  mdpctl batch watermark --set mark=@logo.png --set opacity=0.3 photos/ -o marked/
  mdpctl batch thumbnail --width 128 photos/ -o thumbs/ --redo
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from mdpctl import batchjobs, batchrecord, numbers
from mdpctl.batchrun import BatchRun
from mdpctl.context import Context
from mdpctl.errors import EXIT_FAILED, EXIT_INTERRUPTED, UsageError
from mdpctl.fields import parse_set

REQUEST_FIELDS: tuple[tuple[str, type, str], ...] = (
    ("width", int, "request field width (thumbnail, crop)"),
    ("height", int, "request field height"),
    ("format", str, "request field format: jpeg, png or webp"),
    ("quality", int, "request field quality, 1-100"),
    ("mode", str, "request field mode (thumbnail: fit or fill)"),
)



def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("service", help="service name")
    parser.add_argument("inputs", nargs="*", metavar="INPUT",
                        help="image files or directories")
    parser.add_argument("--files-from", type=Path, metavar="LIST",
                        help="a file listing image paths, one a line (default: none)")
    parser.add_argument("--jsonl", type=Path, metavar="FILE",
                        help="one request (a JSON object) per line, instead of images "
                        "(default: none)")
    parser.add_argument("--name-field", metavar="KEY",
                        help="with --jsonl: name each output by this field of its line "
                        "(default: by line number, 000001)")
    parser.add_argument("-o", "--output", type=Path, required=True, metavar="DIR",
                        help="where the outputs go")
    for name, kind, text in REQUEST_FIELDS:
        parser.add_argument(f"--{name}", type=kind, help=text + " (default: the service's)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="any other request field (repeat); VALUE is JSON, else a string; "
                        "@PATH is a file's bytes (default: none)")
    parser.add_argument("--redo", action="store_true",
                        help="make every output again, done or not (needed to change the "
                        "parameters of a DIR that holds outputs)")
    parser.add_argument("--window", type=numbers.positive, default=64, metavar="N",
                        help="requests in flight over all brokers (default 64)")
    parser.add_argument("--retries", type=numbers.count, default=3, metavar="N",
                        help="sends again after a fault (default 3)")
    parser.add_argument("--timeout", type=numbers.seconds, default=30.0, metavar="SECONDS",
                        help="how long one request may take, failover included (default 30)")
    parser.add_argument("--failures", type=Path, metavar="FILE",
                        help="where the list of failures goes (default DIR.failures.jsonl)")
    parser.add_argument("--no-progress", action="store_true",
                        help="no progress bar (default: a bar when stderr is a terminal)")
    parser.set_defaults(intermixed="inputs")


def request_fields(args: argparse.Namespace) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    for name, _kind, _text in REQUEST_FIELDS:
        if getattr(args, name) is not None:
            fields[name] = getattr(args, name)
    fields.update(parse_set(args.set))
    return fields


def jobs_for(args: argparse.Namespace) -> batchjobs.Walk:
    given_images = bool(args.inputs or args.files_from)
    if args.jsonl is not None and given_images:
        raise UsageError("give either --jsonl or image inputs, not both")
    if args.jsonl is not None:
        return batchjobs.Walk(batchjobs.jsonl_jobs(args.jsonl, args.name_field))
    if args.name_field:
        raise UsageError("--name-field goes with --jsonl")
    if not given_images:
        raise UsageError("nothing to do: give image files or directories, --files-from "
                         "or --jsonl")
    inputs = [Path(p) for p in args.inputs]
    if args.files_from is not None:
        inputs += batchjobs.listed_paths(args.files_from)
    out_dir = args.output.resolve()
    for given in inputs:
        if given.is_dir() and out_dir.is_relative_to(given.resolve()):
            raise UsageError(f"-o {args.output} is inside the input {given}: its outputs "
                             "would be inputs of the next run; choose a DIR outside it")
    return batchjobs.image_jobs(inputs)


def check_record(out_dir: Path, record: dict[str, Any], redo: bool) -> None:
    """Refuse to mix outputs of other parameters into DIR, unless --redo."""
    old = batchrecord.read(out_dir)
    if redo or old is None or not batchjobs.done_keys(out_dir):
        return
    changed = batchrecord.differences(old, record)
    if changed:
        raise UsageError(
            f"{out_dir} holds outputs made with other parameters ({'; '.join(changed)}); "
            "--redo makes them all again with these, or choose another -o DIR"
        )


def run(args: argparse.Namespace, ctx: Context) -> int:
    if args.retries < 0 or args.timeout <= 0:
        raise UsageError("--retries cannot be negative and --timeout must be positive")
    fields = request_fields(args)
    walk = jobs_for(args)
    skipped = walk.skipped_line()
    if not walk.jobs:
        raise UsageError("the inputs hold no image (or the JSONL file no line)"
                         + (f"; {skipped}" if skipped else ""))
    if skipped:
        ctx.say(skipped)
    out_dir = args.output.absolute()
    record = batchrecord.make(args.service, fields)
    check_record(out_dir, record, args.redo)
    batchrecord.write(out_dir, record)
    cluster = ctx.cluster()
    failures = args.failures or out_dir.with_name(out_dir.name + ".failures.jsonl")
    batch = BatchRun(
        service=args.service,
        jobs=walk.jobs,
        out_dir=out_dir,
        fields=fields,
        brokers=cluster.brokers,
        failures_path=failures.absolute(),
        window=args.window,
        timeout_s=args.timeout,
        retries=args.retries,
        curve=cluster.curve,
        progress=not args.no_progress,
        redo=args.redo,
        say=ctx.say,
    )
    summary = batch.run()
    for line in summary.lines():
        ctx.say(line)
    if summary.interrupted:
        return EXIT_INTERRUPTED
    return 0 if summary.ok else EXIT_FAILED
