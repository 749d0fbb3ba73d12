"""Guards against a broken Qt binding: PySide6 6.12.0 drops a reference to True on every
Python-side signal emit, so a long session aborts with 'bool_dealloc'. pyproject excludes it."""
import os
import subprocess
import sys

CODE = """
import sys
from PySide6.QtCore import QCoreApplication, QObject, Signal
app = QCoreApplication([])
class Probe(QObject):
    ping = Signal()
probe = Probe()
probe.ping.connect(lambda: None)
before = sys.getrefcount(True)
for _ in range(20000):
    probe.ping.emit()
print(before - sys.getrefcount(True))
"""


def test_signal_emit_does_not_leak_bool_references():
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen"}
    proc = subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr[-500:]
    assert int(proc.stdout.strip()) == 0
