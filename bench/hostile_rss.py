"""How much a registry read raises this process's peak RSS: one measured call, as JSON.

    python bench/hostile_rss.py --registry 127.0.0.1:5000 --repo a/b --mode manifest \\
        --target huge --warm small

Modes: `manifest` (get_manifest TARGET), `config` (get_blob TARGET with the image-config
cap), `copy` (copy_blob TARGET from REPO to REPO-copy, streamed). The same call is made
first on WARM (a small manifest, blob or blob to copy) so that imports, the connection and
the code paths are in place; then the peak RSS (`ru_maxrss`) is read before and after the
measured call. The registry is the caller's: a test's hostile server serving 100 MB.

Prints {"mode", "outcome" (the error class, or "ok"), "message", "rss_before",
"rss_after", "growth"} (bytes; growth = after - before, peak to peak).
"""

from __future__ import annotations

import argparse
import gc
import json
import resource
import sys

from regwarden.errors import RegwardenError
from regwarden.oci import MAX_CONFIG_BYTES, RegistryClient


def _peak() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--registry", required=True)
    parser.add_argument("--repo", required=True)
    parser.add_argument("--mode", choices=("manifest", "config", "copy"), required=True)
    parser.add_argument("--target", required=True, help="digest or tag to measure")
    parser.add_argument("--warm", required=True, help="a small one of the same kind")
    parser.add_argument("--deadline", type=float, default=120.0)
    args = parser.parse_args(argv)

    with RegistryClient(
        args.registry, deadline=args.deadline, blob_deadline=args.deadline, max_retries=0
    ) as client:

        def call(reference: str) -> None:
            if args.mode == "manifest":
                client.get_manifest(args.repo, reference)
            elif args.mode == "config":
                client.get_blob(args.repo, reference, max_bytes=MAX_CONFIG_BYTES)
            else:
                client.copy_blob(args.repo, f"{args.repo}-copy", reference)

        call(args.warm)
        gc.collect()
        before = _peak()
        outcome, message = "ok", ""
        try:
            call(args.target)
        except RegwardenError as exc:
            outcome, message = type(exc).__name__, str(exc)
        after = _peak()
    report = {
        "mode": args.mode,
        "outcome": outcome,
        "message": message,
        "rss_before": before,
        "rss_after": after,
        "growth": after - before,
    }
    json.dump(report, sys.stdout)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
