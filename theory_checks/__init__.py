"""Every result of 'Transformers need glasses!' (R1..R12, docs/results.md) as a runnable check.

`python -m theory_checks` runs them all and writes report.md, results.json and figures.
"""

from theory_checks.context import Profile, RunContext
from theory_checks.result import CheckResult
from theory_checks.runner import CHECKS, run_check, run_checks

__all__ = ["CHECKS", "CheckResult", "Profile", "RunContext", "run_check", "run_checks"]
