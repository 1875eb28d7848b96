"""Coverage-guided fuzzing of one parser with atheris (libFuzzer), run as a subprocess by
``test_fuzz_atheris.py``: ``python tests/atheris_fuzz.py KIND [libFuzzer flags] NEW_CORPUS SEED_DIRS...``.

The storagecarbon modules are instrumented, so libFuzzer keeps the mutations that reach new lines
of our validation code. Any exception other than ``StoragecarbonError`` is a crash: libFuzzer writes
the input to ``-artifact_prefix`` and exits non-zero.
"""

import sys
from pathlib import Path

import atheris

sys.path.insert(0, str(Path(__file__).resolve().parent))

with atheris.instrument_imports(include=["storagecarbon"]):
    import fuzz_targets as ft
    import storagecarbon.devicedb  # noqa: F401
    import storagecarbon.plan  # noqa: F401
    import storagecarbon.scenario  # noqa: F401
    import storagecarbon.trace  # noqa: F401
    import storagecarbon.carbon.usage  # noqa: F401
    import storagecarbon.yamlio  # noqa: F401

KIND = sys.argv.pop(1)
ft.db()
ft.workdir()


def one(data: bytes) -> None:
    ft.TARGETS[KIND](data)


if __name__ == "__main__":
    atheris.Setup(sys.argv, one)
    atheris.Fuzz()
