#!/usr/bin/env python3
"""examples/ holds docs/api.md's example as a program: it must be the text api.md shows,
build against the library, and print what api.md says it prints.

    scripts/check-examples.py BUILD_DIR    (the tree holding libgmem.a)
"""
import os
import re
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HEADING = "## Example: a VMM loop with a software vCPU"
PROGRAM = "examples/vmm_loop.c"


def documented():
    with open(os.path.join(ROOT, "docs/api.md"), encoding="utf-8") as f:
        text = f.read()
    section = text[text.index(HEADING):]
    section = section[:section.find("\n## ", 1)] if "\n## " in section[1:] else section
    output = re.search(r"^```\n(.*?)^```", section, flags=re.S | re.M).group(1)
    source = re.search(r"^```c\n(.*?)^```", section, flags=re.S | re.M).group(1)
    return source, output


def main():
    build = sys.argv[1] if len(sys.argv) > 1 else "build"
    cc = os.environ.get("CC", "cc")
    source, output = documented()
    with open(os.path.join(ROOT, PROGRAM), encoding="utf-8") as f:
        if f.read() != source:
            print(f"check-examples: {PROGRAM} differs from the example in docs/api.md")
            return 1
    with tempfile.TemporaryDirectory() as tmp:
        binary = os.path.join(tmp, "vmm_loop")
        subprocess.run([cc, "-std=gnu11", "-Wall", "-Wextra", "-Werror", "-Iinclude", PROGRAM,
                        "-o", binary, os.path.join(build, "libgmem.a"), "-lurcu-bp", "-lpthread", "-lcrypto"],
                       cwd=ROOT, check=True)
        run = subprocess.run([binary], cwd=ROOT, capture_output=True, text=True, timeout=120)
    if run.returncode != 0 or run.stdout != output:
        print(f"check-examples: {PROGRAM} exited {run.returncode} and printed:\n{run.stdout}"
              f"{run.stderr}docs/api.md says it prints:\n{output}")
        return 1
    print(f"examples: {PROGRAM} is api.md's example, builds, and prints what api.md shows")
    return 0


if __name__ == "__main__":
    sys.exit(main())
