"""Make a key and salt for image URLs, and sign URLs in imgproxy's scheme.

usage: mdpctl imgproxy key [--dir DIR] [--name NAME]
       mdpctl imgproxy sign --key FILE --salt FILE (--source URL [--options OPTS] [--ext EXT]
                            [--encoded] [--only-presets] | --path PATH [--body FILE])
                            [--base URL]

`key` writes DIR/NAME.key.hex and DIR/NAME.salt.hex (random, hex-encoded, mode 0600), the
files `mdp-http --sign-key FILE --sign-salt FILE` takes. `sign` prints a signed image URL:
the path for OPTS (imgproxy's processing options, `/`-separated) and the source, or a path
given as it is; with --body, the signature of a POST of that file to the path (the door
signs a POST's path, a newline and the body's SHA-256). --base puts the door's address in
front. The signature is imgproxy's: URL-safe base64 of HMAC-SHA256(key, salt + path).
OPTS and EXT are checked as the door reads them (a URL it would refuse is not signed);
presets (pr:NAME) are the door's own and pass unchecked, as do the preset names of a door
with --only-presets (say --only-presets here too).

examples:
  mdpctl imgproxy key --dir /etc/dips
  mdpctl imgproxy sign --key /etc/dips/images.key.hex --salt /etc/dips/images.salt.hex \\
      --options rs:fill:300:200/g:sm --source https://img.example.com/a.jpg --ext webp \\
      --base https://images.example.com
"""

from __future__ import annotations

import argparse
import hashlib
import os
import secrets
import urllib.parse
from pathlib import Path

from mdp.errors import BadRequest, ConfigError
from mdp_http import imgops
from mdp_http.imgurl import encoded_path, plain_path
from mdp_http.signing import Signer, post_text
from mdpctl.context import Context
from mdpctl.errors import UsageError

KEY_BYTES = 32
SALT_BYTES = 16


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    key = sub.add_parser("key", help="write a new random key and salt (hex files)")
    key.add_argument("--dir", default=".", metavar="DIR",
                     help="where to write the files (default: the current directory)")
    key.add_argument("--name", default="images", metavar="NAME",
                     help="file names NAME.key.hex and NAME.salt.hex (default: images)")
    sign = sub.add_parser("sign", help="print a signed image URL")
    sign.add_argument("--key", required=True, metavar="FILE", help="hex key file")
    sign.add_argument("--salt", required=True, metavar="FILE", help="hex salt file")
    sign.add_argument("--source", metavar="URL", help="the source: http(s)://... or "
                      "local:///path (default: none; or --path)")
    sign.add_argument("--options", default="", metavar="OPTS",
                      help="processing options, e.g. rs:fit:300:300/q:80 (default: none)")
    sign.add_argument("--ext", default="", metavar="EXT",
                      help="the output format, e.g. webp (default: left open)")
    sign.add_argument("--encoded", action="store_true",
                      help="the source as URL-safe base64 rather than plain")
    sign.add_argument("--only-presets", action="store_true",
                      help="OPTS are preset names, for a door with --only-presets (not checked)")
    sign.add_argument("--path", metavar="PATH", help="sign this path as it is instead "
                      "(default: none)")
    sign.add_argument("--body", metavar="FILE", help="sign a POST of this file to the path "
                      "(default: none, a GET)")
    sign.add_argument("--base", default="", metavar="URL",
                      help="the door's address, put in front (default: the path alone)")


def run(args: argparse.Namespace, ctx: Context) -> int:
    if args.action == "key":
        return _key(args, ctx)
    return _sign(args, ctx)


def _key(args: argparse.Namespace, ctx: Context) -> int:
    directory = Path(args.dir)
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for suffix, size in (("key", KEY_BYTES), ("salt", SALT_BYTES)):
        path = directory / f"{args.name}.{suffix}.hex"
        if path.exists():
            raise ConfigError(f"{path} exists; choose another --name or --dir")
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w") as out:
            out.write(secrets.token_hex(size) + "\n")
        written.append(path)
    ctx.say(f"wrote {written[0]} and {written[1]} (mode 0600)")
    ctx.say(f"give them to the door: mdpctl up --sign-key {written[0]} --sign-salt "
            f"{written[1]} (or mdp-http --sign-key ... --sign-salt ...)")
    return 0


def _sign(args: argparse.Namespace, ctx: Context) -> int:
    signer = Signer.from_files([args.key], [args.salt])
    if signer is None:  # from_files returns None only for no files; two were given
        raise ConfigError("no key given")
    if (args.path is None) == (args.source is None):
        raise ConfigError("give either --source (with --options, --ext) or --path")
    _check_base(args.base)
    if args.path is not None:
        path = args.path if args.path.startswith("/") else "/" + args.path
    else:
        options = [part for part in args.options.split("/") if part]
        _check_options(options, args.ext, args.only_presets)
        build = encoded_path if args.encoded else plain_path
        path = build(options, args.source, args.ext)
    text = path
    if args.body is not None:
        text = post_text(path, hashlib.sha256(Path(args.body).read_bytes()).digest())
    ctx.say(f"{args.base.rstrip('/')}/{signer.sign(text)}{path}")
    return 0


def _check_options(options: list[str], ext: str, only_presets: bool) -> None:
    """Refuse what the door would: its own parser reads the options (presets are the
    door's, so ``pr:`` options and a presets-only door's names pass unchecked)."""
    try:
        if not only_presets:
            imgops.parse_options([o for o in options
                                  if o.partition(":")[0] not in imgops.PRESET_NAMES])
        if ext:
            imgops.output_format(ext, "--ext")
    except BadRequest as exc:
        where = "--ext" if exc.field == "--ext" else "--options"
        raise UsageError(f"{where}: {exc.message}; the door would refuse this URL") from exc


def _check_base(base: str) -> None:
    """--base is the door's address: http(s)://host[:port][/prefix]."""
    if not base:
        return
    parts = urllib.parse.urlsplit(base)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.query \
            or parts.fragment:
        raise UsageError(f"--base {base!r} is not the door's http(s) address; e.g. "
                         "--base http://127.0.0.1:8080 or --base https://images.example.com")
