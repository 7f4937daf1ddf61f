"""Known vulnerabilities in the installed dependencies (pip-audit), for .ci/run.

Exits 1 when a dependency has a known vulnerability. A dependency pip-audit could not look up
(the vulnerability service unreachable from this machine) is counted and named, not hidden.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

PIP_AUDIT = Path(sys.executable).parent / "pip-audit"


def main() -> int:
    run = subprocess.run(
        [str(PIP_AUDIT), "--format", "json", "--progress-spinner", "off", "--skip-editable"],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    try:
        report = json.loads(run.stdout)
    except json.JSONDecodeError:
        print(f"[audit] pip-audit failed (exit {run.returncode}): {run.stderr.strip()[-1000:]}")
        return 1
    dependencies = report["dependencies"]
    vulnerable = [d for d in dependencies if d.get("vulns")]
    skipped = [d for d in dependencies if d.get("skip_reason")]
    audited = len(dependencies) - len(skipped)
    for dependency in vulnerable:
        for vuln in dependency["vulns"]:
            fixed = ", ".join(vuln.get("fix_versions") or []) or "no fix yet"
            print(f"[audit] {dependency['name']} {dependency['version']}: {vuln['id']} (fixed in {fixed})")
    print(f"[audit] {audited} audited, {len(vulnerable)} with known vulnerabilities, {len(skipped)} not audited")
    if skipped and not audited:
        print(f"[audit] nothing audited (vulnerability service unreachable?): {skipped[0]['skip_reason']}")
    return 1 if vulnerable else 0


if __name__ == "__main__":
    sys.exit(main())
