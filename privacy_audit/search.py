"""Nearest training images: blockwise top-k on unit embeddings (a matmul per block), best image
per training patient, then a pixel-level check: normalised cross-correlation after alignment
(best over small shifts, horizontal mirror and a few crop scales), via FFT."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def topk_by_patient(
    queries: torch.Tensor,
    references: torch.Tensor,
    groups: np.ndarray,
    k: int,
    block: int = 2048,
    progress: bool = False,
    desc: str = "search",
    views: int = 1,
) -> tuple[np.ndarray, np.ndarray]:
    """For each query: the k most similar references (cosine), at most one per group (patient).
    `views` > 1: `references` holds that many stacked views (V*N rows, view-major) of N images
    whose similarity is their best view's; `groups` is then per image (N).

    Returns (index (Q, k) into the N images, cosine (Q, k)); -1 / -inf pad when fewer groups.
    """
    from tqdm import tqdm

    n_groups = len(np.unique(groups))
    k_eff = min(k, n_groups)
    n_images = len(references) // views
    wide = min(n_images, max(4 * k, k + 16))
    group_t = torch.as_tensor(groups)
    out_idx = np.full((len(queries), k), -1, dtype=np.int64)
    out_sim = np.full((len(queries), k), -np.inf, dtype=np.float32)
    for start in tqdm(range(0, len(queries), block), desc=desc, disable=not progress):
        sims = _best_view(queries[start : start + block], references, views, n_images)
        while True:
            top_sim, top_idx = sims.topk(wide, dim=1)
            g = group_t[top_idx]  # (B, wide)
            earlier = torch.ones(wide, wide, dtype=torch.bool).tril(-1)  # [j, i]: i before j
            first = ~((g[:, :, None] == g[:, None, :]) & earlier).any(-1)  # best of its patient
            rank = first.cumsum(1)
            if bool((rank[:, -1] < k_eff).any()) and wide < n_images:
                wide = min(n_images, wide * 4)  # a patient with many near images
                continue
            take = first & (rank <= k_eff)
            pos = torch.argsort((~take).to(torch.uint8), dim=1, stable=True)[:, :k_eff]
            rows = slice(start, start + len(top_idx))
            out_idx[rows, :k_eff] = top_idx.gather(1, pos).numpy()
            out_sim[rows, :k_eff] = top_sim.gather(1, pos).numpy()
            break
    return out_idx, out_sim


def _best_view(
    queries: torch.Tensor, references: torch.Tensor, views: int, n_images: int
) -> torch.Tensor:
    """(B, N) cosine with each image's best view: tiles of 256 queries x 512 images, every view
    of a tile kept by an in-place maximum (the (B, V*N) product is never held: at 19 views
    writing and reducing it cost more than computing it), the tile's views laid out together so
    they stay in cache across query tiles."""
    if views == 1:
        return queries @ references.T
    by_view = references.view(views, n_images, -1).transpose(1, 2)  # (V, dim, N)
    out = torch.empty(len(queries), n_images, dtype=queries.dtype)
    for col in range(0, n_images, 512):
        tile = by_view[..., col : col + 512].contiguous()
        for start in range(0, len(queries), 256):
            part = queries[start : start + 256]
            sims = part @ tile[0]
            for v in range(1, views):
                torch.maximum(sims, part @ tile[v], out=sims)
            out[start : start + 256, col : col + 512] = sims
    return out


def _zoom(x: torch.Tensor, fraction: float) -> torch.Tensor:
    """Centre crop of side `fraction` resized back to full size (what crop+resize does)."""
    if fraction >= 1.0:
        return x
    h, w = x.shape[-2:]
    ch, cw = max(2, round(h * fraction)), max(2, round(w * fraction))
    top, left = (h - ch) // 2, (w - cw) // 2
    crop = x[..., top : top + ch, left : left + cw]
    return F.interpolate(crop, size=(h, w), mode="bilinear", align_corners=False)


def _fft_size(n: int, parity: int) -> int:
    """The smallest m >= n with m = parity (mod 2) whose only prime factors are 2, 3 and 5:
    FFTs of such sizes are fast (a 38-point FFT, 2 x 19, is several times slower than 40)."""
    m = n
    while True:
        if m % 2 == parity % 2:
            k = m
            for p in (2, 3, 5):
                while k % p == 0:
                    k //= p
            if k == 1:
                return m
        m += 1


class AlignedNCC:
    """Best normalised cross-correlation of a query with a reference image over shifts up to
    `max_shift` px, horizontal mirror and crop scales of the reference.

    The query's central (S-2s)x(S-2s) patch is slid over each reference variant, edge-padded by
    `pad` px (by default: at least s, up to a fast FFT size) so shifts of up to s+pad px are
    searched without shrinking the patch; NCC over the
    overlap ignores brightness and contrast changes. Everything about the references (variant
    spectra and the window norms the normalisation needs) is computed once, so a query-candidate
    pair costs one inverse FFT per variant.
    """

    def __init__(
        self,
        references: np.ndarray | torch.Tensor,
        max_shift: int,
        crops: tuple[float, ...] = (1.0, 0.93, 0.86, 0.8),
        mirror: bool = True,
        pad: int | None = None,
        block: int = 512,
    ):
        refs = torch.as_tensor(references, dtype=torch.float32)
        _, h, w = refs.shape
        self.s = max_shift
        if pad is None:
            pad = (_fft_size(max(h, w) + 2 * max_shift, max(h, w)) - max(h, w)) // 2
        self.pad = pad
        self.variants = [
            (fraction, flipped)
            for fraction in crops
            for flipped in ((False, True) if mirror else (False,))
        ]
        self.m_h, self.m_w = h - 2 * max_shift, w - 2 * max_shift
        if self.m_h < 2 or self.m_w < 2:
            raise ValueError(f"images of {h}x{w} are too small for shifts of {max_shift}")
        self.h, self.w = h + 2 * self.pad, w + 2 * self.pad  # the FFT grid
        box = torch.zeros(self.h, self.w)
        box[: self.m_h, : self.m_w] = 1.0
        box_fft = torch.fft.rfft2(box).conj()
        lags = self.lags
        spectra, norms = [], []
        for i in range(0, len(refs), block):
            base = refs[i : i + block, None]
            variants = []
            for fraction in crops:
                zoomed = _zoom(base, fraction)
                variants += [zoomed, zoomed.flip(-1)] if mirror else [zoomed]
            cand = torch.cat(variants, 1)
            cand = cand - cand.mean((2, 3), keepdim=True)  # NCC ignores offsets; small sums
            if self.pad:
                p = self.pad
                cand = F.pad(cand, (p, p, p, p), mode="replicate")
            c_fft = torch.fft.rfft2(cand)
            sums = torch.fft.irfft2(
                torch.stack([box_fft * c_fft, box_fft * torch.fft.rfft2(cand * cand)]),
                s=(self.h, self.w),
            )[..., :lags, :lags]
            var = (sums[1] - sums[0] ** 2 / (self.m_h * self.m_w)).clamp(min=0)
            spectra.append(c_fft)
            norms.append(var.sqrt().clamp(min=1e-6))
        self.spectra = torch.cat(spectra)  # (N, V, h, w//2+1)
        self.norms = torch.cat(norms)  # (N, V, lags, lags)

    @property
    def lags(self) -> int:
        return 2 * (self.s + self.pad) + 1

    def query_spectra(self, queries: np.ndarray | torch.Tensor):
        q = torch.as_tensor(queries, dtype=torch.float32)
        s = self.s
        patch = q[:, s : s + self.m_h, s : s + self.m_w]
        patch = patch - patch.mean((1, 2), keepdim=True)
        norm = patch.flatten(1).norm(dim=1).clamp(min=1e-8)
        padded = F.pad(patch, (0, self.w - self.m_w, 0, self.h - self.m_h))
        return torch.fft.rfft2(padded).conj(), norm

    def pairs(self, q_fft, q_norm, ref_index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """NCC of query i (q_fft[i]) with reference ref_index[i], for every i, and which
        variant (index into `variants`) gave it."""
        lags = self.lags
        corr = torch.fft.irfft2(q_fft[:, None] * self.spectra[ref_index], s=(self.h, self.w))
        ncc = corr[..., :lags, :lags] / (q_norm[:, None, None, None] * self.norms[ref_index])
        best, variant = ncc.flatten(2).amax(2).max(1)
        return best.clamp(-1, 1), variant

    def score(
        self,
        queries: np.ndarray,
        index: np.ndarray,
        block: int = 64,
        progress: bool = False,
        desc: str = "align",
    ) -> tuple[np.ndarray, np.ndarray]:
        """(Q, k) NCC of each query with each of its candidates `index` (-1: -inf), and the
        (Q, k) index of the variant that matched best."""
        from tqdm import tqdm

        out = np.full(index.shape, -np.inf, dtype=np.float32)
        which = np.zeros(index.shape, dtype=np.int64)
        for start in tqdm(range(0, len(index), block), desc=desc, disable=not progress):
            idx = index[start : start + block]
            rows, cols = np.nonzero(idx >= 0)
            if len(rows) == 0:
                continue
            q_fft, q_norm = self.query_spectra(queries[start : start + block])
            r = torch.as_tensor(rows)
            values, variant = self.pairs(q_fft[r], q_norm[r], torch.as_tensor(idx[rows, cols]))
            out[start + rows, cols] = values.numpy()
            which[start + rows, cols] = variant.numpy()
        return out, which


def aligned_ncc(
    queries: torch.Tensor, candidates: torch.Tensor, max_shift: int = 6, **kwargs
) -> torch.Tensor:
    """Aligned NCC of each query (B, H, W) with its own candidate (B, H, W): see AlignedNCC."""
    index = AlignedNCC(candidates, max_shift, **kwargs)
    q_fft, q_norm = index.query_spectra(queries)
    return index.pairs(q_fft, q_norm, torch.arange(len(candidates)))[0]
