"""One Keras backend's own process (tests/keras_backends.py starts it): the agreement probe
(benchmarks/backend_agreement.py's: logits, first five losses, BatchNorm moments), written
as JSON to a file, then the engine suite for that backend alone, whose exit status is this
process's.

    python tests/keras_backend_process.py FRAMEWORK PROBE_JSON ARCHS TEST_FILE...

Both in one interpreter: each started apart paid the interpreter, Keras's import and
its backend's again, 6-11 s of CPU a backend on a 2-core machine (before the probe imported
Keras as a worker does, without scikit-learn and pandas). A probe that fails writes its traceback instead of
figures, and the suite runs all the same: each check fails on its own account.
"""
import json
import sys
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main(framework: str, out: str, archs: str, *suite: str) -> int:
    sys.path.insert(0, str(ROOT))
    import pytest

    from benchmarks import backend_agreement as agreement

    try:
        probe = agreement.probe(framework, [a for a in archs.split(",") if a], agreement.LOSS_ARCHS)
    except Exception:  # noqa: BLE001 - reported to the checks that read the probe
        probe = {"error": traceback.format_exc()}
    Path(out).write_text(json.dumps(probe))
    sys.stdout.flush()
    return pytest.main(["-q", "-x", "-p", "no:cacheprovider", *suite])


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
