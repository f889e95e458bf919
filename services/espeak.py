"""libespeak-ng is one process-wide engine: its synth callback, voice and parameters are global.

The simulator (call audio) and the summarizer (narration) each drive it through ctypes, sometimes in
the same process (`fusionwatch up`, the test suite), so every synthesis holds this lock and
installs its own callback and parameters first — never trusting what the other left behind.
"""

import threading

ESPEAK_LOCK = threading.RLock()
