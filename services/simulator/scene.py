"""The camera of one simulated station: a conveyor seen from above with parts moving through.

Renders 320x240 RGB frames from the station's belt position and the parts on the belt, then
JPEG-encodes them — the first modality of the plant simulator. Everything expensive (background,
belt texture, part sprites in every variant, camera-noise bank) is rendered once per asset; a
frame is a few array copies, alpha blends of a handful of 56x40 sprites, a gain and a noise add,
so 16 assets at 4 fps cost a small fraction of one core.

Normal variety: belt motion at the current speed, per-part shade and small rotation/offset
jitter, mains flicker and lighting drift, a per-shift lighting level, sensor noise and JPEG
quality. Visual faults change only what a camera would see (defective parts, a smudged lens).
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageChops, ImageDraw, ImageFilter

W, H = 320, 240
BELT_Y0, BELT_Y1 = 88, 168  # belt band in the image
SLAT_PERIOD = 24  # px between belt slats
PART_W, PART_H = 56, 40
SPRITE_PAD = 10  # room for rotation and the shadow
NORMAL_ANGLES = (-3.0, -1.5, 0.0, 1.5, 3.0)
MISALIGNED_ANGLES = (-22.0, -15.0, 14.0, 21.0)
VARIANTS = {"ok": len(NORMAL_ANGLES), "surface_defect": 6, "missing_component": len(NORMAL_ANGLES),
            "misaligned_part": len(MISALIGNED_ANGLES)}  # variant -> number of pre-rendered shapes
NOISE_OFFSET = 32
GAIN_HEADROOM = 1.15  # lighting gain above 1 (flicker, drift) without clipping in the multiply


@dataclass(frozen=True)
class PartView:
    """One part as the camera should draw it in this frame."""

    x: float  # centre x in the image
    variant: str  # "ok", "surface_defect", "missing_component", "misaligned_part"
    variety: int  # picks rotation / defect shape / offset deterministically
    shade: float  # per-part brightness factor (material variation)


SHADES = np.linspace(0.9, 1.1, 5)  # per-part brightness (material variation), quantised


def _shade(img: Image.Image, factor: float) -> Image.Image:
    rgb = img.convert("RGB").point(lambda v: min(255, int(v * factor)))
    out = rgb.convert("RGBA")
    out.putalpha(img.getchannel("A"))
    return out


class Scene:
    """Pre-rendered assets for one camera; `render` and `encode` make a frame."""

    def __init__(self, rng: np.random.Generator, frame_size: tuple[int, int] = (W, H)):
        self.frame_size = frame_size
        self.tint = np.array([1.0, 1.0, 1.0]) + rng.normal(0, 0.03, 3)  # white balance of this camera
        self.background = Image.fromarray(np.clip(self._background(rng) * GAIN_HEADROOM, 0, 255).astype(np.uint8))
        self.belt_strip = Image.fromarray(np.clip(self._belt_strip(rng) * GAIN_HEADROOM, 0, 255).astype(np.uint8))
        self.sprites = {k: _shade(v, GAIN_HEADROOM) for k, v in self._sprites(rng).items()}
        # sensor noise bank: a few frames of gaussian noise around NOISE_OFFSET, cropped at random offsets
        self.noise = [Image.fromarray(np.clip(NOISE_OFFSET + rng.normal(0, 4.0, size=(H + 16, W + 16, 3)), 0, 255)
                                      .astype(np.uint8)) for _ in range(6)]
        self.smudge_center = (float(rng.uniform(60, 260)), float(rng.uniform(50, 190)))
        self._smudges: dict[int, Image.Image] = {}

    # ── one-off rendering ──────────────────────────────────────────────────────────────────────
    def _background(self, rng: np.random.Generator) -> np.ndarray:
        yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
        base = 70 + 25 * (yy / H) + 8 * np.sin(xx / 37.0 + float(rng.uniform(0, 6)))  # floor with uneven light
        img = np.stack([base * 0.95, base, base * 1.05], axis=-1)
        img += rng.normal(0, 3, size=img.shape)  # concrete texture
        pil = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))
        d = ImageDraw.Draw(pil)
        # side rails of the conveyor, a gantry with the vision light and a sensor box
        d.rectangle([0, BELT_Y0 - 10, W, BELT_Y0 - 1], fill=(120, 122, 128))
        d.rectangle([0, BELT_Y1, W, BELT_Y1 + 9], fill=(118, 120, 126))
        for x in range(0, W, 64):
            d.rectangle([x, BELT_Y0 - 16, x + 6, BELT_Y0 - 10], fill=(90, 90, 96))
        gx = int(rng.uniform(140, 180))
        d.rectangle([gx - 4, 0, gx + 4, BELT_Y0 - 12], fill=(200, 170, 40))  # yellow gantry post
        d.rectangle([gx - 30, 10, gx + 30, 22], fill=(60, 60, 66))
        d.rectangle([W - 48, BELT_Y1 + 18, W - 12, BELT_Y1 + 44], fill=(40, 70, 140))  # control box
        d.ellipse([W - 36, BELT_Y1 + 24, W - 26, BELT_Y1 + 34], fill=(40, 200, 60))
        for y in (200, 214, 228):  # floor markings
            d.line([(8, y), (120, y)], fill=(180, 160, 40), width=2)
        return np.asarray(pil, dtype=np.uint8).copy()

    def _belt_strip(self, rng: np.random.Generator) -> np.ndarray:
        bh = BELT_Y1 - BELT_Y0
        strip = 38 + rng.normal(0, 4, size=(bh, W + SLAT_PERIOD, 1)).astype(np.float32)
        strip = np.repeat(strip, 3, axis=2)
        for x in range(0, W + SLAT_PERIOD, SLAT_PERIOD):
            strip[:, x:x + 2] -= 14  # slat joints: what makes belt motion visible
            strip[:, x + 2:x + 3] += 10
        strip[:3] += 18
        strip[-3:] += 12
        return np.clip(strip, 0, 255).astype(np.uint8)

    def _part_image(self, variant: str, variety: int, rng: np.random.Generator) -> Image.Image:
        pw, ph = PART_W + 2 * SPRITE_PAD, PART_H + 2 * SPRITE_PAD
        img = Image.new("RGBA", (pw, ph), (0, 0, 0, 0))
        d = ImageDraw.Draw(img)
        x0, y0 = SPRITE_PAD, SPRITE_PAD
        d.rounded_rectangle([x0 + 4, y0 + 5, x0 + PART_W + 4, y0 + PART_H + 5], 5, fill=(0, 0, 0, 90))  # shadow
        d.rounded_rectangle([x0, y0, x0 + PART_W, y0 + PART_H], 5, fill=(176, 180, 186, 255))  # machined block
        d.rectangle([x0 + 2, y0 + 2, x0 + PART_W - 2, y0 + 6], fill=(205, 208, 214, 255))  # bevel highlight
        for hx in (x0 + 8, x0 + PART_W - 14):
            d.ellipse([hx, y0 + PART_H - 13, hx + 6, y0 + PART_H - 7], fill=(70, 72, 78, 255))  # mounting holes
        cx, cy = x0 + PART_W // 2, y0 + PART_H // 2
        if variant == "missing_component":
            d.ellipse([cx - 9, cy - 9, cx + 9, cy + 9], fill=(150, 152, 158, 255))  # empty seat, a shade darker
            d.ellipse([cx - 3, cy - 3, cx + 3, cy + 3], fill=(95, 96, 100, 255))
        else:
            d.ellipse([cx - 9, cy - 9, cx + 9, cy + 9], fill=(40, 60, 120, 255))  # the blue cap (component)
            d.ellipse([cx - 4, cy - 6, cx + 1, cy - 2], fill=(90, 120, 190, 255))
        if variant == "surface_defect":
            r = np.random.default_rng(variety)
            style = variety % 3
            if style == 0:  # scratch
                sx, sy = x0 + int(r.integers(4, 20)), y0 + int(r.integers(6, 30))
                d.line([(sx, sy), (sx + int(r.integers(14, 24)), sy + int(r.integers(-6, 7)))], fill=(110, 108, 104, 255), width=2)
            elif style == 1:  # dark stain / burn mark
                sx, sy = x0 + int(r.integers(30, 46)), y0 + int(r.integers(6, 26))
                d.ellipse([sx, sy, sx + 8, sy + 6], fill=(96, 84, 70, 255))
            else:  # dent: a highlight/shadow pair
                sx, sy = x0 + int(r.integers(6, 40)), y0 + int(r.integers(24, 30))
                d.arc([sx, sy, sx + 10, sy + 8], 180, 360, fill=(120, 122, 128, 255), width=2)
                d.arc([sx, sy + 1, sx + 10, sy + 9], 0, 180, fill=(215, 218, 222, 255), width=1)
        angle = (MISALIGNED_ANGLES[variety % len(MISALIGNED_ANGLES)] if variant == "misaligned_part"
                 else NORMAL_ANGLES[variety % len(NORMAL_ANGLES)])
        return img.rotate(angle, resample=Image.Resampling.BILINEAR)

    def _sprites(self, rng: np.random.Generator) -> dict[tuple[str, int, int], Image.Image]:
        out = {}
        for variant, n in VARIANTS.items():
            for v in range(n):
                img = self._part_image(variant, v, rng)
                for si, factor in enumerate(SHADES):
                    out[(variant, v, si)] = _shade(img, float(factor))
        return out

    # ── per frame ─────────────────────────────────────────────────────────────────────────────
    def render(self, belt_pos: float, parts: list[PartView], gain: float, rng: np.random.Generator,
               occlusion: float = 0.0, haze: float = 0.0) -> Image.Image:
        """The frame as an RGB image. `gain` folds lighting level and flicker; `occlusion` 0..1 is a
        smudged lens (a fault); `haze` 0..1 the dirt a lens gathers in normal service (a blend
        towards grey). All per-frame work runs in Pillow's C loops (paste, LUT, add, blend)."""
        frame = self.background.copy()
        off = int(belt_pos) % SLAT_PERIOD
        frame.paste(self.belt_strip.crop((SLAT_PERIOD - off, 0, SLAT_PERIOD - off + W, BELT_Y1 - BELT_Y0)), (0, BELT_Y0))
        for p in parts:
            self._paste(frame, p)
        # Lighting as a multiply with a flat colour (C loop); content is pre-brightened by GAIN_HEADROOM.
        colour = tuple(int(c) for c in np.clip(gain * self.tint * 255 / GAIN_HEADROOM, 0, 255))
        frame = ImageChops.multiply(frame, Image.new("RGB", (W, H), colour))
        noise = self.noise[int(rng.integers(len(self.noise)))]
        dy, dx = int(rng.integers(16)), int(rng.integers(16))
        frame = ImageChops.add(frame, noise.crop((dx, dy, dx + W, dy + H)), scale=1.0, offset=-NOISE_OFFSET)
        if haze > 0:
            frame = Image.blend(frame, Image.new("RGB", (W, H), (128, 128, 128)), float(haze))
        if occlusion > 0:
            frame = self._occlude(frame, occlusion)
        return frame

    def _paste(self, frame: Image.Image, p: PartView) -> None:
        sprite = self.sprites[(p.variant, p.variety % VARIANTS[p.variant], int(np.argmin(np.abs(SHADES - p.shade))))]
        sw, sh = sprite.size
        dy = ((p.variety * 7) % 7 - 3) + (14 if p.variant == "misaligned_part" and p.variety % 2 else 0)
        y0 = (BELT_Y0 + BELT_Y1) // 2 - sh // 2 + dy
        x0 = int(round(p.x)) - sw // 2
        if x0 >= W or x0 + sw <= 0:
            return
        frame.paste(sprite, (x0, y0), sprite)

    def _occlude(self, frame: Image.Image, severity: float) -> Image.Image:
        """A dirty or fogged lens: blur everywhere plus a soft grey smudge that grows."""
        level = int(round(severity * 10))  # masks are cached at 11 severity levels
        if level not in self._smudges:
            yy, xx = np.mgrid[0:H, 0:W]
            cx, cy = self.smudge_center
            r = 30 + 60 * level / 10
            a = np.clip(1.0 - np.hypot(xx - cx, (yy - cy) * 1.3) / r, 0, 1) * 0.85 * level / 10
            self._smudges[level] = Image.fromarray((a * 255).astype(np.uint8), "L")
        blurred = frame.filter(ImageFilter.GaussianBlur(radius=0.6 + 2.4 * level / 10))
        return Image.composite(Image.new("RGB", (W, H), (95, 95, 95)), blurred, self._smudges[level])

    def encode(self, img: Image.Image, quality: int = 82) -> bytes:
        if img.size != self.frame_size:
            img = img.resize(self.frame_size, Image.Resampling.BILINEAR)
        buf = io.BytesIO()
        img.save(buf, "JPEG", quality=quality)
        return buf.getvalue()
