"""The README's Commands block and the paragraph under it name exactly the flags each verb takes."""

from __future__ import annotations

import argparse
import re
from pathlib import Path
from typing import Dict, Set

from atldas.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
#: Flags the paragraph under the block names once for many verbs, checked separately below.
SHARED = {"--help", "--debug", "--quiet", "--threads", "--no-progress"}


def _subparsers(p: argparse.ArgumentParser) -> Dict[str, argparse.ArgumentParser]:
    return next((a.choices for a in p._actions if isinstance(a, argparse._SubParsersAction)), {})


def _verbs() -> Dict[str, argparse.ArgumentParser]:
    """``"search"``, ..., ``"lut build"``, ``"data preview"`` -> its parser."""
    out = {}
    for name, sp in _subparsers(build_parser()).items():
        nested = _subparsers(sp)
        out.update({f"{name} {n}": p for n, p in nested.items()} if nested else {name: sp})
    return out


def _flags(p: argparse.ArgumentParser) -> Set[str]:
    return {o for a in p._actions for o in a.option_strings if o.startswith("--")}


def _readme() -> str:
    return (ROOT / "README.md").read_text()


def _block() -> Dict[str, Set[str]]:
    """Verb -> the flags its lines of the README's Commands block name."""
    block = _readme().split("## Commands", 1)[1].split("```", 2)[1]
    verbs: Dict[str, Set[str]] = {}
    verb = None
    for line in block.splitlines():
        m = re.match(r"atldas (lut build|data preview|\w+)\s", line)
        if m:
            verb = m.group(1)
            verbs.setdefault(verb, set())
        if verb:
            verbs[verb] |= set(re.findall(r"--[a-z][a-z0-9-]*", line))
    return verbs


def test_every_verb_is_in_the_commands_block_with_exactly_its_flags():
    verbs, block = _verbs(), _block()
    assert set(block) == set(verbs), (sorted(set(verbs) - set(block)), sorted(set(block) - set(verbs)))
    for verb, p in verbs.items():
        have = _flags(p)
        assert block[verb] <= have, f"the README names {sorted(block[verb] - have)} for `atldas {verb}`, which has none"
        assert have - SHARED <= block[verb], f"`atldas {verb}` takes {sorted(have - SHARED - block[verb])}, not in the README"


def test_the_paragraph_names_the_verbs_that_take_threads_and_no_progress():
    text = " ".join(_readme().split("## Commands", 1)[1].split("```", 2)[2].split())
    for flag in ("--threads", "--no-progress"):
        m = re.search(re.escape(flag) + r"(?: N)?` \(([^)]*)\)", text)
        assert m, f"the paragraph under the Commands block lists the verbs that take {flag}"
        named = {v.strip() for v in m.group(1).split(",")}
        takes = {v for v, p in _verbs().items() if flag in _flags(p)}
        assert named == takes, (flag, sorted(named - takes), sorted(takes - named))
    for verb, p in _verbs().items():
        assert {"--debug", "--quiet"} <= _flags(p), verb  # "Every command takes --quiet and --debug"
