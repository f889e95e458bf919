"""`fusionwatch bench`: repeatable performance figures, each against a naive baseline run in the
same process (so a shared or throttled machine slows both sides alike and the ratio stays honest).

- `bench model` (`services.bench.model`): the fusion model alone, by batch size, device, dtype,
  eager vs `torch.compile`; FLOPs per window and the fraction of the device's peak. Imports only
  torch, numpy and `models.*`, so it runs on a bare GPU box (`python -m services.bench model`).
- `bench decode` (`services.bench.decode`): the consume hop's media work: JPEG full decode + resize
  vs draft decode, WAV decode, log-mel extraction, text embedding with and without the cache.
- `bench pipeline` (`services.bench.pipeline`): the whole path, simulated producers → broker →
  monitor → SQLite, in real time and as a backlog drain, optimised vs naive, plus the largest
  number of assets one monitor keeps up with, and the scale-out over several monitor processes.

Nothing here asserts a time; results are JSON (`--json`) plus a rich table, and always carry the
machine, its load average and the library versions they were measured with.
"""
