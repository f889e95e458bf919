"""Real sources into the wire contract: `fusionwatch ingest video|audio|logs` (PyAV for files and
RTSP/HTTP streams, torchaudio for resampling, tail -F style log following)."""
