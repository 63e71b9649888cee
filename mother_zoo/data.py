"""Procedural data for the zoo: images, token sequences and synthetic text, all generated on the fly.

Nothing is downloaded. Every sampler takes a :class:`torch.Generator` (or a NumPy generator for the
sequence tasks) so that a node's seed fixes its data exactly.

Images are 16x16 RGB pictures with independent factors (shape, colour, size, quadrant, background
stripe orientation, number of extra dots); a *task* picks which factor(s) form the label. Broad
"pre-training" tasks are joint labels over several factors; fine-tuning tasks are single factors,
possibly on a narrowed domain. :class:`ImageDomain` says which factor values occur (the
continued-pre-training split widens it generation by generation).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np
import torch

IMAGE_SIZE = 16

SHAPES: tuple[str, ...] = ("square", "circle", "diamond", "ring", "cross", "triangle")
# RGB in [-1, 1]; distinct enough that a colour task is learnable from a few pixels.
PALETTE: tuple[tuple[float, float, float], ...] = (
    (1.0, -0.8, -0.8),  # red
    (-0.8, 1.0, -0.8),  # green
    (-0.8, -0.8, 1.0),  # blue
    (1.0, 1.0, -0.8),  # yellow
    (1.0, -0.8, 1.0),  # magenta
    (-0.8, 1.0, 1.0),  # cyan
)
N_ORIENT = 4  # background stripes at 0, 45, 90, 135 degrees
N_QUADRANT = 4
N_SIZE = 3
N_COUNT = 4  # 0..3 extra white dots


@dataclass(frozen=True)
class ImageDomain:
    """Which factor values appear in the images (a narrower domain = narrower data).

    Attributes
    ----------
    shapes, colours : tuple of int
        Allowed indices into :data:`SHAPES` and :data:`PALETTE`.
    stripes : bool
        Whether the background carries oriented stripes (else plain grey).
    dots : bool
        Whether 0..3 extra white dots are drawn (else none).
    noise : float
        Standard deviation of the pixel noise.
    """

    shapes: tuple[int, ...] = tuple(range(len(SHAPES)))
    colours: tuple[int, ...] = tuple(range(len(PALETTE)))
    stripes: bool = True
    dots: bool = True
    noise: float = 0.1

    def describe(self) -> dict[str, object]:
        return {
            "shapes": [SHAPES[i] for i in self.shapes],
            "colours": list(self.colours),
            "stripes": self.stripes,
            "dots": self.dots,
            "noise": self.noise,
        }


FULL_DOMAIN = ImageDomain()


def render_images(
    n: int, gen: torch.Generator, domain: ImageDomain = FULL_DOMAIN
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Draw ``n`` random pictures and their factor labels.

    Parameters
    ----------
    n : int
        Batch size.
    gen : torch.Generator
        Source of randomness (fixes the batch exactly).
    domain : ImageDomain
        Allowed factor values.

    Returns
    -------
    images : Tensor, shape (n, 3, 16, 16)
        Pixel values roughly in [-1.3, 1.3].
    labels : dict of str to Tensor (n,)
        ``shape, colour, orient, quadrant, size, count`` (indices into the full factor ranges).
    """
    H = IMAGE_SIZE

    def pick(values: tuple[int, ...]) -> torch.Tensor:
        idx = torch.randint(len(values), (n,), generator=gen)
        return torch.tensor(values, dtype=torch.long)[idx]

    shape = pick(domain.shapes)
    colour = pick(domain.colours)
    orient = torch.randint(N_ORIENT, (n,), generator=gen)
    quadrant = torch.randint(N_QUADRANT, (n,), generator=gen)
    size = torch.randint(N_SIZE, (n,), generator=gen)
    count = torch.randint(N_COUNT, (n,), generator=gen) if domain.dots else torch.zeros(n, dtype=torch.long)

    ys, xs = torch.meshgrid(torch.arange(H, dtype=torch.float32), torch.arange(H, dtype=torch.float32), indexing="ij")
    jitter = torch.rand(n, 2, generator=gen) * 2 - 1
    cx = (quadrant % 2).float() * (H / 2) + H / 4 - 0.5 + jitter[:, 0]
    cy = (quadrant // 2).float() * (H / 2) + H / 4 - 0.5 + jitter[:, 1]
    r = 1.6 + size.float() * 0.9 + torch.rand(n, generator=gen) * 0.3
    dx = xs[None] - cx[:, None, None]  # (n, H, W)
    dy = ys[None] - cy[:, None, None]
    rr = r[:, None, None]
    ax, ay = dx.abs(), dy.abs()
    masks = torch.stack(
        [
            torch.maximum(ax, ay) <= rr,  # square
            dx**2 + dy**2 <= rr**2,  # circle
            ax + ay <= rr * 1.3,  # diamond
            ((dx**2 + dy**2).sqrt() - rr).abs() <= 0.8,  # ring
            ((ax <= 0.8) | (ay <= 0.8)) & (torch.maximum(ax, ay) <= rr),  # cross
            (dy >= -rr) & (dy <= rr) & (ax <= (dy + rr) / 2 + 0.3),  # triangle
        ],
        dim=1,
    )  # (n, S, H, W)
    mask = masks[torch.arange(n), shape].float()[:, None]  # (n, 1, H, W)

    if domain.stripes:
        theta = orient.float() * (math.pi / N_ORIENT)
        phase = torch.rand(n, generator=gen) * 2 * math.pi
        proj = xs[None] * theta.cos()[:, None, None] + ys[None] * theta.sin()[:, None, None]
        bg = 0.35 * torch.sin(2 * math.pi * proj / 4.0 + phase[:, None, None])
    else:
        bg = torch.zeros(n, H, H)
    bg = bg[:, None].expand(n, 3, H, H) - 0.2
    col = torch.tensor(PALETTE)[colour][:, :, None, None]  # (n, 3, 1, 1)
    img = bg * (1 - mask) + col * mask

    if domain.dots:
        pos = torch.randint(H - 1, (n, N_COUNT - 1, 2), generator=gen)
        for j in range(N_COUNT - 1):
            active = (count > j).float()[:, None, None]
            px, py = pos[:, j, 0][:, None, None], pos[:, j, 1][:, None, None]
            dot = (
                (xs[None] - px).ge(0) & (xs[None] - px).le(1) & (ys[None] - py).ge(0) & (ys[None] - py).le(1)
            ).float()
            dot = (dot * active)[:, None]
            img = img * (1 - dot) + 1.2 * dot
    img = img + domain.noise * torch.randn(img.shape, generator=gen)
    labels = {"shape": shape, "colour": colour, "orient": orient, "quadrant": quadrant, "size": size, "count": count}
    return img, labels


# Factor name -> number of classes.
FACTORS: dict[str, int] = {
    "shape": len(SHAPES),
    "colour": len(PALETTE),
    "orient": N_ORIENT,
    "quadrant": N_QUADRANT,
    "size": N_SIZE,
    "count": N_COUNT,
}


@dataclass(frozen=True)
class ImageTask:
    """A classification task on procedural images: the label is a joint index over ``factors``.

    Attributes
    ----------
    factors : tuple of str
        Factor names (keys of :data:`FACTORS`); several factors make a broad, many-class task.
    domain : ImageDomain
        The data distribution (a narrowed domain makes a narrower task).
    """

    factors: tuple[str, ...]
    domain: ImageDomain = field(default=FULL_DOMAIN)

    @property
    def name(self) -> str:
        return "+".join(self.factors)

    @property
    def num_classes(self) -> int:
        return int(np.prod([FACTORS[f] for f in self.factors]))

    def sample(self, n: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """A batch ``(images (n,3,16,16), labels (n,))``."""
        x, lab = render_images(n, gen, self.domain)
        y = torch.zeros(n, dtype=torch.long)
        for f in self.factors:
            y = y * FACTORS[f] + lab[f]
        return x, y

    def describe(self) -> dict[str, object]:
        return {
            "kind": "image-classification",
            "label": self.name,
            "classes": self.num_classes,
            "domain": self.domain.describe(),
        }


# Broad joint tasks for roots ("pre-training"), one per tree so roots differ like VTHR's backbones.
PRETRAIN_IMAGE_TASKS: tuple[tuple[str, ...], ...] = (
    ("shape", "colour"),
    ("shape", "orient"),
    ("colour", "quadrant", "size"),
    ("shape", "count"),
    ("shape", "quadrant"),
)
FINETUNE_FACTORS: tuple[str, ...] = tuple(FACTORS)


def narrowed(domain: ImageDomain, rng: np.random.Generator) -> ImageDomain:
    """A random sub-domain (fewer shapes/colours), for narrower fine-tuning data."""
    k_s = int(rng.integers(3, len(SHAPES) + 1))
    k_c = int(rng.integers(3, len(PALETTE) + 1))
    shapes = tuple(sorted(rng.choice(len(SHAPES), size=k_s, replace=False).tolist()))
    colours = tuple(sorted(rng.choice(len(PALETTE), size=k_c, replace=False).tolist()))
    return replace(domain, shapes=shapes, colours=colours)


def widened(domain: ImageDomain, rng: np.random.Generator) -> ImageDomain:
    """A strictly broader domain: adds shapes/colours and, maybe, stripes, dots and noise levels.

    Used by the continued-pre-training (generalization) regime: each generation sees broader data.
    """
    shapes, colours = set(domain.shapes), set(domain.colours)
    missing_s = [i for i in range(len(SHAPES)) if i not in shapes]
    missing_c = [i for i in range(len(PALETTE)) if i not in colours]
    if missing_s:
        shapes.update(rng.choice(missing_s, size=min(len(missing_s), int(rng.integers(1, 3))), replace=False).tolist())
    if missing_c:
        colours.update(rng.choice(missing_c, size=min(len(missing_c), int(rng.integers(1, 3))), replace=False).tolist())
    stripes = domain.stripes or bool(rng.random() < 0.6)
    dots = domain.dots or bool(rng.random() < 0.6)
    noise = float(min(0.3, domain.noise + rng.uniform(0.0, 0.08)))
    return ImageDomain(tuple(sorted(shapes)), tuple(sorted(colours)), stripes, dots, round(noise, 3))


NARROW_IMAGE_DOMAIN = ImageDomain(shapes=(0, 1), colours=(0, 2), stripes=False, dots=False, noise=0.05)


@dataclass(frozen=True)
class DenoiseTask:
    """Denoising (epsilon prediction) on procedural images of a domain, as diffusion UNets train."""

    domain: ImageDomain = field(default=FULL_DOMAIN)
    name: str = "denoise"

    def sample(self, n: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(noisy input scaled to unit variance (n,3,H,W), log sigma (n,), noise (n,3,H,W))``."""
        x0, _ = render_images(n, gen, self.domain)
        log_sigma = torch.empty(n).uniform_(math.log(0.05), math.log(2.0), generator=gen)
        sigma = log_sigma.exp()[:, None, None, None]
        eps = torch.randn(x0.shape, generator=gen)
        x = (x0 + sigma * eps) / (1 + sigma**2).sqrt()
        return x, log_sigma, eps

    def describe(self) -> dict[str, object]:
        return {"kind": "denoising", "domain": self.domain.describe()}


# ----------------------------------------------------------------------------------- token sequences
PAD, BOS, SEP, EOS = 0, 1, 2, 3
FIRST_SYMBOL = 4
DIGITS = tuple(range(FIRST_SYMBOL, FIRST_SYMBOL + 10))  # tokens used as digits 0..9
OPEN_CLOSE = ((FIRST_SYMBOL + 10, FIRST_SYMBOL + 11), (FIRST_SYMBOL + 12, FIRST_SYMBOL + 13))

SEQUENCE_TASKS: tuple[str, ...] = ("copy", "reverse", "sort", "add", "progression", "dyck", "repeat", "markov")


def _seq_one(task: str, rng: np.random.Generator, vocab: int, seq_len: int, task_seed: int) -> list[int]:
    """One training sequence of ``task`` (without padding)."""
    sym_lo = FIRST_SYMBOL + 14  # plain symbols after digits and brackets
    if task in ("copy", "reverse", "sort"):
        k = int(rng.integers(3, (seq_len - 3) // 2 + 1))
        x = rng.integers(sym_lo, vocab, size=k).tolist()
        y = x if task == "copy" else (x[::-1] if task == "reverse" else sorted(x))
        return [BOS, *x, SEP, *y, EOS]
    if task == "add":
        k = int(rng.integers(2, (seq_len - 4) // 3 + 1))
        a, b = rng.integers(0, 10, size=k), rng.integers(0, 10, size=k)
        s = (a + b) % 10  # digit-wise modular addition: learnable by a tiny model
        tok = lambda v: [DIGITS[int(d)] for d in v]  # noqa: E731
        return [BOS, *tok(a), SEP, *tok(b), SEP, *tok(s), EOS]
    if task == "progression":
        start, step = int(rng.integers(sym_lo, vocab)), int(rng.integers(1, 4))
        n = seq_len - 2
        span = vocab - sym_lo
        return [BOS, *[sym_lo + (start - sym_lo + i * step) % span for i in range(n)], EOS]
    if task == "dyck":
        out, stack = [BOS], []
        while len(out) < seq_len - 1 - len(stack):
            if stack and (rng.random() < 0.45 or len(out) + len(stack) >= seq_len - 2):
                out.append(OPEN_CLOSE[stack.pop()][1])
            else:
                t = int(rng.integers(2))
                stack.append(t)
                out.append(OPEN_CLOSE[t][0])
        while stack:
            out.append(OPEN_CLOSE[stack.pop()][1])
        return [*out, EOS][:seq_len]
    if task == "repeat":
        p = int(rng.integers(2, 6))
        pat = rng.integers(sym_lo, vocab, size=p).tolist()
        return [BOS, *(pat * seq_len)[: seq_len - 2], EOS]
    if task == "markov":
        # A fixed sparse random chain per task_seed: a narrow "grammar" distinct from every other seed's.
        trng = np.random.default_rng(task_seed)
        succ = trng.integers(sym_lo, vocab, size=(vocab, 2))
        t = int(rng.integers(sym_lo, vocab))
        out = [BOS, t]
        while len(out) < seq_len - 1:
            t = int(succ[t, int(rng.integers(2))])
            out.append(t)
        return [*out, EOS]
    raise ValueError(f"unknown sequence task {task!r}")


@dataclass(frozen=True)
class SequenceTask:
    """Next-token prediction on a mixture of procedural sequence tasks.

    Attributes
    ----------
    tasks : tuple of str
        Members of :data:`SEQUENCE_TASKS`, sampled uniformly per sequence (many = broad pre-training).
    vocab : int
        Vocabulary size of the model.
    seq_len : int
        Padded sequence length.
    task_seed : int
        Seeds the task's fixed structure (the ``markov`` grammar).
    """

    tasks: tuple[str, ...]
    vocab: int
    seq_len: int = 32
    task_seed: int = 0

    @property
    def name(self) -> str:
        return "mixture" if len(self.tasks) > 2 else "+".join(self.tasks)

    def sample(self, n: int, rng: np.random.Generator) -> torch.Tensor:
        """A batch of padded token ids, shape (n, seq_len)."""
        out = np.full((n, self.seq_len), PAD, dtype=np.int64)
        for i in range(n):
            task = self.tasks[int(rng.integers(len(self.tasks)))]
            seq = _seq_one(task, rng, self.vocab, self.seq_len, self.task_seed)[: self.seq_len]
            out[i, : len(seq)] = seq
        return torch.from_numpy(out)

    def describe(self) -> dict[str, object]:
        return {"kind": "next-token", "tasks": list(self.tasks), "seq_len": self.seq_len, "task_seed": self.task_seed}


# ---------------------------------------------------------------------------------- synthetic text
@dataclass(frozen=True)
class KeywordTextTask:
    """Text classification over a real vocabulary: each class owns a set of keyword tokens.

    A sequence is ``[CLS] filler... [SEP]`` with a few keywords of its class hidden among random filler
    tokens; the task seed fixes the keyword sets, so two tasks with different seeds are different tasks.
    """

    num_classes: int
    task_seed: int
    seq_len: int = 24
    vocab_lo: int = 1996  # first ordinary word piece in BERT's uncased vocabulary
    vocab_hi: int = 29612
    cls_id: int = 101
    sep_id: int = 102
    keywords_per_class: int = 12
    keywords_per_seq: int = 3

    @property
    def name(self) -> str:
        return f"keywords-{self.num_classes}way-{self.task_seed}"

    def _keywords(self) -> np.ndarray:
        trng = np.random.default_rng(self.task_seed)
        ids = trng.choice(
            np.arange(self.vocab_lo, self.vocab_hi), size=self.num_classes * self.keywords_per_class, replace=False
        )
        return ids.reshape(self.num_classes, self.keywords_per_class)

    def sample(self, n: int, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """``(token ids (n, seq_len), labels (n,))``."""
        kw = self._keywords()
        y = rng.integers(self.num_classes, size=n)
        ids = rng.integers(self.vocab_lo, self.vocab_hi, size=(n, self.seq_len))
        ids[:, 0], ids[:, -1] = self.cls_id, self.sep_id
        for i in range(n):
            pos = rng.choice(np.arange(1, self.seq_len - 1), size=self.keywords_per_seq, replace=False)
            ids[i, pos] = rng.choice(kw[y[i]], size=self.keywords_per_seq)
        return torch.from_numpy(ids.astype(np.int64)), torch.from_numpy(y.astype(np.int64))

    def describe(self) -> dict[str, object]:
        return {"kind": "text-classification", "label": self.name, "classes": self.num_classes}
