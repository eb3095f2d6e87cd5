"""Make CURVE key pairs for brokers, workers, clients and mdpctl.

usage: mdpctl keys new NAME [--dir DIR]

Writes DIR/NAME.key (the public key: give it to the brokers' allow-lists, or to clients
and workers when NAME is a broker) and DIR/NAME.key_secret (public and secret key, mode
0600: it never leaves this machine), in the format of pyzmq's zmq.auth.  An existing key
is never overwritten.  docs/SECURITY.md says where each file goes and how to revoke one.

examples:
  mdpctl keys new broker --dir /etc/dips/keys
  mdpctl keys new web-frontend --dir ~/.dips
"""

from __future__ import annotations

import argparse

from mdp.keys import fingerprint, load_public, new_keypair
from mdpctl.context import Context


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    new = sub.add_parser("new", help="write a new key pair NAME.key and NAME.key_secret")
    new.add_argument("name", help="name of the key, e.g. broker, worker-img1, web-frontend")
    new.add_argument("--dir", default=".", metavar="DIR",
                     help="where to write the files (default: the current directory)")


def run(args: argparse.Namespace, ctx: Context) -> int:
    public, secret = new_keypair(args.dir, args.name)
    ctx.say(f"wrote {public} (public, fingerprint {fingerprint(load_public(public))})")
    ctx.say(f"wrote {secret} (secret, mode 0600: keep it on this machine)")
    return 0
