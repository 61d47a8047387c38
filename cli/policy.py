"""`schoolfed policy ...`: for privacy officers."""

from __future__ import annotations

import argparse
import sys
from datetime import date
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape

from policies.schema import Policy


def register(sub: Any) -> None:
    policy = sub.add_parser("policy", help="write, sign, check and explain policy files")
    actions = policy.add_subparsers(dest="action", required=True, metavar="ACTION")

    keygen = actions.add_parser("keygen", help="make the privacy officer's Ed25519 key pair")
    keygen.add_argument("--out", type=Path, required=True, help="folder for NAME.key and NAME.pub")
    keygen.add_argument("--name", default="officer", help="file name stem (default: officer)")
    keygen.set_defaults(handler=_keygen)

    sign = actions.add_parser("sign", help="sign a policy file (writes FILE.sig)")
    sign.add_argument("file", type=Path)
    sign.add_argument("--key", type=Path, required=True, help="the officer's private key")
    sign.set_defaults(handler=_sign)

    verify = actions.add_parser("verify", help="check signature, schema and validity dates")
    verify.add_argument("file", type=Path)
    verify.add_argument("--pubkey", type=Path, required=True, help="the trusted public key")
    verify.add_argument(
        "--date",
        type=date.fromisoformat,
        default=None,
        help="check validity on this day (YYYY-MM-DD)",
    )
    verify.add_argument(
        "--district", type=Path, default=None,
        help="for a school override: the signed district policy it extends (default: shipped)",
    )  # fmt: skip
    verify.set_defaults(handler=_verify)

    lint = actions.add_parser("lint", help="rules with severities; exit status follows the worst")
    lint.add_argument("file", type=Path)
    lint.add_argument(
        "--district", type=Path, default=None,
        help="for a school override: the district policy it extends (default: the shipped one)",
    )  # fmt: skip
    lint.set_defaults(handler=_lint)

    explain = actions.add_parser("explain", help="the plain-language notice for parents")
    explain.add_argument("file", type=Path)
    explain.add_argument("--format", choices=("md", "html"), default="md")
    explain.add_argument("--lang", choices=("en", "es"), default="en")
    explain.add_argument("--out", type=Path, default=None, help="write here instead of stdout")
    explain.add_argument("--district", type=Path, default=None, help="for a school override")
    explain.set_defaults(handler=_explain)

    diff = actions.add_parser("diff", help="what changed, privacy-relevant changes first")
    diff.add_argument("old", type=Path)
    diff.add_argument("new", type=Path)
    diff.add_argument("--district", type=Path, default=None, help="for school overrides")
    diff.set_defaults(handler=_diff)


def load_any(path: Path, district: Path | None = None) -> Policy:
    """A district policy, or a school override merged into its district policy."""
    from policies.loader import default_policy_path, load_policy
    from policies.override import is_override, load_override

    if is_override(path):
        return load_override(path, district=load_policy(district or default_policy_path()))
    return load_policy(path)


def _keygen(args: argparse.Namespace, console: Console) -> int:
    from privacy.signing import generate_keypair

    private, public = generate_keypair(args.out, name=args.name)
    console.print(f"private key: {private} (mode 0600: keep it with the privacy officer only)")
    console.print(f"public key:  {public} (give it to every school node as its trust anchor)")
    return 0


def _sign(args: argparse.Namespace, console: Console) -> int:
    from policies.errors import PolicyError
    from policies.lint import Severity, lint
    from privacy.signing import sign_file

    errors = [f for f in lint(load_any(args.file)) if f.severity == Severity.ERROR]
    if errors:  # never sign a file that does not load or that breaks a rule
        raise PolicyError(
            f"{args.file}: not signed: {errors[0].field}: {errors[0].message}"
            + (
                f" (and {len(errors) - 1} more; see schoolfed policy lint)"
                if len(errors) > 1
                else ""
            )
        )
    console.print(f"signed: {sign_file(args.file, key=args.key)}")
    return 0


def _verify(args: argparse.Namespace, console: Console) -> int:
    from policies.loader import default_policy_path
    from policies.trust import load_trusted_policy

    district = args.district or default_policy_path()
    policy = load_trusted_policy(args.file, pubkey=args.pubkey, today=args.date, district=district)
    console.print(
        f"ok: {args.file} is {policy.policy_id} v{policy.version}, signed by the trusted key, "
        f"unchanged, valid {policy.valid_from} to {policy.valid_until}"
    )
    return 0


def _lint(args: argparse.Namespace, console: Console) -> int:
    from policies.lint import Severity, exit_status, lint

    findings = lint(load_any(args.file, args.district))
    colour = {Severity.ERROR: "red", Severity.WARNING: "yellow", Severity.INFO: "blue"}
    for f in findings:
        console.print(
            f"[{colour[f.severity]}]{f.severity.name.lower()}[/] "
            + escape(f"{f.field} [{f.rule}]: {f.message}"),
            highlight=False,
        )
    counts = {s: sum(f.severity == s for f in findings) for s in Severity}
    console.print(
        f"{args.file}: {counts[Severity.ERROR]} error(s), {counts[Severity.WARNING]} warning(s),"
        f" {counts[Severity.INFO]} note(s)"
    )
    return exit_status(findings)


def _explain(args: argparse.Namespace, console: Console) -> int:
    from policies.explain import render_notice

    text = render_notice(load_any(args.file, args.district), fmt=args.format, lang=args.lang)
    if args.out is None:
        sys.stdout.write(text if text.endswith("\n") else text + "\n")
    else:
        args.out.write_text(text, encoding="utf-8")
        console.print(f"notice written: {args.out}")
    return 0


def _diff(args: argparse.Namespace, console: Console) -> int:
    from policies.diff import diff, render_diff

    print(render_diff(diff(load_any(args.old, args.district), load_any(args.new, args.district))))
    return 0
