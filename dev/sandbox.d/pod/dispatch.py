"""What `kubectl exec` into an orchestrator-dynamic pod runs in the sandbox (fake-kube/exec).

The seed runbook's commands are dispatched to the scripts next to this file, which act on the
sandbox (its MLflow, the twin); anything else is "command not found" (exit 127), as in a container
that does not have it.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

SCRIPTS = {
    "ml_pipelines/monitoring/model_performance_monitor.py": "model_performance_monitor",
    "ml_pipelines/monitoring/auto_retrain.py": "auto_retrain",
}
MODULES = {"services.orchestrator_dynamic.src.ml.model_promotion": "model_promotion"}


def resolve(argv):
    """(module name, its arguments) for a command line, or None."""
    if len(argv) >= 2 and os.path.basename(argv[0]) in ("python", "python3"):
        script = argv[1].removeprefix("./")
        if script in SCRIPTS:
            return SCRIPTS[script], argv[2:]
        if argv[1] == "-m" and len(argv) >= 3 and argv[2] in MODULES:
            return MODULES[argv[2]], argv[3:]
    return None


def main(argv):
    found = resolve(argv)
    if found is None:
        print(f"sandbox pod: command not found: {' '.join(argv)}", file=sys.stderr)
        return 127
    name, args = found
    module = __import__(name)
    prog = argv[1] if argv[1] != "-m" else f"python -m {argv[2]}"
    return module.main(args, prog)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
