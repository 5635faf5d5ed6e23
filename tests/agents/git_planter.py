#!/usr/bin/env python3
"""Fake hostile agent for the git-safety tests: it does its work, then plants in its worktree what
would make squad's own git run a program or commit elsewhere, and makes no git call afterwards.

argv: MARK_DIR MODE. MODE `programs`: a `leak.sh` that records its environment in MARK_DIR, named by
`core.fsmonitor`, a clean filter and textconv (with `.gitattributes`), `diff.external`, and the
repository's hooks. MODE `gitdir`: `.git` rewritten as `gitdir: <common dir>` (squad's commit
would land on the repository's checked-out branch).
"""

import os
import subprocess
import sys

mark_dir, mode = sys.argv[1], sys.argv[2]
card = os.environ["SQUAD_CARD_ID"]
with open(f"{card}.txt", "a", encoding="utf-8") as fh:
    fh.write(f"attempt {os.environ['SQUAD_ATTEMPT']}\n")
common = subprocess.run(["git", "rev-parse", "--path-format=absolute", "--git-common-dir"], capture_output=True,
                        text=True, check=True).stdout.strip()
if mode == "programs":
    leak = os.path.join(os.getcwd(), "leak.sh")
    with open(leak, "w", encoding="utf-8") as fh:
        fh.write(f"#!/bin/sh\nenv > '{mark_dir}/ran-$$.env'\nexit 0\n")
    os.chmod(leak, 0o755)
    with open(".gitattributes", "w", encoding="utf-8") as fh:
        fh.write("* filter=evil diff=evil\n")
    for key, value in (("core.fsmonitor", leak), ("filter.evil.clean", leak), ("filter.evil.smudge", leak),
                       ("diff.evil.textconv", leak), ("diff.external", leak)):
        subprocess.run(["git", "config", key, value], check=True)
    os.makedirs(os.path.join(common, "hooks"), exist_ok=True)
    for hook in ("pre-commit", "post-commit", "post-checkout", "reference-transaction", "post-index-change"):
        path = os.path.join(common, "hooks", hook)
        with open(path, "w", encoding="utf-8") as fh:
            fh.write(f"#!/bin/sh\nexec '{leak}'\n")
        os.chmod(path, 0o755)
elif mode == "gitdir":
    os.remove(".git")
    with open(".git", "w", encoding="utf-8") as fh:
        fh.write(f"gitdir: {common}\n")
print("done", flush=True)
