#!/usr/bin/env python3
"""Every relative link and every repository path named in README.md and docs/*.md resolves
inside the repository.

Checked: markdown links to files (and their #anchors, against the target's headings), and
paths in `backticks` that name a file with an extension or a directory (a trailing /).
Fenced code blocks are skipped (sample output, pictures). A bare file name (`gmem.c`)
must exist somewhere in the repository. Absolute paths must be system paths (/dev, /proc,
/sys...): anything else points outside the repository.
"""
import fnmatch
import glob
import os
import re
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SYSTEM_PREFIXES = ("/dev/", "/proc/", "/sys/", "/usr/", "/etc/", "/tmp/")
# Named in the docs but not in the repository, on purpose.
NOT_REPOSITORY_PATHS = [
    "build/*",                 # the build tree
    "lib/*", "share/*",        # paths under an install prefix
    "results.*",               # make bench's outputs, under build/bench/
    "virt/kvm/guest_memfd.c",  # the Linux kernel's sources
    "kvm_main.c",
]
PATH_SPAN = re.compile(r"[\w.@*+-]*(/[\w.@*+-]*)+|[\w.+-]+\.[A-Za-z]+")
EXTENSION = re.compile(r"\.(c|h|S|md|sh|py|lds|map|in|supp|txt|json|tsv|svg|3)$")


def repository_files():
    try:
        out = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"],
                             cwd=ROOT, capture_output=True, text=True, check=True).stdout
        return out.split()
    except (OSError, subprocess.CalledProcessError):
        return [os.path.relpath(p, ROOT) for p in glob.glob(ROOT + "/**", recursive=True)
                if os.path.isfile(p) and "/build/" not in p]


def strip_code_blocks(text):
    return re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)


def slug(heading):
    s = heading.strip().lower()
    s = re.sub(r"[^\w\- ]", "", s)
    return s.replace(" ", "-")


def anchors(path):
    with open(path, encoding="utf-8") as f:
        text = strip_code_blocks(f.read())
    return {slug(h) for h in re.findall(r"^#+\s+(.*)$", text, flags=re.M)}


def exists(doc, target):
    for base in (os.path.dirname(doc), ROOT):
        if glob.glob(os.path.join(base, target)):
            return True
    return False


def check_links(doc, text, problems):
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"[a-z]+:", target):
            continue
        path, _, anchor = target.partition("#")
        full = os.path.normpath(os.path.join(os.path.dirname(doc), path)) if path else doc
        if not full.startswith(ROOT + os.sep) or not os.path.exists(full):
            problems.append(f"link ({target}): no such file in the repository")
        elif anchor and full.endswith(".md") and anchor not in anchors(full):
            problems.append(f"link ({target}): no heading #{anchor} in {os.path.relpath(full, ROOT)}")


def check_paths(doc, text, names, problems):
    for span in set(re.findall(r"`([^`\n]+)`", text)):
        if not PATH_SPAN.fullmatch(span) or not (span.endswith("/") or EXTENSION.search(span)):
            continue
        if span.startswith("/"):
            if not span.startswith(SYSTEM_PREFIXES):
                problems.append(f"`{span}`: an absolute path outside the repository")
            continue
        if any(fnmatch.fnmatch(span, p) for p in NOT_REPOSITORY_PATHS):
            continue
        if "/" not in span.rstrip("/"):
            if span.rstrip("/") not in names and not exists(doc, span):
                problems.append(f"`{span}`: no file of that name in the repository")
        elif not exists(doc, span):
            problems.append(f"`{span}`: no such path in the repository")


def main():
    docs = [os.path.join(ROOT, "README.md")] + sorted(glob.glob(os.path.join(ROOT, "docs", "*.md")))
    names = {os.path.basename(p) for p in repository_files()}
    failed = 0
    for doc in docs:
        with open(doc, encoding="utf-8") as f:
            text = strip_code_blocks(f.read())
        problems = []
        check_links(doc, text, problems)
        check_paths(doc, text, names, problems)
        for p in sorted(problems):
            print(f"check-docs: {os.path.relpath(doc, ROOT)}: {p}")
        failed += len(problems)
    if failed:
        return 1
    print(f"docs: every link and repository path in {len(docs)} files resolves")
    return 0


if __name__ == "__main__":
    sys.exit(main())
