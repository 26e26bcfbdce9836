"""rq-VAE semantic IDs (TIGER, Rajput et al. 2023): an MLP autoencoder whose latent is residual-quantised.

The encoder maps an embedding to a small latent; level t picks the codebook vector nearest (L2) to the residual
left by levels 1..t-1, and the decoder reconstructs the embedding from the sum of the picked vectors. Training
loss = reconstruction MSE + sum over levels of ||sg(r_t) - e_t||^2 + beta * ||r_t - sg(e_t)||^2, with the
straight-through estimator carrying the reconstruction gradient past the non-differentiable code choice.

Decisions a caller should know:
- Codebook initialisation: before training, a seeded sample of up to `kmeans_init_points` documents is encoded by
  the freshly initialised encoder and each level's codebook is set by faiss k-means on that level's residuals
  (RQ-KMeans in latent space). A sample rather than the first batch, so every code starts on real data.
- Dead codes: a code no training document picked during an epoch is re-seeded at the epoch's end with a residual
  of that level drawn from the epoch's last batch (not after the final epoch: nothing would train it).
- Codes returned by `fit` come from a final pass in eval mode over the training vectors, the same function
  `assign` runs, so `fit(x) == assign(x)` exactly; codes are not those of the last training batch.
- Same seed, same device, same thread count -> same codes (model init, shuffling and re-seeding use generators
  seeded from `seed`; the global torch RNG is left untouched). CPU and CUDA results may differ.
"""

from __future__ import annotations

import logging

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from ..indexer.kmeans import kmeans_codebook
from .quantizer import Quantizer, nearest_l2, register_quantizer

logger = logging.getLogger(__name__)

INFERENCE_BATCH = 8192


def _mlp(widths: list[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for index, (width_in, width_out) in enumerate(zip(widths, widths[1:])):
        layers.append(nn.Linear(width_in, width_out))
        if index < len(widths) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


class ResidualQuantizedAutoencoder(nn.Module):
    """Encoder, mirrored decoder and one latent-space codebook per ID position."""

    def __init__(self, dim: int, hidden_dims: list[int], latent_dim: int, codebook_sizes: list[int]):
        super().__init__()
        self.encoder = _mlp([dim, *hidden_dims, latent_dim])
        self.decoder = _mlp([latent_dim, *reversed(hidden_dims), dim])
        self.codebooks = nn.ParameterList([nn.Parameter(torch.zeros(size, latent_dim)) for size in codebook_sizes])

    @staticmethod
    def nearest(residual: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
        distances = residual.pow(2).sum(1, keepdim=True) - 2 * residual @ codebook.T + codebook.pow(2).sum(1)
        return distances.argmin(dim=1)

    def codes(self, vectors: torch.Tensor) -> torch.Tensor:
        residual = self.encoder(vectors)
        codes = []
        for codebook in self.codebooks:
            code = self.nearest(residual, codebook)
            codes.append(code)
            residual = residual - codebook[code]
        return torch.stack(codes, dim=1)


@register_quantizer("rqvae")
class RQVAEQuantizer(Quantizer):
    """Settings (defaults): `hidden_dims` [512, 256, 128], `latent_dim` 32, `epochs` 50, `batch_size` 256,
    `learning_rate` 1e-3 (AdamW), `weight_decay` 0.0, `beta` 0.25 (commitment weight), `kmeans_init_points` 8192,
    `kmeans_niter` 25, `reseed_dead_codes` True, `device` None (CUDA when available, else CPU)."""

    default_settings = {
        "hidden_dims": [512, 256, 128],
        "latent_dim": 32,
        "epochs": 50,
        "batch_size": 256,
        "learning_rate": 1e-3,
        "weight_decay": 0.0,
        "beta": 0.25,
        "kmeans_init_points": 8192,
        "kmeans_niter": 25,
        "reseed_dead_codes": True,
        "device": None,
    }

    def __init__(self, id_length, codebook_sizes, seed=0, progress=False, **settings):
        if "hidden_dims" in settings:
            settings["hidden_dims"] = [int(width) for width in settings["hidden_dims"]]
        super().__init__(id_length, codebook_sizes, seed=seed, progress=progress, **settings)
        too_small = [
            name
            for name, lowest in (("latent_dim", 1), ("batch_size", 1), ("epochs", 0))
            if self.settings[name] < lowest
        ]
        if too_small:
            raise ValueError(
                f"rqvae settings {too_small} must be >= 1 (epochs >= 0), got "
                f"{[self.settings[name] for name in too_small]}."
            )
        self.history: list[dict] = []

    def _device(self, training: bool) -> torch.device:
        requested = self.settings["device"]
        if requested is None:
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        device = torch.device(requested)
        if device.type == "cuda" and not torch.cuda.is_available():
            if training:
                raise ValueError(f"rqvae device is {requested!r} but CUDA is not available here.")
            logger.warning("rqvae was trained on %s; CUDA is unavailable, assigning codes on CPU.", requested)
            return torch.device("cpu")
        return device

    def _build_model(self) -> ResidualQuantizedAutoencoder:
        with torch.random.fork_rng(devices=[]):
            torch.default_generator.manual_seed(self.seed)
            return ResidualQuantizedAutoencoder(
                self.dim, self.settings["hidden_dims"], self.settings["latent_dim"], self.codebook_sizes
            )

    @torch.no_grad()
    def _initialise_codebooks(self, data: torch.Tensor) -> None:
        """Residual k-means on the initial encoder's latents of a seeded document sample."""
        count = min(len(data), max(self.settings["kmeans_init_points"], max(self.codebook_sizes)))
        sample = np.sort(np.random.default_rng(self.seed).choice(len(data), size=count, replace=False))
        residual = self.model.encoder(data[torch.from_numpy(sample).to(data.device)]).cpu().numpy()
        for level, codebook in enumerate(self.model.codebooks):
            centroids = kmeans_codebook(
                residual, len(codebook), "l2", seed=self._rng_seed(level), iterations=self.settings["kmeans_niter"]
            )
            codebook.copy_(torch.from_numpy(centroids))
            residual = residual - centroids[nearest_l2(centroids, residual)]

    def _fit(self, vectors: np.ndarray) -> np.ndarray:
        device = self._device(training=True)
        self.model = self._build_model().to(device)
        data = torch.from_numpy(vectors).to(device)
        self._initialise_codebooks(data)
        optimizer = torch.optim.AdamW(
            self.model.parameters(), lr=self.settings["learning_rate"], weight_decay=self.settings["weight_decay"]
        )
        generator = torch.Generator().manual_seed(self.seed)
        beta, batch_size, epochs = self.settings["beta"], self.settings["batch_size"], self.settings["epochs"]
        self.history = []
        self.model.train()
        for epoch in tqdm(range(epochs), desc="rq-VAE epochs", disable=not self.progress, leave=False):
            usage = [torch.zeros(len(codebook), dtype=torch.long, device=device) for codebook in self.model.codebooks]
            last_residuals: list[torch.Tensor] = []
            totals = {"reconstruction": 0.0, "quantization": 0.0}
            order = torch.randperm(len(data), generator=generator).to(device)
            for start in range(0, len(data), batch_size):
                batch = data[order[start : start + batch_size]]
                latent = self.model.encoder(batch)
                residual, quantized, quantization_loss, last_residuals = latent, torch.zeros_like(latent), 0.0, []
                for level, codebook in enumerate(self.model.codebooks):
                    code = self.model.nearest(residual.detach(), codebook.detach())
                    chosen = codebook[code]
                    quantization_loss = (
                        quantization_loss
                        + nn.functional.mse_loss(chosen, residual.detach())
                        + beta * nn.functional.mse_loss(residual, chosen.detach())
                    )
                    usage[level] += torch.bincount(code, minlength=len(codebook))
                    last_residuals.append(residual.detach())
                    quantized = quantized + chosen.detach()
                    residual = residual - chosen.detach()
                straight_through = latent + (quantized - latent).detach()
                reconstruction_loss = nn.functional.mse_loss(self.model.decoder(straight_through), batch)
                optimizer.zero_grad(set_to_none=True)
                (reconstruction_loss + quantization_loss).backward()
                optimizer.step()
                rows = len(batch)
                totals["reconstruction"] += reconstruction_loss.item() * rows
                totals["quantization"] += float(quantization_loss.detach()) * rows
            reseeded = 0
            if self.settings["reseed_dead_codes"] and epoch + 1 < epochs:
                reseeded = self._reseed_dead_codes(usage, last_residuals, generator)
            self.history.append(
                {
                    "epoch": epoch + 1,
                    "reconstruction": totals["reconstruction"] / len(data),
                    "quantization": totals["quantization"] / len(data),
                    "reseeded_codes": reseeded,
                }
            )
        self.model.eval()
        return self._assign(vectors)

    @torch.no_grad()
    def _reseed_dead_codes(self, usage, last_residuals, generator) -> int:
        reseeded = 0
        for codebook, used, residuals in zip(self.model.codebooks, usage, last_residuals):
            dead = torch.nonzero(used == 0).flatten()
            if len(dead) == 0:
                continue
            if len(residuals) >= len(dead):
                picks = torch.randperm(len(residuals), generator=generator)[: len(dead)]
            else:
                picks = torch.randint(len(residuals), (len(dead),), generator=generator)
            codebook[dead] = residuals[picks.to(residuals.device)]
            reseeded += len(dead)
        return reseeded

    @torch.inference_mode()
    def _assign(self, vectors: np.ndarray) -> np.ndarray:
        """Encode, then greedy residual nearest code (L2) per level, in fixed-size batches."""
        device = self._device(training=False)
        self.model.to(device).eval()
        codes = [
            self.model.codes(torch.from_numpy(vectors[start : start + INFERENCE_BATCH]).to(device)).cpu()
            for start in range(0, len(vectors), INFERENCE_BATCH)
        ]
        return torch.cat(codes).numpy()

    @torch.inference_mode()
    def reconstruct(self, codes: np.ndarray) -> np.ndarray:
        """Decoder output for IDs: the embedding each ID stands for."""
        device = next(self.model.parameters()).device
        codes = torch.as_tensor(np.asarray(codes, dtype=np.int64), device=device)
        latent = sum(codebook[codes[:, level]] for level, codebook in enumerate(self.model.codebooks))
        return self.model.decoder(latent).cpu().numpy()

    def _state_tensors(self) -> dict[str, np.ndarray]:
        return {name: tensor.detach().cpu().numpy() for name, tensor in self.model.state_dict().items()}

    def _load_state(self, tensors: dict[str, np.ndarray], config: dict) -> None:
        self.model = self._build_model()
        self.model.load_state_dict({name: torch.from_numpy(array) for name, array in tensors.items()}, strict=True)
        self.model.eval()
        self.history = list(config.get("training_history", []))

    def _extra_config(self) -> dict:
        return {"training_history": self.history}

    def _level_geometry(self) -> list[dict]:
        return [
            {
                "level": level + 1,
                "codebook_size": size,
                "clusters": "latent" if level == 0 else "latent residuals",
                "latent_dim": self.settings["latent_dim"],
                "init": "faiss k-means on an encoded sample",
                "assign": "encoder, then nearest code, L2",
            }
            for level, size in enumerate(self.codebook_sizes)
        ]
