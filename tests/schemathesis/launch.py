"""Runs the schemathesis CLI with `ast.parse` serialised across threads.

CPython 3.11 before 3.11.8 keeps the AST constructor's recursion depth in state shared by every
thread (python/cpython#106905), so two threads parsing at once can fail with "SystemError: AST
constructor recursion depth mismatch". Hypothesis parses source files to describe the lambdas
that schemathesis filters strategies with, and with `--workers 2` two threads do that at once.
"""

import ast
import sys
import threading

from schemathesis.cli import schemathesis

_unguarded_parse = ast.parse
_parsing = threading.Lock()


def _serialised_parse(*args, **kwargs):
    with _parsing:
        return _unguarded_parse(*args, **kwargs)


ast.parse = _serialised_parse

if __name__ == "__main__":
    sys.argv[0] = "schemathesis"
    sys.exit(schemathesis())
