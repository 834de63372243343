"""Out-of-distribution refusal: is this a diagnostic medical image at all? Run by every pipeline, with or without
configured domains (``Pipeline.route`` / ``retrieve`` call :func:`check_image` first; the domain router's own content
check is the same function), before any retrieval, so that a blank frame, a thumbnail, noise, a natural photograph
or a page of text gets a clear :class:`~ragmed.errors.DomainError` instead of an answer.

Pixel statistics and, for grey images, OpenCV's shipped Haar face cascade (deterministic, tens of milliseconds; no
model of ragmed's own): see :func:`check_image` for the rules and
``eval/safety_ood.py`` for what they refuse and accept (``eval/results/safety_ood.json``).
"""
from __future__ import annotations

import math
import threading

import numpy as np

from ragmed.errors import DomainError

MIN_SIDE = 9  # an image of 8×8 pixels or fewer (either side) carries no diagnostic content

def content_features(image) -> np.ndarray:
    """Colour and intensity statistics the image encoder may not see (the classic descriptor is grey only):
    colourfulness, mean R/G/B, mean and spread of intensity, near-white and near-black fractions, aspect ratio."""
    px = np.asarray(image.pixels, dtype=np.float32)
    rgb = px if px.ndim == 3 else np.repeat(px[..., None], 3, axis=2)
    if rgb.shape[0] * rgb.shape[1] > 256 * 256:  # subsample big images: statistics only
        step = int(math.ceil(math.sqrt(rgb.shape[0] * rgb.shape[1] / (256 * 256))))
        rgb = rgb[::step, ::step]
    gray = rgb @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    sat = rgb.max(axis=2) - rgb.min(axis=2)
    h, w = image.pixels.shape[:2]
    return np.array([float(sat.mean()), float((sat > 0.1).mean()), *[float(rgb[..., c].mean()) for c in range(3)],
                     float(gray.mean()), float(gray.std()), float((gray > 0.9).mean()), float((gray < 0.05).mean()),
                     float(np.log(max(h, 1) / max(w, 1)))], dtype=np.float32)


def _gray_small(image, side: int = 256) -> np.ndarray:
    g = image.to_gray()
    step = max(1, int(math.ceil(max(g.shape) / side)))
    return g[::step, ::step]


def check_content(image, *, min_std: float = 0.01, min_autocorr: float = 0.2) -> None:
    """Refuse what is plainly not a diagnostic image, before any routing: a blank frame, random noise (neighbouring
    pixels uncorrelated), a text document (white page, dark strokes, no mid-tones, no colour) and a natural-colour
    photograph (a large share of saturated green / blue pixels, hues that radiology greys, H&E pinks, dermoscopy
    browns and fundus oranges do not have)."""
    g = image.to_gray()
    if float(np.std(g)) < min_std or float(g.max() - g.min()) < 0.02:
        raise DomainError("the image is a blank frame (no intensity variation); it fits no configured domain",
                          path=image.source, remedy="send the diagnostic image itself")
    gs = _gray_small(image, 512)
    f = content_features(image)
    sat_mean, white, mid = f[0], f[7], float(((gs > 0.2) & (gs < 0.8)).mean())
    if white > 0.6 and mid < 0.15 and sat_mean < 0.05:
        raise DomainError(f"the image looks like a text document ({white:.0%} white page, {mid:.0%} mid-tones); it "
                          "fits no configured domain", path=image.source, remedy="send the diagnostic image itself")
    a, b = gs[:, :-1].ravel() - gs.mean(), gs[:, 1:].ravel() - gs.mean()
    r = float((a * b).mean() / max(a.std() * b.std(), 1e-12))
    if r < min_autocorr:
        raise DomainError(f"the image looks like random noise (neighbouring-pixel correlation {r:.2f}); it fits no "
                          "configured domain", path=image.source, remedy="send the diagnostic image itself")
    if image.is_color:
        from PIL import Image  # PIL's HSV: a core dependency (matplotlib is only in the eval extra)

        px = np.asarray(image.pixels, dtype=np.float32)
        step = max(1, int(math.ceil(max(px.shape[:2]) / 256)))
        rgb = np.ascontiguousarray(np.clip(np.rint(px[::step, ::step] * 255), 0, 255).astype(np.uint8))
        hsv = np.asarray(Image.fromarray(rgb, mode="RGB").convert("HSV"), dtype=np.float32).reshape(-1, 3) / 255.0
        hue = hsv[:, 0] * 360
        colourful = (hsv[:, 1] > 0.3) & (hsv[:, 2] > 0.2)
        green_blue = colourful & (hue > 70) & (hue < 235)  # H&E purple ≈ 260–300°, pink ≈ 330°, skin ≈ 0–40°
        share = float(green_blue.mean())
        if share > 0.3:
            raise DomainError(f"the image looks like a natural-colour photograph ({share:.0%} saturated green/blue "
                              "pixels); it fits no configured domain", path=image.source,
                              remedy="send the diagnostic image itself")


check_not_blank = check_content  # the old name


def _structure(image) -> dict[str, float]:
    """Scale and texture statistics of the grey image (at most 256 px a side): ``coarse`` = spread of the 8×8 block
    means over the global spread (a body, an organ, a slide has large-scale structure; a texture, noise or a page
    of text has little), ``edge`` = mean gradient magnitude, ``std``, ``dark`` = share of near-black pixels."""
    gs = _gray_small(image, 256)
    h, w = gs.shape
    bh, bw = max(1, h // 8), max(1, w // 8)
    blocks = gs[: bh * 8, : bw * 8].reshape(8, bh, 8, bw).mean(axis=(1, 3)) if h >= 8 and w >= 8 else gs
    std = float(gs.std())
    grads = np.concatenate([np.abs(np.diff(gs, axis=1)).ravel(), np.abs(np.diff(gs, axis=0)).ravel()])
    return {"coarse": float(blocks.std() / max(std, 1e-6)), "edge": float(grads.mean()) if grads.size else 0.0,
            "std": std, "dark": float((gs < 0.05).mean())}


def _hue_mix(image) -> tuple[float, float, float]:
    """(share of colourful pixels, share of them with a warm hue (< 60° or ≥ 345°), share with a blue hue
    (180–260°)) of a colour image at most 256 px a side."""
    from PIL import Image

    px = np.asarray(image.pixels, dtype=np.float32)
    step = max(1, int(math.ceil(max(px.shape[:2]) / 256)))
    rgb = np.ascontiguousarray(np.clip(np.rint(px[::step, ::step] * 255), 0, 255).astype(np.uint8))
    hsv = np.asarray(Image.fromarray(rgb, mode="RGB").convert("HSV"), dtype=np.float32).reshape(-1, 3) / 255.0
    colourful = (hsv[:, 1] > 0.25) & (hsv[:, 2] > 0.15)
    if not colourful.any():
        return 0.0, 0.0, 0.0
    hue = hsv[colourful, 0] * 360
    return float(colourful.mean()), float(((hue < 60) | (hue >= 345)).mean()), float(((hue >= 180) & (hue < 260)).mean())


def _warm_photo(image, s: dict[str, float]) -> float:
    """Share of colourful pixels with a warm hue (red, orange, brown, yellow: < 90°) when the colour image also has
    the sharp detail of a photograph and no dark frame; 0 otherwise."""
    from PIL import Image

    px = np.asarray(image.pixels, dtype=np.float32)
    step = max(1, int(math.ceil(max(px.shape[:2]) / 256)))
    rgb = np.ascontiguousarray(np.clip(np.rint(px[::step, ::step] * 255), 0, 255).astype(np.uint8))
    hsv = np.asarray(Image.fromarray(rgb, mode="RGB").convert("HSV"), dtype=np.float32).reshape(-1, 3) / 255.0
    colourful = (hsv[:, 1] > 0.25) & (hsv[:, 2] > 0.15)
    if colourful.mean() < 0.2:
        return 0.0
    return float(((hsv[:, 0] * 360) < 90)[colourful].mean())


def _ink_on_paper(image) -> dict[str, float]:
    """Statistics of writing on paper (grey image, at most 256 px a side): the *paper* is the image after a 7×7 grey
    closing (thin dark strokes filled in); ``ink`` = share of pixels more than 0.12 darker than that paper,
    ``rough`` = mean deviation of the paper from its 15×15 local mean where the image is paper (within 0.04), i.e.
    how smooth the background is, ``dark`` = share of near-black pixels. A printed or handwritten page, photographed
    or scanned, is smooth paper (rough ≈ 0.01) carrying 5–30 % ink and no black; anatomy is not smooth at that
    scale and radiological images have their black surround."""
    from scipy import ndimage as ndi

    g = _gray_small(image, 256).astype(np.float32)
    paper = ndi.grey_closing(g, size=(7, 7))
    d = paper - g
    flat = np.abs(d) < 0.04
    rough = float(np.abs(paper - ndi.uniform_filter(paper, 15))[flat].mean()) if flat.any() else 1.0
    return {"ink": float((d > 0.12).mean()), "rough": rough, "dark": float((g < 0.05).mean())}


# Set on medical images only (``python eval/safety_ood.py --calibrate`` → eval/results/safety_ood_calibration.json):
# each is above the largest value any grey medical image of the calibration sample reaches.
MAX_TOP_BRIGHT_SMOOTH = 0.66
MIN_FACE_NEIGHBOURS = 12
_CASCADE = threading.local()  # one classifier per thread: OpenCV's CascadeClassifier is not safe to share


def top_bright_smooth(image) -> float:
    """Share of the top eighth of the grey image (at most 256 px a side) that is bright (> 0.5) and smooth (9×9 local
    standard deviation < 0.02): a sky or a lit wall above a photographed scene. In a radiograph, CT or MR image empty
    space is dark (air), so this band is bone or soft tissue, textured, or a dark surround."""
    from scipy import ndimage as ndi

    g = _gray_small(image, 256).astype(np.float32)
    m = ndi.uniform_filter(g, 9)
    sd = np.sqrt(np.maximum(ndi.uniform_filter(g * g, 9) - m * m, 0.0))
    top = slice(0, max(1, g.shape[0] // 8))
    return float(((sd[top] < 0.02) & (g[top] > 0.5)).mean())


def face_neighbours(image) -> int:
    """The strongest frontal-face detection in the grey image (longest side scaled to 256 px): the number of
    overlapping detections OpenCV's shipped Haar cascade (``haarcascade_frontalface_alt2.xml``, opencv-python-headless)
    merges into it, 0 when none. A grey photograph of a person is not a radiograph."""
    try:
        import cv2  # opencv-python-headless (a core dependency): its wheel ships the Haar cascades
    except ImportError as e:  # a safety check is never skipped silently
        raise ImportError("ragmed's image check needs opencv-python-headless<5 (a core dependency: "
                          "pip install 'opencv-python-headless>=4.8,<5')") from e

    cascade = getattr(_CASCADE, "face", None)
    if cascade is None:
        cascade = _CASCADE.face = cv2.CascadeClassifier(cv2.data.haarcascades + "haarcascade_frontalface_alt2.xml")
        if cascade.empty():
            raise RuntimeError("OpenCV's haarcascade_frontalface_alt2.xml did not load (opencv-python-headless<5)")
    g8 = np.clip(np.rint(image.to_gray() * 255), 0, 255).astype(np.uint8)
    h, w = g8.shape
    s = 256 / max(h, w)
    g8 = cv2.resize(g8, (max(1, round(w * s)), max(1, round(h * s))),
                    interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR)
    _, counts = cascade.detectMultiScale2(g8, scaleFactor=1.1, minNeighbors=1, minSize=(24, 24))
    return int(max(np.ravel(counts), default=0))


def check_image(image, *, min_side: int = MIN_SIDE) -> None:
    """Refuse, with a :class:`~ragmed.errors.DomainError` naming the reason, what is not a diagnostic medical image:

    1. an image smaller than ``min_side`` pixels on a side (8×8 or fewer: a thumbnail, an icon);
    2. :func:`check_content`: a blank frame, random noise, a white page of text, a green/blue natural photograph;
    2b. writing on paper (:func:`_ink_on_paper`, grey images): a smooth background (rough < 0.015) carrying more than
       5 % ink strokes and under 2 % near-black, e.g. a scanned or photographed page, handwriting on a sheet;
    3. no large-scale structure (8×8 block means spread < 0.2 of the pixels' spread): a texture (brick, grass,
       gravel), a star field, a page of text; every body, organ, slide or smear has large-scale structure;
    3b. a grey picture with weak large-scale structure (block spread < 0.5) and no dark surround (< 6 % near-black):
       objects or a texture spread evenly over a plain background (coins on a table); the grey medical images that
       lack a dark surround (radiographs, MedMNIST) have block spreads above 0.65;
    4. a flat, low-contrast grey picture with no dark background (spread < 0.09, mean gradient < 0.012, < 5 %
       near-black: the moon, a wall clock; an ultrasound frame has its dark fan surround);
    5. a warm-coloured photograph: colour with sharp detail (mean gradient > 0.03), no dark frame (< 30 % near-black)
       and ≥ 50 % of its colourful pixels red, orange, brown or yellow (a cat, a cup of coffee, a portrait); a
       dermoscopy image is smooth (gradient ≤ 0.02), a DICOM VL photograph has its dark frame, H&E is purple;
    6. a colour photograph mixing warm and blue hues in sharp detail (mean gradient > 0.03, ≥ 30 % colourful pixels,
       ≥ 20 % of them warm and ≥ 20 % blue: a portrait in a blue uniform, a street); a blood smear mixes those hues
       too but is smooth and mostly pale (≤ 13 % colourful, gradient ≤ 0.012).

    7. a grey photograph: a bright, smooth band along the top (sky, a lit wall: :func:`top_bright_smooth` >
       ``MAX_TOP_BRIGHT_SMOOTH``), or a human face (:func:`face_neighbours` ≥ ``MIN_FACE_NEIGHBOURS``); both
       thresholds lie above every grey medical image of a calibration sample of the shared data, set on those
       medical images alone (``eval/safety_ood.py --calibrate``), never on photographs.

    The thresholds were set on the shared medical images (VQA-RAD, NEMA DICOM, dermoscopy, lung ultrasound,
    histopathology, brain MRI, blood smears, MedMNIST) and the photographs bundled with scikit-image, scikit-learn
    and matplotlib; ``eval/safety_ood.py`` measures both sides (``eval/results/safety_ood.json``).
    """
    h, w = image.pixels.shape[:2]
    if h < min_side or w < min_side:
        raise DomainError(f"the image is {w}×{h} pixels, too small to be a diagnostic image (at least {min_side}×"
                          f"{min_side})", path=image.source, remedy="send the diagnostic image itself")
    check_content(image)
    if not image.is_color:
        ink = _ink_on_paper(image)
        if ink["rough"] < 0.015 and ink["ink"] > 0.05 and ink["dark"] < 0.02:
            raise DomainError(f"the image looks like writing on paper (smooth background, {ink['ink']:.0%} ink "
                              "strokes), not a medical image", path=image.source,
                              remedy="send the diagnostic image itself")
    s = _structure(image)
    if s["coarse"] < 0.2:
        raise DomainError(f"the image has no large-scale structure (block spread {s['coarse']:.2f}): it looks like a "
                          "texture, a star field or a page of text, not a medical image", path=image.source,
                          remedy="send the diagnostic image itself")
    if not image.is_color and s["dark"] < 0.06 and s["coarse"] < 0.5:
        raise DomainError(f"the image has weak large-scale structure (block spread {s['coarse']:.2f}) and no dark "
                          "surround: objects or texture spread evenly over a plain background, not a medical image",
                          path=image.source, remedy="send the diagnostic image itself")
    if not image.is_color and s["std"] < 0.09 and s["edge"] < 0.012 and s["dark"] < 0.05:
        raise DomainError(f"the image is a flat, low-contrast picture (spread {s['std']:.2f}, gradient "
                          f"{s['edge']:.3f}), not a medical image", path=image.source,
                          remedy="send the diagnostic image itself")
    if not image.is_color:
        top = top_bright_smooth(image)
        if top > MAX_TOP_BRIGHT_SMOOTH:
            raise DomainError(f"the image looks like a photograph: a bright, smooth band along its top ({top:.0%}, a sky "
                              "or a lit wall), where a radiograph, CT or MR image has dark air or tissue; not a "
                              "medical image", path=image.source, remedy="send the diagnostic image itself")
        faces = face_neighbours(image)
        if faces >= MIN_FACE_NEIGHBOURS:
            raise DomainError("the image shows a human face: a photograph of a person, not a radiograph or other "
                              "medical image", path=image.source, remedy="send the diagnostic image itself")
    if image.is_color and s["edge"] > 0.03:
        colourful, warm_share, blue_share = _hue_mix(image)
        if colourful >= 0.3 and warm_share >= 0.2 and blue_share >= 0.2:
            raise DomainError(f"the image looks like a photograph (sharp detail in both warm and blue colours: "
                              f"{warm_share:.0%} / {blue_share:.0%} of its colourful pixels), not a medical image",
                              path=image.source, remedy="send the diagnostic image itself")
    if image.is_color and s["edge"] > 0.03 and s["dark"] < 0.3:
        warm = _warm_photo(image, s)
        if warm >= 0.5:
            raise DomainError(f"the image looks like a photograph (sharp detail, {warm:.0%} of its colour red, "
                              "orange or brown, no dark frame), not a medical image", path=image.source,
                              remedy="send the diagnostic image itself")


__all__ = ["check_image", "check_content", "content_features", "top_bright_smooth", "face_neighbours", "MIN_SIDE",
           "MAX_TOP_BRIGHT_SMOOTH", "MIN_FACE_NEIGHBOURS"]
