"""Action-conditioned latent dynamics: a block-causal transformer over frames of latent tokens.

Frame t's latent grid (latent, g, g) is cut into (g/p)^2 patch tokens; each token gets a spatial
and a time embedding plus the embedding of action t (the action taken *after* frame t; a learned
"no action" vector where the action is unknown or dropped).  Tokens attend to every token of the
same and earlier frames (block-causal), and each output token predicts the matching patch of frame
t + 1's latent grid.  The output tokens before the prediction head (:meth:`Dynamics.context`) are
the contextual features of each frame.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["Dynamics"]


class Dynamics(nn.Module):
    def __init__(self, latent: int, grid: int, patch: int, dim: int, depth: int, heads: int, window: int,
                 action_dim: int = 7):
        super().__init__()
        self.latent, self.grid, self.patch, self.window = latent, grid, patch, window
        self.tokens = (grid // patch) ** 2
        pd = latent * patch * patch
        self.inp = nn.Linear(pd, dim)
        self.pos = nn.Parameter(torch.randn(self.tokens, dim) * 0.02)
        self.time = nn.Parameter(torch.randn(window, dim) * 0.02)
        self.act = nn.Sequential(nn.Linear(action_dim, dim), nn.GELU(), nn.Linear(dim, dim))
        self.null_action = nn.Parameter(torch.zeros(dim))
        layer = nn.TransformerEncoderLayer(dim, heads, 4 * dim, dropout=0.0, activation="gelu",
                                           batch_first=True, norm_first=True)
        self.blocks = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(dim)
        self.out = nn.Linear(dim, pd)
        self.dim = dim

    def _patchify(self, z: torch.Tensor) -> torch.Tensor:  # (B, T, C, g, g) -> (B, T, N, C*p*p)
        b, t, c, g, _ = z.shape
        p, n = self.patch, g // self.patch
        return z.reshape(b, t, c, n, p, n, p).permute(0, 1, 3, 5, 2, 4, 6).reshape(b, t, n * n, c * p * p)

    def _unpatchify(self, x: torch.Tensor) -> torch.Tensor:
        b, t, _, _ = x.shape
        p, n, c = self.patch, self.grid // self.patch, self.latent
        return x.reshape(b, t, n, n, c, p, p).permute(0, 1, 4, 2, 5, 3, 6).reshape(b, t, c, n * p, n * p)

    def _mask(self, t: int, device) -> torch.Tensor:
        frame = torch.arange(t, device=device).repeat_interleave(self.tokens)
        return frame[None, :] > frame[:, None]  # True = blocked (a later frame)

    def context(self, z: torch.Tensor, actions: torch.Tensor | None, drop: torch.Tensor | None = None):
        """Output tokens (B, T, N, dim) for latents z (B, T, C, g, g) and actions (B, T, 7) or None
        (all "no action"); ``drop`` (B, T) bool marks actions replaced by "no action"."""
        b, t = z.shape[:2]
        if t > self.window:
            raise ValueError(f"at most {self.window} frames, got {t}")
        h = self.inp(self._patchify(z)) + self.pos + self.time[:t, None]
        if actions is None:
            a = self.null_action.expand(b, t, -1)
        else:
            a = self.act(actions.float())
            if drop is not None:
                a = torch.where(drop[..., None], self.null_action.to(a.dtype), a)
        h = (h + a[:, :, None]).reshape(b, t * self.tokens, -1)
        h = self.blocks(h, mask=self._mask(t, z.device))
        return self.norm(h).reshape(b, t, self.tokens, -1)

    def forward(self, z: torch.Tensor, actions: torch.Tensor | None, drop: torch.Tensor | None = None):
        """Predicted next latents (B, T, C, g, g): entry t predicts frame t + 1."""
        return self._unpatchify(self.out(self.context(z, actions, drop)))

    def open_loop(self, z: torch.Tensor, actions: torch.Tensor | None, drop=None, passes: int = 2) -> list:
        """Predictions of ``passes`` passes (each (B, T, C, g, g), entry t predicting frame t + 1):
        pass 1 is teacher-forced on ``z``; pass j + 1 is fed frame 0 and pass j's predictions, so its
        entries t >= j are j + 1-step open-loop predictions (gradients flow through every pass)."""
        preds = [self(z, actions, drop)]
        for _ in range(1, min(passes, z.shape[1] - 1)):
            preds.append(self(torch.cat([z[:, :1], preds[-1][:, :-1]], 1), actions, drop))
        return preds
