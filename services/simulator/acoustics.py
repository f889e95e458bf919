"""The acoustic sensor of one simulated station: 16 kHz audio synthesised from the motor speed.

The second modality of the plant simulator. A chunk is computed in one vectorised pass: the
motor's shaft phase comes from the timeline's speed integral, so the hum, its harmonics, gear
mesh and rotor-slot tones glide with speed changes and spin down when the line stops; conveyor
rattle is noise modulated at the roller rate; plant background is pink noise with occasional
distant events (forklift beeps, air blow-off). Noise sources are pre-rendered loops sliced at
random offsets, so nothing per chunk needs a filter.

Acoustic faults add what a vibration engineer would look for: a bearing outer-race impulse
train (BPFO) ringing a structural resonance, a strong 1x component (imbalance), an intermittent
narrowband squeal, and cavitation-like broadband bursts. Each ramps in over ~2 s and stays
subtle: a few dB above what is already there, not a siren.
"""

from __future__ import annotations

import numpy as np

from services.simulator.faults import Fault
from services.simulator.timeline import Timeline

SHAFT_HZ = 24.5  # 1470 rpm at 100 % setpoint
MAINS_HZ = 50.0
GEAR_TEETH = 17
ROTOR_SLOTS = 28
BPFO_ORDER = 3.57  # outer-race defect frequency / shaft frequency for a typical 9-ball bearing
ROLLER_ORDER = 0.12  # roller passes per shaft revolution


def _shaped_noise(rng: np.random.Generator, n: int, sr: int, exponent: float = 0.5,
                  band: tuple[float, float] | None = None) -> np.ndarray:
    """Noise with a 1/f^exponent spectrum (0.5 = pink), optionally band-limited; unit RMS."""
    spec = np.fft.rfft(rng.standard_normal(n))
    f = np.fft.rfftfreq(n, 1 / sr)
    shape = 1.0 / np.maximum(f, 20.0) ** exponent
    if band is not None:
        shape = shape * ((f >= band[0]) & (f <= band[1]))
    x = np.fft.irfft(spec * shape, n)
    return (x / (np.sqrt(np.mean(x ** 2)) + 1e-12)).astype(np.float32)


class Acoustics:
    """Pre-rendered noise loops and per-asset character; `chunk` synthesises one audio chunk."""

    LOOP = 1 << 17  # ~8 s at 16 kHz

    def __init__(self, rng: np.random.Generator, sample_rate: int = 16000):
        self.sr = sample_rate
        self.background = _shaped_noise(rng, self.LOOP, sample_rate, 0.5)
        self.rattle = _shaped_noise(rng, self.LOOP, sample_rate, 0.0, (800, 4000))
        self.hiss = _shaped_noise(rng, self.LOOP, sample_rate, 0.0, (3000, 7500))
        # per-asset character: levels and a slight detuning so stations do not sound identical
        self.bg_level = float(rng.uniform(0.012, 0.025))
        self.motor_level = float(rng.uniform(0.8, 1.2))
        self.resonance_hz = float(rng.uniform(2600, 3600))
        self.squeal_hz = float(rng.uniform(1800, 2600))
        k = np.arange(int(0.012 * sample_rate)) / sample_rate
        self.ring = (np.exp(-k * 600.0) * np.sin(2 * np.pi * self.resonance_hz * k)).astype(np.float32)
        self._squeal_bursts: dict[tuple[float, str], np.ndarray] = {}

    def _loop(self, loop: np.ndarray, rng: np.random.Generator, n: int) -> np.ndarray:
        i = int(rng.integers(len(loop) - n))
        return loop[i:i + n]

    def chunk(self, timeline: Timeline, t0: float, n: int, faults: list[Fault], rng: np.random.Generator) -> np.ndarray:
        """n samples starting at t0 (epoch s); `faults` are this asset's faults."""
        sr = self.sr
        t = t0 + np.arange(n) / sr
        speed = timeline.speed(t)
        osc = _Oscillators(float(timeline.rev(t0)), speed, sr, t0)
        energised = np.clip(speed / 0.05, 0.0, 1.0).astype(np.float32)
        out = self.bg_level * self._loop(self.background, rng, n)
        if energised.any():
            sp = speed.astype(np.float32)
            out = out + energised * self.motor_level * (
                0.020 * osc.mains(2) + 0.006 * osc.mains(4, 0.3)  # magnetostriction hum, 100/200 Hz
                + 0.004 * osc.shaft(1, 0.7) + 0.005 * osc.shaft(2, 1.1)  # residual 1x / 2x
                + sp * (0.010 * osc.shaft(GEAR_TEETH) + 0.003 * osc.shaft(2 * GEAR_TEETH, 0.4))  # gear mesh
                + sp * 0.004 * osc.shaft(ROTOR_SLOTS, 0.0, mains_order=2)  # rotor slot harmonic
            )
            roller = 1.0 + 0.6 * osc.shaft(ROLLER_ORDER)
            out = out + 0.018 * sp * roller * self._loop(self.rattle, rng, n)
        # distant plant events: a forklift reversing beep or an air blow-off
        if rng.random() < 0.03:
            s = int(rng.integers(n // 2))
            m = min(n - s, int(sr * rng.uniform(0.1, 0.3)))
            out[s:s + m] += 0.012 * np.sin(2 * np.pi * 2400 * np.arange(m) / sr)
        if rng.random() < 0.02:
            s = int(rng.integers(n // 2))
            m = n - s
            out[s:] += 0.02 * np.hanning(2 * m)[m:] * self._loop(self.hiss, rng, m)
        for f in faults:
            if f.overlaps(t0, t0 + n / sr) and f.kind in _FAULT_SOUNDS:
                sev = np.clip((t - f.start) / 2.0, 0, 1) * np.clip((f.end - t) / 0.5, 0, 1)
                # a fault draws from its own stream, so the normal sound around it stays exactly as it was
                frng = np.random.default_rng([int(f.start * 1000), int(round((t0 - f.start) * 1000)) + 10**9])
                out = out + _FAULT_SOUNDS[f.kind](self, f, t, speed, osc, sev, frng)
        return np.clip(out, -1.0, 1.0).astype(np.float32)

    # ── acoustic faults ───────────────────────────────────────────────────────────────────────
    def bearing_sound(self, f: Fault, t, speed, osc: "_Oscillators", sev, rng) -> np.ndarray:
        phase = osc.turns(BPFO_ORDER)
        hits = np.flatnonzero(np.diff(np.floor(phase), prepend=np.floor(phase[0])) > 0)
        train = np.zeros(len(t), dtype=np.float32)
        train[hits] = 0.07 * (1 + 0.3 * rng.standard_normal(len(hits)))
        return np.convolve(train, self.ring)[: len(t)] * sev * np.clip(speed, 0, 1.5)

    def imbalance_sound(self, f: Fault, t, speed, osc: "_Oscillators", sev, rng) -> np.ndarray:
        # a strong once-per-rev component, and the structure rattles at 1x too
        one = osc.shaft(1, 0.7)
        return sev * speed ** 2 * (0.011 * one + 0.003 * osc.shaft(2) + 0.003 * one * osc.shaft(GEAR_TEETH))

    def squeal_sound(self, f: Fault, t, speed, osc: "_Oscillators", sev, rng) -> np.ndarray:
        key = (f.start, f.asset)
        if key not in self._squeal_bursts:  # burst on/off schedule fixed per fault
            r = np.random.default_rng(int(f.start * 1000) % (2 ** 32))
            edges, x = [], f.start
            while x < f.end:
                on = float(r.uniform(0.3, 1.5))
                edges.append((x, x + on))
                x += on + float(r.uniform(0.2, 1.2))
            self._squeal_bursts[key] = np.asarray(edges)
        bursts = self._squeal_bursts[key]
        i = np.searchsorted(bursts[:, 0], t, side="right") - 1
        gate = (i >= 0) & (t < bursts[np.maximum(i, 0), 1])
        tf = t - f.start  # keeps the phase precise and continuous across chunks
        phase = 2 * np.pi * self.squeal_hz * tf - (120.0 / 5.5) * np.cos(2 * np.pi * 5.5 * tf)  # ±120 Hz vibrato
        return sev * gate * 0.012 * np.clip(speed, 0, 1.5) * (np.sin(phase) + 0.3 * np.sin(2 * phase))

    def cavitation_sound(self, f: Fault, t, speed, osc: "_Oscillators", sev, rng) -> np.ndarray:
        n = len(t)
        out = np.zeros(n, dtype=np.float32)
        for _ in range(int(rng.poisson(8.0 * n / self.sr))):
            m = int(self.sr * rng.uniform(0.02, 0.06))
            s = int(rng.integers(max(n - m, 1)))
            m = min(m, n - s)
            env = np.hanning(m) * float(rng.uniform(0.5, 1.0))
            out[s:s + m] += 0.05 * env * self._loop(self.hiss, rng, m)
        return out * sev


class _Oscillators:
    """Sines locked to the shaft or the mains, phase-continuous across chunks.

    Shaft turns within the chunk come from a trapezoid integral of the speed (exact for the
    timeline's piecewise-linear speed), anchored at the exact integral at the chunk start; phases
    are kept small (fraction of a turn at t0 plus the in-chunk advance) so float32 sin is precise.
    """

    def __init__(self, rev0: float, speed: np.ndarray, sr: int, t0: float):
        self.turns0 = SHAFT_HZ * rev0
        self.rel = SHAFT_HZ * (np.cumsum(speed) - 0.5 * (speed + speed[0])) / sr  # turns since t0
        self.sec = np.arange(len(speed)) / sr
        self.t0 = t0

    def turns(self, order: float) -> np.ndarray:
        return (order * self.turns0) % 1.0 + order * self.rel

    def shaft(self, order: float, offset: float = 0.0, mains_order: int = 0) -> np.ndarray:
        ph = self.turns(order)
        if mains_order:
            ph = ph + (mains_order * MAINS_HZ * self.t0) % 1.0 + mains_order * MAINS_HZ * self.sec
        return np.sin((2 * np.pi * ph + offset).astype(np.float32))

    def mains(self, order: int, offset: float = 0.0) -> np.ndarray:
        ph = (order * MAINS_HZ * self.t0) % 1.0 + order * MAINS_HZ * self.sec
        return np.sin((2 * np.pi * ph + offset).astype(np.float32))


_FAULT_SOUNDS = {
    "bearing_fault": Acoustics.bearing_sound,
    "imbalance": Acoustics.imbalance_sound,
    "belt_squeal": Acoustics.squeal_sound,
    "cavitation": Acoustics.cavitation_sound,
}
