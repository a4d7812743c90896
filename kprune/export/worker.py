"""The TensorFlow side of `kprune.export.tf_convert`: `python -m kprune.export.worker REQUEST.json`.

Loads the .keras file named in the request (`KERAS_BACKEND=tensorflow`), runs
`export_tflite` with the request's options and writes `{"report": ...}` or
`{"error": <exception type>, "message": ...}` to the request's report file.
"""

import json
import os
import sys
import warnings

from kprune.export import tf_convert
from kprune.export.exporter import export_tflite
from kprune.utils.atomic import write_json


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    with open(argv[0]) as f:
        request = json.load(f)
    options = tf_convert.load_inputs(request["inputs"], dict(request["options"]))
    try:
        tf_convert.import_modules(request.get("modules", []))
        with warnings.catch_warnings():
            # A failed verification is reported (report.verified) and warned
            # about by the caller.
            warnings.simplefilter("ignore", RuntimeWarning)
            report = export_tflite(request["model"], request["path"], **options)
        result = {"report": report.to_dict(gzip_bytes=False)}  # computed on demand
    except (ValueError, TypeError, RuntimeError, OSError, ImportError) as e:
        result = {"error": type(e).__name__, "message": str(e)}
    write_json(request["report"], result)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    sys.exit(main())
