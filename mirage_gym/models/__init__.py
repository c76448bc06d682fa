"""World models: the RGB-D codec, the VACE-conditioned generator, the sampler, and the
backend that bundles them for the world core (``load_backend``)."""

from mirage_gym.models.backend import LatentWorldModel, ModelLoadError, load_backend, shipped_model_path

__all__ = ["LatentWorldModel", "ModelLoadError", "load_backend", "shipped_model_path"]
